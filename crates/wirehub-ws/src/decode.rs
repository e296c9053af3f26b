//! The frame decoder: RFC 6455 §5 framing rules, fragment reassembly, incremental UTF-8
//! validation and the message size limit. A server's decoder takes masked client frames
//! ([`Decoder::new`]); a client's takes unmasked server frames ([`Decoder::for_client`]).
//!
//! The decoder works on the caller's read buffer. A complete unfragmented frame is cut out
//! of it with `split_to(..).freeze()` and unmasked in place, so the common case costs no
//! copy; only fragmented messages are accumulated in a buffer of the decoder's own, which is
//! released as soon as the message is complete.
//!
//! A text frame whose payload has only partly arrived is unmasked and validated as far as
//! it has arrived (the bytes stay in the caller's buffer, unconsumed), so a client streaming
//! invalid UTF-8 is cut off at the first bad byte rather than after the whole frame.

use bytes::{Buf as _, Bytes, BytesMut};

use crate::MAX_CONTROL_PAYLOAD;
use crate::deflate::{Deflate, Inflater, RSV1};
use crate::encode::OpCode;
use crate::error::ProtocolError;
use crate::mask::apply_mask;
use crate::utf8::Utf8Validator;

/// A complete message or control frame received from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; the payload is guaranteed valid UTF-8 (fragments reassembled).
    Text(Bytes),
    /// A binary message (fragments reassembled).
    Binary(Bytes),
    /// A ping; answer with a pong carrying the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame; `None` when the close frame had an empty payload.
    Close(Option<CloseFrame>),
}

/// Code and reason of a close frame with a non-empty payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code; always one that may be sent on the wire (1000–1003, 1007–1011,
    /// 3000–4999).
    pub code: u16,
    /// The reason (valid UTF-8, at most 123 bytes).
    pub reason: String,
}

/// A fragmented message being reassembled.
#[derive(Debug)]
struct Partial {
    /// Text (validated as it arrives unless compressed) or binary.
    text: bool,
    /// Compressed with permessage-deflate (RSV1 on its first frame): inflated and validated
    /// once complete.
    compressed: bool,
    /// Payload of the fragments received so far (compressed as sent, if compressed).
    data: BytesMut,
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    /// RSV1: the first frame of a compressed message.
    compressed: bool,
    opcode: OpCode,
    /// Header size including the masking key.
    header_len: usize,
    payload_len: usize,
    /// The masking key; `None` for a server's (unmasked) frame.
    mask: Option<[u8; 4]>,
}

/// Incremental decoder of the peer's frames for one connection.
///
/// Feed it the connection's read buffer: call [`Decoder::decode`] until it returns
/// `Ok(None)`, read more bytes onto the end of the same buffer, repeat. Between calls the
/// caller may only append to the buffer: the decoder may already have unmasked and validated
/// the beginning of a partly received text frame in place. Any `Err` is fatal: send
/// [`crate::encode_close`] with [`ProtocolError::close_code`] and close the connection; the
/// decoder must not be used afterwards (it does not panic if it is, but its results are
/// meaningless).
#[derive(Debug)]
pub struct Decoder {
    max_message_size: usize,
    /// The fragmented message in progress, if any (`None`, with no allocation, when idle).
    partial: Option<Partial>,
    /// UTF-8 state of the text message in progress (fragmented or not).
    utf8: Utf8Validator,
    /// Payload bytes of the text frame at the front of the buffer that were already unmasked
    /// in place and validated, while the rest of the frame has not arrived yet.
    scanned: usize,
    /// permessage-deflate, when negotiated.
    inflater: Option<Inflater>,
    /// The peer is a client: its frames must be masked. A client's decoder refuses masked
    /// frames instead (RFC 6455 §5.1).
    masked: bool,
}

impl Decoder {
    /// A decoder that refuses messages larger than `max_message_size` bytes (after
    /// reassembly) with [`ProtocolError::TooLarge`].
    #[must_use]
    pub fn new(max_message_size: usize) -> Self {
        Self {
            max_message_size,
            partial: None,
            utf8: Utf8Validator::default(),
            scanned: 0,
            inflater: None,
            masked: true,
        }
    }

    /// A client's decoder of the server's frames, which are never masked: a masked frame is
    /// [`ProtocolError::MaskedFrame`]. Otherwise as [`Decoder::new`].
    #[must_use]
    pub fn for_client(max_message_size: usize) -> Self {
        Self {
            masked: false,
            ..Self::new(max_message_size)
        }
    }

    /// The same decoder for a connection that negotiated permessage-deflate: messages with
    /// RSV1 are inflated, and refused with [`ProtocolError::TooLarge`] (a deflate bomb) as
    /// soon as they inflate to more than `max_inflated` bytes. The message size limit of
    /// [`Decoder::new`] applies to the compressed bytes as they arrive.
    #[must_use]
    pub fn with_deflate(self, deflate: &Deflate, max_inflated: usize) -> Self {
        self.with_inflate(deflate.client_context_takeover, max_inflated)
    }

    /// permessage-deflate with the peer's context takeover as negotiated: when the peer keeps
    /// its compression context between messages (`peer_context_takeover`), this connection
    /// keeps a decompressor of its own; otherwise one per thread is reset for each message.
    /// Messages inflating to more than `max_inflated` bytes are refused as in
    /// [`Decoder::with_deflate`].
    #[must_use]
    pub fn with_inflate(mut self, peer_context_takeover: bool, max_inflated: usize) -> Self {
        self.inflater = Some(Inflater::new(peer_context_takeover, max_inflated));
        self
    }

    /// True while the connection keeps a decompressor between messages (client context
    /// takeover, after its first compressed message).
    #[must_use]
    pub fn holds_inflate_state(&self) -> bool {
        self.inflater.as_ref().is_some_and(Inflater::holds_state)
    }

    /// True while a fragmented message is partly received (for memory accounting / idle
    /// checks).
    #[must_use]
    pub fn is_mid_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Bytes of the fragmented message in progress that the decoder holds (0 when idle).
    #[must_use]
    pub fn buffered_len(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    /// Decodes the next complete message or control frame from the front of `buf`, consuming
    /// (advancing past) its bytes.
    ///
    /// `Ok(None)` means more bytes are needed; nothing that would be lost was consumed
    /// (complete fragments of an unfinished message may have been consumed and are held
    /// inside the decoder). Control frames that arrive between fragments are returned at
    /// once. An error is fatal for the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        loop {
            let Some(header) = self.parse_header(buf)? else {
                return Ok(None);
            };
            let is_text = self.is_text_frame(header.opcode);
            let compressed = header.compressed
                || (header.opcode == OpCode::Continuation
                    && self.partial.as_ref().is_some_and(|p| p.compressed));
            // Compressed text is validated once inflated.
            let validate = is_text && !compressed;
            if validate && header.opcode == OpCode::Text && self.scanned == 0 {
                // First look at the first frame of a new text message.
                self.utf8.reset();
            }
            let available = buf.len().saturating_sub(header.header_len);
            if available < header.payload_len {
                if validate && available > self.scanned {
                    let start = header.header_len + self.scanned;
                    let piece = buf.get_mut(start..).unwrap_or_default();
                    if let Some(mask) = header.mask {
                        apply_mask(piece, mask, self.scanned);
                    }
                    self.utf8
                        .feed(piece)
                        .map_err(|_| ProtocolError::InvalidUtf8)?;
                    self.scanned = available;
                }
                return Ok(None);
            }

            let scanned = std::mem::take(&mut self.scanned);
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.payload_len);
            let rest = payload.get_mut(scanned..).unwrap_or_default();
            if let Some(mask) = header.mask {
                apply_mask(rest, mask, scanned);
            }
            if validate {
                self.utf8
                    .feed(rest)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
                if header.fin && !self.utf8.is_complete() {
                    return Err(ProtocolError::InvalidUtf8);
                }
            }

            match header.opcode {
                OpCode::Close => return parse_close(&payload).map(|c| Some(Message::Close(c))),
                OpCode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                OpCode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                OpCode::Text | OpCode::Binary if header.fin => {
                    return self
                        .complete(is_text, compressed, payload.freeze())
                        .map(Some);
                }
                OpCode::Text | OpCode::Binary => {
                    self.partial = Some(Partial {
                        text: is_text,
                        compressed,
                        data: BytesMut::from(&payload[..]),
                    });
                }
                OpCode::Continuation => {
                    // parse_header guarantees a message in progress.
                    let Some(partial) = self.partial.as_mut() else {
                        return Err(ProtocolError::UnexpectedContinuation);
                    };
                    partial.data.extend_from_slice(&payload);
                    if header.fin
                        && let Some(done) = self.partial.take()
                    {
                        return self
                            .complete(done.text, done.compressed, done.data.freeze())
                            .map(Some);
                    }
                }
            }
        }
    }

    /// The message whose payload (as received, compressed or not) is complete: inflated and
    /// validated if compressed.
    fn complete(
        &mut self,
        text: bool,
        compressed: bool,
        payload: Bytes,
    ) -> Result<Message, ProtocolError> {
        let data = match (&mut self.inflater, compressed) {
            (Some(inflater), true) => {
                let inflated = inflater.inflate(&payload)?;
                if text && std::str::from_utf8(&inflated).is_err() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                inflated
            }
            _ => payload,
        };
        Ok(if text {
            Message::Text(data)
        } else {
            Message::Binary(data)
        })
    }

    /// True when a data frame with this opcode carries text (a Text frame, or a continuation
    /// of a text message).
    fn is_text_frame(&self, opcode: OpCode) -> bool {
        match opcode {
            OpCode::Text => true,
            OpCode::Continuation => self.partial.as_ref().is_some_and(|p| p.text),
            _ => false,
        }
    }

    /// Parses and checks the header of the frame at the front of `buf`; `Ok(None)` when it
    /// is not complete yet. Each rule is checked as soon as the bytes it needs are there.
    fn parse_header(&self, buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        let raw_opcode = b0 & 0x0F;
        let opcode = OpCode::from_u8(raw_opcode).ok_or(ProtocolError::UnknownOpCode(raw_opcode))?;
        // RSV1 marks a compressed message: only with permessage-deflate, only on the first
        // frame of a data message (never on a continuation or a control frame).
        let compressed = b0 & RSV1 != 0;
        if compressed
            && (self.inflater.is_none() || !matches!(opcode, OpCode::Text | OpCode::Binary))
        {
            return Err(ProtocolError::ReservedBits);
        }
        let control = opcode.is_control();
        if control && !fin {
            return Err(ProtocolError::FragmentedControl);
        }
        match (opcode, self.partial.is_some()) {
            (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => {
                return Err(ProtocolError::ExpectedContinuation);
            }
            _ => {}
        }

        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        match (b1 & 0x80 != 0, self.masked) {
            (false, true) => return Err(ProtocolError::UnmaskedFrame),
            (true, false) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let len7 = b1 & 0x7F;
        if control && usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlTooLong);
        }
        let (len, len_end): (u64, usize) = match len7 {
            126 => match buf.get(2..4) {
                Some(bytes) => (be_uint(bytes), 4),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(bytes) => (be_uint(bytes), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if len >> 63 != 0 {
            return Err(ProtocolError::InvalidLength);
        }
        if !control {
            let held = self.partial.as_ref().map_or(0, |p| p.data.len());
            let size = (held as u64).saturating_add(len);
            if size > self.max_message_size as u64 {
                return Err(ProtocolError::TooLarge {
                    size,
                    max: self.max_message_size,
                });
            }
        }
        let too_large = || ProtocolError::TooLarge {
            size: len,
            max: self.max_message_size,
        };
        let payload_len = usize::try_from(len).map_err(|_| too_large())?;
        let header_len = len_end + if self.masked { 4 } else { 0 };
        // The whole frame must be addressable (only matters on 32-bit targets).
        header_len.checked_add(payload_len).ok_or_else(too_large)?;
        let mask = if self.masked {
            let Some(key) = buf.get(len_end..header_len) else {
                return Ok(None);
            };
            let mut mask = [0; 4];
            mask.copy_from_slice(key);
            Some(mask)
        } else if buf.len() < header_len {
            return Ok(None);
        } else {
            None
        };
        Ok(Some(Header {
            fin,
            compressed,
            opcode,
            header_len,
            payload_len,
            mask,
        }))
    }
}

/// Big-endian unsigned integer of up to 8 bytes.
fn be_uint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// Parses an (unmasked) close payload: empty, or a code that may be sent on the wire plus a
/// UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !is_valid_close_code(code) {
        return Err(ProtocolError::InvalidCloseCode(code));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
    Ok(Some(CloseFrame {
        code,
        reason: reason.to_owned(),
    }))
}

/// Close codes a peer may send (RFC 6455 §7.4): the defined ones that are not reserved for
/// local use (1004, 1005, 1006, 1015), and the registered / private range 3000–4999.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}
