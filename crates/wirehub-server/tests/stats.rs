//! `GET /api/stats` (the dashboard's figures) and the files of the page and the dashboard.

use std::time::Duration;

use serde_json::{Value, json};
use wirehub_protocol::StatsReply;
use wirehub_server::ServerConfig;
use wirehub_testkit::{TestServer, WsClient};

fn config() -> ServerConfig {
    ServerConfig::new().heartbeat_interval(Duration::from_secs(60))
}

async fn stats(server: &TestServer, query: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(server.http_url(&format!("/api/stats{query}")));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("GET /api/stats");
    let status = response.status().as_u16();
    if status == 200 {
        assert_eq!(response.headers()["cache-control"], "no-store");
    }
    (status, response.json().await.expect("a JSON body"))
}

async fn schema(server: &TestServer) -> Value {
    reqwest::get(server.http_url("/schema/protocol.json"))
        .await
        .expect("get the schema")
        .json()
        .await
        .expect("json")
}

/// Polls `/api/stats` until `done` holds for its reply.
async fn stats_until(
    server: &TestServer,
    what: &str,
    done: impl Fn(&StatsReply) -> bool,
) -> StatsReply {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = stats(server, "", None).await;
        assert_eq!(status, 200, "{body}");
        let reply: StatsReply = serde_json::from_value(body).expect("a StatsReply");
        if done(&reply) {
            return reply;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {reply:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn issue_13_stats_need_the_api_key_when_one_is_set() {
    let server = TestServer::start(config().api_key(Some("s3cret".into()))).await;
    let document = schema(&server).await;
    for key in [None, Some("wrong"), Some("s3cre")] {
        let (status, body) = stats(&server, "", key).await;
        assert_eq!(status, 401, "key {key:?}");
        assert_eq!(body["error"]["code"], "unauthorized");
        wirehub_testkit::assert_schema(&document["http"]["error"], &body);
    }
    let (status, body) = stats(&server, "", Some("s3cret")).await;
    assert_eq!(status, 200, "{body}");
    wirehub_testkit::assert_schema(&document["http"]["stats_reply"], &body);

    // Without a key configured the figures are open, like the rest of the API.
    let open = TestServer::start(config()).await;
    let (status, _) = stats(&open, "", None).await;
    assert_eq!(status, 200);
    let (status, body) = stats(&open, "?since=soon", None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_message");
}

#[tokio::test]
async fn issue_13_stats_count_connections_messages_and_closes_and_keep_samples() {
    let server = TestServer::start(config()).await;
    let document = schema(&server).await;
    let (status, first) = stats(&server, "", None).await;
    assert_eq!(status, 200);
    wirehub_testkit::assert_schema(&document["http"]["stats_reply"], &first);
    assert_eq!(first["ready"], true);
    assert_eq!(
        first["broker"],
        json!({"kind": "memory", "reachable": true, "resubscribes_total": 0})
    );
    assert_eq!(first["interval_ms"], 1000);
    assert_eq!(first["now"]["connections"], 0);
    // Every close code the server uses is listed, also those never used yet.
    let codes: Vec<u64> = first["closes"]
        .as_array()
        .expect("closes")
        .iter()
        .filter_map(|c| c["code"].as_u64())
        .collect();
    for code in [1000, 1001, 4100, 4101] {
        assert!(codes.contains(&code), "no {code} in {codes:?}");
    }

    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    client.subscribe("news").await;
    server.publish_http("news", json!("hello")).await;
    client.expect("message").await;
    let now = stats_until(&server, "the connection and its message", |r| {
        r.now.connections == 1 && r.now.delivered_total == 1
    })
    .await
    .now;
    assert_eq!((now.subscriptions, now.channels), (1, 1));
    // One client message (the subscribe); the publish came over HTTP.
    assert_eq!((now.messages_in_total, now.published_total), (1, 1));
    assert_eq!(now.connections_total, 1);

    // The samples taken once a second show it too, oldest first; `since` gives only newer ones.
    let sampled = stats_until(&server, "a sample with the connection", |r| {
        r.samples
            .iter()
            .any(|s| s.connections == 1 && s.published_total == 1)
    })
    .await;
    assert!(
        sampled
            .samples
            .windows(2)
            .all(|w| w[0].time_ms < w[1].time_ms)
    );
    let last = sampled.samples.last().expect("a sample").time_ms;
    let (_, newer) = stats(&server, &format!("?since={last}"), None).await;
    let newer: StatsReply = serde_json::from_value(newer).expect("a StatsReply");
    assert!(newer.samples.iter().all(|s| s.time_ms > last), "{newer:?}");

    client.stream.close(None).await.expect("a close frame");
    let closed = stats_until(&server, "the close", |r| {
        r.now.connections == 0 && r.closes.iter().any(|c| c.code == 1000 && c.count == 1)
    })
    .await;
    assert_eq!(closed.now.slow_consumers_total, 0);
}

#[tokio::test]
async fn issue_13_the_page_the_dashboard_and_their_files_are_compiled_in() {
    let server = TestServer::start(config()).await;
    let http = reqwest::Client::new();
    for (path, kind, needle) in [
        ("/", "text/html", "/assets/page.js"),
        ("/dashboard", "text/html", "/assets/dashboard.js"),
        ("/assets/page.js", "text/javascript", "WirehubClient"),
        ("/assets/dashboard.js", "text/javascript", "/api/stats"),
        ("/assets/style.css", "text/css", "--accent"),
    ] {
        let response = http.get(server.http_url(path)).send().await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .is_ok_and(|t| t.starts_with(kind)),
            "{path}: {:?}",
            headers["content-type"]
        );
        assert_eq!(headers["cache-control"], "no-cache", "{path}");
        assert!(
            headers.get("content-encoding").is_none(),
            "{path}: not asked for gzip"
        );
        let etag = headers["etag"].clone();
        let body = response.text().await.expect("body");
        assert!(body.contains(needle), "{path} lacks {needle}");
        if kind == "text/html" {
            assert!(
                headers["content-security-policy"]
                    .to_str()
                    .is_ok_and(|p| p.contains("script-src 'self'"))
            );
        }

        // Revalidation: the same ETag gets 304 without a body.
        let again = http
            .get(server.http_url(path))
            .header("if-none-match", etag.clone())
            .send()
            .await
            .expect("get");
        assert_eq!(again.status(), 304, "{path}");
        assert_eq!(again.headers()["etag"], etag);
        assert!(again.bytes().await.expect("body").is_empty());

        // Gzip for who asks.
        let gzipped = http
            .get(server.http_url(path))
            .header("accept-encoding", "gzip, br")
            .send()
            .await
            .expect("get");
        assert_eq!(gzipped.headers()["content-encoding"], "gzip", "{path}");
        assert_eq!(gzipped.headers()["vary"], "Accept-Encoding");
        let bytes = gzipped.bytes().await.expect("body");
        assert_eq!(&bytes[..2], &[0x1f, 0x8b], "{path}: a gzip stream");
    }
    let missing = http
        .get(server.http_url("/assets/nope.js"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
}
