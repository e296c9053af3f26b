//! The Pusher endpoint `/app/KEY` over a real socket: the handshake, a public channel
//! that gets a v1 publish as event `message`, a private channel refused without a valid
//! signature, and an unknown key refused with 4001.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wirehub_server::{PusherApp, PusherConfig, ServerConfig};
use wirehub_testkit::TestServer;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn config() -> ServerConfig {
    ServerConfig::new().pusher(PusherConfig::new().apps(vec![PusherApp::new(
        "1",
        "app-key",
        "app-secret",
    )]))
}

async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the connection is open")
            .expect("a valid frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON event"),
            Message::Close(close) => return json!({ "closed": close.map(|c| u16::from(c.code)) }),
            _ => {}
        }
    }
}

#[tokio::test]
async fn issue_12_pusher_handshake_public_channel_and_refusals() {
    let server = TestServer::start(config()).await;
    let url = format!(
        "ws://{}/app/app-key?protocol=7&client=js&version=8.4.0",
        server.addr()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    let established = next_event(&mut ws).await;
    assert_eq!(established["event"], "pusher:connection_established");
    let data: Value =
        serde_json::from_str(established["data"].as_str().expect("data is a JSON string"))
            .expect("JSON");
    assert!(data["socket_id"].as_str().expect("socket_id").contains('.'));
    assert_eq!(data["activity_timeout"], 120);

    ws.send(Message::text(r#"{"event":"pusher:ping","data":{}}"#))
        .await
        .expect("send");
    assert_eq!(next_event(&mut ws).await["event"], "pusher:pong");

    ws.send(Message::text(
        r#"{"event":"pusher:subscribe","data":{"channel":"orders"}}"#,
    ))
    .await
    .expect("send");
    let succeeded = next_event(&mut ws).await;
    assert_eq!(succeeded["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(succeeded["channel"], "orders");

    let reply = reqwest::Client::new()
        .post(server.http_url("/api/publish"))
        .json(&json!({ "channel": "orders", "data": { "id": 7 } }))
        .send()
        .await
        .expect("publish");
    assert!(reply.status().is_success());
    let event = next_event(&mut ws).await;
    assert_eq!(event["event"], "message");
    assert_eq!(event["channel"], "orders");
    assert_eq!(event["data"], r#"{"id":7}"#);

    ws.send(Message::text(
        r#"{"event":"pusher:subscribe","data":{"channel":"private-x","auth":"app-key:00"}}"#,
    ))
    .await
    .expect("send");
    let refused = next_event(&mut ws).await;
    assert_eq!(refused["event"], "pusher:subscription_error");
    assert_eq!(refused["data"]["status"], 401);

    let url = format!("ws://{}/app/wrong-key?protocol=7", server.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    let error = next_event(&mut ws).await;
    assert_eq!(error["event"], "pusher:error");
    assert_eq!(error["data"]["code"], 4001);
    assert_eq!(next_event(&mut ws).await["closed"], 4001);
}
