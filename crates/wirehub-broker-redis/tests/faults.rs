//! Broker faults without mass disconnects (issue 9, item 4): two nodes on one Redis keep every
//! WebSocket connection while Redis is killed and comes back empty, or is paused for longer
//! than the request timeout; each subscription gets what it missed or a `gap`; `/readyz`
//! names the broker while it is unreachable; a pub/sub connection that stops delivering is
//! found by the canary and made again; shutdown waits for the listener.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirehub_server::{BrokerConfig, RedisConfig, ServerConfig};
use wirehub_testkit::{RedisServer, TIMEOUT, TestServer, WsClient};

/// A node on Redis at `url` that notices a fault within a fraction of a second.
fn fast(url: &str, history: usize) -> ServerConfig {
    common::config(url, history).broker(BrokerConfig::Redis(
        RedisConfig::new(url)
            .timeout(Duration::from_millis(300))
            .ping_interval(Duration::from_millis(200))
            .canary_interval(Duration::from_millis(200)),
    ))
}

/// `GET /readyz`: the status and the JSON body.
async fn readyz(server: &TestServer) -> (u16, Value) {
    let response = reqwest::get(server.http_url("/readyz"))
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// Polls `/readyz` until it answers `status`; returns the body.
async fn wait_readyz(server: &TestServer, status: u16) -> Value {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let (now, body) = readyz(server).await;
        if now == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {now} {body}, wanted {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One subscriber of one channel: where it is in the stream.
struct Subscriber {
    client: WsClient,
    channel: String,
    epoch: String,
    offset: u64,
    gaps: u32,
}

impl Subscriber {
    async fn new(server: &TestServer, channel: &str) -> Subscriber {
        let (mut client, _) = WsClient::connect(&server.ws_url()).await;
        let subscribed = client.subscribe(channel).await;
        Subscriber {
            client,
            channel: channel.to_owned(),
            epoch: common::epoch(&subscribed),
            offset: subscribed["offset"].as_u64().expect("offset"),
            gaps: 0,
        }
    }

    /// Reads until offset `last` of the current epoch: every message must follow the one
    /// before, or a `gap` must say where the stream is now (a connection closing panics).
    async fn read_until(&mut self, last: u64) {
        while self.offset < last {
            let frame = self.client.recv().await;
            assert_eq!(frame["channel"], self.channel.as_str(), "{frame}");
            match frame["type"].as_str() {
                Some("message") => {
                    let offset = frame["offset"].as_u64().expect("offset");
                    assert_eq!(offset, self.offset + 1, "gap or duplicate: {frame}");
                    self.offset = offset;
                }
                Some("gap") => {
                    self.gaps += 1;
                    self.epoch = frame["epoch"].as_str().expect("epoch").to_owned();
                    self.offset = frame["offset"].as_u64().expect("offset");
                }
                _ => panic!("unexpected frame {frame}"),
            }
        }
    }

    /// Expects a `gap` (the stream lost what this subscription had), then reads until
    /// offset `last` of the stream's new epoch.
    async fn gap_then_read_until(&mut self, last: u64) {
        let gaps = self.gaps;
        self.offset = 0;
        self.read_until(1).await;
        assert_eq!(self.gaps, gaps + 1, "{}: a gap first", self.channel);
        self.read_until(last).await;
    }

    /// The connection is still open and served.
    async fn ping(&mut self) {
        self.client.send(&json!({"type": "ping", "id": 1})).await;
        assert_eq!(self.client.expect("pong").await["id"], 1);
    }
}

/// Subscribers on both nodes, `per_channel` per node on each of `channels` channels.
async fn subscribers(
    nodes: [&TestServer; 2],
    channels: usize,
    per_channel: usize,
) -> Vec<Subscriber> {
    let mut all = Vec::new();
    for node in nodes {
        for channel in 0..channels {
            for _ in 0..per_channel {
                all.push(Subscriber::new(node, &format!("fault:{channel}")).await);
            }
        }
    }
    all
}

/// Publishes `count` messages on every channel through `node`; returns the last offsets.
async fn publish_round(node: &TestServer, channels: usize, count: u64) -> Vec<u64> {
    let mut last = Vec::new();
    for channel in 0..channels {
        let mut offset = 0;
        for n in 0..count {
            offset = node
                .publish_http(&format!("fault:{channel}"), json!({"n": n}))
                .await;
        }
        last.push(offset);
    }
    last
}

async fn read_all(subscribers: &mut [Subscriber], last: &[u64]) {
    for subscriber in subscribers {
        let channel: usize = subscriber.channel["fault:".len()..]
            .parse()
            .expect("channel number");
        subscriber.read_until(last[channel]).await;
    }
}

const CHANNELS: usize = 3;
const PER_CHANNEL: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_redis_killed_and_back_empty_keeps_every_connection_and_sends_gaps() {
    let mut redis = RedisServer::start();
    let a = TestServer::start(fast(&redis.url(), 100)).await;
    let b = TestServer::start(fast(&redis.url(), 100)).await;
    let mut all = subscribers([&a, &b], CHANNELS, PER_CHANNEL).await;
    assert_eq!(readyz(&a).await, (200, json!({"status": "ready"})));
    let last = publish_round(&b, CHANNELS, 3).await;
    read_all(&mut all, &last).await;

    redis.stop();
    for node in [&a, &b] {
        let body = wait_readyz(node, 503).await;
        assert_eq!(body["status"], "unavailable", "{body}");
        assert_eq!(body["broker"], "unreachable", "{body}");
        let health = reqwest::get(node.http_url("/healthz")).await.expect("get");
        assert_eq!(health.status(), 200, "liveness is not readiness");
        assert_eq!(node.metric("wirehub_broker_reachable").await, 0);
    }
    redis.restart();
    for node in [&a, &b] {
        wait_readyz(node, 200).await;
    }
    // Redis came back empty: every subscription is told with a gap, in a new epoch, and
    // then follows the new stream on the same connection.
    let before: Vec<String> = all.iter().map(|s| s.epoch.clone()).collect();
    let last = publish_round(&b, CHANNELS, 2).await;
    for subscriber in &mut all {
        let channel: usize = subscriber.channel["fault:".len()..]
            .parse()
            .expect("channel number");
        subscriber.gap_then_read_until(last[channel]).await;
    }
    for (subscriber, old) in all.iter_mut().zip(before) {
        assert_eq!(subscriber.gaps, 1, "{}", subscriber.channel);
        assert_ne!(subscriber.epoch, old, "a new epoch");
        subscriber.ping().await;
    }
    let per_node = (CHANNELS * PER_CHANNEL) as u64;
    assert_eq!(a.metric("wirehub_connections").await, per_node);
    assert_eq!(b.metric("wirehub_connections").await, per_node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_redis_paused_longer_than_the_timeout_keeps_every_connection() {
    let redis = RedisServer::start();
    let a = TestServer::start(fast(&redis.url(), 100)).await;
    let b = TestServer::start(fast(&redis.url(), 100)).await;
    let mut all = subscribers([&a, &b], CHANNELS, PER_CHANNEL).await;
    let last = publish_round(&b, CHANNELS, 3).await;
    read_all(&mut all, &last).await;

    let paused = redis.pause();
    for node in [&a, &b] {
        let body = wait_readyz(node, 503).await;
        assert_eq!(body["broker"], "unreachable", "{body}");
    }
    // A publish meanwhile fails within the timeout (Redis may still run it once it resumes:
    // the subscribers then get it like any other).
    let refused = reqwest::Client::new()
        .post(b.http_url("/api/publish"))
        .json(&json!({"channel": "fault:0", "data": "while paused"}))
        .send()
        .await
        .expect("an answer");
    assert!(!refused.status().is_success(), "{}", refused.status());
    paused.resume();
    for node in [&a, &b] {
        wait_readyz(node, 200).await;
    }
    let last = publish_round(&b, CHANNELS, 2).await;
    read_all(&mut all, &last).await;
    for subscriber in &mut all {
        // Redis kept its data: what was missed came from the history.
        assert_eq!(subscriber.gaps, 0, "{}", subscriber.channel);
        subscriber.ping().await;
    }
    let per_node = (CHANNELS * PER_CHANNEL) as u64;
    assert_eq!(a.metric("wirehub_connections").await, per_node);
    assert_eq!(b.metric("wirehub_connections").await, per_node);
}

/// The last subscriber of a channel leaves while Redis is paused: the node's `UNSUBSCRIBE` is
/// sent but not answered before the timeout, and Redis carries it out once it resumes. The
/// node used to keep believing it was subscribed, so the next subscriber of that channel got
/// `subscribed` and then nothing, in silence. Now the node's state follows what it sent, and
/// the next subscriber's `SUBSCRIBE` comes after the `UNSUBSCRIBE` on the same connection.
#[tokio::test]
async fn issue_9_a_channel_left_while_redis_is_paused_is_subscribed_again_for_the_next_subscriber()
{
    let redis = RedisServer::start();
    let a = TestServer::start(fast(&redis.url(), 100)).await;
    let b = TestServer::start(fast(&redis.url(), 100)).await;
    let (mut first, _) = WsClient::connect(&a.ws_url()).await;
    first.subscribe("left").await;
    b.publish_http("left", json!(1)).await;
    assert_eq!(first.expect("message").await["offset"], 1);

    let paused = redis.pause();
    drop(first);
    // The node has sent its UNSUBSCRIBE once the subscription is gone from the fan-out, and
    // the request times out after that (300 ms).
    a.wait_for_metric("wirehub_subscriptions", 0).await;
    // No event tells from outside that the request timed out: Redis stays paused for twice
    // the request timeout.
    tokio::time::sleep(Duration::from_millis(600)).await;
    paused.resume();
    wait_readyz(&a, 200).await;

    let (mut next, _) = WsClient::connect(&a.ws_url()).await;
    let subscribed = next.subscribe("left").await;
    assert_eq!(subscribed["offset"], 1, "{subscribed}");
    assert_eq!(b.publish_http("left", json!(2)).await, 2);
    let message = next.expect("message").await;
    assert_eq!(message["offset"], 2, "{message}");
}

/// A loopback TCP link to Redis whose connections can be made to swallow everything Redis
/// sends them while staying open: a subscription that is connected but delivers nothing.
struct SilentLink {
    addr: SocketAddr,
    open: Arc<Mutex<Vec<Arc<AtomicBool>>>>,
    stop: CancellationToken,
}

impl SilentLink {
    async fn start(target: SocketAddr) -> SilentLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let open: Arc<Mutex<Vec<Arc<AtomicBool>>>> = Arc::default();
        let stop = CancellationToken::new();
        let (task_open, task_stop) = (open.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = task_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else { continue };
                let silent = Arc::new(AtomicBool::new(false));
                task_open
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(silent.clone());
                let stop = task_stop.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_redis, mut to_redis) = outbound.into_split();
                    let up = tokio::io::copy(&mut from_client, &mut to_redis);
                    let down = async {
                        let mut buffer = vec![0; 16 * 1024];
                        loop {
                            let n = from_redis.read(&mut buffer).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if !silent.load(Ordering::Relaxed) {
                                to_client.write_all(&buffer[..n]).await?;
                            }
                        }
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        SilentLink { addr, open, stop }
    }

    /// From now on, every connection open now drops what Redis sends it.
    fn silence_open_connections(&self) {
        for silent in self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            silent.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for SilentLink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_subscription_that_stops_delivering_is_found_by_the_canary_and_made_again() {
    let redis = RedisServer::start();
    let link = SilentLink::start(redis.addr()).await;
    let url = format!("redis://{}", link.addr);
    // No PING in this test's time: only the canary can notice.
    let a = TestServer::start(
        common::config(&url, 100).broker(BrokerConfig::Redis(
            RedisConfig::new(url.clone())
                .timeout(Duration::from_millis(500))
                .ping_interval(Duration::from_secs(3600))
                .canary_interval(Duration::from_millis(200)),
        )),
    )
    .await;
    let b = TestServer::start(common::config(&redis.url(), 100)).await;
    let mut subscriber = Subscriber::new(&a, "quiet").await;
    b.publish_http("quiet", json!(1)).await;
    subscriber.read_until(1).await;
    assert_eq!(a.metric("wirehub_broker_resubscribes_total").await, 0);

    link.silence_open_connections();
    assert_eq!(b.publish_http("quiet", json!(2)).await, 2);
    a.wait_for_metric("wirehub_broker_resubscribes_total", 1)
        .await;
    // Subscribed again on a new connection, the node caught up from the history.
    subscriber.read_until(2).await;
    assert_eq!(subscriber.gaps, 0);
    b.publish_http("quiet", json!(3)).await;
    subscriber.read_until(3).await;
    wait_readyz(&a, 200).await;
}

#[tokio::test]
async fn issue_10_shutdown_waits_for_the_redis_listener() {
    let redis = RedisServer::start();
    let tasks = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let hub = wirehub_server::build_hub(&fast(&redis.url(), 10), &tasks, &shutdown)
        .await
        .expect("hub");
    assert!(
        !tasks.is_empty(),
        "the listener runs on the server's tracker"
    );
    hub.broker().watch("kept").await.expect("watch");

    shutdown.cancel();
    tasks.close();
    // While a session still watches a channel, the listener keeps delivering to it...
    assert!(
        tokio::time::timeout(Duration::from_millis(300), tasks.wait())
            .await
            .is_err(),
        "the listener ended while a channel was still watched"
    );
    // ...and once the last one is gone, it ends, and the tracker with it.
    hub.broker().unwatch("kept").await.expect("unwatch");
    tokio::time::timeout(TIMEOUT, tasks.wait())
        .await
        .expect("the listener ends after shutdown");
    let pubsub = redis.command(&["PUBSUB", "NUMSUB", "wirehub:{kept}:messages"]);
    assert!(pubsub.ends_with('0'), "{pubsub}");
    drop(hub);
}
