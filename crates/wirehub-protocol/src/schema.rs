//! The JSON Schema of protocol v1, derived from the wire types (feature `schema`).
//!
//! The server serves [`protocol_schema`] at `GET /schema/protocol.json`, and the tests check
//! what the server sends, over WebSocket and HTTP, against it.

use serde_json::Value;

use crate::{
    ApiError, ChannelsQuery, ChannelsReply, Claims, ClientMessage, DisconnectReply,
    DisconnectRequest, HistoryQuery, HistoryReply, PresenceQuery, PresenceReply, PublishReply,
    PublishRequest, ServerMessage, StatsQuery, StatsReply, WebhookBatch,
};

/// The schema of every message a client may send.
pub fn client_schema() -> Value {
    schemars::schema_for!(ClientMessage<'static>).to_value()
}

/// The schema of every message the server sends.
pub fn server_schema() -> Value {
    schemars::schema_for!(ServerMessage).to_value()
}

/// The schemas of the HTTP API's bodies, one self-contained schema each:
/// `{"publish_request", "publish_reply", "history_query", "history_reply", "presence_query",
/// "presence_reply", "error", "channels_query", "channels_reply", "disconnect_request",
/// "disconnect_reply", "webhook_batch", "stats_query", "stats_reply"}` (`webhook_batch` is the
/// body the server POSTs to `--webhook-url`).
pub fn http_schema() -> Value {
    serde_json::json!({
        "publish_request": schemars::schema_for!(PublishRequest<'static>).to_value(),
        "publish_reply": schemars::schema_for!(PublishReply).to_value(),
        "history_query": schemars::schema_for!(HistoryQuery).to_value(),
        "history_reply": schemars::schema_for!(HistoryReply).to_value(),
        "presence_query": schemars::schema_for!(PresenceQuery).to_value(),
        "presence_reply": schemars::schema_for!(PresenceReply).to_value(),
        "error": schemars::schema_for!(ApiError).to_value(),
        "channels_query": schemars::schema_for!(ChannelsQuery).to_value(),
        "channels_reply": schemars::schema_for!(ChannelsReply).to_value(),
        "disconnect_request": schemars::schema_for!(DisconnectRequest).to_value(),
        "disconnect_reply": schemars::schema_for!(DisconnectReply).to_value(),
        "webhook_batch": schemars::schema_for!(WebhookBatch).to_value(),
        "stats_query": schemars::schema_for!(StatsQuery).to_value(),
        "stats_reply": schemars::schema_for!(StatsReply).to_value(),
    })
}

/// The schema of the claims the server reads from a token.
pub fn claims_schema() -> Value {
    schemars::schema_for!(Claims).to_value()
}

/// Everything in one document: `{"client": …, "server": …, "http": {…}, "claims": …}` plus the
/// version. Each of `client`, `server`, `claims` and the members of `http` is a schema of its
/// own (its `$ref`s point into itself).
pub fn protocol_schema() -> Value {
    serde_json::json!({
        "title": "wirehub WebSocket protocol",
        "version": crate::PROTOCOL_VERSION,
        "client": client_schema(),
        "server": server_schema(),
        "http": http_schema(),
        "claims": claims_schema(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_name_every_message_type() {
        let client = client_schema().to_string();
        for kind in [
            "subscribe",
            "unsubscribe",
            "publish",
            "ping",
            "refresh",
            "presence",
        ] {
            assert!(
                client.contains(&format!("\"{kind}\"")),
                "client schema lacks {kind}"
            );
        }
        let server = server_schema().to_string();
        for kind in [
            "welcome",
            "subscribed",
            "unsubscribed",
            "message",
            "ack",
            "pong",
            "refreshed",
            "presence",
            "join",
            "leave",
            "error",
        ] {
            assert!(
                server.contains(&format!("\"{kind}\"")),
                "server schema lacks {kind}"
            );
        }
    }

    #[test]
    fn the_document_holds_the_http_bodies_and_the_claims() {
        let document = protocol_schema();
        for body in [
            "publish_request",
            "publish_reply",
            "history_query",
            "history_reply",
            "presence_query",
            "presence_reply",
            "error",
            "channels_query",
            "channels_reply",
            "disconnect_request",
            "disconnect_reply",
            "webhook_batch",
            "stats_reply",
        ] {
            assert!(
                document["http"][body]["properties"].is_object(),
                "no schema for {body}"
            );
        }
        let reply = &document["http"]["history_reply"];
        assert!(
            reply["required"]
                .as_array()
                .is_some_and(|required| required.len() == 5),
            "{reply}"
        );
        assert!(document["claims"]["properties"]["exp"].is_object());
    }
}
