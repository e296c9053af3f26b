//! A sans-IO WebSocket (RFC 6455) framing codec, for the server and for the Rust SDK.
//!
//! The server's session loop (and the SDK's connection) owns the socket and the read buffer;
//! this crate only turns bytes into messages and messages into bytes, so every protocol rule
//! is unit-tested without a network and the same code serves the server, the client SDK, the
//! tests and the `echo` example.
//!
//! - [`Decoder`] parses masked client frames from the front of a `BytesMut`, reassembles
//!   fragmented messages, validates text incrementally (invalid UTF-8 fails at the first bad
//!   byte, even inside a frame that has not fully arrived) and enforces a message size limit
//!   from the frame header alone, before any payload is buffered. Every violation is a
//!   [`ProtocolError`] that names the close code to send.
//! - [`encode_frame`], [`write_frame`], [`write_header`] and [`encode_close`] build unmasked
//!   server frames; [`header_len`] tells the header size for a payload length.
//! - The client's side: [`Decoder::for_client`] takes the server's unmasked frames,
//!   [`encode_client_frame`] / [`write_client_frame`] / [`encode_client_close`] / [`deflate_client_frame`] build masked
//!   ones, [`CLIENT_OFFER`] and [`accept_response`] negotiate permessage-deflate.
//! - [`accept_key`] computes the `Sec-WebSocket-Accept` value for the opening handshake.
//!
//! - permessage-deflate (RFC 7692, `deflate`): [`negotiate`] picks a client's offer and
//!   [`Deflate::response`] answers it; [`Decoder::with_deflate`] inflates compressed messages
//!   (RSV1) under a cap; [`deflate_frame`] compresses one outgoing message on its own
//!   (`server_no_context_takeover`), so that one compressed frame can be shared by every
//!   connection that negotiated the extension. No other extension is supported.
//!   [`ExtensionError`]: a server's answer a client must refuse.
//!
//! # Layout
//! - `decode`: the [`Decoder`] and the [`Message`] / [`CloseFrame`] types.
//! - `deflate`: permessage-deflate: negotiation, per-thread compressor and decompressor.
//! - `encode`: [`OpCode`], server frame encoding and the handshake accept key.
//! - `error`: [`ProtocolError`] and its close codes.
//! - `mask`: word-at-a-time (un)masking.
//! - `utf8`: the incremental UTF-8 validator used across fragments.

mod decode;
mod deflate;
mod encode;
mod error;
mod mask;
mod utf8;

#[cfg(test)]
mod tests;

pub use decode::{CloseFrame, Decoder, Message};
pub use deflate::{
    CLIENT_OFFER, Deflate, DeflateConfig, ExtensionError, PERMESSAGE_DEFLATE, ServerDeflate,
    accept_response, deflate_client_frame, deflate_frame, negotiate,
};
pub use encode::{
    OpCode, accept_key, encode_client_close, encode_client_frame, encode_close, encode_frame,
    header_len, write_client_frame, write_frame, write_header,
};
pub use error::ProtocolError;

/// Largest payload of a control frame (Close, Ping, Pong), RFC 6455 §5.5.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
