//! Frame encoding and the handshake accept key.
//!
//! Server frames are never masked (RFC 6455 §5.1), a client's always are (`encode_client_*`,
//! with a key the caller draws at random for each frame). This codec never fragments what it
//! sends, so every frame is FIN + opcode, the shortest length encoding, then the payload.

use base64::Engine as _;
use bytes::{BufMut as _, Bytes, BytesMut};
use sha1::{Digest as _, Sha1};

use crate::MAX_CONTROL_PAYLOAD;

/// The GUID appended to `Sec-WebSocket-Key` before hashing (RFC 6455 §1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Longest close reason that fits a control frame next to the 2-byte code.
const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// WebSocket opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message (0x0).
    Continuation,
    /// First (or only) frame of a text message (0x1).
    Text,
    /// First (or only) frame of a binary message (0x2).
    Binary,
    /// Connection close (0x8).
    Close,
    /// Ping (0x9).
    Ping,
    /// Pong (0xA).
    Pong,
}

impl OpCode {
    /// The 4-bit opcode value on the wire.
    #[must_use]
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// The opcode for a 4-bit wire value, or `None` for a reserved one.
    #[must_use]
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// True for Close, Ping and Pong (payload at most 125 bytes, never fragmented).
    #[must_use]
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// Size of the header that `write_frame` writes for a payload of `len` bytes.
#[must_use]
pub fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= 0xFFFF {
        4
    } else {
        10
    }
}

/// Appends only the header of an unmasked FIN frame for a payload of `len` bytes to `out`;
/// the caller sends the payload right after it (e.g. as a separate buffer in a vectored write).
pub fn write_header(out: &mut BytesMut, opcode: OpCode, len: usize) {
    write_header_bits(out, 0x80 | opcode.as_u8(), len);
}

/// Appends a frame header whose first byte (FIN, RSV bits, opcode) is `first`.
pub(crate) fn write_header_bits(out: &mut BytesMut, first: u8, len: usize) {
    out.reserve(header_len(len));
    out.put_u8(first);
    if len < 126 {
        // Fits in 7 bits by the test above.
        out.put_u8(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.put_u8(126);
        out.put_u16(short);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// Appends a masked frame (a client's) whose first byte is `first`: the header with the mask
/// bit, the key, then `payload` masked with it.
pub(crate) fn write_masked(out: &mut BytesMut, first: u8, payload: &[u8], mask: [u8; 4]) {
    let start = out.len();
    out.reserve(header_len(payload.len()) + 4 + payload.len());
    write_header_bits(out, first, payload.len());
    if let Some(length) = out.get_mut(start + 1) {
        *length |= 0x80;
    }
    out.put_slice(&mask);
    let body = out.len();
    out.put_slice(payload);
    if let Some(body) = out.get_mut(body..) {
        crate::mask::apply_mask(body, mask, 0);
    }
}

/// Appends one masked client frame with FIN set to `out`, masked with `mask` (RFC 6455 §5.3:
/// a fresh random key for every frame).
///
/// Control frames (Close, Ping, Pong) must have payloads of at most 125 bytes; this function
/// does not check it.
pub fn write_client_frame(out: &mut BytesMut, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    write_masked(out, 0x80 | opcode.as_u8(), payload, mask);
}

/// Encodes one masked client frame with FIN set, masked with `mask` (RFC 6455 §5.3: a fresh
/// random key for every frame).
///
/// Control frames (Close, Ping, Pong) must have payloads of at most 125 bytes; this function
/// does not check it.
#[must_use]
pub fn encode_client_frame(opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Bytes {
    let mut out = BytesMut::new();
    write_masked(&mut out, 0x80 | opcode.as_u8(), payload, mask);
    out.freeze()
}

/// A client's close frame with the given code and reason, masked with `mask` (reason
/// truncated as in [`encode_close`]).
#[must_use]
pub fn encode_client_close(code: u16, reason: &str, mask: [u8; 4]) -> Bytes {
    let plain = encode_close(code, reason);
    encode_client_frame(OpCode::Close, plain.get(2..).unwrap_or_default(), mask)
}

/// Appends one unmasked FIN frame to `out` (to build frames without an extra copy when the
/// caller already has a BytesMut).
///
/// Control frames (Close, Ping, Pong) must have payloads of at most 125 bytes; this function
/// does not check it.
pub fn write_frame(out: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    out.reserve(header_len(payload.len()) + payload.len());
    write_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Encodes one unmasked server frame with FIN set (header + payload) into a new Bytes.
///
/// Control frames (Close, Ping, Pong) must have payloads of at most 125 bytes; this function
/// does not check it.
#[must_use]
pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    write_frame(&mut out, opcode, payload);
    out.freeze()
}

/// A close frame with the given code and reason (reason truncated to fit 123 bytes on a char
/// boundary).
#[must_use]
pub fn encode_close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.as_bytes().get(..end).unwrap_or_default();
    let mut out = BytesMut::with_capacity(4 + reason.len());
    out.put_u8(0x80 | OpCode::Close.as_u8());
    // At most 2 + 123 = 125 bytes: always the 7-bit length form.
    out.put_u8((2 + reason.len()) as u8);
    out.put_u16(code);
    out.extend_from_slice(reason);
    out.freeze()
}

/// Sec-WebSocket-Accept value for a Sec-WebSocket-Key (base64(sha1(key + GUID))).
///
/// Leading and trailing ASCII whitespace of `key` is ignored, so a raw header value works.
#[must_use]
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim_ascii());
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}
