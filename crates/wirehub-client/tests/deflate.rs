//! permessage-deflate between the Rust SDK and the real server: negotiated by default, what
//! crosses the wire counted by a proxy in both directions, one compression per publication
//! however many subscribers and recoveries, plain frames when either side does not want the
//! extension, and the inflation limit.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::timeout;
use wirehub_client::{Client, ClientConfig, Event, Events, SubscriptionEvent};
use wirehub_server::ServerConfig;
use wirehub_testkit::{TcpProxy, TestServer, client_config, wait_for};

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn config(url: &str) -> ClientConfig {
    client_config(url, WAIT)
}

/// A JSON message of about 2 KB of text that repeats itself, as chat or dashboards do.
fn text_message(n: u64) -> Value {
    json!({
        "n": n,
        "text": format!("message {n}: the quick brown fox jumps over the lazy dog. ").repeat(32),
    })
}

/// Waits for `Connected` and returns whether deflate was negotiated.
async fn connected(events: &mut Events) -> bool {
    match wait_for(events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await
    {
        Event::Connected { compression, .. } => compression,
        _ => unreachable!("wait_for returned another event"),
    }
}

/// The next `count` messages of `subscription`, as (offset, data).
async fn messages(
    subscription: &mut wirehub_client::Subscription,
    count: usize,
) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let item = timeout(WAIT, subscription.recv())
            .await
            .expect("a delivery in time")
            .expect("the subscription is open");
        match item {
            SubscriptionEvent::Message(message) => {
                out.push((message.offset, message.deserialize().expect("JSON data")));
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn the_sdk_negotiates_deflate_and_large_messages_cross_the_wire_compressed() {
    let server = TestServer::start(ServerConfig::new().history_size(100)).await;
    let zipped_proxy = TcpProxy::start(server.addr()).await;
    let plain_proxy = TcpProxy::start(server.addr()).await;
    let zipped = Client::connect(config(&zipped_proxy.ws_url())).expect("client");
    let mut zipped_events = zipped.events();
    let zipped_too = Client::connect(config(&server.ws_url())).expect("client");
    let mut zipped_too_events = zipped_too.events();
    let plain = Client::connect(config(&plain_proxy.ws_url()).compression(false)).expect("client");
    let mut plain_events = plain.events();
    assert!(connected(&mut zipped_events).await, "negotiated by default");
    assert!(
        connected(&mut zipped_too_events).await,
        "negotiated by default"
    );
    assert!(!connected(&mut plain_events).await, "not offered");
    let mut zipped_feed = zipped.subscribe("feed").await.expect("subscribe");
    let mut zipped_too_feed = zipped_too.subscribe("feed").await.expect("subscribe");
    let mut plain_feed = plain.subscribe("feed").await.expect("subscribe");
    server
        .wait_for_metric("wirehub_deflate_connections_total", 2)
        .await;

    let zipped_before = zipped_proxy.bytes_to_clients();
    let plain_before = plain_proxy.bytes_to_clients();
    let sent: Vec<(u64, Value)> = {
        let mut sent = Vec::new();
        for n in 1..=50 {
            let message = text_message(n);
            sent.push((server.publish_http("feed", message.clone()).await, message));
        }
        sent
    };
    assert_eq!(messages(&mut zipped_feed, 50).await, sent);
    assert_eq!(messages(&mut zipped_too_feed, 50).await, sent);
    assert_eq!(messages(&mut plain_feed, 50).await, sent);
    let zipped_bytes = zipped_proxy.bytes_to_clients() - zipped_before;
    let plain_bytes = plain_proxy.bytes_to_clients() - plain_before;
    let payload: usize = sent.iter().map(|(_, m)| m.to_string().len()).sum();
    eprintln!(
        "50 messages, {payload} bytes of JSON: {zipped_bytes} bytes on the wire compressed, {plain_bytes} plain"
    );
    assert!(
        plain_bytes >= payload as u64,
        "the plain subscriber gets every byte: {plain_bytes} of {payload}"
    );
    assert!(
        zipped_bytes * 5 < plain_bytes,
        "compressed: {zipped_bytes} bytes on the wire against {plain_bytes} plain"
    );
    // Compressed once per publication, shared by both deflate subscribers.
    assert_eq!(
        server.metric("wirehub_deflate_compressions_total").await,
        50
    );

    // Short messages go plain (no compression counted), and arrive all the same.
    let offset = server.publish_http("feed", json!("hi")).await;
    assert_eq!(
        messages(&mut zipped_feed, 1).await,
        vec![(offset, json!("hi"))]
    );
    assert_eq!(
        server.metric("wirehub_deflate_compressions_total").await,
        50
    );

    // Upstream: a large publish leaves the SDK compressed and is inflated by the server.
    let upstream_before = zipped_proxy.bytes_to_target();
    let big = text_message(1000);
    let offset = zipped.publish("feed", &big).await.expect("publish");
    let upstream = zipped_proxy.bytes_to_target() - upstream_before;
    eprintln!(
        "a publish of {} bytes of JSON: {upstream} bytes upstream",
        big.to_string().len()
    );
    assert!(
        upstream * 5 < big.to_string().len() as u64,
        "the publish took {upstream} bytes for {} of JSON",
        big.to_string().len()
    );
    assert_eq!(messages(&mut plain_feed, 2).await[1], (offset, big.clone()));
    assert_eq!(messages(&mut zipped_too_feed, 2).await[1], (offset, big));
}

#[tokio::test]
async fn a_recovery_after_a_cut_replays_the_same_compressed_frames() {
    let server = TestServer::start(ServerConfig::new().history_size(100)).await;
    let proxy = TcpProxy::start(server.addr()).await;
    let client = Client::connect(config(&proxy.ws_url())).expect("client");
    let mut events = client.events();
    assert!(connected(&mut events).await, "deflate negotiated");
    let mut feed = client.subscribe("feed").await.expect("subscribe");
    let first = text_message(0);
    let offset = server.publish_http("feed", first.clone()).await;
    assert_eq!(messages(&mut feed, 1).await, vec![(offset, first)]);

    proxy.cut();
    wait_for(&mut events, "the cut", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let mut missed = Vec::new();
    for n in 1..=30 {
        let message = text_message(n);
        missed.push((server.publish_http("feed", message.clone()).await, message));
    }
    proxy.restore();
    assert!(connected(&mut events).await, "deflate negotiated again");
    assert_eq!(
        messages(&mut feed, 30).await,
        missed,
        "recovered, in order, once each"
    );
    // 1 live + 30 replayed from history, each compressed once.
    assert_eq!(
        server.metric("wirehub_deflate_compressions_total").await,
        31
    );
}

#[tokio::test]
async fn either_side_can_leave_deflate_off() {
    let server = TestServer::start(ServerConfig::new().deflate(None)).await;
    let client = Client::connect(config(&server.ws_url())).expect("client");
    let mut events = client.events();
    assert!(
        !connected(&mut events).await,
        "the server does not offer it"
    );
    let mut feed = client.subscribe("feed").await.expect("subscribe");
    let message = text_message(1);
    let offset = client.publish("feed", &message).await.expect("publish");
    assert_eq!(messages(&mut feed, 1).await, vec![(offset, message)]);
    assert_eq!(server.metric("wirehub_deflate_connections_total").await, 0);

    let server = TestServer::start(ServerConfig::new()).await;
    let client = Client::connect(config(&server.ws_url()).compression(false)).expect("client");
    let mut events = client.events();
    assert!(
        !connected(&mut events).await,
        "the client does not offer it"
    );
    let mut feed = client.subscribe("feed").await.expect("subscribe");
    let message = text_message(2);
    let offset = server.publish_http("feed", message.clone()).await;
    assert_eq!(messages(&mut feed, 1).await, vec![(offset, message)]);
    assert_eq!(server.metric("wirehub_deflate_connections_total").await, 0);
    assert_eq!(server.metric("wirehub_deflate_compressions_total").await, 0);
}

#[tokio::test]
async fn a_message_that_inflates_past_the_limit_fails_the_connection() {
    let server = TestServer::start(ServerConfig::new()).await;
    // 40 KB that compress to a few hundred bytes: small on the wire, too large inflated.
    let client =
        Client::connect(config(&server.ws_url()).max_message_size(16 * 1024)).expect("client");
    let mut events = client.events();
    assert!(connected(&mut events).await);
    let feed = client.subscribe("feed").await.expect("subscribe");
    server.publish_http("feed", json!("a".repeat(40_000))).await;
    let Event::Disconnected { reason, .. } = wait_for(&mut events, "the refusal", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await
    else {
        unreachable!("wait_for returned another event")
    };
    assert!(
        reason.contains("exceeds the limit of 16384 bytes"),
        "{reason}"
    );
    client.close().await;
    drop(feed);
}
