//! The Pusher protocol's frames (protocol 7): what the server sends, the client's events,
//! and [`PusherDialect`], which turns the hub's publications into Pusher events once per
//! node for every Pusher subscriber.
//!
//! A Pusher event is `{"event": NAME, "channel": C, "data": STRING}`. On the server's
//! shared channels, an event is kept as the JSON value `{"event": NAME, "data": DATA}`
//! (plus `socket_id` when a connection must not get it, and `user_id` for client events on
//! presence channels): that is what a v1 subscriber receives as the message's `data`, and a
//! v1 publish of such an object reaches Pusher clients as event NAME. Any other v1 publish
//! reaches them as event `message`, its data the published JSON as a string.
//!
//! Each event made from a publication also carries its place in the channel's stream as a
//! top-level field, `"wirehub":{"epoch":E,"offset":N}`, and so does
//! `pusher_internal:subscription_succeeded` (the position the subscription starts after):
//! Pusher clients ignore fields they do not know, and the recovery connector
//! (`@wirehub/pusher-recovery`) reads them from the raw frame to ask for what a reconnect
//! missed with `wirehub:recover` (answered by `wirehub:recovered` or
//! `wirehub:recovery_failed`).

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use wirehub_core::{Alternate, Dialect, Publication, text_frame};
use wirehub_protocol::MemberEvent;

/// The event name a v1 publish that is not `{"event", "data"}` gets.
pub(crate) const V1_EVENT: &str = "message";

/// A Pusher event as a text frame. `data` is sent as a JSON string.
pub(crate) fn event_frame(event: &str, channel: Option<&str>, data: &Value) -> Bytes {
    let mut message = json!({ "event": event, "data": data });
    if let Some(channel) = channel {
        message["channel"] = Value::from(channel);
    }
    text_frame(&message.to_string())
}

/// An event whose data is a JSON string holding `data` (as Pusher sends its own events).
pub(crate) fn string_data_frame(event: &str, channel: Option<&str>, data: &Value) -> Bytes {
    event_frame(event, channel, &Value::from(data.to_string()))
}

/// `pusher:connection_established`.
pub(crate) fn connection_established(socket_id: &str, activity_timeout: u64) -> Bytes {
    string_data_frame(
        "pusher:connection_established",
        None,
        &json!({ "socket_id": socket_id, "activity_timeout": activity_timeout }),
    )
}

/// `pusher:error` with a code (`None` sends `null`, as Pusher does for errors without one).
pub(crate) fn error(code: Option<u16>, message: &str) -> Bytes {
    event_frame(
        "pusher:error",
        None,
        &json!({ "code": code, "message": message }),
    )
}

/// `pusher:subscription_error`, as pusher-js reports an authorization failure.
pub(crate) fn subscription_error(channel: &str, kind: &str, message: &str, status: u16) -> Bytes {
    event_frame(
        "pusher:subscription_error",
        Some(channel),
        &json!({ "type": kind, "error": message, "status": status }),
    )
}

/// The top-level field that gives an event's place in its channel's stream.
pub(crate) const POSITION_FIELD: &str = "wirehub";

/// Appends `,"wirehub":{"epoch":E,"offset":N}` to the JSON object in `out` (before its
/// closing brace).
fn push_position(out: &mut String, epoch: &str, offset: u64) {
    if out.ends_with('}') {
        out.pop();
    }
    out.push_str(",\"");
    out.push_str(POSITION_FIELD);
    out.push_str("\":{\"epoch\":");
    out.push_str(&Value::from(epoch).to_string());
    out.push_str(",\"offset\":");
    out.push_str(&offset.to_string());
    out.push_str("}}");
}

/// `pusher_internal:subscription_succeeded` (its data, as a string, the presence members or
/// `{}`), with the position the subscription's deliveries start after.
pub(crate) fn subscription_succeeded(
    channel: &str,
    data: &Value,
    epoch: &str,
    offset: u64,
) -> Bytes {
    let mut out = json!({
        "event": "pusher_internal:subscription_succeeded",
        "channel": channel,
        "data": data.to_string(),
    })
    .to_string();
    push_position(&mut out, epoch, offset);
    text_frame(&out)
}

/// `wirehub:recovered`: the replay asked for with `wirehub:recover` was queued before this
/// frame, up to `offset` (`complete` when that is the stream's latest offset; otherwise the
/// rest is asked for again from there).
pub(crate) fn recovered(
    channel: &str,
    epoch: &str,
    offset: u64,
    replayed: usize,
    complete: bool,
) -> Bytes {
    string_data_frame(
        "wirehub:recovered",
        Some(channel),
        &json!({ "epoch": epoch, "offset": offset, "replayed": replayed, "complete": complete }),
    )
}

/// Why a `wirehub:recover` could not be answered with what the client missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecoveryFailure {
    /// The connection is not subscribed to the channel (the request is refused).
    NotSubscribed,
    /// The stream has another epoch now (history lost: an in-memory node restarted, a
    /// Redis failover rewound it): the position names nothing any more.
    EpochChanged,
    /// The history no longer holds every message after the position (too small, or expired).
    OutOfHistory,
    /// The position is ahead of the stream, or the request is malformed.
    InvalidPosition,
    /// The broker failed; asking again later may succeed.
    Unavailable,
    /// More requests than the connection may make (as many per second as it may hold
    /// subscriptions).
    RateLimited,
}

impl RecoveryFailure {
    /// The stable reason sent in `wirehub:recovery_failed`.
    pub(crate) fn code(self) -> &'static str {
        match self {
            RecoveryFailure::NotSubscribed => "not_subscribed",
            RecoveryFailure::EpochChanged => "epoch_changed",
            RecoveryFailure::OutOfHistory => "out_of_history",
            RecoveryFailure::InvalidPosition => "invalid_position",
            RecoveryFailure::Unavailable => "unavailable",
            RecoveryFailure::RateLimited => "rate_limited",
        }
    }
}

/// `wirehub:recovery_failed` with its reason and the stream's position now, when known.
pub(crate) fn recovery_failed(
    channel: &str,
    reason: RecoveryFailure,
    now: Option<(&str, u64)>,
) -> Bytes {
    let mut data = json!({ "reason": reason.code() });
    if let Some((epoch, offset)) = now {
        data["epoch"] = Value::from(epoch);
        data["offset"] = Value::from(offset);
    }
    string_data_frame("wirehub:recovery_failed", Some(channel), &data)
}

/// The client's side of the protocol: one event per text frame.
#[derive(Debug, Deserialize)]
pub(crate) struct ClientEvent {
    /// The event name.
    pub(crate) event: String,
    /// Its channel (client events).
    #[serde(default)]
    pub(crate) channel: Option<String>,
    /// Its data: an object for `pusher:*` events, anything for client events.
    #[serde(default)]
    pub(crate) data: Option<Box<RawValue>>,
}

/// `pusher:subscribe`'s data.
#[derive(Debug, Deserialize)]
pub(crate) struct SubscribeData {
    pub(crate) channel: String,
    #[serde(default)]
    pub(crate) auth: Option<String>,
    #[serde(default)]
    pub(crate) channel_data: Option<String>,
}

/// `wirehub:recover`'s data: the last position of `channel` that the client's app was
/// given, and the socket ids of its earlier connections (what they were not to get, it is
/// not to get either). Only the recovery connector sends it; pusher-js never does.
#[derive(Debug, Deserialize)]
pub(crate) struct RecoverData {
    pub(crate) channel: String,
    pub(crate) epoch: String,
    pub(crate) offset: u64,
    #[serde(default)]
    pub(crate) socket_ids: Vec<String>,
}

/// `pusher:signin`'s data.
#[derive(Debug, Deserialize)]
pub(crate) struct SigninData {
    pub(crate) auth: String,
    pub(crate) user_data: String,
}

/// A channel's kind, from its name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    Public,
    Private,
    Encrypted,
    Presence,
    Cache,
    PrivateCache,
    PresenceCache,
    EncryptedCache,
    /// `#server-to-user-ID`: the signed-in user's own channel.
    User,
}

impl ChannelKind {
    pub(crate) fn of(channel: &str) -> ChannelKind {
        if channel.starts_with("#server-to-user-") {
            ChannelKind::User
        } else if channel.starts_with("private-encrypted-cache-") {
            ChannelKind::EncryptedCache
        } else if channel.starts_with("private-encrypted-") {
            ChannelKind::Encrypted
        } else if channel.starts_with("private-cache-") {
            ChannelKind::PrivateCache
        } else if channel.starts_with("private-") {
            ChannelKind::Private
        } else if channel.starts_with("presence-cache-") {
            ChannelKind::PresenceCache
        } else if channel.starts_with("presence-") {
            ChannelKind::Presence
        } else if channel.starts_with("cache-") {
            ChannelKind::Cache
        } else {
            ChannelKind::Public
        }
    }

    /// Whether subscribing needs a signed `auth`.
    pub(crate) fn needs_auth(self) -> bool {
        !matches!(
            self,
            ChannelKind::Public | ChannelKind::Cache | ChannelKind::User
        )
    }

    pub(crate) fn is_presence(self) -> bool {
        matches!(self, ChannelKind::Presence | ChannelKind::PresenceCache)
    }

    pub(crate) fn is_cache(self) -> bool {
        matches!(
            self,
            ChannelKind::Cache
                | ChannelKind::PrivateCache
                | ChannelKind::PresenceCache
                | ChannelKind::EncryptedCache
        )
    }

    /// Whether clients may send `client-*` events on it.
    pub(crate) fn allows_client_events(self) -> bool {
        matches!(
            self,
            ChannelKind::Private
                | ChannelKind::Presence
                | ChannelKind::PrivateCache
                | ChannelKind::PresenceCache
        )
    }
}

/// Whether a Pusher channel name is valid: 1 to 128 bytes (the server's limit; Pusher's is
/// 200) of `A-Z a-z 0-9 _ - = @ , .` (Pusher also allows `;`, which the server's channels
/// do not), or `#server-to-user-` and a user id.
pub(crate) fn valid_channel(name: &str) -> bool {
    let body = name.strip_prefix('#').unwrap_or(name);
    !name.is_empty()
        && name.len() <= wirehub_protocol::MAX_CHANNEL_LEN
        && (body.len() == name.len() || name.starts_with("#server-to-user-"))
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'=' | b'@' | b',' | b'.')
        })
}

/// The v1 value kept on the shared channel for a Pusher event.
pub(crate) fn stored_event(
    event: &str,
    data: &RawValue,
    socket_id: Option<&str>,
    user_id: Option<&str>,
) -> String {
    let mut out = String::with_capacity(48 + event.len() + data.get().len());
    out.push_str("{\"event\":");
    out.push_str(&Value::from(event).to_string());
    out.push_str(",\"data\":");
    out.push_str(data.get());
    if let Some(socket_id) = socket_id {
        out.push_str(",\"socket_id\":");
        out.push_str(&Value::from(socket_id).to_string());
    }
    if let Some(user_id) = user_id {
        out.push_str(",\"user_id\":");
        out.push_str(&Value::from(user_id).to_string());
    }
    out.push('}');
    out
}

/// The hub's publications as Pusher events (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct PusherDialect {
    /// The users of the presence channels that this node's Pusher connections are on.
    pub(crate) rosters: super::presence::Rosters,
}

#[derive(Deserialize)]
struct V1Message<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct StoredEvent<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default, borrow)]
    socket_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    user_id: Option<std::borrow::Cow<'a, str>>,
}

impl PusherDialect {
    /// The Pusher event for one v1 `message` delivery (JSON text), and the socket that
    /// must not get it.
    pub(crate) fn translate(json: &[u8]) -> Option<(String, Option<Arc<str>>)> {
        let message: V1Message<'_> = serde_json::from_slice(json).ok()?;
        // The app's prefix (`NAME:`) is not part of the Pusher name; Pusher names hold no
        // colon, so the part after the first one is the app's channel.
        let channel = message
            .channel
            .split_once(':')
            .map_or(&*message.channel, |(_, name)| name);
        let data = message.data.get();
        let stored = if data.starts_with('{') {
            serde_json::from_str::<StoredEvent<'_>>(data).ok()
        } else {
            None
        };
        let (event, data_json, skip, user_id) = match &stored {
            Some(stored) => (
                &*stored.event,
                stored.data.get(),
                stored.socket_id.as_deref(),
                stored.user_id.as_deref(),
            ),
            None => (V1_EVENT, data, None, None),
        };
        let mut out = String::with_capacity(48 + event.len() + channel.len() + data_json.len());
        out.push_str("{\"event\":");
        out.push_str(&Value::from(event).to_string());
        out.push_str(",\"channel\":");
        out.push_str(&Value::from(channel).to_string());
        out.push_str(",\"data\":");
        if data_json.starts_with('"') {
            out.push_str(data_json);
        } else {
            out.push_str(&Value::from(data_json).to_string());
        }
        if let Some(user_id) = user_id {
            out.push_str(",\"user_id\":");
            out.push_str(&Value::from(user_id).to_string());
        }
        out.push('}');
        Some((out, skip.map(Arc::from)))
    }
}

impl Dialect for PusherDialect {
    fn encode(&self, publication: &Publication) -> Option<Alternate> {
        let (mut json, skip) = PusherDialect::translate(publication.json())?;
        push_position(&mut json, &publication.epoch, publication.offset);
        Some(Alternate {
            frame: text_frame(&json),
            skip,
        })
    }

    fn member(&self, channel: &str, event: MemberEvent, member: &[u8]) -> Option<Alternate> {
        let change = self.rosters.apply(channel, event, member)?;
        let skip = match &change {
            super::presence::Change::Added { client, .. } => Some(Arc::from(client.as_str())),
            super::presence::Change::Removed { .. } => None,
        };
        let (name, data) = super::presence::change_data(&change);
        let pusher_channel = channel.split_once(':').map_or(channel, |(_, name)| name);
        Some(Alternate {
            frame: string_data_frame(name, Some(pusher_channel), &data),
            skip,
        })
    }
}

/// A v1 `gap` frame (a subscription lost messages) as the Pusher event `wirehub:gap` on its
/// channel, so that a Pusher client can tell; other v1 frames are not for Pusher clients.
pub(crate) fn rewrite_v1(json: &[u8]) -> Option<Bytes> {
    let value: Value = serde_json::from_slice(json).ok()?;
    if value.get("type")?.as_str()? != "gap" {
        return None;
    }
    let channel = value.get("channel")?.as_str()?;
    let channel = channel.split_once(':').map_or(channel, |(_, name)| name);
    Some(string_data_frame("wirehub:gap", Some(channel), &value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v1_data: &str, expect: &str, expect_skip: Option<&str>) {
        let mut json = Vec::new();
        wirehub_protocol::encode_message(&mut json, "shop:orders", 7, v1_data.as_bytes());
        let (out, skip) = PusherDialect::translate(&json).expect("translates");
        assert_eq!(out, expect);
        assert_eq!(skip.as_deref(), expect_skip);
    }

    #[test]
    fn issue_12_publications_become_pusher_events() {
        check(
            r#"{"event":"order-shipped","data":"{\"id\":1}"}"#,
            r#"{"event":"order-shipped","channel":"orders","data":"{\"id\":1}"}"#,
            None,
        );
        check(
            r#"{"event":"client-typing","data":{"a":1},"socket_id":"1.2","user_id":"u"}"#,
            r#"{"event":"client-typing","channel":"orders","data":"{\"a\":1}","user_id":"u"}"#,
            Some("1.2"),
        );
        check(
            r#"{"price":3}"#,
            r#"{"event":"message","channel":"orders","data":"{\"price\":3}"}"#,
            None,
        );
        check(
            "42",
            r#"{"event":"message","channel":"orders","data":"42"}"#,
            None,
        );
        check(
            r#""hi""#,
            r#"{"event":"message","channel":"orders","data":"hi"}"#,
            None,
        );
    }

    #[test]
    fn issue_12_events_and_subscriptions_carry_their_stream_position() {
        let mut json = r#"{"event":"e","channel":"c","data":"1"}"#.to_owned();
        push_position(&mut json, "ep\"1", 42);
        assert_eq!(
            json,
            r#"{"event":"e","channel":"c","data":"1","wirehub":{"epoch":"ep\"1","offset":42}}"#
        );
        let frame = subscription_succeeded("c", &json!({}), "E", 7);
        let value: Value = serde_json::from_slice(&frame[2..]).expect("JSON");
        assert_eq!(value["event"], "pusher_internal:subscription_succeeded");
        assert_eq!(value["data"], "{}");
        assert_eq!(value["wirehub"], json!({ "epoch": "E", "offset": 7 }));
        let failed = recovery_failed("c", RecoveryFailure::EpochChanged, Some(("F", 3)));
        let value: Value = serde_json::from_slice(&failed[2..]).expect("JSON");
        let data: Value =
            serde_json::from_str(value["data"].as_str().expect("string")).expect("JSON");
        assert_eq!(
            data,
            json!({ "reason": "epoch_changed", "epoch": "F", "offset": 3 })
        );
    }

    #[test]
    fn issue_12_channel_names_and_kinds() {
        assert!(valid_channel("private-chat.1"));
        assert!(valid_channel("#server-to-user-42"));
        assert!(!valid_channel("#other"));
        assert!(!valid_channel("a:b"));
        assert!(!valid_channel(""));
        assert_eq!(
            ChannelKind::of("presence-cache-x"),
            ChannelKind::PresenceCache
        );
        assert_eq!(
            ChannelKind::of("private-encrypted-x"),
            ChannelKind::Encrypted
        );
        assert!(!ChannelKind::Encrypted.allows_client_events());
        assert!(ChannelKind::Presence.allows_client_events());
        assert!(!ChannelKind::Cache.needs_auth());
    }

    #[test]
    fn issue_12_stored_events_round_trip() {
        let data = RawValue::from_string("\"x\"".to_owned()).expect("raw");
        let stored = stored_event("e", &data, Some("1.2"), None);
        assert_eq!(stored, r#"{"event":"e","data":"x","socket_id":"1.2"}"#);
        let gap =
            rewrite_v1(br#"{"type":"gap","channel":"a:c","epoch":"e","offset":3}"#).expect("gap");
        let gap: Value = serde_json::from_slice(&gap[2..]).expect("JSON");
        assert_eq!(gap["event"], "wirehub:gap");
        assert_eq!(gap["channel"], "c");
        assert!(rewrite_v1(br#"{"type":"subscribed"}"#).is_none());
    }
}
