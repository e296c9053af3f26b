//! The wirehub WebSocket protocol, version 1, as plain data.
//!
//! This crate is the one place that knows what goes over the wire: the typed client and
//! server messages ([`ClientMessage`], [`ServerMessage`]), the parser that turns a text frame
//! into a typed request or a precise [`ParseError`], channel-name rules, the stable
//! [`ErrorCode`]s and the [`CloseCode`] table, the bodies of the HTTP API, the token
//! [`Claims`], and (with the `schema` feature) the JSON Schema of all of them.
//!
//! It does no I/O and knows nothing about tokio, sockets or the server's state, so every rule
//! here is unit-tested with plain strings.
//!
//! # Layout
//! - `channel`: channel-name and pattern validation.
//! - `claims`: the claims of a token and the permissions they grant.
//! - `codes`: error codes (in `error` messages) and close codes (in WebSocket close frames).
//! - `message`: the wire types.
//! - `parse`: text frame → [`ClientMessage`], with the error code for every kind of bad input.
//! - `encode`: the hot-path encoder for `message` deliveries.
//! - `presence`: the [`Member`] of a presence channel, `join`/`leave` encoding and the
//!   `GET /api/presence` query and reply.
//! - `http`: the bodies and replies of `POST /api/publish`, `GET /api/history` and API errors.
//! - `stats`: the body of `GET /api/stats` (the dashboard's figures).
//! - `schema` (feature `schema`): the JSON Schema of the protocol, served by the server.

mod channel;
mod claims;
mod codes;
mod encode;
mod http;
mod message;
mod parse;
mod presence;
mod retry;
#[cfg(feature = "schema")]
mod schema;
mod stats;
mod webhook;

pub use channel::{
    ChannelError, MAX_CHANNEL_LEN, MAX_IDEMPOTENCY_KEY_LEN, channel_matches, validate_channel,
    validate_idempotency_key, validate_pattern,
};
pub use claims::Claims;
pub use codes::{CloseCode, ErrorCode, ReconnectAdvice};
pub use encode::{encode_message, encode_server_message};
pub use http::{
    ApiError, ApiErrorDetail, ChannelInfo, ChannelsQuery, ChannelsReply, DisconnectReply,
    DisconnectRequest, HistoryMessage, HistoryQuery, HistoryReply, MessageKind, PublishReply,
    PublishRequest, encode_history_reply,
};
pub use message::{ClientMessage, ServerMessage, StreamPosition};
pub use parse::{ParseError, parse_client_message};
pub use presence::{Member, MemberEvent, PresenceQuery, PresenceReply, encode_member_event};
pub use retry::{MAX_HINT, RetryWindow, parse_retry_hint, reason_with_hint};
#[cfg(feature = "schema")]
pub use schema::{claims_schema, client_schema, http_schema, protocol_schema, server_schema};
pub use stats::{BrokerStats, CloseCount, StatsQuery, StatsReply, StatsSample};
pub use webhook::{WebhookBatch, WebhookEvent, WebhookEventKind};

/// The protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
