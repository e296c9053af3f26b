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

const KEY: &str = "app-key";
const APP_SECRET: &str = "app-secret";

/// `key:HMAC-SHA256(secret, "socket_id:channel:channel_data")`, as an auth endpoint signs
/// a presence subscription.
fn presence_auth(socket_id: &str, channel: &str, channel_data: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(APP_SECRET.as_bytes()).expect("any key");
    mac.update(format!("{socket_id}:{channel}:{channel_data}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{KEY}:{hex}")
}

/// A Pusher connection to `server`, with its socket id.
async fn pusher_connect(server: &TestServer) -> (Ws, String) {
    let url = format!("ws://{}/app/{KEY}?protocol=7", server.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("upgrade");
    let established = next_event(&mut ws).await;
    let data: Value =
        serde_json::from_str(established["data"].as_str().expect("data")).expect("JSON");
    let socket_id = data["socket_id"].as_str().expect("socket_id").to_owned();
    (ws, socket_id)
}

/// Subscribes to a presence channel as `user`; returns `subscription_succeeded`'s presence.
async fn join_presence(ws: &mut Ws, socket_id: &str, channel: &str, user: &str) -> Value {
    let channel_data = json!({ "user_id": user, "user_info": { "name": user } }).to_string();
    let data = json!({
        "channel": channel,
        "auth": presence_auth(socket_id, channel, &channel_data),
        "channel_data": channel_data,
    });
    let succeeded = subscribe_succeeded(ws, data).await;
    let data: Value =
        serde_json::from_str(succeeded["data"].as_str().expect("data")).expect("JSON");
    data["presence"].clone()
}

/// Sends `pusher:subscribe` with `data`; returns its `subscription_succeeded` event.
async fn subscribe_succeeded(ws: &mut Ws, data: Value) -> Value {
    let subscribe = json!({ "event": "pusher:subscribe", "data": data });
    ws.send(Message::text(subscribe.to_string()))
        .await
        .expect("send");
    let succeeded = next_event(ws).await;
    assert_eq!(
        succeeded["event"], "pusher_internal:subscription_succeeded",
        "{succeeded}"
    );
    succeeded
}

/// The next event that is not a ping reply; fails on anything else than `want`.
async fn expect_event(ws: &mut Ws, want: &str) -> Value {
    let event = next_event(ws).await;
    assert_eq!(event["event"], want, "{event}");
    serde_json::from_str(event["data"].as_str().expect("data")).expect("JSON")
}

/// Pusher presence on the hub's presence: users listed from either node, `member_added` on
/// a user's first connection only (in the cluster), `member_removed` once its last one left,
/// sent once to each subscriber, never to the connection that joined.
async fn presence_across(nodes: &[&TestServer]) {
    let channel = "presence-room";
    let (mut ann, ann_id) = pusher_connect(nodes[0]).await;
    let presence = join_presence(&mut ann, &ann_id, channel, "ann").await;
    assert_eq!(presence["ids"], json!(["ann"]));
    assert_eq!(presence["count"], 1);

    let other = nodes[1 % nodes.len()];
    let (mut bob, bob_id) = pusher_connect(other).await;
    let presence = join_presence(&mut bob, &bob_id, channel, "bob").await;
    assert_eq!(presence["ids"], json!(["ann", "bob"]), "{presence}");
    assert_eq!(presence["hash"]["ann"]["name"], "ann");
    let added = expect_event(&mut ann, "pusher_internal:member_added").await;
    assert_eq!(added["user_id"], "bob");
    assert_eq!(added["user_info"]["name"], "bob");

    // A second connection of ann, on the other node: ann is already there, nothing is said.
    let (mut ann2, ann2_id) = pusher_connect(other).await;
    let presence = join_presence(&mut ann2, &ann2_id, channel, "ann").await;
    assert_eq!(presence["count"], 2, "{presence}");
    // bob leaves (closes cleanly): each of ann's connections hears it once, and nothing of
    // ann's second connection came before it.
    bob.close(None).await.expect("close");
    for ws in [&mut ann, &mut ann2] {
        let removed = expect_event(ws, "pusher_internal:member_removed").await;
        assert_eq!(removed["user_id"], "bob");
    }
    // ann's first connection goes: ann still has one, so nobody hears of it; a ping answered
    // right after shows that nothing else was queued.
    ann.close(None).await.expect("close");
    let (mut carl, carl_id) = pusher_connect(nodes[0]).await;
    let presence = join_presence(&mut carl, &carl_id, channel, "carl").await;
    assert_eq!(presence["ids"], json!(["ann", "carl"]), "{presence}");
    let added = expect_event(&mut ann2, "pusher_internal:member_added").await;
    assert_eq!(added["user_id"], "carl");
    ann2.send(Message::text(r#"{"event":"pusher:ping","data":{}}"#))
        .await
        .expect("send");
    assert_eq!(next_event(&mut ann2).await["event"], "pusher:pong");
}

#[tokio::test]
async fn issue_12_pusher_presence_in_one_node() {
    let server = TestServer::start(config()).await;
    presence_across(&[&server]).await;
}

#[tokio::test]
async fn issue_12_pusher_presence_across_two_nodes_on_redis() {
    let redis = wirehub_testkit::RedisServer::start();
    let broker = || {
        wirehub_server::BrokerConfig::Redis(
            wirehub_server::RedisConfig::new(redis.url()).timeout(Duration::from_secs(2)),
        )
    };
    let a = TestServer::start(config().broker(broker())).await;
    let b = TestServer::start(config().broker(broker())).await;
    presence_across(&[&a, &b]).await;
}

/// A receiver of Pusher-format webhooks: checks `X-Pusher-Key` and `X-Pusher-Signature`
/// (hex HMAC-SHA256 of the body with the app secret) and keeps the events of valid ones.
struct PusherReceiver {
    url: String,
    events: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    bad: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl PusherReceiver {
    /// A receiver that answers the first `fail` valid requests with 500.
    async fn start(fail: usize) -> PusherReceiver {
        use axum::http::{HeaderMap, StatusCode};
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let bad = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (kept, refused) = (events.clone(), bad.clone());
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(fail));
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (kept, refused, failing) = (kept.clone(), refused.clone(), failing.clone());
                async move {
                    use hmac::{Hmac, Mac};
                    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(APP_SECRET.as_bytes())
                        .expect("any key");
                    mac.update(&body);
                    let expected: String = mac
                        .finalize()
                        .into_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    if header("x-pusher-key") != KEY || header("x-pusher-signature") != expected {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return StatusCode::UNAUTHORIZED;
                    }
                    let fail = failing.fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |left| left.checked_sub(1),
                    );
                    if fail.is_ok() {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let batch: Value = serde_json::from_slice(&body).expect("JSON body");
                    let mut kept = kept.lock().expect("lock");
                    kept.extend(batch["events"].as_array().cloned().unwrap_or_default());
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        PusherReceiver { url, events, bad }
    }

    fn count(&self, name: &str, channel: &str) -> usize {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e["name"] == name && e["channel"] == channel)
            .count()
    }

    /// Waits until `name` on `channel` arrived `n` times.
    async fn wait(&self, name: &str, channel: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.count(name, channel) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} on {channel}: {:?}",
                self.events.lock().expect("lock")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Two nodes on Redis send each Pusher webhook once (retried after the receiver's 500s): channel_occupied for the first
/// subscriber anywhere, channel_vacated after the last one is gone, member_added for a
/// user's first connection in the cluster and member_removed after its last.
#[tokio::test]
async fn issue_12_pusher_webhooks_once_per_transition_across_two_nodes() {
    // The first two requests fail: the delivery tries again, and nothing arrives twice.
    let receiver = PusherReceiver::start(2).await;
    let redis = wirehub_testkit::RedisServer::start();
    let node = || {
        ServerConfig::new()
            .pusher(PusherConfig::new().apps(vec![
                PusherApp::new("1", KEY, APP_SECRET).webhook_url(Some(receiver.url.clone())),
            ]))
            .vacate_delay(Duration::from_millis(300))
            // The v1 presence API reads the same members (the test waits on it).
            .channels(wirehub_server::ChannelRules::new(vec![
                wirehub_server::ChannelOptions::new("presence-*").presence(true),
            ]))
            .broker(wirehub_server::BrokerConfig::Redis(
                wirehub_server::RedisConfig::new(redis.url()).timeout(Duration::from_secs(2)),
            ))
    };
    let a = TestServer::start(node()).await;
    let b = TestServer::start(node()).await;
    let (mut on_a, a_id) = pusher_connect(&a).await;
    let (mut on_b, b_id) = pusher_connect(&b).await;
    let channel = "presence-lobby";
    join_presence(&mut on_a, &a_id, channel, "ann").await;
    receiver.wait("member_added", channel, 1).await;
    receiver.wait("channel_occupied", channel, 1).await;
    join_presence(&mut on_b, &b_id, channel, "ann").await;
    on_a.close(None).await.expect("close");
    // ann is still there through node b; once node a's leave took effect (one member left,
    // read through the v1 API), b hears nothing of it and then leaves too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read: Value = reqwest::get(b.http_url(&format!("/api/presence?channel={channel}")))
            .await
            .expect("GET /api/presence")
            .json()
            .await
            .expect("JSON");
        if read["count"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{read}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    on_b.send(Message::text(r#"{"event":"pusher:ping","data":{}}"#))
        .await
        .expect("send");
    assert_eq!(next_event(&mut on_b).await["event"], "pusher:pong");
    on_b.close(None).await.expect("close");
    receiver.wait("member_removed", channel, 1).await;
    receiver.wait("channel_vacated", channel, 1).await;
    // A subscriber within the debounce would have cancelled it; none came, and nothing else
    // arrives late: a second channel's transition, sent after, is the last thing seen.
    let (mut again, again_id) = pusher_connect(&a).await;
    join_presence(&mut again, &again_id, "presence-other", "bob").await;
    receiver.wait("channel_occupied", "presence-other", 1).await;
    for name in [
        "member_added",
        "member_removed",
        "channel_occupied",
        "channel_vacated",
    ] {
        assert_eq!(
            receiver.count(name, channel),
            1,
            "{name}: {:?}",
            receiver.events.lock().expect("lock")
        );
    }
    assert_eq!(receiver.bad.load(std::sync::atomic::Ordering::Relaxed), 0);
}

/// A v1 publish of a Pusher event `n` with data `n` (excluded for `socket_id` when given).
async fn publish_numbered(server: &TestServer, channel: &str, n: u64, socket_id: Option<&str>) {
    let mut data = json!({ "event": "n", "data": n.to_string() });
    if let Some(socket_id) = socket_id {
        data["socket_id"] = Value::from(socket_id);
    }
    let reply = reqwest::Client::new()
        .post(server.http_url("/api/publish"))
        .json(&json!({ "channel": channel, "data": data }))
        .send()
        .await
        .expect("publish");
    assert!(reply.status().is_success(), "{reply:?}");
}

/// Subscribes to a public channel; returns `subscription_succeeded`'s position field.
async fn subscribe_public(ws: &mut Ws, channel: &str) -> Value {
    let succeeded = subscribe_succeeded(ws, json!({ "channel": channel })).await;
    succeeded["wirehub"].clone()
}

async fn send_recover(ws: &mut Ws, channel: &str, epoch: &str, offset: u64, earlier: &[&str]) {
    let recover = json!({
        "event": "wirehub:recover",
        "data": { "channel": channel, "epoch": epoch, "offset": offset, "socket_ids": earlier },
    });
    ws.send(Message::text(recover.to_string()))
        .await
        .expect("send");
}

/// The offsets of the `n` events that come before the recovery's answer, and that answer
/// (event name and data).
async fn until_answer(ws: &mut Ws) -> (Vec<u64>, String, Value) {
    let mut offsets = Vec::new();
    loop {
        let event = next_event(ws).await;
        let name = event["event"].as_str().expect("event name").to_owned();
        if name.starts_with("wirehub:recover") {
            let data = serde_json::from_str(event["data"].as_str().expect("data")).expect("JSON");
            return (offsets, name, data);
        }
        assert_eq!(name, "n", "{event}");
        offsets.push(event["wirehub"]["offset"].as_u64().expect("offset"));
    }
}

/// Issue 12's last item, the server's side of recovery for Pusher clients: every event made
/// from a publication carries its stream position, `subscription_succeeded` the position the
/// subscription starts after, and `wirehub:recover` replays what came after a position,
/// except what the client's earlier connections were excluded from; refusals have stable
/// reasons.
#[tokio::test]
async fn issue_12_pusher_recovery_positions_replay_and_refusals() {
    let rules = wirehub_server::ChannelRules::new(vec![
        wirehub_server::ChannelOptions::new("short-*").history_size(2),
    ]);
    let server = TestServer::start(config().channels(rules)).await;
    let (mut first, first_id) = pusher_connect(&server).await;
    let start = subscribe_public(&mut first, "feed").await;
    assert_eq!(start["offset"], 0, "{start}");
    let epoch = start["epoch"].as_str().expect("epoch").to_owned();
    for n in 1..=4 {
        let excluded = (n == 3).then_some(first_id.as_str());
        publish_numbered(&server, "feed", n, excluded).await;
    }
    // The third event excluded this socket (`socket_id`): 1, 2, 4, each with its position.
    for want in [1, 2, 4] {
        let event = next_event(&mut first).await;
        assert_eq!(event["event"], "n");
        assert_eq!(event["wirehub"], json!({ "epoch": epoch, "offset": want }));
    }
    first.close(None).await.expect("close");

    // The same client again, having handed its app offset 1 only.
    let (mut second, _) = pusher_connect(&server).await;
    let start = subscribe_public(&mut second, "feed").await;
    assert_eq!(start, json!({ "epoch": epoch, "offset": 4 }));
    publish_numbered(&server, "feed", 5, None).await;
    let live = next_event(&mut second).await;
    assert_eq!(live["wirehub"]["offset"], 5);
    send_recover(&mut second, "feed", &epoch, 1, &[&first_id]).await;
    let (offsets, answer, data) = until_answer(&mut second).await;
    assert_eq!(
        offsets,
        [2, 4, 5],
        "3 was for the earlier socket's others only"
    );
    assert_eq!(answer, "wirehub:recovered");
    assert_eq!(
        data,
        json!({ "epoch": epoch, "offset": 5, "replayed": 3, "complete": true })
    );

    // Without the earlier socket id, the third event is replayed too.
    send_recover(&mut second, "feed", &epoch, 2, &[]).await;
    let (offsets, _, data) = until_answer(&mut second).await;
    assert_eq!(offsets, [3, 4, 5]);
    assert_eq!(data["replayed"], 3);

    // Refusals: another epoch, a position ahead of the stream, history too short, a
    // channel this connection is not subscribed to (its authorization was never checked).
    send_recover(&mut second, "feed", "another-epoch", 1, &[]).await;
    let (offsets, answer, data) = until_answer(&mut second).await;
    assert!(offsets.is_empty());
    assert_eq!(answer, "wirehub:recovery_failed");
    assert_eq!(
        data,
        json!({ "reason": "epoch_changed", "epoch": epoch, "offset": 5 })
    );
    send_recover(&mut second, "feed", &epoch, 99, &[]).await;
    assert_eq!(
        until_answer(&mut second).await.2["reason"],
        "invalid_position"
    );
    let short = subscribe_public(&mut second, "short-feed").await;
    let short_epoch = short["epoch"].as_str().expect("epoch").to_owned();
    for n in 1..=5 {
        publish_numbered(&server, "short-feed", n, None).await;
    }
    for _ in 1..=5 {
        assert_eq!(next_event(&mut second).await["event"], "n");
    }
    send_recover(&mut second, "short-feed", &short_epoch, 1, &[]).await;
    let (offsets, _, data) = until_answer(&mut second).await;
    assert!(offsets.is_empty());
    assert_eq!(data["reason"], "out_of_history");
    send_recover(&mut second, "private-secret", &epoch, 0, &[]).await;
    let (_, answer, data) = until_answer(&mut second).await;
    assert_eq!(answer, "wirehub:recovery_failed");
    assert_eq!(data, json!({ "reason": "not_subscribed" }));

    // Other `wirehub:` events, which pusher-js never sends, change nothing.
    second
        .send(Message::text(r#"{"event":"wirehub:other","data":{}}"#))
        .await
        .expect("send");
    second
        .send(Message::text(r#"{"event":"pusher:ping","data":{}}"#))
        .await
        .expect("send");
    assert_eq!(next_event(&mut second).await["event"], "pusher:pong");
}

/// A replay larger than half the connection's queue comes in parts, each answered with
/// `complete: false` and the offset it reached; asking again from there gets the rest,
/// every offset once.
#[tokio::test]
async fn issue_12_pusher_recovery_larger_than_the_queue_comes_in_parts() {
    let server = TestServer::start(config().max_queued_frames(8)).await;
    let (mut ws, _) = pusher_connect(&server).await;
    let start = subscribe_public(&mut ws, "big").await;
    let epoch = start["epoch"].as_str().expect("epoch").to_owned();
    for n in 1..=40 {
        publish_numbered(&server, "big", n, None).await;
    }
    for _ in 1..=40 {
        assert_eq!(next_event(&mut ws).await["event"], "n");
    }
    let mut got = Vec::new();
    let mut from = 0;
    let mut rounds = 0;
    loop {
        send_recover(&mut ws, "big", &epoch, from, &[]).await;
        let (offsets, answer, data) = until_answer(&mut ws).await;
        assert_eq!(answer, "wirehub:recovered", "{data}");
        rounds += 1;
        got.extend(offsets);
        let reached = data["offset"].as_u64().expect("offset");
        assert!(reached > from, "{data}");
        from = reached;
        if data["complete"] == true {
            break;
        }
    }
    assert_eq!(got, (1..=40).collect::<Vec<_>>());
    assert!(rounds > 1, "40 events in one replay through a queue of 8");
}

/// `wirehub:recover` is rate limited per connection (as many per second as it may hold
/// subscriptions): beyond that it is answered `rate_limited` and nothing is replayed, and a
/// client that keeps asking at ten times the rate is closed like one flooding client events.
#[tokio::test]
async fn issue_12_pusher_recovery_requests_are_rate_limited() {
    let server = TestServer::start(config().max_subscriptions(2)).await;
    let (mut ws, _) = pusher_connect(&server).await;
    let start = subscribe_public(&mut ws, "feed").await;
    let epoch = start["epoch"].as_str().expect("epoch").to_owned();
    publish_numbered(&server, "feed", 1, None).await;
    assert_eq!(next_event(&mut ws).await["wirehub"]["offset"], 1);

    // Ten at once against 2 per second: the first two replay, most of the rest are refused
    // (the bucket gets one back every 500 ms).
    for _ in 0..10 {
        send_recover(&mut ws, "feed", &epoch, 0, &[]).await;
    }
    let mut answers = Vec::new();
    for _ in 0..10 {
        let (offsets, answer, data) = until_answer(&mut ws).await;
        answers.push((offsets, answer, data));
    }
    for (offsets, answer, data) in &answers[..2] {
        assert_eq!(answer, "wirehub:recovered", "{data}");
        assert_eq!(offsets, &[1]);
    }
    let limited: Vec<_> = answers
        .iter()
        .filter(|(_, answer, _)| answer == "wirehub:recovery_failed")
        .collect();
    assert!(limited.len() >= 5, "{answers:?}");
    for (offsets, _, data) in limited {
        assert!(offsets.is_empty(), "a refused request replays nothing");
        assert_eq!(data, &json!({ "reason": "rate_limited" }));
    }

    // Far past the rate (more than 10 × max(rate, 10) refusals within a second): closed
    // with 4100, as for a flood of client events.
    for _ in 0..150 {
        send_recover(&mut ws, "feed", &epoch, 1, &[]).await;
    }
    let closed = loop {
        let event = next_event(&mut ws).await;
        if event.get("closed").is_some() {
            break event;
        }
        assert_eq!(event["event"], "wirehub:recovery_failed", "{event}");
    };
    assert_eq!(closed["closed"], 4100);
}
