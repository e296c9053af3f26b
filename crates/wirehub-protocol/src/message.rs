//! The wire types of protocol v1: one JSON object per text frame, tagged by `type`.
//!
//! [`ClientMessage`] is what a client sends; the server builds it with
//! [`crate::parse_client_message`] so that every kind of bad input gets its own error code.
//! [`ServerMessage`] is what the server sends; clients deserialize it with serde. Unknown extra
//! fields are ignored in both directions, so either side may add optional fields.

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ErrorCode;

/// A position in a channel's stream: the stream's `epoch` and an `offset` in it.
///
/// Offsets start at 1 for the first message of an epoch and increase by one per message. An
/// epoch changes when the stream's history is lost (e.g. the in-memory broker restarted), so
/// offsets from another epoch say nothing about what was missed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct StreamPosition {
    /// The stream's epoch.
    pub epoch: String,
    /// The offset of the last message seen (0 when none).
    pub offset: u64,
}

/// A request from a client.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schemars(title = "ClientMessage")]
pub enum ClientMessage<'a> {
    /// Start receiving a channel's messages; with `since`, first replay what was missed.
    Subscribe {
        /// Echoed on the reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: Cow<'a, str>,
        /// The last position the client saw, to recover what it missed.
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<StreamPosition>,
    },
    /// Stop receiving a channel's messages.
    Unsubscribe {
        /// Echoed on the reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: Cow<'a, str>,
    },
    /// Publish `data` to every subscriber of `channel`.
    Publish {
        /// Echoed on the `ack`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: Cow<'a, str>,
        /// Any JSON value, delivered verbatim.
        #[schemars(with = "serde_json::Value")]
        data: Cow<'a, RawValue>,
    },
    /// Ask for a `pong` (liveness check for clients that cannot see WebSocket pings).
    Ping {
        /// Echoed on the `pong`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// Replace the connection's token before it expires.
    Refresh {
        /// Echoed on the reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The new token.
        token: Cow<'a, str>,
    },
}

impl ClientMessage<'_> {
    /// The request's `id`, if it had one.
    pub fn id(&self) -> Option<u64> {
        match self {
            ClientMessage::Subscribe { id, .. }
            | ClientMessage::Unsubscribe { id, .. }
            | ClientMessage::Publish { id, .. }
            | ClientMessage::Ping { id }
            | ClientMessage::Refresh { id, .. } => *id,
        }
    }

    /// The `type` tag of this request.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::Unsubscribe { .. } => "unsubscribe",
            ClientMessage::Publish { .. } => "publish",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Refresh { .. } => "refresh",
        }
    }
}

/// A message from the server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schemars(title = "ServerMessage")]
pub enum ServerMessage {
    /// The first message on every connection.
    Welcome {
        /// The protocol version ([`crate::PROTOCOL_VERSION`]).
        version: u32,
        /// The connection's session id (also in the server's logs).
        session: String,
        /// The heartbeat interval in seconds: a client that saw nothing for about twice this
        /// long may assume the server is gone. Whole seconds are written as an integer.
        #[serde(serialize_with = "seconds")]
        heartbeat: f64,
    },
    /// The reply to `subscribe`.
    Subscribed {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// The channel stream's current epoch.
        epoch: String,
        /// The offset of the channel's latest message (0 when none), after any replay.
        offset: u64,
        /// Present when `since` was given: whether every missed message was replayed.
        /// When false, the client missed messages it cannot get back and should reload state.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    /// The reply to `unsubscribe`.
    Unsubscribed {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
    },
    /// A message published to a subscribed channel.
    Message {
        /// The channel.
        channel: String,
        /// The published data, verbatim.
        #[schemars(with = "serde_json::Value")]
        data: Box<RawValue>,
        /// The message's offset in the channel's stream (strictly increasing per epoch).
        offset: u64,
    },
    /// The reply to `publish`: the message was accepted at this offset.
    Ack {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The offset assigned to the published message.
        offset: u64,
    },
    /// The reply to `refresh`: the new token is in force.
    Refreshed {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// When the new token expires, in seconds since the Unix epoch.
        expires: u64,
    },
    /// The reply to `ping`.
    Pong {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
    /// A request could not be carried out; the connection stays open.
    Error {
        /// The id of the request that failed, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// A stable snake_case code.
        code: ErrorCode,
        /// An explanation for people.
        message: String,
    },
}

/// Writes whole seconds as an integer (`30`, not `30.0`), for clients that parse integers.
fn seconds<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && *value >= 0.0 && *value <= u64::MAX as f64 {
        serializer.serialize_u64(*value as u64)
    } else {
        serializer.serialize_f64(*value)
    }
}
