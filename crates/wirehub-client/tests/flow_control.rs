//! Flow control against the real server (and the scripted fake for `gap`): a subscription
//! whose consumer falls behind gets every message in order, or an explicit gap at the place
//! of the loss, never a silent drop (issue 9).
//!
//! Each test uses a small `subscription_capacity` (16) so that the consumer is behind by
//! many queues' worth, and publishes everything before it reads anything.

use std::time::Duration;

use serde_json::json;
use tokio::time::timeout;
use wirehub_client::{Client, ClientConfig, Event, Events, Subscription, SubscriptionEvent};
use wirehub_server::ServerConfig;
use wirehub_testkit::fake::{Behavior, FakeServer, ServeOptions};
use wirehub_testkit::{TcpProxy, TestServer, client_config, wait_for};

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);
/// The subscription queue of every client here.
const CAPACITY: usize = 16;

fn config(url: &str) -> ClientConfig {
    client_config(url, WAIT).subscription_capacity(CAPACITY)
}

fn server_config(history: usize) -> ServerConfig {
    ServerConfig::new()
        .history_size(history)
        .publish_rate(1_000_000)
        .shutdown_drain(Duration::from_millis(50))
}

async fn publish_range(publisher: &Client, channel: &str, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        let offset = publisher
            .publish(channel, &json!(n))
            .await
            .expect("publish");
        assert_eq!(offset, n, "a fresh channel's offsets follow the data");
    }
}

async fn next_item(subscription: &mut Subscription) -> SubscriptionEvent {
    timeout(WAIT, subscription.recv())
        .await
        .unwrap_or_else(|_| panic!("nothing on {} within {WAIT:?}", subscription.channel()))
        .expect("the subscription is open")
}

/// Reads the messages whose data equals their offset, for every offset in `range`, in order.
async fn expect_messages(subscription: &mut Subscription, range: std::ops::RangeInclusive<u64>) {
    for n in range {
        match next_item(subscription).await {
            SubscriptionEvent::Message(message) => {
                assert_eq!(message.offset, n, "offsets contiguous, no duplicate");
                assert_eq!(message.deserialize::<u64>().expect("a number"), n);
            }
            other => panic!("expected message {n}, got {other:?}"),
        }
    }
}

/// No `RecoveryFailed` among the events so far (the stream ends when the client closed).
async fn assert_no_recovery_failure(client: Client, mut events: Events) {
    client.close().await;
    while let Some(event) = events.recv().await {
        assert!(!matches!(event, Event::RecoveryFailed { .. }), "{event:?}");
    }
}

#[tokio::test]
async fn issue_9_a_consumer_that_stops_reading_gets_every_message_in_order_after_it_resumes() {
    let server = TestServer::start(server_config(1000)).await;
    let client = Client::connect(config(&server.ws_url())).expect("connect");
    let events = client.events();
    let publisher = Client::connect(config(&server.ws_url())).expect("connect");
    let mut feed = client.subscribe("feed").await.expect("subscribe");

    // 300 messages, nearly 19 queues' worth, while the consumer reads nothing.
    publish_range(&publisher, "feed", 1..=300).await;
    expect_messages(&mut feed, 1..=300).await;
    // Live messages follow the catch-up.
    publish_range(&publisher, "feed", 301..=301).await;
    expect_messages(&mut feed, 301..=301).await;

    let replayed = server.metric("wirehub_messages_replayed_total").await;
    assert!(
        replayed >= 300 - CAPACITY as u64,
        "caught up from history: {replayed}"
    );
    assert_no_recovery_failure(client, events).await;
    publisher.close().await;
    server.stop().await;
}

#[tokio::test]
async fn issue_9_another_channel_keeps_flowing_while_one_is_behind() {
    let server = TestServer::start(server_config(1000)).await;
    let client = Client::connect(config(&server.ws_url())).expect("connect");
    let events = client.events();
    let publisher = Client::connect(config(&server.ws_url())).expect("connect");
    let mut slow = client.subscribe("slow").await.expect("subscribe");
    let mut fast = client.subscribe("fast").await.expect("subscribe");

    // `slow` is never read here; every tenth message, one on `fast` must arrive at once.
    for n in 1..=200 {
        publish_range(&publisher, "slow", n..=n).await;
        if n % 10 == 0 {
            let m = n / 10;
            publish_range(&publisher, "fast", m..=m).await;
            expect_messages(&mut fast, m..=m).await;
        }
    }
    // Then `slow` catches up, complete and in order.
    expect_messages(&mut slow, 1..=200).await;
    publish_range(&publisher, "fast", 21..=21).await;
    expect_messages(&mut fast, 21..=21).await;
    assert_no_recovery_failure(client, events).await;
    publisher.close().await;
    server.stop().await;
}

#[tokio::test]
async fn issue_9_beyond_the_history_window_an_explicit_gap_comes_at_the_place_of_the_loss() {
    // History keeps 50 messages; the consumer falls 200 behind.
    let server = TestServer::start(server_config(50)).await;
    let client = Client::connect(config(&server.ws_url())).expect("connect");
    let mut events = client.events();
    let publisher = Client::connect(config(&server.ws_url())).expect("connect");
    let mut feed = client.subscribe("feed").await.expect("subscribe");

    publish_range(&publisher, "feed", 1..=200).await;
    // What the queue held is delivered; then the gap, naming the last position handed over
    // and where the stream goes on; then live messages.
    expect_messages(&mut feed, 1..=CAPACITY as u64).await;
    match next_item(&mut feed).await {
        SubscriptionEvent::RecoveryFailed { since, position } => {
            assert_eq!(since.offset, CAPACITY as u64);
            assert_eq!(position.offset, 200);
            assert_eq!(since.epoch, position.epoch);
        }
        other => panic!("expected the gap, got {other:?}"),
    }
    publish_range(&publisher, "feed", 201..=203).await;
    expect_messages(&mut feed, 201..=203).await;
    let event = wait_for(&mut events, "the RecoveryFailed event", |event| {
        matches!(event, Event::RecoveryFailed { .. })
    })
    .await;
    assert!(
        matches!(&event, Event::RecoveryFailed { channel, .. } if channel == "feed"),
        "{event:?}"
    );
    client.close().await;
    publisher.close().await;
    server.stop().await;
}

#[tokio::test]
async fn issue_9_a_link_cut_during_a_catch_up_larger_than_the_queue_loses_nothing() {
    let server = TestServer::start(server_config(5000)).await;
    let proxy = TcpProxy::start(server.addr()).await;
    let client = Client::connect(config(&proxy.ws_url())).expect("connect");
    let mut events = client.events();
    let publisher = Client::connect(config(&server.ws_url())).expect("connect");
    let mut feed = client.subscribe("feed").await.expect("subscribe");

    // 1 000 behind: every catch-up replays far more than the queue holds.
    publish_range(&publisher, "feed", 1..=1000).await;
    expect_messages(&mut feed, 1..=100).await;
    // Mid-way through the catch-up, the link goes down and comes back.
    proxy.cut();
    wait_for(&mut events, "the disconnect", |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    publish_range(&publisher, "feed", 1001..=1100).await;
    proxy.restore();
    expect_messages(&mut feed, 101..=1100).await;
    publish_range(&publisher, "feed", 1101..=1101).await;
    expect_messages(&mut feed, 1101..=1101).await;
    assert!(proxy.connections() >= 2, "it reconnected through the proxy");
    assert_no_recovery_failure(client, events).await;
    publisher.close().await;
    server.stop().await;
}

#[tokio::test]
async fn issue_9_a_gap_from_the_server_is_filled_from_history() {
    let fake = FakeServer::always(Behavior::serve()).await;
    let client = Client::connect(config(&fake.url())).expect("connect");
    let events = client.events();
    let mut feed = client.subscribe("feed").await.expect("subscribe");
    for n in 1..=3 {
        fake.publish("feed", &json!(n));
    }
    expect_messages(&mut feed, 1..=3).await;
    // 4 and 5 are lost on their way; the server says so.
    fake.publish_unsent("feed", &json!(4));
    fake.publish_unsent("feed", &json!(5));
    fake.send_all(r#"{"type":"gap","channel":"feed","epoch":"e1","offset":5,"from":4,"to":5}"#);
    expect_messages(&mut feed, 4..=5).await;
    fake.publish("feed", &json!(6));
    expect_messages(&mut feed, 6..=6).await;

    // The client caught up with `unsubscribe`, then `subscribe` since its last position.
    let requests = fake
        .wait_for_received(3, WAIT, |request| {
            matches!(request.kind(), "subscribe" | "unsubscribe")
                && request.message.get("channel") == Some(&json!("feed"))
        })
        .await;
    let kinds: Vec<&str> = requests.iter().map(|request| request.kind()).collect();
    assert_eq!(kinds, ["subscribe", "unsubscribe", "subscribe"]);
    let last = requests.last().expect("a request");
    assert_eq!(last.message["since"], json!({"epoch": "e1", "offset": 3}));
    assert_no_recovery_failure(client, events).await;
}

#[tokio::test]
async fn issue_9_a_gap_that_history_cannot_fill_is_reported_at_its_place() {
    let fake = FakeServer::always(Behavior::Serve(ServeOptions::default().history(false))).await;
    let client = Client::connect(config(&fake.url())).expect("connect");
    let mut events = client.events();
    let mut feed = client.subscribe("feed").await.expect("subscribe");
    for n in 1..=3 {
        fake.publish("feed", &json!(n));
    }
    expect_messages(&mut feed, 1..=3).await;
    fake.publish_unsent("feed", &json!(4));
    fake.send_all(r#"{"type":"gap","channel":"feed","epoch":"e1","offset":4,"from":4,"to":4}"#);
    match next_item(&mut feed).await {
        SubscriptionEvent::RecoveryFailed { since, position } => {
            assert_eq!((since.offset, position.offset), (3, 4));
        }
        other => panic!("expected the gap, got {other:?}"),
    }
    fake.publish("feed", &json!(5));
    expect_messages(&mut feed, 5..=5).await;
    wait_for(&mut events, "the RecoveryFailed event", |event| {
        matches!(event, Event::RecoveryFailed { .. })
    })
    .await;
    client.close().await;
}

#[tokio::test]
async fn issue_9_a_full_queue_still_ends_with_the_reason_after_what_came_before() {
    let fake = FakeServer::always(Behavior::serve()).await;
    let client = Client::connect(config(&fake.url())).expect("connect");
    let mut events = client.events();
    let mut feed = client.subscribe("feed").await.expect("subscribe");
    for n in 1..=(CAPACITY as u64 + 4) {
        fake.publish("feed", &json!(n));
    }
    // The queue is full when the server tells the client to stop (4003: forbidden).
    fake.close_all(4003);
    wait_for(&mut events, "the stop", |event| {
        matches!(event, Event::Stopped { .. })
    })
    .await;
    expect_messages(&mut feed, 1..=CAPACITY as u64).await;
    match next_item(&mut feed).await {
        SubscriptionEvent::Ended(wirehub_client::Error::Rejected { code, .. }) => {
            assert_eq!(code, 4003);
        }
        other => panic!("expected the end with the reason, got {other:?}"),
    }
}
