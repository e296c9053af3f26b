//! Several nodes, one Redis: every node sees one stream per channel (same epoch, offsets and
//! history), whichever node a message was published on.

mod common;

use std::collections::BTreeSet;

use common::{config, epoch, history_http, read_through};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wirehub_server::{BrokerConfig, RedisConfig};
use wirehub_testkit::{RedisServer, TestServer, WsClient, fixture, read_fixture};

#[tokio::test]
async fn a_subscriber_on_one_node_gets_every_publish_made_on_another_once_and_in_order() {
    let redis = RedisServer::start();
    let a = TestServer::start(config(&redis.url(), 100)).await;
    let b = TestServer::start(config(&redis.url(), 100)).await;
    let (mut on_a, _) = WsClient::connect(&a.ws_url()).await;
    let subscribed = on_a.subscribe("news").await;
    assert_eq!(subscribed["offset"], 0);
    let (mut on_b, _) = WsClient::connect(&b.ws_url()).await;
    on_b.subscribe("news").await;

    // Over WebSocket on B, pipelined, then over HTTP on B.
    let (mut publisher, _) = WsClient::connect(&b.ws_url()).await;
    for n in 1..=30 {
        publisher
            .send(&json!({"type": "publish", "channel": "news", "data": {"n": n}, "id": n}))
            .await;
    }
    for n in 1..=30 {
        let ack = publisher.expect("ack").await;
        assert_eq!(ack["offset"], n, "acks in order: {ack}");
    }
    for n in 31..=60 {
        assert_eq!(b.publish_http("news", json!({"n": n})).await, n);
    }

    for client in [&mut on_a, &mut on_b] {
        let data = read_through(client, 0, 60).await;
        let numbers: Vec<u64> = data.iter().map(|d| d["n"].as_u64().expect("n")).collect();
        assert_eq!(numbers, (1..=60).collect::<Vec<_>>());
    }
    // Nothing was delivered twice: the next message is the next publish.
    assert_eq!(a.publish_http("news", json!({"n": 61})).await, 61);
    assert_eq!(on_a.expect("message").await["offset"], 61);
    assert_eq!(on_b.expect("message").await["offset"], 61);
}

#[tokio::test]
async fn resubscribing_on_another_node_with_since_leaves_no_gap_and_no_duplicate() {
    let redis = RedisServer::start();
    let a = TestServer::start(config(&redis.url(), 5000)).await;
    let b = TestServer::start(config(&redis.url(), 5000)).await;
    let (mut first, _) = WsClient::connect(&a.ws_url()).await;
    let subscribed = first.subscribe("seam").await;
    let stream_epoch = epoch(&subscribed);
    // Another subscriber keeps the channel live on B, so the resubscription below joins a
    // stream of deliveries already flowing there.
    let (mut keeper, _) = WsClient::connect(&b.ws_url()).await;
    keeper.subscribe("seam").await;

    for n in 1..=10 {
        a.publish_http("seam", json!({"n": n})).await;
    }
    read_through(&mut first, 0, 10).await;
    drop(first);

    // Two publishers, one per node, race with the resubscription.
    let mut publishers = Vec::new();
    for (node, server) in [("a", &a), ("b", &b)] {
        let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
        publishers.push(tokio::spawn(async move {
            for n in 1..=500 {
                publisher
                    .send(&json!({"type": "publish", "channel": "seam", "data": {"node": node, "n": n}, "id": n}))
                    .await;
            }
            for _ in 1..=500 {
                publisher.expect("ack").await;
            }
        }));
    }
    let (mut second, _) = WsClient::connect(&b.ws_url()).await;
    let subscribed = second.subscribe_since("seam", &stream_epoch, 10).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(subscribed["epoch"], stream_epoch.as_str());
    let data = read_through(&mut second, 10, 1010).await;
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let seen: BTreeSet<String> = data.iter().map(ToString::to_string).collect();
    assert_eq!(seen.len(), 1000, "every publish exactly once");
    read_through(&mut keeper, 0, 1010).await;

    // The next delivery is the next publish, on both.
    assert_eq!(a.publish_http("seam", json!("last")).await, 1011);
    assert_eq!(second.expect("message").await["offset"], 1011);
    assert_eq!(keeper.expect("message").await["offset"], 1011);
}

#[tokio::test]
async fn history_over_http_agrees_on_both_nodes() {
    let redis = RedisServer::start();
    let a = TestServer::start(config(&redis.url(), 10)).await;
    let b = TestServer::start(config(&redis.url(), 10)).await;
    for n in 1..=15 {
        let node = if n % 2 == 0 { &a } else { &b };
        assert_eq!(node.publish_http("log", json!({"n": n})).await, n);
    }
    let from_a = history_http(&a, "log", 0).await;
    let from_b = history_http(&b, "log", 0).await;
    assert_eq!(from_a, from_b);
    assert_eq!(from_a["offset"], 15);
    assert_eq!(from_a["complete"], false, "1..=5 were trimmed: {from_a}");
    let offsets: Vec<u64> = from_a["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, (6..=15).collect::<Vec<_>>());
    let recent = history_http(&b, "log", 12).await;
    assert_eq!(recent["complete"], true, "{recent}");
    assert_eq!(recent["messages"].as_array().map(Vec::len), Some(3));
    assert_eq!(recent["messages"][0]["data"], json!({"n": 13}));

    // A channel nobody used has one epoch on both nodes too.
    let empty_a = history_http(&a, "quiet", 0).await;
    let empty_b = history_http(&b, "quiet", 0).await;
    assert_eq!(empty_a["epoch"], empty_b["epoch"]);
    assert_eq!(empty_a["offset"], 0);
}

#[tokio::test]
async fn a_node_restart_keeps_the_epoch_and_the_history() {
    let redis = RedisServer::start();
    let node = TestServer::start(config(&redis.url(), 100)).await;
    let (mut client, _) = WsClient::connect(&node.ws_url()).await;
    let subscribed = client.subscribe("durable").await;
    let stream_epoch = epoch(&subscribed);
    for n in 1..=5 {
        node.publish_http("durable", json!({"n": n})).await;
    }
    read_through(&mut client, 0, 2).await;
    node.kill().await;

    let node = TestServer::start(config(&redis.url(), 100)).await;
    let (mut client, _) = WsClient::connect(&node.ws_url()).await;
    let subscribed = client.subscribe_since("durable", &stream_epoch, 2).await;
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    assert_eq!(subscribed["epoch"], stream_epoch.as_str());
    assert_eq!(subscribed["offset"], 5);
    let data = read_through(&mut client, 2, 5).await;
    assert_eq!(
        data,
        vec![json!({"n": 3}), json!({"n": 4}), json!({"n": 5})]
    );
    node.publish_http("durable", json!({"n": 6})).await;
    read_through(&mut client, 5, 6).await;
}

#[tokio::test]
async fn a_node_does_not_start_when_redis_is_unreachable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = config(&url, 10).broker(BrokerConfig::Redis(RedisConfig::new(url.clone())));
    let result = tokio::time::timeout(
        wirehub_testkit::TIMEOUT,
        wirehub_server::run(listener, config, CancellationToken::new()),
    )
    .await
    .expect("fails promptly");
    let err = result.expect_err("no Redis, no node");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "the message names the URL: {err}"
    );
}

#[tokio::test]
async fn nodes_talk_to_redis_over_tls_with_a_private_ca() {
    let redis = RedisServer::start_with_tls(&fixture("tls-cert.pem"), &fixture("tls-key.pem"));
    let ca = read_fixture("tls-ca.pem");
    let url = redis.tls_url();
    let a = TestServer::start(config(&url, 10).broker(BrokerConfig::Redis(
        RedisConfig::new(url.clone()).ca_cert_pem(Some(ca.clone())),
    )))
    .await;
    let b = TestServer::start(config(&url, 10).broker(BrokerConfig::Redis(
        RedisConfig::new(url.clone()).ca_cert_pem(Some(ca)),
    )))
    .await;
    let (mut on_a, _) = WsClient::connect(&a.ws_url()).await;
    on_a.subscribe("secure").await;
    for n in 1..=5 {
        assert_eq!(b.publish_http("secure", json!({"n": n})).await, n);
    }
    let data = read_through(&mut on_a, 0, 5).await;
    assert_eq!(data.last(), Some(&json!({"n": 5})));
    // The keys really are in that Redis (read over its plain port).
    assert_eq!(redis.command(&["GET", "wirehub:{secure}:offset"]), "5");

    // Without the CA (the system's trust store does not know it) the node does not start.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let result = tokio::time::timeout(
        wirehub_testkit::TIMEOUT,
        wirehub_server::run(listener, config(&url, 10), CancellationToken::new()),
    )
    .await
    .expect("fails promptly");
    let err = result.expect_err("an unknown CA must be refused");
    assert!(err.to_string().contains("certificate"), "{err}");
}

#[tokio::test]
async fn deployments_with_different_prefixes_share_a_redis_without_meeting() {
    let redis = RedisServer::start();
    let blue = TestServer::start(config(&redis.url(), 10).broker(BrokerConfig::Redis(
        RedisConfig::new(redis.url()).prefix("blue:"),
    )))
    .await;
    let green = TestServer::start(config(&redis.url(), 10).broker(BrokerConfig::Redis(
        RedisConfig::new(redis.url()).prefix("green:"),
    )))
    .await;
    let (mut on_blue, _) = WsClient::connect(&blue.ws_url()).await;
    on_blue.subscribe("news").await;
    let (mut on_green, _) = WsClient::connect(&green.ws_url()).await;
    on_green.subscribe("news").await;

    assert_eq!(green.publish_http("news", json!("green")).await, 1);
    assert_eq!(green.publish_http("news", json!("green again")).await, 2);
    assert_eq!(blue.publish_http("news", json!("blue")).await, 1);
    // Each subscriber sees its own deployment's stream only: blue's first delivery is its
    // own offset 1, after green's two publishes went elsewhere.
    let message = on_blue.expect("message").await;
    assert_eq!(
        (message["offset"].clone(), message["data"].clone()),
        (json!(1), json!("blue"))
    );
    assert_eq!(
        read_through(&mut on_green, 0, 2).await,
        [json!("green"), json!("green again")]
    );
    assert_eq!(redis.command(&["GET", "blue:{news}:offset"]), "1");
    assert_eq!(redis.command(&["GET", "green:{news}:offset"]), "2");
    assert_eq!(redis.command(&["EXISTS", "wirehub:{news}:offset"]), "0");
}

#[tokio::test]
async fn an_idempotency_key_is_shared_by_every_node_while_its_message_is_in_history() {
    let redis = RedisServer::start();
    let a = TestServer::start(config(&redis.url(), 3)).await;
    let b = TestServer::start(config(&redis.url(), 3)).await;
    let (mut subscriber, _) = WsClient::connect(&a.ws_url()).await;
    subscriber.subscribe("orders").await;
    let publish = |node: &TestServer, data: serde_json::Value, key: Option<&str>| {
        let url = node.http_url("/api/publish");
        let mut body = json!({"channel": "orders", "data": data});
        if let Some(key) = key {
            body["idempotency_key"] = json!(key);
        }
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .expect("POST")
                .json::<serde_json::Value>()
                .await
                .expect("JSON")
        }
    };
    assert_eq!(
        publish(&a, json!("first"), Some("k1")).await,
        json!({"offset": 1})
    );
    // The retry lands on the other node: still a duplicate.
    assert_eq!(
        publish(&b, json!("retry"), Some("k1")).await,
        json!({"offset": 1, "duplicate": true})
    );
    // Over WebSocket on B as well.
    let (mut publisher, _) = WsClient::connect(&b.ws_url()).await;
    publisher
        .send(&json!({"type": "publish", "channel": "orders", "data": "ws", "idempotency_key": "k1", "id": 1}))
        .await;
    assert_eq!(
        publisher.expect("ack").await,
        json!({"type": "ack", "id": 1, "offset": 1, "duplicate": true})
    );
    assert_eq!(
        publish(&b, json!("second"), Some("k2")).await,
        json!({"offset": 2})
    );
    // Three more messages push k1's out of the 3-message history: k1 is new again.
    for n in 3..=5 {
        assert_eq!(publish(&a, json!(n), None).await, json!({"offset": n}));
    }
    assert_eq!(
        publish(&b, json!("again"), Some("k1")).await,
        json!({"offset": 6})
    );
    let data = read_through(&mut subscriber, 0, 6).await;
    assert_eq!(
        data,
        [
            json!("first"),
            json!("second"),
            json!(3),
            json!(4),
            json!(5),
            json!("again")
        ]
    );
    // The keys hash stays bounded by the history size.
    for n in 0..20 {
        publish(&a, json!(n), Some(&format!("bulk-{n}"))).await;
    }
    let kept: usize = redis
        .command(&["HLEN", "wirehub:{orders}:keys"])
        .parse()
        .expect("a count");
    assert!(kept <= 2 * 3, "{kept} keys kept for a 3-message history");
}
