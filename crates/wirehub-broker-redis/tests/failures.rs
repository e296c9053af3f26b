//! Redis going away: what is recovered, what is reported, and what callers see meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{config, epoch, read_through};
use serde_json::json;
use wirehub_testkit::{RedisServer, TcpProxy, TestServer, WsClient};

/// The close code for "publications were lost: reconnect and resubscribe with `since`".
const RECONNECT: u16 = 4200;

async fn expect_close_code(client: &mut WsClient, code: u16) {
    let frame = client.expect_close().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), code, "closed with {frame:?}");
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
async fn a_broken_link_beyond_the_history_closes_subscribers_with_4200() {
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
    expect_close_code(&mut client, RECONNECT).await;

    // The client reconnects and learns that it missed messages.
    let (mut client, _) = WsClient::connect(&a.ws_url()).await;
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
    expect_close_code(&mut client, RECONNECT).await;

    let (mut client, _) = WsClient::connect(&a.ws_url()).await;
    let subscribed = client.subscribe_since("flushed", &stream_epoch, 3).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_ne!(subscribed["epoch"], stream_epoch.as_str(), "a new epoch");
    assert_eq!(subscribed["offset"], 1);
}

#[tokio::test]
async fn a_redis_restart_closes_subscribers_with_4200_and_they_resubscribe_in_a_new_epoch() {
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
    expect_close_code(&mut client, RECONNECT).await;

    let (mut client, _) = WsClient::connect(&a.ws_url()).await;
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
