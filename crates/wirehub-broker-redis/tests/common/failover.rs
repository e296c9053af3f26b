//! A master killed under traffic (issue 15): WebSocket subscribers that check every frame, a
//! publisher that keeps publishing through the failover, and the final check that nothing
//! was lost silently.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wirehub_server::{BrokerConfig, RedisConfig, ServerConfig};
use wirehub_testkit::{TIMEOUT, TestServer, WsClient};

/// A node on Redis at `url` that notices a fault within a fraction of a second.
pub fn fast(url: &str, history: usize) -> ServerConfig {
    super::config(url, history).broker(BrokerConfig::Redis(
        RedisConfig::new(url)
            .timeout(Duration::from_millis(500))
            .ping_interval(Duration::from_millis(200))
            .canary_interval(Duration::from_millis(300)),
    ))
}

/// One subscriber of one channel, checking every frame.
pub struct Subscriber {
    pub client: WsClient,
    pub channel: String,
    pub epoch: String,
    pub offset: u64,
    pub gaps: u32,
    /// (epoch, offset) → data of every message received.
    pub seen: HashMap<(String, u64), Value>,
}

impl Subscriber {
    pub async fn new(server: &TestServer, channel: &str) -> Subscriber {
        let (mut client, _) = WsClient::connect(&server.ws_url()).await;
        let subscribed = client.subscribe(channel).await;
        Subscriber {
            client,
            channel: channel.to_owned(),
            epoch: super::epoch(&subscribed),
            offset: subscribed["offset"].as_u64().expect("offset"),
            gaps: 0,
            seen: HashMap::new(),
        }
    }

    /// Reads until the subscription stands at `(epoch, top)`: every message follows the one
    /// before in the same epoch, or a `gap` says where the stream is now. A connection that
    /// closes panics.
    pub async fn read_until(&mut self, epoch: &str, top: u64) {
        while !(self.epoch == epoch && self.offset >= top) {
            let frame = self.client.recv().await;
            assert_eq!(frame["channel"], self.channel.as_str(), "{frame}");
            match frame["type"].as_str() {
                Some("message") => {
                    let offset = frame["offset"].as_u64().expect("offset");
                    assert_eq!(
                        offset,
                        self.offset + 1,
                        "{}: a silent gap or a duplicate: {frame}",
                        self.channel
                    );
                    self.offset = offset;
                    self.seen
                        .insert((self.epoch.clone(), offset), frame["data"].clone());
                }
                Some("gap") => {
                    self.gaps += 1;
                    self.epoch = frame["epoch"].as_str().expect("epoch").to_owned();
                    self.offset = frame["offset"].as_u64().expect("offset");
                }
                _ => panic!("unexpected frame {frame}"),
            }
        }
        assert_eq!(self.offset, top, "{}: past the stream's top", self.channel);
    }

    /// The connection is still open and served.
    pub async fn ping(&mut self) {
        self.client.send(&json!({"type": "ping", "id": 1})).await;
        assert_eq!(self.client.expect("pong").await["id"], 1);
    }
}

/// Publishes round-robin on `channels` through `node` until stopped, counting acknowledged
/// publishes (failures during the failover are expected and retried by the loop).
pub struct Publisher {
    pub acked: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    pub fn start(node: &TestServer, channels: Vec<String>) -> Publisher {
        let url = node.http_url("/api/publish");
        let acked = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (acked, failed, stop) = (acked.clone(), failed.clone(), stop.clone());
            async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(2))
                    .build()
                    .expect("an HTTP client");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let channel = &channels[(n as usize) % channels.len()];
                    let body = json!({"channel": channel, "data": {"n": n}});
                    match http.post(&url).json(&body).send().await {
                        Ok(response) if response.status().is_success() => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        });
        Publisher {
            acked,
            failed,
            stop,
            task,
        }
    }

    /// Waits until `more` further publishes were acknowledged.
    pub async fn wait_acked(&self, more: u64) {
        let want = self.acked.load(Ordering::Relaxed) + more;
        let deadline = tokio::time::Instant::now() + TIMEOUT * 3;
        while self.acked.load(Ordering::Relaxed) < want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "publishing did not resume ({} failed)",
                self.failed.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the publisher ends");
    }
}

/// The stream's position now, from a fresh subscription on `node` (retried while the node
/// answers `internal`: it is still reconnecting to Redis).
pub async fn position(node: &TestServer, channel: &str) -> (String, u64) {
    let deadline = tokio::time::Instant::now() + TIMEOUT * 3;
    loop {
        if let Some(position) = try_position(node, channel).await {
            return position;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel}: subscribing keeps failing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn try_position(node: &TestServer, channel: &str) -> Option<(String, u64)> {
    let (mut client, _) = WsClient::connect(&node.ws_url()).await;
    client
        .send(&json!({"type": "subscribe", "channel": channel, "id": 1}))
        .await;
    // A `gap` sent to the channel's subscribers while this subscription is being set up may
    // come first.
    loop {
        let reply = client.recv().await;
        match reply["type"].as_str() {
            Some("subscribed") => {
                return Some((
                    super::epoch(&reply),
                    reply["offset"].as_u64().expect("offset"),
                ));
            }
            Some("gap") => {}
            Some("error") if reply["code"] == "internal" => return None,
            _ => panic!("unexpected reply {reply}"),
        }
    }
}

/// Every subscriber reaches the stream's position with each message in order or a `gap`
/// before it, and no two subscribers saw different data at the same epoch and offset (a
/// rewound stream must not hand out an offset again for another message). Returns the
/// number of gaps.
pub async fn check_no_silent_loss(node: &TestServer, subscribers: &mut [Subscriber]) -> u32 {
    let mut positions = HashMap::new();
    for subscriber in subscribers.iter() {
        if !positions.contains_key(&subscriber.channel) {
            let at = position(node, &subscriber.channel).await;
            positions.insert(subscriber.channel.clone(), at);
        }
    }
    let mut agreed: HashMap<(String, String, u64), Value> = HashMap::new();
    let mut gaps = 0;
    for subscriber in subscribers.iter_mut() {
        let (epoch, top) = &positions[&subscriber.channel];
        subscriber.read_until(epoch, *top).await;
        subscriber.ping().await;
        gaps += subscriber.gaps;
        for ((epoch, offset), data) in &subscriber.seen {
            let key = (subscriber.channel.clone(), epoch.clone(), *offset);
            if let Some(other) = agreed.get(&key) {
                assert_eq!(
                    other, data,
                    "{key:?}: two messages at the same epoch and offset"
                );
            } else {
                agreed.insert(key, data.clone());
            }
        }
    }
    gaps
}
