//! The wire types of protocol v1: one JSON object per text frame, tagged by `type`.
//!
//! [`ClientMessage`] is what a client sends; the server builds it with
//! [`crate::parse_client_message`] so that every kind of bad input gets its own error code.
//! [`ServerMessage`] is what the server sends; clients deserialize it with serde. Unknown extra
//! fields are ignored in both directions, so either side may add optional fields.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ErrorCode;

/// A position in a channel's stream: the stream's `epoch` and an `offset` in it.
///
/// Offsets start at 1 for the first message of an epoch and increase by one per message. An
/// epoch changes when the stream's history is lost (e.g. the in-memory broker restarted), so
/// offsets from another epoch say nothing about what was missed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StreamPosition {
    /// The stream's epoch.
    pub epoch: String,
    /// The offset of the last message seen (0 when none).
    pub offset: u64,
}

/// A request from a client.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "ClientMessage")
)]
#[serde(tag = "type", rename_all = "snake_case")]
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
        #[cfg_attr(feature = "schema", schemars(with = "serde_json::Value"))]
        data: Cow<'a, RawValue>,
        /// Makes a retried publish safe: while a message published with the same key is still
        /// in the channel's history, the server does not publish again but acknowledges with
        /// that message's offset (and `duplicate: true`). 1 to 64 visible ASCII characters.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 64)))]
        idempotency_key: Option<Cow<'a, str>>,
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
///
/// Deserializing works with `serde_json` (a `message`'s `data` is kept as raw JSON, which serde
/// cannot buffer inside a tagged enum, so the type is read first and the message parsed
/// once more as the matching variant).
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "ServerMessage")
)]
#[serde(tag = "type", rename_all = "snake_case")]
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
        /// The offset of the channel's latest message when the subscription took effect (0
        /// when none); replayed messages, after a recovery, lead up to it.
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
        #[cfg_attr(feature = "schema", schemars(with = "serde_json::Value"))]
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
        /// True when the publish carried an `idempotency_key` already used by a message still
        /// in the channel's history: nothing was published again, `offset` is that message's.
        #[serde(default, skip_serializing_if = "is_false")]
        duplicate: bool,
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
    /// Publications of `channel` that this subscription will not be sent: its subscriber fell
    /// behind under `on_slow = "gap"`, or a broker fault lost them. The subscription stays; the
    /// client recovers what it can with `subscribe` + `since` (its last position).
    Gap {
        /// The channel.
        channel: String,
        /// The stream's epoch now.
        epoch: String,
        /// The stream's offset now (the last publication assigned).
        offset: u64,
        /// The first offset not sent, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<u64>,
        /// The last offset not sent, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<u64>,
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

/// The variants of [`ServerMessage`] that serde can derive, for deserializing.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Derived {
    Welcome {
        version: u32,
        session: String,
        heartbeat: f64,
    },
    Subscribed {
        #[serde(default)]
        id: Option<u64>,
        channel: String,
        epoch: String,
        offset: u64,
        #[serde(default)]
        recovered: Option<bool>,
    },
    Unsubscribed {
        #[serde(default)]
        id: Option<u64>,
        channel: String,
    },
    Ack {
        #[serde(default)]
        id: Option<u64>,
        offset: u64,
        #[serde(default)]
        duplicate: bool,
    },
    Refreshed {
        #[serde(default)]
        id: Option<u64>,
        expires: u64,
    },
    Pong {
        #[serde(default)]
        id: Option<u64>,
    },
    Gap {
        channel: String,
        epoch: String,
        offset: u64,
        #[serde(default)]
        from: Option<u64>,
        #[serde(default)]
        to: Option<u64>,
    },
    Error {
        #[serde(default)]
        id: Option<u64>,
        code: ErrorCode,
        message: String,
    },
}

#[derive(Deserialize)]
struct Delivery {
    channel: String,
    data: Box<RawValue>,
    offset: u64,
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
        let kind: Kind<'_> = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
        if kind.kind == "message" {
            let Delivery {
                channel,
                data,
                offset,
            } = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
            return Ok(ServerMessage::Message {
                channel,
                data,
                offset,
            });
        }
        let derived: Derived = serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
        Ok(match derived {
            Derived::Welcome {
                version,
                session,
                heartbeat,
            } => ServerMessage::Welcome {
                version,
                session,
                heartbeat,
            },
            Derived::Subscribed {
                id,
                channel,
                epoch,
                offset,
                recovered,
            } => ServerMessage::Subscribed {
                id,
                channel,
                epoch,
                offset,
                recovered,
            },
            Derived::Unsubscribed { id, channel } => ServerMessage::Unsubscribed { id, channel },
            Derived::Ack {
                id,
                offset,
                duplicate,
            } => ServerMessage::Ack {
                id,
                offset,
                duplicate,
            },
            Derived::Refreshed { id, expires } => ServerMessage::Refreshed { id, expires },
            Derived::Pong { id } => ServerMessage::Pong { id },
            Derived::Gap {
                channel,
                epoch,
                offset,
                from,
                to,
            } => ServerMessage::Gap {
                channel,
                epoch,
                offset,
                from,
                to,
            },
            Derived::Error { id, code, message } => ServerMessage::Error { id, code, message },
        })
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_message_round_trips() {
        for text in [
            r#"{"type":"welcome","version":1,"session":"s","heartbeat":30}"#,
            r#"{"type":"subscribed","id":1,"channel":"c","epoch":"e","offset":0,"recovered":true}"#,
            r#"{"type":"subscribed","channel":"c","epoch":"e","offset":5}"#,
            r#"{"type":"unsubscribed","channel":"c"}"#,
            r#"{"type":"message","channel":"c","data":{"a":[1,2,{"b":null}]},"offset":3}"#,
            r#"{"type":"ack","id":2,"offset":3}"#,
            r#"{"type":"refreshed","expires":99}"#,
            r#"{"type":"pong"}"#,
            r#"{"type":"gap","channel":"c","epoch":"e","offset":9,"from":3,"to":9}"#,
            r#"{"type":"gap","channel":"c","epoch":"e","offset":9}"#,
            r#"{"type":"error","id":4,"code":"forbidden","message":"no"}"#,
        ] {
            let parsed: ServerMessage = serde_json::from_str(text).expect(text);
            let back = serde_json::to_value(&parsed).expect("serializes");
            let original: serde_json::Value = serde_json::from_str(text).expect("json");
            assert_eq!(back, original, "{text}");
        }
        assert!(serde_json::from_str::<ServerMessage>(r#"{"type":"bogus"}"#).is_err());
        assert!(serde_json::from_str::<ServerMessage>(r#"{"channel":"c"}"#).is_err());
        let message: ServerMessage = serde_json::from_str(
            r#"{"offset":1,"data":"x","type":"message","channel":"c","extra":1}"#,
        )
        .expect("field order and extra fields do not matter");
        assert!(matches!(message, ServerMessage::Message { offset: 1, .. }));
    }
}
