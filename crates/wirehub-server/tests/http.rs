//! The HTTP side of the one port: health, metrics, publish and history API, demo page, echo
//! route, and how the WebSocket route refuses what is not a proper upgrade.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wirehub_server::{AllowedOrigins, ServerConfig};
use wirehub_testkit::{TestServer, WsClient};

fn config() -> ServerConfig {
    ServerConfig::new().heartbeat_interval(Duration::from_secs(60))
}

#[tokio::test]
async fn healthz_metrics_and_the_demo_page() {
    let server = TestServer::start(config()).await;
    let health = reqwest::get(server.http_url("/healthz"))
        .await
        .expect("get");
    assert_eq!(health.status(), 200);

    let metrics = reqwest::get(server.http_url("/metrics"))
        .await
        .expect("get");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/plain; version=0.0.4"))
    );
    let text = metrics.text().await.expect("body");
    for name in [
        "wirehub_connections ",
        "wirehub_subscriptions ",
        "wirehub_messages_in_total ",
        "wirehub_messages_delivered_total ",
        "wirehub_heartbeat_terminations_total ",
        "wirehub_slow_consumers_total ",
        "wirehub_errors_total{code=\"invalid_json\"} ",
        "wirehub_closes_total{code=\"1001\"",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(
            value.parse::<f64>().is_ok(),
            "not a Prometheus sample: {line}"
        );
    }

    let page = reqwest::get(server.http_url("/")).await.expect("get");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("body");
    assert!(html.contains("wirehub") && html.contains("/ws"));

    let missing = reqwest::get(server.http_url("/nope")).await.expect("get");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn http_publish_reaches_websocket_subscribers() {
    let server = TestServer::start(config()).await;
    let (mut sub, _) = WsClient::connect(&server.ws_url()).await;
    sub.subscribe("alerts").await;
    let http = reqwest::Client::new();
    let reply = http
        .post(server.http_url("/api/publish"))
        .json(&json!({"channel": "alerts", "data": {"level": "high"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.json::<Value>().await.expect("json"),
        json!({"offset": 1})
    );
    let message = sub.expect("message").await;
    assert_eq!(message["data"], json!({"level": "high"}));
    assert_eq!(message["offset"], 1);
}

async fn post(server: &TestServer, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.http_url("/api/publish"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let reply = request.send().await.expect("post");
    let status = reply.status().as_u16();
    (status, reply.json().await.expect("json body"))
}

#[tokio::test]
async fn http_publish_refuses_bad_requests_with_error_codes() {
    let server = TestServer::start(config().max_message_size(1024)).await;
    for (body, status, code) in [
        ("{oops", 400, "invalid_json"),
        (r#"{"data": 1}"#, 400, "invalid_message"),
        (r#"{"channel": "a b", "data": 1}"#, 400, "invalid_channel"),
        (
            &format!(r#"{{"channel": "c", "data": "{}"}}"#, "x".repeat(2000)),
            413,
            "too_large",
        ),
    ] {
        let (got_status, reply) = post(&server, body, None).await;
        assert_eq!(got_status, status, "{body}");
        assert_eq!(reply["error"]["code"], code, "{body}");
    }
}

#[tokio::test]
async fn the_api_key_protects_publish_and_history() {
    let server = TestServer::start(config().api_key(Some("s3cret".into()))).await;
    let body = r#"{"channel": "c", "data": 1}"#;
    assert_eq!(post(&server, body, None).await.0, 401);
    assert_eq!(post(&server, body, Some("wrong")).await.0, 401);
    assert_eq!(post(&server, body, Some("s3cret")).await.0, 200);
    let history = reqwest::get(server.http_url("/api/history?channel=c"))
        .await
        .expect("get");
    assert_eq!(history.status(), 401);
}

#[tokio::test]
async fn issue_10_the_api_key_must_match_exactly() {
    // Compared with subtle's constant-time equality: only the very key passes.
    let server = TestServer::start(config().api_key(Some("s3cret".into()))).await;
    let body = r#"{"channel": "c", "data": 1}"#;
    for wrong in ["s3cre", "s3crett", "S3cret", "s3creT", "", " s3cret"] {
        assert_eq!(post(&server, body, Some(wrong)).await.0, 401, "{wrong:?}");
    }
    assert_eq!(post(&server, body, Some("s3cret")).await.0, 200);
}

#[tokio::test]
async fn history_over_http() {
    let server = TestServer::start(config().history_size(3)).await;
    // A subscriber keeps the channel's stream (and epoch) alive between requests.
    let (mut watcher, _) = WsClient::connect(&server.ws_url()).await;
    watcher.subscribe("log").await;
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    for i in 1..=5 {
        publisher.publish("log", json!(i)).await;
    }
    let page: Value = reqwest::get(server.http_url("/api/history?channel=log"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(page["offset"], 5);
    assert_eq!(page["complete"], false, "offsets 1 and 2 left the history");
    let data: Vec<Value> = page["messages"]
        .as_array()
        .expect("array")
        .iter()
        .map(|m| m["data"].clone())
        .collect();
    assert_eq!(data, vec![json!(3), json!(4), json!(5)]);

    let epoch = page["epoch"].as_str().expect("epoch");
    let url = server.http_url(&format!(
        "/api/history?channel=log&since=3&epoch={epoch}&limit=1"
    ));
    let page: Value = reqwest::get(url)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(page["messages"].as_array().expect("array").len(), 1);
    assert_eq!(page["messages"][0]["offset"], 4);

    let bad = reqwest::get(server.http_url("/api/history?channel="))
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
    let bad = reqwest::get(server.http_url("/api/history"))
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
}

/// Checks `value` against the schema named `name` under `http` in the document the server
/// serves at `/schema/protocol.json`.
#[track_caller]
fn assert_http_schema(document: &Value, name: &str, value: &Value) {
    let schema = &document["http"][name];
    assert!(schema.is_object(), "the served schema has no http.{name}");
    wirehub_testkit::assert_schema(schema, value);
}

#[tokio::test]
async fn issue_10_http_bodies_and_replies_match_the_served_schema() {
    let server = TestServer::start(config().history_size(2).max_message_size(1024)).await;
    let document: Value = reqwest::get(server.http_url("/schema/protocol.json"))
        .await
        .expect("get the schema")
        .json()
        .await
        .expect("json");
    for (name, wrong) in [
        ("publish_reply", json!({"offset": "one"})),
        (
            "history_reply",
            json!({"channel": "c", "epoch": "e", "offset": 0}),
        ),
        ("error", json!({"error": {"code": "invalid_json"}})),
    ] {
        assert!(
            !wirehub_testkit::matches_schema(&document["http"][name], &wrong),
            "http.{name} accepts {wrong}"
        );
    }

    let keyed = json!({"channel": "log", "data": {"n": 1}, "idempotency_key": "k-1"});
    assert_http_schema(&document, "publish_request", &keyed);
    let (status, reply) = post(&server, &keyed.to_string(), None).await;
    assert_eq!(status, 200);
    assert_http_schema(&document, "publish_reply", &reply);
    let (_, duplicate) = post(&server, &keyed.to_string(), None).await;
    assert_eq!(duplicate, json!({"offset": 1, "duplicate": true}));
    assert_http_schema(&document, "publish_reply", &duplicate);
    for data in [json!(2), json!("three")] {
        let (status, reply) = post(
            &server,
            &json!({"channel": "log", "data": data}).to_string(),
            None,
        )
        .await;
        assert_eq!(status, 200, "{reply}");
    }

    let page: Value = reqwest::get(server.http_url("/api/history?channel=log&limit=5"))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(page["complete"], false, "offset 1 left the history");
    assert_eq!(page["messages"].as_array().map(Vec::len), Some(2));
    assert_http_schema(&document, "history_reply", &page);
    let typed: wirehub_protocol::HistoryReply =
        serde_json::from_value(page).expect("the reply reads as the protocol type");
    assert_eq!(typed.offset, 3);
    assert_eq!(typed.messages[1].data.get(), r#""three""#);

    let bad = reqwest::get(server.http_url("/api/history?channel=a%20b"))
        .await
        .expect("get");
    assert_eq!(bad.status(), 400);
    assert_http_schema(&document, "error", &bad.json().await.expect("json"));
    for body in [
        "{oops".to_owned(),
        r#"{"data": 1}"#.to_owned(),
        format!(r#"{{"channel": "c", "data": "{}"}}"#, "x".repeat(2000)),
    ] {
        let (status, reply) = post(&server, &body, None).await;
        assert!(status >= 400, "{body}");
        assert_http_schema(&document, "error", &reply);
    }
    let locked = TestServer::start(config().api_key(Some("s3cret".into()))).await;
    let (status, reply) = post(&locked, r#"{"channel": "c", "data": 1}"#, None).await;
    assert_eq!(status, 401);
    assert_http_schema(&document, "error", &reply);
}

#[tokio::test]
async fn the_ws_route_refuses_plain_http_and_foreign_origins() {
    let server = TestServer::start(config()).await;
    let plain = reqwest::get(server.ws_url().replace("ws://", "http://"))
        .await
        .expect("get");
    assert_eq!(plain.status(), 426);

    let mut request = server.ws_url().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("origin", "https://evil.example".parse().expect("header"));
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }

    let mut request = server.ws_url().into_client_request().expect("request");
    let same = format!("http://{}", server.addr());
    request
        .headers_mut()
        .insert("origin", same.parse().expect("header"));
    tokio_tungstenite::connect_async(request)
        .await
        .expect("same host is allowed");
}

#[tokio::test]
async fn listed_origins_are_allowed() {
    let server = TestServer::start(
        config().allowed_origins(AllowedOrigins::List(vec!["https://app.example".into()])),
    )
    .await;
    let mut request = server.ws_url().into_client_request().expect("request");
    request
        .headers_mut()
        .insert("origin", "https://app.example".parse().expect("header"));
    tokio_tungstenite::connect_async(request)
        .await
        .expect("listed origin");
}

#[tokio::test]
async fn the_echo_route_is_off_by_default_and_echoes_when_on() {
    let server = TestServer::start(config()).await;
    let off = reqwest::get(server.http_url("/echo")).await.expect("get");
    assert_eq!(off.status(), 404);

    let server = TestServer::start(config().echo_path(Some("/echo".into()))).await;
    let mut echo = WsClient::connect_raw(&format!("ws://{}/echo", server.addr())).await;
    echo.stream
        .send(Message::text("hello"))
        .await
        .expect("send");
    echo.stream
        .send(Message::Binary(vec![0u8, 159, 146, 150].into()))
        .await
        .expect("send");
    assert_eq!(
        echo.stream.next().await.expect("frame").expect("ok"),
        Message::text("hello")
    );
    assert_eq!(
        echo.stream.next().await.expect("frame").expect("ok"),
        Message::Binary(vec![0u8, 159, 146, 150].into())
    );
}

#[tokio::test]
async fn upgrades_beyond_max_connections_get_503() {
    let server = TestServer::start(config().max_connections(2)).await;
    let (_a, _) = WsClient::connect(&server.ws_url()).await;
    let (_b, _) = WsClient::connect(&server.ws_url()).await;
    match tokio_tungstenite::connect_async(server.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            // A random point of [retry_after, 2 × retry_after) with the default 5 s, rounded up.
            let seconds: u64 = response.headers()["retry-after"]
                .to_str()
                .expect("ASCII")
                .parse()
                .expect("whole seconds");
            assert!((5..=10).contains(&seconds), "Retry-After {seconds}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    drop(_a);
    server.wait_for_metric("wirehub_connections", 1).await;
    WsClient::connect(&server.ws_url()).await;
}
