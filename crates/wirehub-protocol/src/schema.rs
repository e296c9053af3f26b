//! The JSON Schema of protocol v1, derived from the wire types.
//!
//! The server serves [`protocol_schema`] at `GET /schema/protocol.json`, and the tests check
//! what the server sends against [`server_schema`].

use serde_json::Value;

use crate::{ClientMessage, ServerMessage};

/// The schema of every message a client may send.
pub fn client_schema() -> Value {
    schemars::schema_for!(ClientMessage<'static>).to_value()
}

/// The schema of every message the server sends.
pub fn server_schema() -> Value {
    schemars::schema_for!(ServerMessage).to_value()
}

/// Both directions in one document: `{"client": …, "server": …}` plus the version.
pub fn protocol_schema() -> Value {
    serde_json::json!({
        "title": "wirehub WebSocket protocol",
        "version": crate::PROTOCOL_VERSION,
        "client": client_schema(),
        "server": server_schema(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_name_every_message_type() {
        let client = client_schema().to_string();
        for kind in ["subscribe", "unsubscribe", "publish", "ping", "refresh"] {
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
            "error",
        ] {
            assert!(
                server.contains(&format!("\"{kind}\"")),
                "server schema lacks {kind}"
            );
        }
    }
}
