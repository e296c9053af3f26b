//! Fan-out over real sockets: order and exactly-once delivery, isolation between channels,
//! release of subscriptions however a connection ends, and slow consumers cut off without
//! slowing anyone else.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wirehub_server::ServerConfig;
use wirehub_testkit::{TIMEOUT, TestServer, WsClient};

fn config() -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .publish_rate(0)
}

/// Reads `count` messages of `channel` and returns their (offset, data).
async fn collect(client: &mut WsClient, count: usize) -> Vec<(u64, Value)> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let message = client.expect("message").await;
        seen.push((
            message["offset"].as_u64().expect("offset"),
            message["data"].clone(),
        ));
    }
    seen
}

#[tokio::test]
async fn ten_thousand_publishes_arrive_once_in_order() {
    const N: u64 = 10_000;
    // The publisher sends everything before reading its acks, and on a loaded machine a
    // reader may fall behind for a moment: queues large enough for the whole run keep this
    // test about order, not about the slow-consumer limit (tested below).
    let server = TestServer::start(config().max_queued_frames(4 * N as usize)).await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (mut client, _) = WsClient::connect(&server.ws_url()).await;
        client.subscribe("orders").await;
        readers.push(tokio::spawn(async move {
            collect(&mut client, N as usize).await
        }));
    }
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    for i in 1..=N {
        publisher
            .send(&json!({"type": "publish", "channel": "orders", "data": i, "id": i}))
            .await;
    }
    for i in 1..=N {
        let ack = publisher.expect("ack").await;
        assert_eq!(ack["id"], i);
        assert_eq!(ack["offset"], i, "offsets follow publish order");
    }
    for reader in readers {
        let seen = reader.await.expect("reader");
        let expected: Vec<(u64, Value)> = (1..=N).map(|i| (i, json!(i))).collect();
        assert!(
            seen == expected,
            "a subscriber saw a gap, a duplicate or a reordering"
        );
    }
}

#[tokio::test]
async fn channels_are_isolated_and_each_subscriber_gets_each_message_once() {
    let server = TestServer::start(config()).await;
    let (mut a, _) = WsClient::connect(&server.ws_url()).await;
    let (mut b, _) = WsClient::connect(&server.ws_url()).await;
    let (mut both, _) = WsClient::connect(&server.ws_url()).await;
    a.subscribe("a").await;
    b.subscribe("b").await;
    both.subscribe("a").await;
    both.subscribe("b").await;
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    publisher.publish("a", json!("to a")).await;
    publisher.publish("b", json!("to b")).await;
    publisher.publish("nobody", json!("lost in space")).await;

    assert_eq!(a.expect("message").await["data"], "to a");
    assert_eq!(b.expect("message").await["data"], "to b");
    assert_eq!(both.expect("message").await["channel"], "a");
    assert_eq!(both.expect("message").await["channel"], "b");
    for client in [&mut a, &mut b, &mut both] {
        client.send(&json!({"type": "ping"})).await;
        client.expect("pong").await;
    }
}

#[tokio::test]
async fn subscriptions_are_released_when_a_connection_drops_abruptly() {
    let server = TestServer::start(config()).await;
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    for channel in ["x", "y", "z"] {
        client.subscribe(channel).await;
    }
    server.wait_for_metric("wirehub_subscriptions", 3).await;
    server.wait_for_metric("wirehub_connections", 1).await;
    // Drop the TCP connection without a close frame.
    drop(client);
    server.wait_for_metric("wirehub_subscriptions", 0).await;
    server.wait_for_metric("wirehub_channels", 0).await;
    server.wait_for_metric("wirehub_connections", 0).await;
    assert_eq!(server.metric("wirehub_abrupt_disconnects_total").await, 1);
}

#[tokio::test]
async fn subscriptions_are_released_after_a_clean_close() {
    let server = TestServer::start(config()).await;
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    client.subscribe("x").await;
    client.stream.close(None).await.expect("close");
    while let Some(Ok(frame)) = client.stream.next().await {
        if let Message::Close(_) = frame {
            break;
        }
    }
    server.wait_for_metric("wirehub_subscriptions", 0).await;
    server.wait_for_metric("wirehub_connections", 0).await;
}

#[tokio::test]
async fn slow_consumer_is_cut_off_and_the_fast_one_keeps_receiving() {
    const N: u64 = 3_000;
    let server = TestServer::start(config().max_queued_frames(64)).await;
    let (mut slow, _) = WsClient::connect(&server.ws_url()).await;
    slow.subscribe("firehose").await;
    let (mut fast, _) = WsClient::connect(&server.ws_url()).await;
    fast.subscribe("firehose").await;
    let fast_reader = tokio::spawn(async move {
        let seen = collect(&mut fast, N as usize).await;
        (fast, seen)
    });

    let payload = "p".repeat(16 * 1024);
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    for i in 1..=N {
        // Waiting for each ack keeps the fast subscriber close behind.
        publisher
            .send(&json!({"type": "publish", "channel": "firehose", "data": {"i": i, "p": payload}, "id": i}))
            .await;
        publisher.expect("ack").await;
    }
    let (_fast, seen) = fast_reader.await.expect("fast reader");
    assert_eq!(seen.len(), N as usize);
    for (index, (offset, data)) in seen.iter().enumerate() {
        assert_eq!(*offset, index as u64 + 1);
        assert_eq!(data["i"], index as u64 + 1);
    }
    server
        .wait_for_metric("wirehub_slow_consumers_total", 1)
        .await;
    // The slow subscriber's connection ends: it reads what was in flight, then the end
    // (a 4100 close frame when there was room for it).
    let mut received = 0u64;
    loop {
        match tokio::time::timeout(TIMEOUT, slow.stream.next())
            .await
            .expect("slow stream ends")
        {
            Some(Ok(Message::Text(_))) => received += 1,
            Some(Ok(Message::Close(Some(frame)))) => {
                assert_eq!(u16::from(frame.code), 4100);
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(
        received < N,
        "the slow consumer was cut off before the end ({received})"
    );
    server.wait_for_metric("wirehub_subscriptions", 1).await;
}
