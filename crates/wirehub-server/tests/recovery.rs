//! No message lost across a reconnect: history, offsets and `since` recovery through a TCP
//! proxy that the test cuts and restores.

use std::time::Duration;

use serde_json::json;
use wirehub_server::ServerConfig;
use wirehub_testkit::{TcpProxy, TestServer, WsClient};

fn config(history: usize) -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .publish_rate(0)
        .history_size(history)
}

/// Reads messages until offset `last`, checking that each offset follows the previous one.
async fn read_through(client: &mut WsClient, mut previous: u64, last: u64, seen: &mut Vec<u64>) {
    while previous < last {
        let message = client.expect("message").await;
        let offset = message["offset"].as_u64().expect("offset");
        assert_eq!(offset, previous + 1, "gap or duplicate after {previous}");
        assert_eq!(message["data"]["n"], offset, "data matches its offset");
        seen.push(offset);
        previous = offset;
    }
}

#[tokio::test]
async fn a_subscriber_cut_off_during_1000_publishes_gets_every_one_exactly_once() {
    let server = TestServer::start(config(2000)).await;
    let proxy = TcpProxy::start(server.addr()).await;
    let (mut client, _) = WsClient::connect(&proxy.ws_url()).await;
    let subscribed = client.subscribe("feed").await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    let mut seen = Vec::new();

    for n in 1..=10 {
        server.publish_http("feed", json!({"n": n})).await;
    }
    read_through(&mut client, 0, 10, &mut seen).await;

    proxy.cut();
    for n in 11..=1010 {
        assert_eq!(server.publish_http("feed", json!({"n": n})).await, n);
    }
    proxy.restore();

    let (mut client, _) = WsClient::connect(&proxy.ws_url()).await;
    let subscribed = client.subscribe_since("feed", &epoch, 10).await;
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["epoch"], epoch.as_str());
    assert_eq!(
        subscribed["offset"], 1010,
        "the stream's position; 11..=1010 follow"
    );
    read_through(&mut client, 10, 1010, &mut seen).await;
    assert_eq!(seen, (1..=1010).collect::<Vec<_>>());

    // Live messages continue after the replay.
    server.publish_http("feed", json!({"n": 1011})).await;
    read_through(&mut client, 1010, 1011, &mut seen).await;
}

#[tokio::test]
async fn publishes_racing_with_the_replay_leave_no_gap_and_no_duplicate_at_the_seam() {
    let server = TestServer::start(config(5000)).await;
    // A subscriber that stays (without reading) keeps the stream and its epoch alive.
    let (mut first, _) = WsClient::connect(&server.ws_url()).await;
    let subscribed = first.subscribe("seam").await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();

    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    for n in 1..=1000 {
        publisher
            .send(&json!({"type": "publish", "channel": "seam", "data": {"n": n}, "id": n}))
            .await;
    }
    for _ in 1..=1000 {
        publisher.expect("ack").await;
    }
    // Keep publishing while the subscriber recovers.
    let racing = tokio::spawn(async move {
        for n in 1001..=2000 {
            publisher
                .send(&json!({"type": "publish", "channel": "seam", "data": {"n": n}, "id": n}))
                .await;
        }
        for _ in 1001..=2000 {
            publisher.expect("ack").await;
        }
        publisher
    });
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    let subscribed = client.subscribe_since("seam", &epoch, 0).await;
    assert_eq!(subscribed["recovered"], true);
    let mut seen = Vec::new();
    read_through(&mut client, 0, 2000, &mut seen).await;
    assert_eq!(seen, (1..=2000).collect::<Vec<_>>());
    racing.await.expect("publisher");
}

#[tokio::test]
async fn recovery_beyond_the_history_reports_recovered_false_and_the_current_position() {
    let server = TestServer::start(config(10)).await;
    let (mut keeper, _) = WsClient::connect(&server.ws_url()).await;
    let subscribed = keeper.subscribe("short").await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    for n in 1..=50 {
        server.publish_http("short", json!({"n": n})).await;
    }
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    let subscribed = client.subscribe_since("short", &epoch, 5).await;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["offset"], 50, "the current position");
    assert_eq!(subscribed["epoch"], epoch.as_str());
    // Nothing is replayed; the next message is live.
    server.publish_http("short", json!({"n": 51})).await;
    assert_eq!(client.expect("message").await["offset"], 51);

    // Within the history it works.
    let (mut near, _) = WsClient::connect(&server.ws_url()).await;
    let subscribed = near.subscribe_since("short", &epoch, 45).await;
    assert_eq!(subscribed["recovered"], true);
    let mut seen = Vec::new();
    read_through(&mut near, 45, 51, &mut seen).await;

    // An offset from the future is not trusted either.
    let (mut odd, _) = WsClient::connect(&server.ws_url()).await;
    let subscribed = odd.subscribe_since("short", &epoch, 999).await;
    assert_eq!(subscribed["recovered"], false);
    assert_eq!(subscribed["offset"], 51);
}

#[tokio::test]
async fn an_epoch_change_after_a_restart_is_reported() {
    let server = TestServer::start(config(100)).await;
    let addr = server.addr();
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    let subscribed = client.subscribe("restart").await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    server.publish_http("restart", json!({"n": 1})).await;
    client.expect("message").await;
    server.kill().await;

    let server = TestServer::start_on(addr, config(100)).await;
    server.publish_http("restart", json!({"n": 1})).await;
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    let subscribed = client.subscribe_since("restart", &epoch, 1).await;
    assert_eq!(subscribed["recovered"], false);
    assert_ne!(subscribed["epoch"], epoch.as_str(), "a new epoch");
}

/// A recovery larger than half the connection's queue used to fill it and close the connection
/// as a slow consumer (4100), so a client that reconnected with the same `since` never made
/// progress. Now it comes in parts, each followed by a `gap` from the first offset not sent;
/// recovering again from the last offset received converges, on one connection, with every
/// message once and in order.
#[tokio::test]
async fn issue_9_a_recovery_larger_than_the_queue_comes_in_parts_and_converges() {
    let server = TestServer::start(
        ServerConfig::new()
            .history_size(2_000)
            .max_queued_frames(64)
            .publish_rate(0),
    )
    .await;
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    for n in 1..=500u64 {
        publisher.publish("big", json!({"n": n})).await;
    }
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    let first = client.subscribe("big").await;
    let epoch = first["epoch"].as_str().expect("epoch").to_owned();
    client
        .send(&json!({"type": "unsubscribe", "channel": "big"}))
        .await;
    client.expect("unsubscribed").await;

    let mut last = 0u64;
    let mut parts = 0;
    while last < 500 {
        let subscribed = client.subscribe_since("big", &epoch, last).await;
        assert_eq!(subscribed["recovered"], true, "{subscribed}");
        parts += 1;
        loop {
            let frame = client.recv().await;
            match frame["type"].as_str() {
                Some("message") => {
                    let offset = frame["offset"].as_u64().expect("offset");
                    assert_eq!(offset, last + 1, "in order, none twice: {frame}");
                    assert_eq!(frame["data"]["n"], offset);
                    last = offset;
                    if last == 500 {
                        break;
                    }
                }
                Some("gap") => {
                    assert_eq!(
                        frame["from"],
                        last + 1,
                        "the gap starts after the part: {frame}"
                    );
                    assert_eq!(frame["to"], 500, "{frame}");
                    break;
                }
                _ => panic!("unexpected {frame}"),
            }
        }
        assert!(
            parts <= 500 / 16,
            "no progress: {parts} parts for {last} messages"
        );
    }
    assert!(
        parts > 1,
        "500 messages do not fit in a queue of 64 at once"
    );
    // Still the same connection, and live again.
    publisher.publish("big", json!({"n": 501})).await;
    let live = client.expect("message").await;
    assert_eq!(live["offset"], 501);
}
