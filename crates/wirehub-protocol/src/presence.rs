//! Presence members as they go over the wire (`join`, `leave`, `presence`, webhooks), the
//! HTTP API's `GET /api/presence` query and reply, and the encoder of `join`/`leave` frames
//! from a member's stored JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A member of a presence channel: one connection, with the user and optional `info` of its
/// token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Member {
    /// The connection's session id.
    pub client: String,
    /// The token's `sub`, or null for a connection without a token.
    #[cfg_attr(feature = "schema", schemars(schema_with = "nullable_string"))]
    pub user: Option<String>,
    /// The token's optional `info` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Value>,
}

/// A string or null, always present (a member's `user`).
#[cfg(feature = "schema")]
fn nullable_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": ["string", "null"]})
}

impl Member {
    /// The member's JSON text, as kept by a broker and copied into `join`/`leave` frames.
    pub fn to_json(&self) -> String {
        // A member's fields are strings and JSON values: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Reads a member's JSON text (as [`Member::to_json`] writes it); `None` when it is not
    /// one.
    pub fn from_json(json: &[u8]) -> Option<Member> {
        serde_json::from_slice(json).ok()
    }
}

/// Whether a member event is a `join` or a `leave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberEvent {
    /// `join`.
    Join,
    /// `leave`.
    Leave,
}

impl MemberEvent {
    /// The message `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MemberEvent::Join => "join",
            MemberEvent::Leave => "leave",
        }
    }
}

/// Appends the JSON of a `join` or `leave` message to `out`. `member` must be a member's JSON
/// text ([`Member::to_json`]); it is copied verbatim, so a node that received it from another
/// node through the broker does not parse it.
pub fn encode_member_event(out: &mut Vec<u8>, event: MemberEvent, channel: &str, member: &[u8]) {
    out.reserve(40 + channel.len() + member.len());
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(event.as_str().as_bytes());
    out.extend_from_slice(b"\",\"channel\":");
    crate::encode::push_json_string(out, channel);
    out.extend_from_slice(b",\"member\":");
    out.extend_from_slice(member);
    out.push(b'}');
}

/// The query of `GET /api/presence?channel=C`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "PresenceQuery")
)]
pub struct PresenceQuery {
    /// The channel.
    pub channel: String,
}

/// The reply to `GET /api/presence` (HTTP 200), the same fields as the `presence` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "PresenceReply")
)]
pub struct PresenceReply {
    /// The channel.
    pub channel: String,
    /// How many members the channel has (exact, also when the list is truncated).
    pub count: u64,
    /// The members, at most the server's `presence_max_members`.
    pub members: Vec<Member>,
    /// True when `members` lists fewer than `count`.
    #[serde(default, skip_serializing_if = "crate::message::is_false")]
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_without_info_has_no_info_field_and_keeps_a_null_user() {
        let member = Member {
            client: "7".to_owned(),
            user: None,
            info: None,
        };
        let text = serde_json::to_string(&member).expect("a member serializes");
        assert_eq!(text, r#"{"client":"7","user":null}"#);
        let back: Member = serde_json::from_str(&text).expect("a member parses");
        assert_eq!(back, member);
    }

    #[test]
    fn member_events_match_serde() {
        let member = Member {
            client: "c1".to_owned(),
            user: Some("ann".to_owned()),
            info: Some(serde_json::json!({"name": "Ann \"A\""})),
        };
        for (event, channel) in [(MemberEvent::Join, "room:1"), (MemberEvent::Leave, "a\"b")] {
            let mut out = Vec::new();
            encode_member_event(&mut out, event, channel, member.to_json().as_bytes());
            let ours: crate::ServerMessage = serde_json::from_slice(&out).expect("valid JSON");
            let expected = match event {
                MemberEvent::Join => crate::ServerMessage::Join {
                    channel: channel.to_owned(),
                    member: member.clone(),
                },
                MemberEvent::Leave => crate::ServerMessage::Leave {
                    channel: channel.to_owned(),
                    member: member.clone(),
                },
            };
            assert_eq!(
                serde_json::to_value(&ours).expect("serializes"),
                serde_json::to_value(&expected).expect("serializes")
            );
        }
    }
}
