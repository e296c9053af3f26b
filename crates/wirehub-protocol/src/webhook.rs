//! The body the server POSTs to `--webhook-url`: `{"events": [EVENT...]}`, each EVENT with a
//! unique `id` (for de-duplication: delivery is at least once), its `type`, `time_ms` and the
//! fields of its type.

use serde::{Deserialize, Serialize};

use crate::Member;

/// One webhook request's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "WebhookBatch")
)]
pub struct WebhookBatch {
    /// The events, in the order they happened on the node that sent them.
    pub events: Vec<WebhookEvent>,
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookEvent {
    /// Unique per event; a retried request carries the same ids.
    pub id: String,
    /// When it happened, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The `type` and its fields.
    #[serde(flatten)]
    pub kind: WebhookEventKind,
}

/// The types of lifecycle events and their fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WebhookEventKind {
    /// A WebSocket connection was established.
    Connect {
        /// Its session id (`welcome.session`).
        client: String,
        /// The token's `sub`, or null without a token.
        user: Option<String>,
    },
    /// A connection ended.
    Disconnect {
        /// Its session id.
        client: String,
        /// The token's `sub`, or null without a token.
        user: Option<String>,
        /// The close code (1006: lost without a close handshake).
        code: u16,
        /// Why, for people.
        reason: String,
    },
    /// A connection subscribed to a channel.
    Subscribe {
        /// The session id.
        client: String,
        /// The channel.
        channel: String,
    },
    /// A subscription ended (`unsubscribe`, a revoked permission, or the connection's end).
    Unsubscribe {
        /// The session id.
        client: String,
        /// The channel.
        channel: String,
    },
    /// The channel got its first subscriber anywhere in the cluster.
    ChannelOccupied {
        /// The channel.
        channel: String,
    },
    /// The channel's last subscriber anywhere in the cluster is gone (debounced).
    ChannelVacated {
        /// The channel.
        channel: String,
    },
    /// A member joined a presence channel.
    MemberJoin {
        /// The channel.
        channel: String,
        /// Who.
        member: Member,
    },
    /// A member left a presence channel.
    MemberLeave {
        /// The channel.
        channel: String,
        /// Who.
        member: Member,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_flat_with_its_type() {
        let batch = WebhookBatch {
            events: vec![WebhookEvent {
                id: "a-1".to_owned(),
                time_ms: 5,
                kind: WebhookEventKind::Disconnect {
                    client: "c".to_owned(),
                    user: None,
                    code: 1006,
                    reason: "lost".to_owned(),
                },
            }],
        };
        let text = serde_json::to_string(&batch).expect("serializes");
        assert_eq!(
            text,
            r#"{"events":[{"id":"a-1","time_ms":5,"type":"disconnect","client":"c","user":null,"code":1006,"reason":"lost"}]}"#
        );
        let back: WebhookBatch = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, batch);
    }
}
