//! Per-channel delivery policies and history settings (`[[channels]]`) against the real
//! server: one connection that stops reading holds a `latest` ticker, a `gap` feed and a
//! `disconnect` chat; the ticker keeps only its newest price, the feed gets exactly one `gap`
//! and recovers it from history, and the chat never drops a line. History sizes per pattern
//! are honoured by the memory broker and by the Redis broker (a real `redis-server`).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;
use wirehub_core::{ChannelOptions, ChannelRules, OnSlow};
use wirehub_server::{BrokerConfig, RedisConfig, ServerConfig};
use wirehub_testkit::{RedisServer, TIMEOUT, TestServer, WsClient};

fn config() -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .publish_rate(0)
}

/// A client whose socket receives into a small kernel buffer, so that a client that stops
/// reading fills the server's queue soon.
async fn connect_small(addr: SocketAddr, url: &str) -> WsClient {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = tokio::time::timeout(TIMEOUT, socket.connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (stream, _) = tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake");
    let mut client = WsClient { stream };
    client.expect("welcome").await;
    client
}

fn offset(message: &Value) -> u64 {
    message["offset"].as_u64().expect("offset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_stalled_connection_keeps_the_newest_ticker_gets_one_gap_and_loses_no_chat_line()
{
    let rules = ChannelRules::new(vec![
        ChannelOptions::new("ticker:*")
            .on_slow(OnSlow::Latest)
            .history_size(0),
        ChannelOptions::new("feed:*")
            .on_slow(OnSlow::Gap)
            .history_size(100_000),
    ]);
    let server = TestServer::start(
        config()
            .max_queued_frames(16)
            .history_size(1000)
            .channels(rules),
    )
    .await;
    let mut slow = connect_small(server.addr(), &server.ws_url()).await;
    slow.subscribe("ticker:btc").await;
    slow.subscribe("chat").await;
    let subscribed = slow.subscribe("feed:a").await;
    let epoch = subscribed["epoch"].as_str().expect("epoch").to_owned();
    let payload = "f".repeat(8 * 1024);
    let drops = |policy: &str| format!("wirehub_slow_drops_total{{policy=\"{policy}\"}}");
    // Before the stall: a few feed messages and a chat line reach the client's socket.
    let mut last_feed = 0;
    for i in 1..=3 {
        last_feed = server.publish_http("feed:a", json!({"i": i})).await;
    }
    let mut chat_lines = server.publish_http("chat", json!({"line": 1})).await;

    // The client reads nothing from here on. Fill what the kernel takes with ticker prices
    // until the ticker has overflowed and the server's writes stopped (nothing more written
    // over 100 publishes): the connection is stalled for good.
    let (mut last_ticker, mut last_out, mut unchanged, mut round) = (0, 0, 0, 0u64);
    while unchanged < 100 {
        round += 1;
        assert!(round <= 50_000, "never stalled");
        last_ticker = server
            .publish_http("ticker:btc", json!({"price": round, "p": payload}))
            .await;
        if server.metric(&drops("latest")).await > 0 {
            let out = server.metric("wirehub_bytes_out_total").await;
            unchanged = if out == last_out { unchanged + 1 } else { 0 };
            last_out = out;
        }
    }
    // The feed overflows the queue: its queued messages are dropped, it is in gap; chat
    // lines in between are kept.
    let mut round = 0u64;
    while server.metric(&drops("gap")).await == 0 {
        round += 1;
        assert!(round <= 1000, "the feed never overflowed");
        last_feed = server
            .publish_http("feed:a", json!({"i": last_feed + 1, "p": payload}))
            .await;
        if round.is_multiple_of(5) && chat_lines < 5 {
            chat_lines = server.publish_http("chat", json!({"line": round})).await;
        }
    }
    // More of each while the connection is still stalled: the gap widens, the newest
    // ticker is replaced; one more chat line.
    for _ in 1..=20 {
        last_feed = server
            .publish_http("feed:a", json!({"i": last_feed + 1, "p": payload}))
            .await;
        last_ticker = server
            .publish_http("ticker:btc", json!({"price": "newest"}))
            .await;
    }
    chat_lines = server.publish_http("chat", json!({"line": "last"})).await;
    assert_eq!(server.metric("wirehub_slow_consumers_total").await, 0);
    assert_eq!(server.metric("wirehub_gaps_sent_total").await, 0);

    // Read again.
    let mut feed: Vec<u64> = Vec::new();
    let mut ticker: Vec<u64> = Vec::new();
    let mut chat: Vec<u64> = Vec::new();
    let mut gap: Option<Value> = None;
    while chat.len() < chat_lines as usize || ticker.last() != Some(&last_ticker) || gap.is_none() {
        let message = slow.recv().await;
        let channel = message["channel"].as_str().unwrap_or_default();
        match (message["type"].as_str(), channel) {
            (Some("message"), "feed:a") => {
                assert!(gap.is_none(), "a feed message before the gap's live ones");
                feed.push(offset(&message));
            }
            (Some("message"), "ticker:btc") => ticker.push(offset(&message)),
            (Some("message"), "chat") => chat.push(offset(&message)),
            (Some("gap"), "feed:a") => {
                assert!(gap.is_none(), "a second gap: {message}");
                gap = Some(message);
            }
            _ => panic!("unexpected: {message}"),
        }
    }
    // The chat lost nothing.
    assert_eq!(chat, (1..=chat_lines).collect::<Vec<_>>());
    // The ticker: increasing offsets ending with the newest, some skipped, no gap.
    assert!(ticker.windows(2).all(|w| w[0] < w[1]), "{ticker:?}");
    assert!((ticker.len() as u64) < last_ticker, "nothing was dropped");
    // The feed: everything up to the gap, then one gap naming exactly what was not sent.
    let gap = gap.expect("gap");
    assert_eq!(feed, (1..=feed.len() as u64).collect::<Vec<_>>());
    let from = gap["from"].as_u64().expect("from");
    let to = gap["to"].as_u64().expect("to");
    assert_eq!(from, feed.len() as u64 + 1, "{gap}");
    assert_eq!(to, last_feed, "{gap}");
    assert_eq!(gap["offset"], last_feed);
    assert_eq!(gap["epoch"], epoch.as_str());
    server.wait_for_metric("wirehub_gaps_sent_total", 1).await;

    // Live messages follow the gap, from the next offset on.
    for i in 1..=5 {
        server
            .publish_http("feed:a", json!({"i": last_feed + i, "p": "live"}))
            .await;
    }
    for want in to + 1..=to + 5 {
        let message = slow.expect("message").await;
        assert_eq!(
            (message["channel"].as_str(), offset(&message)),
            (Some("feed:a"), want)
        );
    }

    // Re-sync from the last position handed to the consumer: history fills the gap, and the
    // consumer (which set aside what came after the gap) ends with every offset once. A
    // replay larger than the 16-frame queue comes in parts, each ending with a gap from where
    // it stopped: recovering again from there makes progress.
    let top = to + 5;
    let mut consumer: Vec<u64> = feed.clone();
    let mut rounds = 0;
    while consumer.len() < top as usize {
        rounds += 1;
        assert!(rounds <= 20, "no progress: {consumer:?}");
        slow.send(&json!({"type": "unsubscribe", "channel": "feed:a"}))
            .await;
        slow.expect("unsubscribed").await;
        let position = consumer.len() as u64;
        let resubscribed = slow.subscribe_since("feed:a", &epoch, position).await;
        assert_eq!(resubscribed["recovered"], true, "{resubscribed}");
        assert_eq!(offset(&resubscribed), top);
        while consumer.len() < top as usize {
            let message = slow.recv().await;
            match message["type"].as_str() {
                Some("message") => {
                    assert_eq!(offset(&message), consumer.len() as u64 + 1);
                    consumer.push(offset(&message));
                }
                Some("gap") => {
                    assert_eq!(message["from"], consumer.len() as u64 + 1, "{message}");
                    break;
                }
                _ => panic!("unexpected: {message}"),
            }
        }
    }
    server.publish_http("feed:a", json!({"i": top + 1})).await;
    consumer.push(offset(&slow.expect("message").await));
    assert_eq!(consumer, (1..=top + 1).collect::<Vec<_>>());
    assert_eq!(server.metric("wirehub_slow_consumers_total").await, 0);
    // One gap for the overflow; the parts of the recovery end with the hub's gaps, which are
    // not a subscriber falling behind.
    assert_eq!(server.metric("wirehub_gaps_sent_total").await, 1);
    assert!(rounds > 1, "a replay larger than the queue comes in parts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_disconnect_channel_that_overflows_alone_still_closes_the_connection() {
    let rules = ChannelRules::new(vec![
        ChannelOptions::new("ticker:*").on_slow(OnSlow::Latest),
    ]);
    let server = TestServer::start(config().max_queued_frames(16).channels(rules)).await;
    let mut slow = connect_small(server.addr(), &server.ws_url()).await;
    slow.subscribe("ticker:btc").await;
    slow.subscribe("chat").await;
    let (mut publisher, _) = WsClient::connect(&server.ws_url()).await;
    let payload = "c".repeat(8 * 1024);
    let mut sent = 0u64;
    while server.metric("wirehub_slow_consumers_total").await == 0 {
        sent += 1;
        assert!(sent <= 20_000, "never cut off");
        publisher
            .publish("ticker:btc", json!({"price": sent}))
            .await;
        publisher
            .publish("chat", json!({"line": sent, "p": payload}))
            .await;
    }
    // The connection ends with 4100, and the chat lines it got were contiguous.
    let mut chat = Vec::new();
    loop {
        match slow.next_frame().await {
            Some(tokio_tungstenite::tungstenite::Message::Text(text)) => {
                let message: Value = serde_json::from_str(&text).expect("JSON");
                if message["channel"] == "chat" {
                    chat.push(offset(&message));
                }
            }
            Some(tokio_tungstenite::tungstenite::Message::Close(frame)) => {
                if let Some(frame) = frame {
                    assert_eq!(u16::from(frame.code), 4100);
                }
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(chat, (1..=chat.len() as u64).collect::<Vec<_>>());
    assert!((chat.len() as u64) < sent);
}

/// Subscribes with `since` = `epoch`/`since`, reads the replay and unsubscribes: returns
/// (`recovered`, how many messages were replayed).
async fn recover(client: &mut WsClient, channel: &str, epoch: &str, since: u64) -> (bool, usize) {
    let subscribed = client.subscribe_since(channel, epoch, since).await;
    let recovered = subscribed["recovered"] == true;
    let top = offset(&subscribed);
    let mut replayed = 0;
    if recovered {
        for want in since + 1..=top {
            let message = client.expect("message").await;
            assert_eq!(offset(&message), want);
            replayed += 1;
        }
    }
    client
        .send(&json!({"type": "unsubscribe", "channel": channel}))
        .await;
    client.expect("unsubscribed").await;
    (recovered, replayed)
}

async fn history_sizes_per_pattern(broker: BrokerConfig) {
    let rules = ChannelRules::new(vec![
        ChannelOptions::new("big:*").history_size(50),
        ChannelOptions::new("none:*").history_size(0),
    ]);
    let server = TestServer::start(config().broker(broker).history_size(10).channels(rules)).await;
    // A subscriber that keeps every stream alive (a stream without watchers or history
    // starts over), then the messages, then each stream's epoch.
    let (mut holder, _) = WsClient::connect(&server.ws_url()).await;
    let channels = ["big:x", "small", "none:y"];
    for channel in channels {
        holder.subscribe(channel).await;
    }
    for channel in channels {
        for i in 1..=60 {
            server.publish_http(channel, json!(i)).await;
        }
    }
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    let mut epochs = Vec::new();
    for channel in channels {
        let subscribed = client.subscribe(channel).await;
        assert_eq!(offset(&subscribed), 60);
        epochs.push(subscribed["epoch"].as_str().expect("epoch").to_owned());
        client
            .send(&json!({"type": "unsubscribe", "channel": channel}))
            .await;
        client.expect("unsubscribed").await;
    }
    // big:* keeps 50: from offset 10 on everything is there, not from 9.
    assert_eq!(
        recover(&mut client, "big:x", &epochs[0], 10).await,
        (true, 50)
    );
    assert!(!recover(&mut client, "big:x", &epochs[0], 9).await.0);
    // The server-wide 10 for the others.
    assert_eq!(
        recover(&mut client, "small", &epochs[1], 50).await,
        (true, 10)
    );
    assert!(!recover(&mut client, "small", &epochs[1], 49).await.0);
    // none:* keeps nothing.
    assert!(!recover(&mut client, "none:y", &epochs[2], 59).await.0);
    assert_eq!(
        recover(&mut client, "none:y", &epochs[2], 60).await,
        (true, 0)
    );
}

#[tokio::test]
async fn history_size_per_pattern_in_memory() {
    history_sizes_per_pattern(BrokerConfig::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_size_per_pattern_in_redis() {
    let redis = RedisServer::start();
    history_sizes_per_pattern(BrokerConfig::Redis(RedisConfig::new(redis.url()))).await;
    // Redis itself holds no more than the pattern's size.
    assert_eq!(
        redis.command(&["LLEN", "wirehub:{big:x}:history"]).trim(),
        "50"
    );
    assert_eq!(
        redis.command(&["LLEN", "wirehub:{small}:history"]).trim(),
        "10"
    );
    assert_eq!(
        redis.command(&["LLEN", "wirehub:{none:y}:history"]).trim(),
        "0"
    );
}

#[tokio::test]
async fn policy_metrics_are_listed() {
    let server = TestServer::start(config()).await;
    for name in [
        "wirehub_slow_drops_total{policy=\"gap\"}",
        "wirehub_slow_drops_total{policy=\"latest\"}",
        "wirehub_gaps_sent_total",
        "wirehub_outbox_depth_count",
        "wirehub_outbox_depth_bucket{le=\"+Inf\"}",
    ] {
        assert_eq!(server.metric(name).await, 0, "{name}");
    }
}
