//! The bodies of the HTTP API on the server's port: `POST /api/publish`, `GET /api/history`,
//! `GET /api/channels`, `POST /api/disconnect` and the error body every API route answers with.
//!
//! The server reads [`PublishRequest`] and [`HistoryQuery`] and writes the replies; programs
//! calling the API may use the same types. [`encode_history_reply`] writes a history page
//! from the stored `message` deliveries without parsing them again; its output deserializes
//! as [`HistoryReply`] (tested below).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ErrorCode;

/// The body of `POST /api/publish`: `{"channel": C, "data": ANY[, "idempotency_key": K]}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "PublishRequest")
)]
pub struct PublishRequest<'a> {
    /// The channel.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// Any JSON value, delivered verbatim.
    #[serde(borrow)]
    #[cfg_attr(feature = "schema", schemars(with = "serde_json::Value"))]
    pub data: &'a RawValue,
    /// Makes a retried publish safe, as in the WebSocket `publish`: while a message published
    /// with the same key is still in the channel's history, the reply carries that message's
    /// offset and `duplicate: true`. 1 to 64 visible ASCII characters.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 64)))]
    pub idempotency_key: Option<Cow<'a, str>>,
}

/// The reply to `POST /api/publish` (HTTP 200): the offset the message was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "PublishReply")
)]
pub struct PublishReply {
    /// The offset assigned to the published message (or, for a duplicate, the original's).
    pub offset: u64,
    /// True when the `idempotency_key` was already used by a message still in the history:
    /// nothing was published again.
    #[serde(default, skip_serializing_if = "crate::message::is_false")]
    pub duplicate: bool,
}

/// The query of `GET /api/history?channel=C[&since=N][&epoch=E][&limit=M]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "HistoryQuery")
)]
pub struct HistoryQuery {
    /// The channel.
    pub channel: String,
    /// Return the kept messages after this offset (default 0: everything kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// The epoch `since` belongs to (default: the stream's current epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// At most this many messages (default [`HistoryQuery::DEFAULT_LIMIT`], at most
    /// [`HistoryQuery::MAX_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl HistoryQuery {
    /// The page size when `limit` is not given.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The largest page size; a larger `limit` is lowered to it.
    pub const MAX_LIMIT: usize = 10_000;

    /// The page size this query asks for, within the bounds.
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .min(Self::MAX_LIMIT)
    }
}

/// The reply to `GET /api/history` (HTTP 200): the channel's position and a page of the kept
/// messages, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "HistoryReply")
)]
pub struct HistoryReply {
    /// The channel.
    pub channel: String,
    /// The stream's current epoch.
    pub epoch: String,
    /// The stream's current offset (its latest message; 0 when none).
    pub offset: u64,
    /// Whether the page starts right after `since`: false when messages after it have left
    /// the history (or the epoch changed), so some cannot be returned.
    pub complete: bool,
    /// The messages, each as the WebSocket `message` delivery.
    pub messages: Vec<HistoryMessage>,
}

/// One message of a history page: the same object as the WebSocket `message` delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HistoryMessage {
    /// Always `"message"`.
    #[serde(rename = "type")]
    pub kind: MessageKind,
    /// The channel.
    pub channel: String,
    /// The published data, verbatim.
    #[cfg_attr(feature = "schema", schemars(with = "serde_json::Value"))]
    pub data: Box<RawValue>,
    /// The message's offset in the channel's stream.
    pub offset: u64,
}

/// The `type` of a [`HistoryMessage`]: only `"message"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A published message.
    Message,
}

/// The body of every HTTP API error (status 4xx or 5xx):
/// `{"error": {"code": CODE, "message": TEXT}}`, with the same codes as the WebSocket `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "ApiError")
)]
pub struct ApiError {
    /// What went wrong.
    pub error: ApiErrorDetail,
}

/// The inside of an [`ApiError`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ApiErrorDetail {
    /// A stable snake_case code.
    pub code: ErrorCode,
    /// An explanation for people.
    pub message: String,
}

impl ApiError {
    /// An error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            error: ApiErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

/// Writes a [`HistoryReply`] whose messages are already-encoded `message` deliveries (as the
/// broker keeps them), copying each verbatim.
pub fn encode_history_reply<'m>(
    channel: &str,
    epoch: &str,
    offset: u64,
    complete: bool,
    messages: impl ExactSizeIterator<Item = &'m [u8]> + Clone,
) -> Vec<u8> {
    let size: usize = messages.clone().map(|m| m.len() + 1).sum();
    let mut out = Vec::with_capacity(96 + channel.len() + epoch.len() + size);
    out.extend_from_slice(b"{\"channel\":");
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, channel);
    out.extend_from_slice(b",\"epoch\":");
    let _ = serde_json::to_writer(&mut out, epoch);
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
    out.extend_from_slice(if complete {
        b",\"complete\":true,\"messages\":["
    } else {
        b",\"complete\":false,\"messages\":["
    });
    for (index, message) in messages.enumerate() {
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(message);
    }
    out.extend_from_slice(b"]}");
    out
}

/// The query of `GET /api/channels[?prefix=P][&after=C][&limit=N]`: the channels with
/// subscribers, in name order, a page at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "ChannelsQuery")
)]
pub struct ChannelsQuery {
    /// Only channels whose name starts with this (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The page after this channel name (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many channels (default [`ChannelsQuery::DEFAULT_LIMIT`], at most
    /// [`ChannelsQuery::MAX_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl ChannelsQuery {
    /// The page size when `limit` is not given.
    pub const DEFAULT_LIMIT: usize = 100;
    /// The largest page size; a larger `limit` is lowered to it.
    pub const MAX_LIMIT: usize = 1000;

    /// The page size this query asks for, within the bounds (at least 1).
    pub fn page_size(&self) -> usize {
        self.limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT)
    }
}

/// The reply to `GET /api/channels` (HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "ChannelsReply")
)]
pub struct ChannelsReply {
    /// The channels of this page, in name order.
    pub channels: Vec<ChannelInfo>,
    /// Where the next page starts (pass it as `after`); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Whether `subscribers` counts the subscriptions of every node (Redis broker) or of the
    /// node that answered only.
    pub cluster_wide: bool,
}

/// A channel with subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ChannelInfo {
    /// The channel.
    pub channel: String,
    /// Its subscriptions (one per subscribed connection).
    pub subscribers: u64,
}

/// The body of `POST /api/disconnect`: `{"user": U}` or `{"client": SESSION}`, optionally
/// with the close `code` and `reason` the connections get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "DisconnectRequest")
)]
pub struct DisconnectRequest {
    /// Close every connection whose token's `sub` is this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Close the connection with this session id (`welcome.session`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The close code: 1000, 1001, or 4000-4299 (default 4003: do not reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The close reason, at most [`DisconnectRequest::MAX_REASON`] bytes (default
    /// `disconnected by the server`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DisconnectRequest {
    /// The code when none is given: 4003, forbidden, do not reconnect.
    pub const DEFAULT_CODE: u16 = 4003;
    /// The reason when none is given.
    pub const DEFAULT_REASON: &'static str = "disconnected by the server";
    /// The longest reason (a close frame's payload is at most 125 bytes, 2 for the code).
    pub const MAX_REASON: usize = 123;

    /// Checks the request: exactly one of `user` and `client`, a code a client knows what to
    /// do with, a reason that fits a close frame. Returns the code and reason to close with.
    ///
    /// # Errors
    /// A message for people naming what is wrong.
    pub fn validate(&self) -> Result<(u16, &str), String> {
        match (&self.user, &self.client) {
            (Some(_), Some(_)) | (None, None) => {
                return Err("give exactly one of \"user\" and \"client\"".to_owned());
            }
            _ => {}
        }
        let code = self.code.unwrap_or(Self::DEFAULT_CODE);
        if !(code == 1000 || code == 1001 || (4000..=4299).contains(&code)) {
            return Err(format!(
                "code {code}: use 1000, 1001 or 4000-4299 (4000-4099: do not reconnect, 4100-4199: back off, 4200-4299: reconnect)"
            ));
        }
        let reason = self.reason.as_deref().unwrap_or(Self::DEFAULT_REASON);
        if reason.len() > Self::MAX_REASON {
            return Err(format!(
                "the reason is longer than {} bytes",
                Self::MAX_REASON
            ));
        }
        Ok((code, reason))
    }
}

/// The reply to `POST /api/disconnect` (HTTP 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "DisconnectReply")
)]
pub struct DisconnectReply {
    /// Connections closed on the node that answered; the other nodes (Redis broker) close
    /// theirs as the order reaches them, without counting here.
    pub disconnected: u64,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::encode_message;

    #[test]
    fn publish_request_borrows_and_keeps_data_verbatim() {
        let body = r#"{"channel":"chat","data":{"n": 1.50},"idempotency_key":"k-1"}"#;
        let request: PublishRequest<'_> = serde_json::from_str(body).expect("request");
        assert!(matches!(request.channel, Cow::Borrowed("chat")));
        assert_eq!(request.data.get(), r#"{"n": 1.50}"#);
        assert_eq!(request.idempotency_key.as_deref(), Some("k-1"));
        let escaped: PublishRequest<'_> =
            serde_json::from_str(r#"{"channel":"a\u003ab","data":1}"#).expect("escaped");
        assert_eq!(escaped.channel, "a:b");
        assert!(escaped.idempotency_key.is_none());
        assert!(serde_json::from_str::<PublishRequest<'_>>(r#"{"channel":"c"}"#).is_err());
    }

    #[test]
    fn replies_serialize_as_documented() {
        let check = |value: serde_json::Value, expect: serde_json::Value| {
            assert_eq!(value, expect);
        };
        check(
            serde_json::to_value(PublishReply {
                offset: 3,
                duplicate: false,
            })
            .expect("json"),
            json!({"offset": 3}),
        );
        check(
            serde_json::to_value(PublishReply {
                offset: 3,
                duplicate: true,
            })
            .expect("json"),
            json!({"offset": 3, "duplicate": true}),
        );
        check(
            serde_json::to_value(ApiError::new(ErrorCode::InvalidChannel, "bad")).expect("json"),
            json!({"error": {"code": "invalid_channel", "message": "bad"}}),
        );
    }

    #[test]
    fn history_pages_written_by_hand_read_as_the_type() {
        let mut first = Vec::new();
        encode_message(&mut first, "log\"1", 4, br#"{"a":[1,2]}"#);
        let mut second = Vec::new();
        encode_message(&mut second, "log\"1", 5, b"\"x\"");
        for (complete, messages) in [
            (true, vec![first.as_slice(), second.as_slice()]),
            (false, vec![]),
        ] {
            let count = messages.len();
            let page = encode_history_reply("log\"1", "e-1", 5, complete, messages.into_iter());
            let reply: HistoryReply = serde_json::from_slice(&page).expect("a HistoryReply");
            assert_eq!(
                (reply.channel.as_str(), reply.epoch.as_str(), reply.offset),
                ("log\"1", "e-1", 5)
            );
            assert_eq!(reply.complete, complete);
            assert_eq!(reply.messages.len(), count);
            let back = serde_json::to_vec(&reply).expect("serializes");
            let ours: serde_json::Value = serde_json::from_slice(&page).expect("json");
            let theirs: serde_json::Value = serde_json::from_slice(&back).expect("json");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn history_query_bounds_the_page() {
        let query = |limit| HistoryQuery {
            channel: "c".into(),
            since: None,
            epoch: None,
            limit,
        };
        assert_eq!(query(None).page_size(), HistoryQuery::DEFAULT_LIMIT);
        assert_eq!(query(Some(7)).page_size(), 7);
        assert_eq!(query(Some(usize::MAX)).page_size(), HistoryQuery::MAX_LIMIT);
    }
}
