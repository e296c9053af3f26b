//! Redis going away: what is recovered, what is reported, and what callers see meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{config, epoch, read_through};
use serde_json::json;
use wirehub_testkit::{RedisServer, TcpProxy, TestServer, WsClient};

/// Waits for the `gap` of `channel`: publications were lost, the connection stays open.
async fn expect_gap(client: &mut WsClient, channel: &str) -> serde_json::Value {
    let gap = client.expect("gap").await;
    assert_eq!(gap["channel"], channel, "{gap}");
    gap
}

/// Ends the subscription on the same connection, so that it can be made again with `since`.
async fn unsubscribe(client: &mut WsClient, channel: &str) {
    client
        .send(&json!({"type": "unsubscribe", "channel": channel}))
        .await;
    client.expect("unsubscribed").await;
}

#[tokio::test]
async fn a_broken_link_to_redis_loses_nothing_when_the_history_covers_the_gap() {
    let redis = RedisServer::start();
    let link = TcpProxy::start(redis.addr()).await;
    let a = TestServer::start(config(&format!("redis://{}", link.addr()), 100)).await;
    let b = TestServer::start(config(&redis.url(), 100)).await;
    let (mut client, _) = WsClient::connect(&a.ws_url()).await;
    client.subscribe("feed").await;
    for n in 1..=3 {
        b.publish_http("feed", json!({"n": n})).await;
    }
    read_through(&mut client, 0, 3).await;

    link.cut();
    for n in 4..=20 {
        assert_eq!(b.publish_http("feed", json!({"n": n})).await, n);
    }
    link.restore();
    b.publish_http("feed", json!({"n": 21})).await;
    let data = read_through(&mut client, 3, 21).await;
    let numbers: Vec<u64> = data.iter().map(|d| d["n"].as_u64().expect("n")).collect();
    assert_eq!(numbers, (4..=21).collect::<Vec<_>>());

    // Live again, with nothing delivered twice.
    b.publish_http("feed", json!({"n": 22})).await;
    assert_eq!(client.expect("message").await["offset"], 22);
}

#[tokio::test]
async fn a_broken_link_beyond_the_history_sends_a_gap_and_keeps_the_connection() {
    let redis = RedisServer::start();
    let link = TcpProxy::start(redis.addr()).await;
    let a = TestServer::start(config(&format!("redis://{}", link.addr()), 5)).await;
    let b = TestServer::start(config(&redis.url(), 5)).await;
    let (mut client, _) = WsClient::connect(&a.ws_url()).await;
    let stream_epoch = epoch(&client.subscribe("feed").await);
    b.publish_http("feed", json!({"n": 1})).await;
    read_through(&mut client, 0, 1).await;

    link.cut();
    for n in 2..=20 {
        b.publish_http("feed", json!({"n": n})).await;
    }
    link.restore();
    let gap = expect_gap(&mut client, "feed").await;
    assert_eq!(gap["epoch"], stream_epoch.as_str(), "{gap}");
    assert_eq!(gap["offset"], 20, "{gap}");

    // On the same connection, the client learns that it missed messages.
    unsubscribe(&mut client, "feed").await;
    let subscribed = client.subscribe_since("feed", &stream_epoch, 1).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(subscribed["epoch"], stream_epoch.as_str());
    assert_eq!(subscribed["offset"], 20);
    b.publish_http("feed", json!({"n": 21})).await;
    assert_eq!(client.expect("message").await["offset"], 21);
}

#[tokio::test]
async fn a_redis_flush_starts_a_new_epoch_and_subscribers_are_told() {
    let redis = RedisServer::start();
    let a = TestServer::start(config(&redis.url(), 100)).await;
    let b = TestServer::start(config(&redis.url(), 100)).await;
    let (mut client, _) = WsClient::connect(&a.ws_url()).await;
    let stream_epoch = epoch(&client.subscribe("flushed").await);
    for n in 1..=3 {
        b.publish_http("flushed", json!({"n": n})).await;
    }
    read_through(&mut client, 0, 3).await;

    redis.flush();
    assert_eq!(b.publish_http("flushed", json!({"n": 1})).await, 1);
    let gap = expect_gap(&mut client, "flushed").await;
    assert_ne!(gap["epoch"], stream_epoch.as_str(), "{gap}");
    // The new epoch's first publication follows the gap on the same connection.
    let message = client.expect("message").await;
    assert_eq!(message["offset"], 1, "{message}");

    unsubscribe(&mut client, "flushed").await;
    let subscribed = client.subscribe_since("flushed", &stream_epoch, 3).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_ne!(subscribed["epoch"], stream_epoch.as_str(), "a new epoch");
    assert_eq!(subscribed["offset"], 1);
}

#[tokio::test]
async fn a_redis_restart_sends_a_gap_and_subscribers_resubscribe_in_a_new_epoch_on_the_same_connection()
 {
    let mut redis = RedisServer::start();
    let a = TestServer::start(config(&redis.url(), 100)).await;
    let b = TestServer::start(config(&redis.url(), 100)).await;
    let (mut client, _) = WsClient::connect(&a.ws_url()).await;
    let stream_epoch = epoch(&client.subscribe("restarted").await);
    for n in 1..=3 {
        b.publish_http("restarted", json!({"n": n})).await;
    }
    read_through(&mut client, 0, 3).await;

    redis.restart();
    expect_gap(&mut client, "restarted").await;

    unsubscribe(&mut client, "restarted").await;
    let subscribed = client.subscribe_since("restarted", &stream_epoch, 3).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_ne!(subscribed["epoch"], stream_epoch.as_str(), "a new epoch");
    assert_eq!(subscribed["offset"], 0);
    assert_eq!(b.publish_http("restarted", json!({"n": 1})).await, 1);
    assert_eq!(client.expect("message").await["offset"], 1);
}

#[tokio::test]
async fn publishing_while_redis_is_down_gets_internal_promptly_and_the_connection_stays_open() {
    let mut redis = RedisServer::start();
    let node = TestServer::start(config(&redis.url(), 100)).await;
    let (mut client, _) = WsClient::connect(&node.ws_url()).await;
    assert_eq!(client.publish("up", json!(1)).await, 1);

    redis.stop();
    let started = Instant::now();
    client
        .send(&json!({"type": "publish", "channel": "up", "data": 2, "id": 7}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "internal", "{error}");
    assert_eq!(error["id"], 7);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered in {:?}",
        started.elapsed()
    );
    // A subscribe fails the same way.
    client
        .send(&json!({"type": "subscribe", "channel": "up", "id": 8}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(error["code"], "internal", "{error}");
    // The connection is still open and working.
    client.send(&json!({"type": "ping"})).await;
    client.expect("pong").await;

    redis.restart();
    assert_eq!(
        client.publish("up", json!(3)).await,
        1,
        "a new, empty Redis"
    );
}
