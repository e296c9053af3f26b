//! The wire types of protocol v1: one JSON object per text frame, tagged by `type`.
//!
//! [`ClientMessage`] is what a client sends; the server builds it with
//! [`crate::parse_client_message`] so that every kind of bad input gets its own error code.
//! [`ServerMessage`] is what the server sends; clients deserialize it with serde. Unknown extra
//! fields are ignored in both directions, so either side may add optional fields.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ErrorCode, Member};

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
    /// Ask for the members of a presence channel (a `presence` reply). Needs the permission
    /// to subscribe to the channel, not a subscription.
    Presence {
        /// Echoed on the reply.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: Cow<'a, str>,
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
            | ClientMessage::Refresh { id, .. }
            | ClientMessage::Presence { id, .. } => *id,
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
            ClientMessage::Presence { .. } => "presence",
        }
    }
}

/// A message from the server.
///
/// Deserializing works with `serde_json` and reads the text once, in any field order (see the
/// `Deserialize` impl below); a `message`'s `data` is kept as raw JSON, verbatim. Clients parse
/// every frame this way: `serde_json::from_str::<ServerMessage>(text)`.
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
    /// The reply to `presence`: the channel's members.
    Presence {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// The channel.
        channel: String,
        /// How many members the channel has (exact, also when the list is truncated).
        count: u64,
        /// The members, at most the server's `presence_max_members`.
        members: Vec<Member>,
        /// True when `members` lists fewer than `count`.
        #[serde(default, skip_serializing_if = "is_false")]
        truncated: bool,
    },
    /// A member joined a presence channel this connection is subscribed to.
    Join {
        /// The channel.
        channel: String,
        /// Who joined.
        member: Member,
    },
    /// A member left a presence channel this connection is subscribed to (its connection
    /// unsubscribed or closed, or its lease expired after its node died).
    Leave {
        /// The channel.
        channel: String,
        /// Who left.
        member: Member,
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

/// Reads a server message in one pass over its fields, whatever their order: each field is
/// parsed straight into its slot (a `message`'s `data` kept verbatim as raw JSON, which serde
/// cannot buffer inside an internally tagged enum), and the variant is built at the end from
/// the `type`. Once the `type` is known, fields that its variant does not have are skipped
/// unparsed, as unknown fields are; before that they must have the type their name implies.
impl<'de> Deserialize<'de> for ServerMessage {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ServerMessageVisitor)
    }
}

/// The `type` of a server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Welcome,
    Subscribed,
    Unsubscribed,
    Message,
    Ack,
    Refreshed,
    Pong,
    Gap,
    Presence,
    Join,
    Leave,
    Error,
}

const KINDS: &[&str] = &[
    "welcome",
    "subscribed",
    "unsubscribed",
    "message",
    "ack",
    "refreshed",
    "pong",
    "gap",
    "presence",
    "join",
    "leave",
    "error",
];

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl serde::de::Visitor<'_> for KindVisitor {
            type Value = Kind;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a server message type")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Kind, E> {
                Ok(match value {
                    "welcome" => Kind::Welcome,
                    "subscribed" => Kind::Subscribed,
                    "unsubscribed" => Kind::Unsubscribed,
                    "message" => Kind::Message,
                    "ack" => Kind::Ack,
                    "refreshed" => Kind::Refreshed,
                    "pong" => Kind::Pong,
                    "gap" => Kind::Gap,
                    "presence" => Kind::Presence,
                    "join" => Kind::Join,
                    "leave" => Kind::Leave,
                    "error" => Kind::Error,
                    other => return Err(E::unknown_variant(other, KINDS)),
                })
            }
        }
        deserializer.deserialize_str(KindVisitor)
    }
}

/// A field name of any server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Type,
    Id,
    Channel,
    Data,
    Offset,
    Epoch,
    Recovered,
    Version,
    Session,
    Heartbeat,
    Duplicate,
    Expires,
    From,
    To,
    Code,
    Message,
    Count,
    Members,
    Truncated,
    Member,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl serde::de::Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Field, E> {
                Ok(match value {
                    "type" => Field::Type,
                    "id" => Field::Id,
                    "channel" => Field::Channel,
                    "data" => Field::Data,
                    "offset" => Field::Offset,
                    "epoch" => Field::Epoch,
                    "recovered" => Field::Recovered,
                    "version" => Field::Version,
                    "session" => Field::Session,
                    "heartbeat" => Field::Heartbeat,
                    "duplicate" => Field::Duplicate,
                    "expires" => Field::Expires,
                    "from" => Field::From,
                    "to" => Field::To,
                    "code" => Field::Code,
                    "message" => Field::Message,
                    "count" => Field::Count,
                    "members" => Field::Members,
                    "truncated" => Field::Truncated,
                    "member" => Field::Member,
                    _ => Field::Other,
                })
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

impl Field {
    /// Whether a message of this kind has this field.
    fn belongs_to(self, kind: Kind) -> bool {
        use Field as F;
        match kind {
            Kind::Welcome => matches!(self, F::Version | F::Session | F::Heartbeat),
            Kind::Subscribed => matches!(
                self,
                F::Id | F::Channel | F::Epoch | F::Offset | F::Recovered
            ),
            Kind::Unsubscribed => matches!(self, F::Id | F::Channel),
            Kind::Message => matches!(self, F::Channel | F::Data | F::Offset),
            Kind::Ack => matches!(self, F::Id | F::Offset | F::Duplicate),
            Kind::Refreshed => matches!(self, F::Id | F::Expires),
            Kind::Pong => matches!(self, F::Id),
            Kind::Gap => matches!(self, F::Channel | F::Epoch | F::Offset | F::From | F::To),
            Kind::Presence => matches!(
                self,
                F::Id | F::Channel | F::Count | F::Members | F::Truncated
            ),
            Kind::Join | Kind::Leave => matches!(self, F::Channel | F::Member),
            Kind::Error => matches!(self, F::Id | F::Code | F::Message),
        }
    }
}

/// The fields read so far; `None`: not seen.
#[derive(Default)]
struct Slots {
    id: Option<Option<u64>>,
    channel: Option<String>,
    data: Option<Box<RawValue>>,
    offset: Option<u64>,
    epoch: Option<String>,
    recovered: Option<Option<bool>>,
    version: Option<u32>,
    session: Option<String>,
    heartbeat: Option<f64>,
    duplicate: Option<bool>,
    expires: Option<u64>,
    from: Option<Option<u64>>,
    to: Option<Option<u64>>,
    code: Option<ErrorCode>,
    message: Option<String>,
    count: Option<u64>,
    members: Option<Vec<Member>>,
    truncated: Option<bool>,
    member: Option<Member>,
}

struct ServerMessageVisitor;

impl<'de> serde::de::Visitor<'de> for ServerMessageVisitor {
    type Value = ServerMessage;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a server message (a JSON object with a `type`)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<ServerMessage, A::Error> {
        use serde::de::Error as _;

        /// Reads a field's value into its slot; a field given twice is an error, as with
        /// derived types.
        fn fill<'de, A: serde::de::MapAccess<'de>, T: Deserialize<'de>>(
            map: &mut A,
            slot: &mut Option<T>,
            name: &'static str,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(A::Error::duplicate_field(name));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }

        let mut kind: Option<Kind> = None;
        let mut s = Slots::default();
        while let Some(field) = map.next_key::<Field>()? {
            if field == Field::Type {
                if kind.is_some() {
                    return Err(A::Error::duplicate_field("type"));
                }
                kind = Some(map.next_value()?);
                continue;
            }
            if field == Field::Other || kind.is_some_and(|kind| !field.belongs_to(kind)) {
                map.next_value::<serde::de::IgnoredAny>()?;
                continue;
            }
            match field {
                Field::Id => fill(&mut map, &mut s.id, "id")?,
                Field::Channel => fill(&mut map, &mut s.channel, "channel")?,
                Field::Data => fill(&mut map, &mut s.data, "data")?,
                Field::Offset => fill(&mut map, &mut s.offset, "offset")?,
                Field::Epoch => fill(&mut map, &mut s.epoch, "epoch")?,
                Field::Recovered => fill(&mut map, &mut s.recovered, "recovered")?,
                Field::Version => fill(&mut map, &mut s.version, "version")?,
                Field::Session => fill(&mut map, &mut s.session, "session")?,
                Field::Heartbeat => fill(&mut map, &mut s.heartbeat, "heartbeat")?,
                Field::Duplicate => fill(&mut map, &mut s.duplicate, "duplicate")?,
                Field::Expires => fill(&mut map, &mut s.expires, "expires")?,
                Field::From => fill(&mut map, &mut s.from, "from")?,
                Field::To => fill(&mut map, &mut s.to, "to")?,
                Field::Code => fill(&mut map, &mut s.code, "code")?,
                Field::Message => fill(&mut map, &mut s.message, "message")?,
                Field::Count => fill(&mut map, &mut s.count, "count")?,
                Field::Members => fill(&mut map, &mut s.members, "members")?,
                Field::Truncated => fill(&mut map, &mut s.truncated, "truncated")?,
                Field::Member => fill(&mut map, &mut s.member, "member")?,
                Field::Type | Field::Other => {}
            }
        }
        let kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
        fn need<T, E: serde::de::Error>(slot: Option<T>, name: &'static str) -> Result<T, E> {
            slot.ok_or_else(|| E::missing_field(name))
        }
        let id = s.id.flatten();
        Ok(match kind {
            Kind::Welcome => ServerMessage::Welcome {
                version: need(s.version, "version")?,
                session: need(s.session, "session")?,
                heartbeat: need(s.heartbeat, "heartbeat")?,
            },
            Kind::Subscribed => ServerMessage::Subscribed {
                id,
                channel: need(s.channel, "channel")?,
                epoch: need(s.epoch, "epoch")?,
                offset: need(s.offset, "offset")?,
                recovered: s.recovered.flatten(),
            },
            Kind::Unsubscribed => ServerMessage::Unsubscribed {
                id,
                channel: need(s.channel, "channel")?,
            },
            Kind::Message => ServerMessage::Message {
                channel: need(s.channel, "channel")?,
                data: need(s.data, "data")?,
                offset: need(s.offset, "offset")?,
            },
            Kind::Ack => ServerMessage::Ack {
                id,
                offset: need(s.offset, "offset")?,
                duplicate: s.duplicate.unwrap_or(false),
            },
            Kind::Refreshed => ServerMessage::Refreshed {
                id,
                expires: need(s.expires, "expires")?,
            },
            Kind::Pong => ServerMessage::Pong { id },
            Kind::Gap => ServerMessage::Gap {
                channel: need(s.channel, "channel")?,
                epoch: need(s.epoch, "epoch")?,
                offset: need(s.offset, "offset")?,
                from: s.from.flatten(),
                to: s.to.flatten(),
            },
            Kind::Presence => ServerMessage::Presence {
                id,
                channel: need(s.channel, "channel")?,
                count: need(s.count, "count")?,
                members: need(s.members, "members")?,
                truncated: s.truncated.unwrap_or(false),
            },
            Kind::Join => ServerMessage::Join {
                channel: need(s.channel, "channel")?,
                member: need(s.member, "member")?,
            },
            Kind::Leave => ServerMessage::Leave {
                channel: need(s.channel, "channel")?,
                member: need(s.member, "member")?,
            },
            Kind::Error => ServerMessage::Error {
                id,
                code: need(s.code, "code")?,
                message: need(s.message, "message")?,
            },
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
            r#"{"type":"presence","id":5,"channel":"c","count":3,"members":[{"client":"a","user":"u","info":{"n":1}},{"client":"b","user":null}],"truncated":true}"#,
            r#"{"type":"presence","channel":"c","count":0,"members":[]}"#,
            r#"{"type":"join","channel":"c","member":{"client":"a","user":"u"}}"#,
            r#"{"type":"leave","channel":"c","member":{"client":"a","user":null,"info":"x"}}"#,
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

    #[track_caller]
    fn parse(text: &str) -> Result<ServerMessage, serde_json::Error> {
        serde_json::from_str(text)
    }

    #[test]
    fn deliveries_keep_their_data_verbatim() {
        match parse(r#"{"type":"message","channel":"c","data":{"a":[1, 2]},"offset":7,"extra":1}"#)
        {
            Ok(ServerMessage::Message {
                channel,
                data,
                offset,
            }) => assert_eq!(
                (channel.as_str(), data.get(), offset),
                ("c", r#"{"a":[1, 2]}"#, 7)
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"type":"message","channel":"c","data":null,"offset":1}"#),
            Ok(ServerMessage::Message { data, .. }) if data.get() == "null"
        ));
        // The type may come last: the data is still read once, as it stands.
        assert!(matches!(
            parse(r#"{"data":[1,{"x":"y"}],"offset":2,"channel":"c","type":"message"}"#),
            Ok(ServerMessage::Message { data, offset: 2, .. }) if data.get() == r#"[1,{"x":"y"}]"#
        ));
    }

    #[test]
    fn bad_server_messages_are_errors() {
        for text in [
            r#"{"type":"message","channel":"c","offset":1}"#,
            r#"{"type":"message","channel":"c","data":1}"#,
            r#"{"type":"novel"}"#,
            r#"{"type":"ack","offset":1,"offset":2}"#,
            r#"{"type":"ack","type":"ack","offset":1}"#,
            r#"{"type":"ack","offset":"one"}"#,
            r#"{"type":"welcome","version":1,"session":"s"}"#,
            r#"{"type":7}"#,
            "[]",
            "\"message\"",
            "{",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn optional_fields_and_unknown_codes() {
        assert!(matches!(
            parse(r#"{"type":"ack","id":3,"offset":9}"#),
            Ok(ServerMessage::Ack {
                id: Some(3),
                offset: 9,
                duplicate: false
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"ack","id":null,"offset":9,"duplicate":true}"#),
            Ok(ServerMessage::Ack {
                id: None,
                duplicate: true,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"error","code":"from_the_future","message":"m"}"#),
            Ok(ServerMessage::Error {
                code: ErrorCode::Unknown,
                ..
            })
        ));
        assert!(matches!(
            parse(r#"{"type":"welcome","version":1,"session":"s","heartbeat":2.5}"#),
            Ok(ServerMessage::Welcome { heartbeat, .. }) if heartbeat == 2.5
        ));
        // Once the type is known, another message's field of another kind is ignored, as any
        // unknown field is.
        assert!(matches!(
            parse(r#"{"type":"ack","offset":4,"message":5,"data":[]}"#),
            Ok(ServerMessage::Ack { offset: 4, .. })
        ));
        assert!(matches!(
            parse(r#"{"type":"subscribed","channel":"c","epoch":"e","offset":0,"recovered":null}"#),
            Ok(ServerMessage::Subscribed {
                recovered: None,
                ..
            })
        ));
    }
}
