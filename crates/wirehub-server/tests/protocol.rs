//! Protocol v1 over a real socket: every request, every reply, every error code, and the
//! schema of everything the server sends.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wirehub_server::ServerConfig;
use wirehub_testkit::{TestServer, WsClient};

fn config() -> ServerConfig {
    ServerConfig::new().heartbeat_interval(Duration::from_secs(60))
}

/// Checks a server message against the published JSON Schema.
#[track_caller]
fn assert_schema(value: &Value) {
    wirehub_testkit::assert_schema(&wirehub_protocol::server_schema(), value);
}

#[tokio::test]
async fn welcome_comes_first_and_matches_the_schema() {
    let server = TestServer::start(config()).await;
    let (_client, welcome) = WsClient::connect(&server.ws_url()).await;
    assert_schema(&welcome);
    assert_eq!(welcome["version"], 1);
    assert!(welcome["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(welcome["heartbeat"], 60.0);
}

#[tokio::test]
async fn subscribe_publish_unsubscribe_round_trip() {
    let server = TestServer::start(config()).await;
    let (mut sub, _) = WsClient::connect(&server.ws_url()).await;
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;

    sub.send(&json!({"type": "subscribe", "channel": "chat", "id": 1}))
        .await;
    let subscribed = sub.expect("subscribed").await;
    assert_schema(&subscribed);
    assert_eq!(subscribed["id"], 1);
    assert_eq!(subscribed["channel"], "chat");
    assert_eq!(subscribed["offset"], 0);
    assert!(subscribed["epoch"].is_string());
    assert!(
        subscribed.get("recovered").is_none(),
        "no since, no recovered"
    );

    publisher
        .send(&json!({"type": "publish", "channel": "chat", "data": {"text": "hi"}, "id": 7}))
        .await;
    let ack = publisher.expect("ack").await;
    assert_schema(&ack);
    assert_eq!(ack["id"], 7);
    assert_eq!(ack["offset"], 1);

    let message = sub.expect("message").await;
    assert_schema(&message);
    assert_eq!(
        message,
        json!({"type": "message", "channel": "chat", "data": {"text": "hi"}, "offset": 1})
    );

    sub.send(&json!({"type": "unsubscribe", "channel": "chat", "id": 2}))
        .await;
    let unsubscribed = sub.expect("unsubscribed").await;
    assert_schema(&unsubscribed);
    assert_eq!(
        unsubscribed,
        json!({"type": "unsubscribed", "id": 2, "channel": "chat"})
    );

    // After unsubscribing nothing more arrives: a ping's pong is the very next message.
    publisher.publish("chat", json!(2)).await;
    sub.send(&json!({"type": "ping", "id": 3})).await;
    let pong = sub.expect("pong").await;
    assert_schema(&pong);
    assert_eq!(pong["id"], 3);
}

#[tokio::test]
async fn publisher_subscribed_to_its_own_channel_gets_the_message_and_the_ack() {
    let server = TestServer::start(config()).await;
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    client.subscribe("echo").await;
    client
        .send(&json!({"type": "publish", "channel": "echo", "data": [1, "two", null], "id": 5}))
        .await;
    let mut seen = [client.recv().await, client.recv().await];
    seen.sort_by_key(|v| v["type"].as_str().map(str::to_owned));
    assert_eq!(seen[0], json!({"type": "ack", "id": 5, "offset": 1}));
    assert_eq!(seen[1]["data"], json!([1, "two", null]));
}

/// Sends `request` and expects an `error` with `code` (and the request's id, when given);
/// then proves the connection is still open.
async fn expect_error(client: &mut WsClient, request: &str, code: &str, id: Option<u64>) {
    client.send_text(request).await;
    let error = client.expect("error").await;
    assert_schema(&error);
    assert_eq!(error["code"], code, "request {request} → {error}");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    match id {
        Some(id) => assert_eq!(error["id"], id, "{error}"),
        None => assert!(error.get("id").is_none(), "{error}"),
    }
    client.send(&json!({"type": "ping", "id": 99})).await;
    assert_eq!(
        client.expect("pong").await["id"],
        99,
        "connection still works after {code}"
    );
}

#[tokio::test]
async fn every_bad_input_gets_its_error_code_and_the_connection_stays_open() {
    let server = TestServer::start(config().max_subscriptions(2)).await;
    let (mut c, _) = WsClient::connect(&server.ws_url()).await;
    expect_error(&mut c, "{not json", "invalid_json", None).await;
    expect_error(&mut c, "", "invalid_json", None).await;
    expect_error(
        &mut c,
        r#"{"type":"teleport","id":4}"#,
        "unknown_type",
        Some(4),
    )
    .await;
    expect_error(&mut c, r#"["subscribe"]"#, "invalid_message", None).await;
    expect_error(
        &mut c,
        r#"{"channel":"x","id":5}"#,
        "invalid_message",
        Some(5),
    )
    .await;
    expect_error(
        &mut c,
        r#"{"type":"subscribe","id":6}"#,
        "invalid_message",
        Some(6),
    )
    .await;
    expect_error(
        &mut c,
        r#"{"type":"subscribe","channel":42}"#,
        "invalid_message",
        None,
    )
    .await;
    expect_error(
        &mut c,
        r#"{"type":"publish","channel":"c"}"#,
        "invalid_message",
        None,
    )
    .await;
    expect_error(
        &mut c,
        r#"{"type":"ping","id":"seven"}"#,
        "invalid_message",
        None,
    )
    .await;
    expect_error(
        &mut c,
        r#"{"type":"subscribe","channel":"bad name","id":8}"#,
        "invalid_channel",
        Some(8),
    )
    .await;
    expect_error(
        &mut c,
        r#"{"type":"subscribe","channel":""}"#,
        "invalid_channel",
        None,
    )
    .await;
    let long = "x".repeat(wirehub_protocol::MAX_CHANNEL_LEN + 1);
    expect_error(
        &mut c,
        &json!({"type": "publish", "channel": long, "data": 1}).to_string(),
        "invalid_channel",
        None,
    )
    .await;
    expect_error(
        &mut c,
        r#"{"type":"unsubscribe","channel":"never","id":9}"#,
        "not_subscribed",
        Some(9),
    )
    .await;
    c.subscribe("a").await;
    expect_error(
        &mut c,
        r#"{"type":"subscribe","channel":"a","id":10}"#,
        "already_subscribed",
        Some(10),
    )
    .await;
    c.subscribe("b").await;
    expect_error(
        &mut c,
        r#"{"type":"subscribe","channel":"c"}"#,
        "too_many_subscriptions",
        None,
    )
    .await;

    c.stream
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .expect("send binary");
    let error = c.expect("error").await;
    assert_eq!(error["code"], "binary_not_supported");
    c.send(&json!({"type": "ping"})).await;
    c.expect("pong").await;

    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("wirehub_errors_total{code=\"invalid_json\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wirehub_errors_total{code=\"binary_not_supported\"} 1"),
        "{metrics}"
    );
}

use futures_util::SinkExt;

#[tokio::test]
async fn publish_rate_limit_answers_rate_limited() {
    let server = TestServer::start(config().publish_rate(5)).await;
    let (mut c, _) = WsClient::connect(&server.ws_url()).await;
    let mut acks = 0;
    let mut limited = 0;
    for id in 0..20u64 {
        c.send(&json!({"type": "publish", "channel": "r", "data": id, "id": id}))
            .await;
    }
    for _ in 0..20 {
        let reply = c.recv().await;
        match reply["type"].as_str() {
            Some("ack") => acks += 1,
            Some("error") => {
                assert_eq!(reply["code"], "rate_limited");
                limited += 1;
            }
            _ => panic!("unexpected {reply}"),
        }
    }
    assert!(acks >= 5, "the burst is allowed ({acks} acks)");
    assert!(limited >= 10, "the excess is refused ({limited} refused)");
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let server = TestServer::start(config().max_message_size(1024)).await;
    let (mut c, _) = WsClient::connect(&server.ws_url()).await;
    // Just under the limit is fine.
    let data = "y".repeat(900);
    c.send(&json!({"type": "publish", "channel": "big", "data": data}))
        .await;
    c.expect("ack").await;
    c.send_text(&"z".repeat(2000)).await;
    let error = c.expect("error").await;
    assert_eq!(error["code"], "too_large");
    let frame = c.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 1009);
}

#[tokio::test]
async fn the_schema_is_served() {
    let server = TestServer::start(config()).await;
    let schema: Value = reqwest::get(server.http_url("/schema/protocol.json"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(schema["version"], 1);
    assert_eq!(schema["server"], wirehub_protocol::server_schema());
    assert_eq!(schema["client"], wirehub_protocol::client_schema());
}

#[tokio::test]
async fn publishing_far_beyond_the_rate_closes_with_4102() {
    let server = TestServer::start(config().publish_rate(1)).await;
    let (mut c, _) = WsClient::connect(&server.ws_url()).await;
    for id in 0..150u64 {
        c.send(&json!({"type": "publish", "channel": "spam", "data": id, "id": id}))
            .await;
    }
    let frame = c.expect_close().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4102);
    assert_eq!(
        server
            .metric("wirehub_errors_total{code=\"rate_limited\"}")
            .await,
        101
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_publish_a_duplicate_not_a_second_message() {
    let server = TestServer::start(config().publish_rate(0).history_size(3)).await;
    let (mut subscriber, _) = WsClient::connect(&server.ws_url()).await;
    subscriber.subscribe("orders").await;
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    let publish = |key: &str, data: Value, id: u64| json!({"type": "publish", "channel": "orders", "data": data, "idempotency_key": key, "id": id});

    publisher.send(&publish("order-1", json!("first"), 1)).await;
    let ack = publisher.expect("ack").await;
    assert_schema(&ack);
    assert_eq!(ack, json!({"type": "ack", "id": 1, "offset": 1}));
    // The retry (same key, even with other data) is acknowledged with the first offset.
    publisher.send(&publish("order-1", json!("retry"), 2)).await;
    let ack = publisher.expect("ack").await;
    assert_schema(&ack);
    assert_eq!(
        ack,
        json!({"type": "ack", "id": 2, "offset": 1, "duplicate": true})
    );
    // Another key is another message; the same key on another channel is independent.
    publisher
        .send(&publish("order-2", json!("second"), 3))
        .await;
    assert_eq!(publisher.expect("ack").await["offset"], 2);
    publisher
        .send(&json!({"type": "publish", "channel": "invoices", "data": 1, "idempotency_key": "order-1", "id": 4}))
        .await;
    let ack = publisher.expect("ack").await;
    assert_eq!(
        (ack["offset"].clone(), ack.get("duplicate")),
        (json!(1), None)
    );

    // The subscriber got each message once.
    assert_eq!(subscriber.expect("message").await["data"], "first");
    assert_eq!(subscriber.expect("message").await["data"], "second");

    // Over HTTP too, sharing the keys of the WebSocket publishes.
    let post = |body: Value| {
        let url = server.http_url("/api/publish");
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("POST");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    assert_eq!(
        post(json!({"channel": "orders", "data": 0, "idempotency_key": "order-2"})).await,
        (200, json!({"offset": 2, "duplicate": true}))
    );
    assert_eq!(
        post(json!({"channel": "orders", "data": "third", "idempotency_key": "order-3"})).await,
        (200, json!({"offset": 3}))
    );
    let (status, error) =
        post(json!({"channel": "orders", "data": 0, "idempotency_key": ""})).await;
    assert_eq!(
        (status, error["error"]["code"].clone()),
        (400, json!("invalid_message"))
    );
    assert_eq!(subscriber.expect("message").await["data"], "third");
    assert_eq!(server.metric("wirehub_publish_duplicates_total").await, 2);

    // A key is remembered as long as its message is in the history (3 messages here):
    // two more publishes push order-1 out, and the same key is then a new message.
    for n in 4..=5 {
        publisher
            .send(&json!({"type": "publish", "channel": "orders", "data": n, "id": 10 + n}))
            .await;
        assert_eq!(publisher.expect("ack").await["offset"], n);
    }
    publisher
        .send(&publish("order-1", json!("again"), 20))
        .await;
    assert_eq!(
        publisher.expect("ack").await,
        json!({"type": "ack", "id": 20, "offset": 6})
    );

    // A malformed key is refused and the connection stays open.
    publisher.send(&publish("with space", json!(0), 21)).await;
    let error = publisher.expect("error").await;
    assert_eq!(
        (error["id"].clone(), error["code"].clone()),
        (json!(21), json!("invalid_message"))
    );
    publisher.send(&json!({"type": "ping", "id": 22})).await;
    assert_eq!(publisher.expect("pong").await["id"], 22);
}

#[tokio::test]
async fn without_history_there_is_nothing_to_deduplicate_against() {
    let server = TestServer::start(config().publish_rate(0).history_size(0)).await;
    let (mut subscriber, _) = WsClient::connect(&server.ws_url()).await;
    subscriber.subscribe("c").await;
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    for (id, offset) in [(1, 1), (2, 2)] {
        publisher
            .send(&json!({"type": "publish", "channel": "c", "data": 1, "idempotency_key": "k", "id": id}))
            .await;
        assert_eq!(
            publisher.expect("ack").await,
            json!({"type": "ack", "id": id, "offset": offset})
        );
        assert_eq!(subscriber.expect("message").await["offset"], offset);
    }
}
