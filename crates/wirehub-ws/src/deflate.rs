//! permessage-deflate (RFC 7692): the negotiation of the extension at the opening handshake,
//! the compression of what the server sends and the inflation of what a client sends.
//!
//! The server always takes `server_no_context_takeover`: each message it sends is compressed
//! on its own (the compressor is reset between messages), so that one compressed frame can be
//! built once and sent to every connection that negotiated the extension. The compressor is
//! one per thread, never one per connection.
//!
//! What a client sends is inflated with a decompressor that is also one per thread, reset for
//! every message, when the server asked for `client_no_context_takeover` (the default of
//! [`DeflateConfig`]): a connection then holds no compression state at all between messages.
//! With client context takeover allowed, each connection keeps its own decompressor (and its
//! 32 KiB window) from its first compressed message on, for the rest of the connection.
//!
//! A client may limit the window the server compresses with (`server_max_window_bits`); the
//! compressor here always uses the full 32 KiB window, so such a connection is sent its
//! messages uncompressed (a sender never has to compress; what it receives is still inflated).

use std::cell::RefCell;

use bytes::{BufMut as _, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::encode::{OpCode, header_len};
use crate::error::ProtocolError;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// The bytes a sync flush ends with, removed from each compressed message (RFC 7692 §7.2.1)
/// and appended again before inflating one (§7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The compression level of outgoing messages: zlib's default, a good ratio for text at a
/// cost paid once per message (the compressed frame is shared).
const LEVEL: u32 = 6;

/// The RSV1 bit: set on the first frame of a compressed message.
pub(crate) const RSV1: u8 = 0x40;

/// What the server asks for when it accepts a permessage-deflate offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// Let the client keep its compression context between messages: its messages compress
    /// better, but the server then keeps a decompressor (about 40 KiB with its window) for
    /// every connection that sent a compressed message. When false the server answers with
    /// `client_no_context_takeover` and keeps nothing per connection.
    pub client_context_takeover: bool,
}

/// The parameters of a negotiated permessage-deflate extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deflate {
    /// The client keeps its compression context between messages (the server's decompressor
    /// must then be kept per connection).
    pub client_context_takeover: bool,
    /// The `server_max_window_bits` the client asked for, echoed in the response.
    pub server_max_window_bits: Option<u8>,
}

impl Deflate {
    /// The `Sec-WebSocket-Extensions` value of the server's response.
    #[must_use]
    pub fn response(&self) -> String {
        let mut response = format!("{PERMESSAGE_DEFLATE}; server_no_context_takeover");
        if !self.client_context_takeover {
            response.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            response.push_str(&format!("; server_max_window_bits={bits}"));
        }
        response
    }

    /// Whether the server may compress what it sends on this connection: only with the full
    /// 32 KiB window, which is the compressor's.
    #[must_use]
    pub fn compresses_outgoing(&self) -> bool {
        self.server_max_window_bits.is_none_or(|bits| bits == 15)
    }
}

/// Picks the first acceptable permessage-deflate offer among the values of the request's
/// `Sec-WebSocket-Extensions` headers (each a comma-separated list of offers). `None` when
/// there is none: the connection then runs without the extension. An offer with an unknown
/// or repeated parameter, or an invalid value, is declined (RFC 7692 §5) and the next one is
/// tried.
pub fn negotiate<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
    config: &DeflateConfig,
) -> Option<Deflate> {
    header_values
        .into_iter()
        .flat_map(|value| value.split(','))
        .find_map(|offer| parse_offer(offer, config))
}

/// One offer (`permessage-deflate; param; param=value`), if it is permessage-deflate and
/// acceptable.
fn parse_offer(offer: &str, config: &DeflateConfig) -> Option<Deflate> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) {
        return None;
    }
    let mut seen = [false; 4];
    let mut client_no_context_takeover = false;
    let mut server_max_window_bits = None;
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((name, value)) => (name.trim(), Some(unquote(value.trim())?)),
            None => (part, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => {
                client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            "client_max_window_bits" => {
                // The client may limit its own window; any window is inflated here.
                if let Some(value) = value {
                    window_bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(Deflate {
        client_context_takeover: config.client_context_takeover && !client_no_context_takeover,
        server_max_window_bits,
    })
}

/// A parameter value without its quotes (RFC 7230 quoted-string, no escapes needed for the
/// digits the parameters take).
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size parameter: 8 to 15, digits only, no leading zero.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

thread_local! {
    /// This thread's compressor, reset for every message.
    static COMPRESSOR: RefCell<Option<(Compress, Vec<u8>)>> = const { RefCell::new(None) };
    /// This thread's decompressor for messages without context takeover.
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// One compressed server frame (FIN, RSV1, `opcode`) of `payload`, compressed on its own (no
/// context from earlier messages), or `None` when compression would not make it smaller:
/// then send the plain frame.
///
/// `opcode` must be Text or Binary: control frames are never compressed.
#[must_use]
pub fn deflate_frame(opcode: OpCode, payload: &[u8]) -> Option<Bytes> {
    compressed(payload, |body| {
        let mut frame = BytesMut::with_capacity(header_len(body.len()) + body.len());
        crate::encode::write_header_bits(&mut frame, 0x80 | RSV1 | opcode.as_u8(), body.len());
        frame.put_slice(body);
        frame.freeze()
    })
}

/// A client's compressed frame: as [`deflate_frame`], masked with `mask`. A client never
/// keeps its compression context (it offers `client_no_context_takeover`), so each message
/// is compressed on its own.
#[must_use]
pub fn deflate_client_frame(opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Option<Bytes> {
    compressed(payload, |body| {
        let mut frame = BytesMut::new();
        crate::encode::write_masked(&mut frame, 0x80 | RSV1 | opcode.as_u8(), body, mask);
        frame.freeze()
    })
}

/// Compresses `payload` on its own with this thread's compressor and hands the message's
/// compressed bytes (without the sync-flush tail) to `frame`; `None` when they would not be
/// shorter than `payload`.
fn compressed<R>(payload: &[u8], frame: impl FnOnce(&[u8]) -> R) -> Option<R> {
    COMPRESSOR.with_borrow_mut(|slot| {
        let (compress, scratch) =
            slot.get_or_insert_with(|| (Compress::new(Compression::new(LEVEL), false), Vec::new()));
        compress.reset();
        scratch.clear();
        // A sync flush of incompressible input adds about 5 bytes per 16 KiB block; past
        // the payload's own size the frame would not be smaller anyway.
        scratch.reserve(payload.len() + 64);
        let mut input = payload;
        loop {
            let before = compress.total_in();
            let status = compress
                .compress_vec(input, scratch, FlushCompress::Sync)
                .ok()?;
            let used = usize::try_from(compress.total_in() - before).ok()?;
            input = input.get(used..)?;
            let full = scratch.len() == scratch.capacity();
            if status == Status::BufError || !full {
                break;
            }
            if scratch.len() > payload.len() + 8 {
                return None;
            }
            scratch.reserve(4096);
        }
        let body = scratch.strip_suffix(&SYNC_TAIL).unwrap_or(scratch);
        // An empty message compresses to nothing once the tail is removed: RFC 7692 §7.2.3.6
        // sends a single empty stored block's first byte.
        let body: &[u8] = if body.is_empty() { &[0x00] } else { body };
        if body.len() >= payload.len() {
            return None;
        }
        Some(frame(body))
    })
}

/// The `Sec-WebSocket-Extensions` offer of a client: permessage-deflate, with the promise
/// that the client compresses each message on its own (`client_no_context_takeover`).
pub const CLIENT_OFFER: &str = "permessage-deflate; client_no_context_takeover";

/// permessage-deflate as a server accepted a client's [`CLIENT_OFFER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerDeflate {
    /// The server keeps its compression context between messages (it did not answer
    /// `server_no_context_takeover`): the client must then keep a decompressor per
    /// connection ([`crate::Decoder::with_inflate`]).
    pub server_context_takeover: bool,
}

/// A server's `Sec-WebSocket-Extensions` answer that a client must fail the connection for
/// (RFC 6455 §9.1, RFC 7692 §5): an extension it did not offer, or a parameter it may not
/// send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server answered with extensions that were not offered: {0}")]
pub struct ExtensionError(pub String);

/// Reads the values of a server's `Sec-WebSocket-Extensions` response headers to
/// [`CLIENT_OFFER`]: `Ok(None)` when the server declined the extension (no header), the
/// negotiated parameters otherwise.
///
/// # Errors
/// [`ExtensionError`] when the server names another extension, names permessage-deflate
/// twice, or answers with a parameter that is unknown, repeated, has an invalid value, or
/// was not offered (`client_max_window_bits`).
pub fn accept_response<'a>(
    header_values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<ServerDeflate>, ExtensionError> {
    let mut accepted = None;
    for extension in header_values.into_iter().flat_map(|value| value.split(',')) {
        let extension = extension.trim();
        if extension.is_empty() {
            continue;
        }
        let fail = || ExtensionError(extension.to_owned());
        let mut parts = extension.split(';').map(str::trim);
        let name = parts.next().unwrap_or_default();
        if !name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE) || accepted.is_some() {
            return Err(fail());
        }
        let mut seen = [false; 3];
        let mut server_no_context_takeover = false;
        for part in parts {
            let (name, value) = match part.split_once('=') {
                Some((name, value)) => (name.trim(), Some(unquote(value.trim()).ok_or_else(fail)?)),
                None => (part, None),
            };
            let index = match (name.to_ascii_lowercase().as_str(), value) {
                ("server_no_context_takeover", None) => {
                    server_no_context_takeover = true;
                    0
                }
                ("client_no_context_takeover", None) => 1,
                // Any window the server compresses with is inflated with the full one.
                ("server_max_window_bits", Some(value)) if window_bits(value).is_some() => 2,
                _ => return Err(fail()),
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(fail());
            }
        }
        accepted = Some(ServerDeflate {
            server_context_takeover: !server_no_context_takeover,
        });
    }
    Ok(accepted)
}

/// The inflating side of a connection that negotiated permessage-deflate.
#[derive(Debug)]
pub(crate) struct Inflater {
    /// Keep the decompressor between messages (the peer's context takeover).
    context_takeover: bool,
    /// The connection's own decompressor, made at its first compressed message, with
    /// context takeover only.
    own: Option<Box<Decompress>>,
    /// Largest message after inflation; larger ones are refused as a deflate bomb.
    max_inflated: usize,
}

impl Inflater {
    pub(crate) fn new(context_takeover: bool, max_inflated: usize) -> Self {
        Inflater {
            context_takeover,
            own: None,
            max_inflated,
        }
    }

    /// Whether the connection holds a decompressor of its own (context takeover, after its
    /// first compressed message).
    pub(crate) fn holds_state(&self) -> bool {
        self.own.is_some()
    }

    /// Inflates one compressed message (its frames' payloads concatenated).
    pub(crate) fn inflate(&mut self, compressed: &[u8]) -> Result<Bytes, ProtocolError> {
        let max = self.max_inflated;
        if self.context_takeover {
            let decompress = self
                .own
                .get_or_insert_with(|| Box::new(Decompress::new(false)));
            let inflated = inflate_with(decompress, compressed, max);
            if inflated.is_err() {
                // The stream is broken: the connection is failed; nothing is kept.
                self.own = None;
            }
            inflated
        } else {
            DECOMPRESSOR.with_borrow_mut(|slot| {
                let decompress = slot.get_or_insert_with(|| Decompress::new(false));
                decompress.reset(false);
                inflate_with(decompress, compressed, max)
            })
        }
    }
}

/// Inflates `compressed` and the sync-flush tail with `decompress`, refusing an output of
/// more than `max` bytes before it is produced in full.
fn inflate_with(
    decompress: &mut Decompress,
    compressed: &[u8],
    max: usize,
) -> Result<Bytes, ProtocolError> {
    let too_large = |size: usize| ProtocolError::TooLarge {
        size: size as u64,
        max,
    };
    let mut out: Vec<u8> = Vec::with_capacity(
        compressed
            .len()
            .saturating_mul(4)
            .clamp(256, max.saturating_add(1)),
    );
    for mut input in [compressed, &SYNC_TAIL[..]] {
        loop {
            if out.len() == out.capacity() {
                if out.len() > max {
                    return Err(too_large(out.len()));
                }
                let room = out.len().clamp(4096, 1 << 20);
                out.reserve_exact(room.min(max + 1 - out.len()).max(1));
            }
            let before = decompress.total_in();
            let status = decompress
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            if out.len() > max {
                return Err(too_large(out.len()));
            }
            let used = usize::try_from(decompress.total_in() - before)
                .map_err(|_| ProtocolError::InvalidCompressedData)?;
            input = input.get(used..).unwrap_or_default();
            match status {
                // A final block ended the stream: what follows (the tail) is not needed.
                Status::StreamEnd => {
                    decompress.reset(false);
                    return Ok(Bytes::from(out));
                }
                Status::Ok | Status::BufError => {
                    let spare = out.len() < out.capacity();
                    if input.is_empty() && spare {
                        break;
                    }
                    if status == Status::BufError && spare {
                        // No progress with room left: the input is truncated or invalid.
                        return Err(ProtocolError::InvalidCompressedData);
                    }
                }
            }
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::BytesMut;
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

    use super::*;
    use crate::{Decoder, Message};

    const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
    const TAKE: DeflateConfig = DeflateConfig {
        client_context_takeover: true,
    };
    const NO_TAKE: DeflateConfig = DeflateConfig {
        client_context_takeover: false,
    };

    /// A masked client frame with first byte `b0`.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&KEY);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ KEY[i % 4]));
        out
    }

    /// What a client's compressor sends for one message (sync flush, tail removed).
    fn client_compress(compress: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 1024);
        compress
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&SYNC_TAIL));
        out.truncate(out.len() - 4);
        out
    }

    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(message) = decoder.decode(&mut buf)? {
            out.push(message);
        }
        Ok(out)
    }

    fn deflate_decoder(config: &DeflateConfig, max: usize) -> Decoder {
        let deflate = negotiate(["permessage-deflate"], config).unwrap();
        Decoder::new(max).with_deflate(&deflate, max)
    }

    #[test]
    fn issue_14_negotiation_takes_the_first_acceptable_offer() {
        let default = negotiate(["permessage-deflate; client_max_window_bits"], &NO_TAKE).unwrap();
        assert_eq!(
            default.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(default.compresses_outgoing());
        assert!(!default.client_context_takeover);

        let takeover = negotiate(["permessage-deflate"], &TAKE).unwrap();
        assert_eq!(
            takeover.response(),
            "permessage-deflate; server_no_context_takeover"
        );
        assert!(takeover.client_context_takeover);
        // The client's own client_no_context_takeover is honoured even when the server
        // would allow takeover.
        let hinted = negotiate(["permessage-deflate; client_no_context_takeover"], &TAKE).unwrap();
        assert!(!hinted.client_context_takeover);
        assert!(hinted.response().contains("client_no_context_takeover"));

        let small_window = negotiate(
            ["x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=\"10\""],
            &NO_TAKE,
        )
        .unwrap();
        assert_eq!(small_window.server_max_window_bits, Some(10));
        assert!(!small_window.compresses_outgoing());
        assert!(
            small_window
                .response()
                .ends_with("; server_max_window_bits=10")
        );
        let full_window =
            negotiate(["permessage-deflate; server_max_window_bits=15"], &NO_TAKE).unwrap();
        assert!(full_window.compresses_outgoing());

        // Invalid offers are declined and the next one is taken; the headers may repeat.
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery",
        ] {
            assert_eq!(negotiate([bad], &NO_TAKE), None, "{bad}");
            let next = negotiate(
                [bad, "permessage-deflate; client_max_window_bits=12"],
                &NO_TAKE,
            );
            assert_eq!(next, Some(default), "{bad}");
        }
        assert_eq!(negotiate(["x-webkit-deflate-frame"], &NO_TAKE), None);
        assert_eq!(negotiate([], &NO_TAKE), None);
    }

    #[test]
    fn issue_14_compressed_messages_are_inflated_fragmented_or_not() {
        let text = "{\"type\":\"publish\",\"channel\":\"news\",\"data\":\"".repeat(50);
        let mut client = Compress::new(Compression::default(), false);
        let mut decoder = deflate_decoder(&NO_TAKE, 1 << 20);
        client.reset();
        let whole = client_compress(&mut client, text.as_bytes());
        assert!(whole.len() < text.len() / 4);
        client.reset();
        let split = client_compress(&mut client, text.as_bytes());
        let (first, rest) = split.split_at(split.len() / 3);
        let bytes = [
            frame(0x80 | RSV1 | 0x1, &whole),
            // Fragmented: RSV1 on the first frame only, a ping in between.
            frame(RSV1 | 0x1, first),
            frame(0x89, b"p"),
            frame(0x80, rest),
            // An uncompressed message on the same connection.
            frame(0x82, b"plain"),
        ]
        .concat();
        // Byte by byte, so that every partial state is seen.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in bytes {
            buf.extend_from_slice(&[byte]);
            while let Some(message) = decoder.decode(&mut buf).unwrap() {
                out.push(message);
            }
        }
        assert_eq!(
            out,
            vec![
                Message::Text(Bytes::from(text.clone())),
                Message::Ping(Bytes::from_static(b"p")),
                Message::Text(Bytes::from(text)),
                Message::Binary(Bytes::from_static(b"plain")),
            ]
        );
        assert!(!decoder.holds_inflate_state());
    }

    #[test]
    fn issue_14_client_context_takeover_keeps_the_window_per_connection() {
        let message = b"the same sentence, sent twice, refers back to the first copy".repeat(4);
        let mut client = Compress::new(Compression::default(), false);
        let first = client_compress(&mut client, &message);
        let second = client_compress(&mut client, &message);
        // The second message is mostly a reference into the first one's window.
        assert!(
            second.len() < first.len() / 2,
            "{} {}",
            second.len(),
            first.len()
        );
        let mut decoder = deflate_decoder(&TAKE, 1 << 20);
        assert!(!decoder.holds_inflate_state());
        let out = decode_all(
            &mut decoder,
            &[frame(0xC1, &first), frame(0xC1, &second)].concat(),
        )
        .unwrap();
        let expected = Message::Text(Bytes::from(message));
        assert_eq!(out, vec![expected.clone(), expected]);
        assert!(decoder.holds_inflate_state());
    }

    #[test]
    fn issue_14_rsv1_only_on_the_first_frame_of_a_negotiated_data_message() {
        let mut client = Compress::new(Compression::default(), false);
        let data = client_compress(&mut client, b"hello hello hello");
        for bytes in [
            // A control frame is never compressed.
            frame(0x80 | RSV1 | 0x9, b""),
            frame(0x80 | RSV1 | 0x8, &[0x03, 0xe8]),
            // RSV1 on a continuation.
            [frame(0x01, b"a"), frame(0x80 | RSV1, b"b")].concat(),
            // RSV2, RSV3.
            frame(0xA1, &data),
            frame(0x91, &data),
        ] {
            let err = decode_all(&mut deflate_decoder(&NO_TAKE, 1024), &bytes).unwrap_err();
            assert_eq!(err, ProtocolError::ReservedBits, "{bytes:x?}");
        }
        // Without the extension, RSV1 is a protocol error too.
        let err = decode_all(&mut Decoder::new(1024), &frame(0xC1, &data)).unwrap_err();
        assert_eq!(err, ProtocolError::ReservedBits);
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn issue_14_a_deflate_bomb_is_refused_before_it_is_inflated() {
        // 16 MiB of zeros compress to about 16 KiB.
        let bomb_source = vec![0u8; 16 << 20];
        let mut client = Compress::new(Compression::best(), false);
        let bomb = client_compress(&mut client, &bomb_source);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let max = 64 << 10;
        let mut decoder = deflate_decoder(&NO_TAKE, max);
        let err = decode_all(&mut decoder, &frame(0xC2, &bomb)).unwrap_err();
        assert!(
            matches!(err, ProtocolError::TooLarge { size, max: m } if m == max && size > max as u64),
            "{err:?}"
        );
        assert_eq!(err.close_code(), 1009);
        // Exactly at the cap is fine.
        client.reset();
        let at_cap = client_compress(&mut client, &bomb_source[..max]);
        let mut decoder = deflate_decoder(&NO_TAKE, max);
        let out = decode_all(&mut decoder, &frame(0xC2, &at_cap)).unwrap();
        assert_eq!(out, vec![Message::Binary(Bytes::from(vec![0u8; max]))]);
    }

    #[test]
    fn issue_14_bad_compressed_data_and_compressed_bad_utf8_fail_with_1007() {
        let err = decode_all(
            &mut deflate_decoder(&NO_TAKE, 1024),
            &frame(0xC1, &[0xff, 0xff, 0xff, 0xff]),
        )
        .unwrap_err();
        assert_eq!(err, ProtocolError::InvalidCompressedData);
        assert_eq!(err.close_code(), 1007);
        let mut client = Compress::new(Compression::default(), false);
        let bad_text = client_compress(&mut client, b"ok \xff not utf-8");
        let err = decode_all(
            &mut deflate_decoder(&NO_TAKE, 1024),
            &frame(0xC1, &bad_text),
        )
        .unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);
    }

    /// Inflates a server frame's payload as a client would.
    fn client_inflate(frame: &[u8]) -> Vec<u8> {
        assert_eq!(frame[0] & 0xF0, 0x80 | RSV1, "FIN and RSV1");
        let (start, len) = match frame[1] {
            126 => (4, usize::from(u16::from_be_bytes([frame[2], frame[3]]))),
            127 => (
                10,
                u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            ),
            n => (2, usize::from(n)),
        };
        assert_eq!(frame.len(), start + len);
        let mut input = frame[start..].to_vec();
        input.extend_from_slice(&SYNC_TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        Decompress::new(false)
            .decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn issue_14_deflate_frame_compresses_each_message_on_its_own() {
        let json = br#"{"type":"message","channel":"prices","offset":7,"data":{"symbol":"ABC","bid":101.25,"ask":101.5,"note":"a note that repeats, a note that repeats"}}"#;
        let first = deflate_frame(OpCode::Text, json).unwrap();
        assert_eq!(first[0], 0x80 | RSV1 | 0x1);
        assert!(first.len() < json.len());
        assert_eq!(client_inflate(&first), json);
        // No context takeover: the same message compresses to the same frame again.
        assert_eq!(deflate_frame(OpCode::Text, json).unwrap(), first);
        // Large messages (several output buffers, 64-bit length).
        let large = json.repeat(2000);
        let frame = deflate_frame(OpCode::Binary, &large).unwrap();
        assert_eq!(frame[0], 0x80 | RSV1 | 0x2);
        assert_eq!(client_inflate(&frame), large);
        // What would not get smaller is left to the plain frame.
        assert_eq!(deflate_frame(OpCode::Text, b"{}"), None);
        assert_eq!(deflate_frame(OpCode::Text, b""), None);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(deflate_frame(OpCode::Binary, &noise), None);
        // The server's frame goes through this crate's own decoder once masked.
        let mut decoder = deflate_decoder(&NO_TAKE, 1 << 20);
        let body = &first[2..];
        let out = decode_all(&mut decoder, &self::frame(first[0], body)).unwrap();
        assert_eq!(out, vec![Message::Text(Bytes::from_static(json))]);
    }
}
