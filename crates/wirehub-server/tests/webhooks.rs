//! Issue 11: lifecycle webhooks, channel occupancy across nodes, `GET /api/channels` and
//! `POST /api/disconnect`, against real servers, a real Redis and a real HTTP receiver that
//! checks every signature and fails on purpose.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use wirehub_server::{BrokerConfig, RedisConfig, ServerConfig, WebhookConfig};
use wirehub_testkit::{RedisServer, TIMEOUT, TestServer, WebhookReceiver as Receiver, WsClient};

const SECRET: &str = "webhook-secret";

fn dead_letter_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "wirehub-issue-11-{name}-{}-{:x}.jsonl",
        std::process::id(),
        rand_suffix()
    ))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn config(receiver: &Receiver, dead_letter: &Path) -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .shutdown_drain(Duration::from_millis(200))
        .vacate_delay(Duration::from_millis(300))
        .occupancy_lease(Duration::from_millis(600))
        .webhook_secret(Some(SECRET.to_owned()))
        .webhooks(Some(
            WebhookConfig::new(receiver.url())
                .batch_delay(Duration::from_millis(20))
                .retry(Duration::from_millis(20), Duration::from_millis(100))
                .timeout(Duration::from_secs(2))
                .dead_letter(dead_letter),
        ))
}

fn session(welcome: &Value) -> String {
    welcome["session"].as_str().expect("session id").to_owned()
}

#[tokio::test]
async fn issue_11_every_event_arrives_signed_once_after_the_receiver_failed() {
    let receiver = Receiver::start(SECRET, 3).await;
    let dead = dead_letter_path("retry");
    let server = TestServer::start(config(&receiver, &dead)).await;
    let (mut client, welcome) = WsClient::connect(&server.ws_url()).await;
    let client_id = session(&welcome);
    client.subscribe("room:1").await;
    client
        .send(&json!({"type": "unsubscribe", "channel": "room:1"}))
        .await;
    client.expect("unsubscribed").await;
    client.subscribe("room:2").await;
    drop(client);
    receiver
        .wait("the disconnect and both vacates", |events| {
            events.iter().any(|e| e["type"] == "disconnect")
                && events
                    .iter()
                    .filter(|e| e["type"] == "channel_vacated")
                    .count()
                    == 2
        })
        .await;
    let accepted = receiver.accepted();
    let kinds: Vec<(String, String)> = accepted
        .iter()
        .map(|e| {
            (
                e["type"].as_str().expect("type").to_owned(),
                e["channel"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want = [
        ("connect", ""),
        ("subscribe", "room:1"),
        ("unsubscribe", "room:1"),
        ("subscribe", "room:2"),
        ("unsubscribe", "room:2"),
        ("disconnect", ""),
    ];
    // The session's own events in order (occupancy events interleave).
    let own: Vec<(String, String)> = kinds
        .iter()
        .filter(|(kind, _)| !kind.starts_with("channel_"))
        .cloned()
        .collect();
    assert_eq!(
        own,
        want.iter()
            .map(|(k, c)| ((*k).to_owned(), (*c).to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(receiver.count("channel_occupied", "room:1"), 1);
    assert_eq!(receiver.count("channel_vacated", "room:1"), 1);
    assert_eq!(receiver.count("channel_occupied", "room:2"), 1);
    let disconnect = accepted
        .iter()
        .find(|e| e["type"] == "disconnect")
        .expect("disconnect");
    assert_eq!(disconnect["client"], client_id.as_str());
    assert_eq!(disconnect["code"], 1006, "{disconnect}");
    assert!(disconnect["time_ms"].as_u64().is_some_and(|t| t > 0));
    // Ids unique among the delivered events; every refused event was delivered later, once.
    let mut ids: HashMap<String, usize> = HashMap::new();
    for event in &accepted {
        *ids.entry(event["id"].as_str().expect("id").to_owned())
            .or_default() += 1;
    }
    assert!(ids.values().all(|n| *n == 1), "duplicates: {ids:?}");
    let seen = receiver.seen();
    let (refused, bad_signatures) = (seen.refused, seen.bad_signatures);
    assert!(
        !refused.is_empty(),
        "the receiver refused the first requests"
    );
    assert!(refused.iter().all(|id| ids.contains_key(id)));
    assert_eq!(bad_signatures, 0);
    assert!(
        server
            .metric("wirehub_webhook_retries_total{target=\"wirehub\"}")
            .await
            >= 3
    );
    assert_eq!(
        server
            .metric("wirehub_webhook_events_sent_total{target=\"wirehub\"}")
            .await,
        accepted.len() as u64
    );
    assert!(!dead.exists(), "nothing was dead-lettered");
}

#[tokio::test]
async fn issue_11_a_rejoin_within_the_debounce_cancels_the_vacate() {
    let receiver = Receiver::start(SECRET, 0).await;
    let dead = dead_letter_path("debounce");
    let server =
        TestServer::start(config(&receiver, &dead).vacate_delay(Duration::from_millis(500))).await;
    let (mut first, _) = WsClient::connect(&server.ws_url()).await;
    first.subscribe("lobby").await;
    drop(first);
    receiver
        .wait("the first unsubscribe", |events| {
            events.iter().any(|e| e["type"] == "unsubscribe")
        })
        .await;
    let (mut second, _) = WsClient::connect(&server.ws_url()).await;
    second.subscribe("lobby").await;
    // Past the debounce: the vacate was cancelled by the rejoin.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(receiver.count("channel_occupied", "lobby"), 1);
    assert_eq!(receiver.count("channel_vacated", "lobby"), 0);
    drop(second);
    receiver
        .wait("the vacate", |events| {
            events.iter().any(|e| e["type"] == "channel_vacated")
        })
        .await;
    assert_eq!(receiver.count("channel_vacated", "lobby"), 1);
    assert_eq!(receiver.count("channel_occupied", "lobby"), 1);
}

#[tokio::test]
async fn issue_11_queue_overflow_goes_to_the_dead_letter_file_and_is_counted() {
    // A receiver that refuses everything: the first batch is retried while the queue fills.
    let receiver = Receiver::start(SECRET, u32::MAX).await;
    let dead = dead_letter_path("overflow");
    let mut config = config(&receiver, &dead);
    config.webhooks = config
        .webhooks
        .map(|w| w.queue_capacity(2).batch_size(1).max_attempts(1000));
    let server = TestServer::start(config).await;
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    for n in 0..6 {
        client.subscribe(&format!("c:{n}")).await;
    }
    let name = "wirehub_webhook_events_dead_lettered_total{target=\"wirehub\",reason=\"overflow\"}";
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while server.metric(name).await < 5 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no overflow counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let overflowed = server.metric(name).await;
    let text = std::fs::read_to_string(&dead).expect("the dead-letter file exists");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let overflow_lines = lines.iter().filter(|l| l["reason"] == "overflow").count() as u64;
    assert!(overflow_lines >= overflowed.min(5), "{lines:#?}");
    assert!(lines.iter().all(|l| l["url"] == receiver.url()
        && l["event"]["id"].is_string()
        && l["event"]["type"].is_string()));
    assert!(
        server
            .metric("wirehub_webhook_queue_depth{target=\"wirehub\"}")
            .await
            <= 2
    );
    drop(client);
    let _ = std::fs::remove_file(&dead);
}

fn redis_config(redis: &RedisServer, receiver: &Receiver, dead: &Path) -> ServerConfig {
    config(receiver, dead).broker(BrokerConfig::Redis(
        RedisConfig::new(redis.url()).timeout(Duration::from_secs(2)),
    ))
}

async fn channels(server: &TestServer, query: &str) -> Value {
    reqwest::get(server.http_url(&format!("/api/channels{query}")))
        .await
        .expect("GET /api/channels")
        .json()
        .await
        .expect("JSON")
}

#[tokio::test]
async fn issue_11_two_nodes_on_redis_send_each_transition_once_and_list_and_disconnect_across_nodes()
 {
    let redis = RedisServer::start();
    let receiver = Receiver::start(SECRET, 1).await;
    let dead = dead_letter_path("redis");
    let one = TestServer::start(redis_config(&redis, &receiver, &dead)).await;
    let two = TestServer::start(redis_config(&redis, &receiver, &dead)).await;
    let (mut a, _) = WsClient::connect(&one.ws_url()).await;
    let (mut b, welcome_b) = WsClient::connect(&two.ws_url()).await;
    a.subscribe("room:x").await;
    b.subscribe("room:x").await;
    a.subscribe("other").await;
    receiver
        .wait("room:x occupied", |events| {
            events
                .iter()
                .any(|e| e["type"] == "channel_occupied" && e["channel"] == "room:x")
        })
        .await;
    // Cluster-wide counts, from either node.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let listed = channels(&two, "?prefix=room:").await;
        if listed["channels"] == json!([{"channel": "room:x", "subscribers": 2}]) {
            assert_eq!(listed["cluster_wide"], true);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = channels(&one, "?limit=1").await;
    assert_eq!(page["channels"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["next"], "other");
    // A disconnect order on node one closes b on node two.
    let reply: Value = reqwest::Client::new()
        .post(one.http_url("/api/disconnect"))
        .json(&json!({"client": session(&welcome_b), "code": 4000, "reason": "bye"}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    assert_eq!(reply, json!({"disconnected": 0}), "b is on the other node");
    let close = b.expect_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 4000);
    assert_eq!(close.reason.as_str(), "bye");
    let refused = reqwest::Client::new()
        .post(one.http_url("/api/disconnect"))
        .json(&json!({"client": "x", "code": 3000}))
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), 400);
    drop(a);
    receiver
        .wait("room:x and other vacated", |events| {
            events
                .iter()
                .filter(|e| e["type"] == "channel_vacated")
                .count()
                == 2
        })
        .await;
    assert_eq!(receiver.count("channel_occupied", "room:x"), 1);
    assert_eq!(receiver.count("channel_vacated", "room:x"), 1);
    let b_disconnect = receiver
        .accepted()
        .into_iter()
        .find(|e| e["type"] == "disconnect" && e["client"] == session(&welcome_b).as_str())
        .expect("b's disconnect");
    assert_eq!(b_disconnect["code"], 4000);
    assert_eq!(b_disconnect["reason"], "bye");
}

#[tokio::test]
async fn issue_11_a_killed_nodes_channels_are_vacated_once_by_a_survivor() {
    let redis = RedisServer::start();
    let receiver = Receiver::start(SECRET, 0).await;
    let dead = dead_letter_path("kill");
    let survivor = TestServer::start(redis_config(&redis, &receiver, &dead)).await;
    let doomed = TestServer::start(redis_config(&redis, &receiver, &dead)).await;
    let (mut a, _) = WsClient::connect(&doomed.ws_url()).await;
    a.subscribe("doomed:1").await;
    receiver
        .wait("occupied", |events| {
            events.iter().any(|e| e["type"] == "channel_occupied")
        })
        .await;
    doomed.kill().await;
    receiver
        .wait("vacated by the survivor", |events| {
            events
                .iter()
                .any(|e| e["type"] == "channel_vacated" && e["channel"] == "doomed:1")
        })
        .await;
    // A lease and a debounce later, still once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(receiver.count("channel_vacated", "doomed:1"), 1);
    assert_eq!(receiver.count("channel_occupied", "doomed:1"), 1);
    let listed = channels(&survivor, "?prefix=doomed").await;
    assert_eq!(listed["channels"], json!([]));
}

#[tokio::test]
async fn issue_11_a_users_connections_are_closed_by_order_and_channels_listed_on_one_node() {
    const JWT: &str = "a-secret-of-at-least-16-characters";
    const KEY: &str = "api-key";
    let receiver = Receiver::start(SECRET, 0).await;
    let dead = dead_letter_path("memory");
    let server = TestServer::start(
        config(&receiver, &dead)
            .auth(Some(wirehub_server::AuthConfig::Secret(JWT.into())))
            .api_key(Some(KEY.to_owned())),
    )
    .await;
    let token = |user: &str| {
        wirehub_testkit::hs256_token(
            JWT,
            &json!({"sub": user, "exp": wirehub_testkit::unix_now() + 60, "subscribe": ["*"]}),
        )
    };
    let url = |user: &str| format!("{}?token={}", server.ws_url(), token(user));
    let (mut ann1, _) = WsClient::connect(&url("ann")).await;
    let (mut ann2, _) = WsClient::connect(&url("ann")).await;
    let (mut bob, _) = WsClient::connect(&url("bob")).await;
    ann1.subscribe("room:a").await;
    ann2.subscribe("room:a").await;
    bob.subscribe("room:b").await;
    let http = reqwest::Client::new();
    let unauthorized = http
        .get(server.http_url("/api/channels"))
        .send()
        .await
        .expect("GET");
    assert_eq!(unauthorized.status(), 401);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let listed: Value = http
            .get(server.http_url("/api/channels?prefix=room:"))
            .bearer_auth(KEY)
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .expect("JSON");
        let want = json!({"channels": [
            {"channel": "room:a", "subscribers": 2},
            {"channel": "room:b", "subscribers": 1}
        ], "cluster_wide": false});
        if listed == want {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply: Value = http
        .post(server.http_url("/api/disconnect"))
        .bearer_auth(KEY)
        .json(&json!({"user": "ann"}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    assert_eq!(reply, json!({"disconnected": 2}));
    for ann in [&mut ann1, &mut ann2] {
        let close = ann.expect_close().await.expect("a close frame");
        assert_eq!(u16::from(close.code), 4003);
        assert_eq!(close.reason.as_str(), "disconnected by the server");
    }
    // Bob's connection is untouched.
    bob.send(&json!({"type": "ping"})).await;
    bob.expect("pong").await;
    receiver
        .wait("both of ann's disconnects and room:a vacated", |events| {
            events
                .iter()
                .filter(|e| e["type"] == "disconnect" && e["user"] == "ann" && e["code"] == 4003)
                .count()
                == 2
                && events
                    .iter()
                    .any(|e| e["type"] == "channel_vacated" && e["channel"] == "room:a")
        })
        .await;
    assert_eq!(receiver.count("channel_vacated", "room:b"), 0);
    let both = http
        .post(server.http_url("/api/disconnect"))
        .bearer_auth(KEY)
        .json(&json!({"user": "ann", "client": "x"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(both.status(), 400);
}
