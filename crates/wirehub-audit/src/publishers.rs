//! The publishers: over HTTP (`POST /api/publish`, rotating over the cluster's nodes) and
//! over WebSocket (the Rust SDK's publish). Each publishes one channel, one message at a
//! time (`seq + 1` only after `seq` was acknowledged, so a publisher's messages have
//! increasing offsets), with the idempotency key `P-SEQ` and retries until acknowledged
//! or given up; every acknowledgement is recorded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use wirehub_client::{Backoff, Client, ClientConfig};

use crate::oracle::MessageId;
use crate::record::Recorder;

/// How long one message is retried before it is given up (its outcome is then unknown).
const GIVE_UP: Duration = Duration::from_secs(30);

/// How a publisher reaches the server.
#[derive(Debug, Clone)]
pub(crate) enum Via {
    /// `POST /api/publish` on these nodes, in turn (a failed attempt moves to the next).
    Http(Vec<SocketAddr>),
    /// The Rust SDK connected to this WebSocket URL.
    WebSocket(String),
}

/// One publisher.
#[derive(Debug)]
pub(crate) struct Publisher {
    /// E.g. `h0`.
    pub(crate) name: String,
    /// Its channel.
    pub(crate) channel: String,
    /// Messages to send at once, without pacing (a burst), added by the fault runner.
    burst: Arc<AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl Publisher {
    /// Starts publishing one message per `interval`, plus bursts, until `stop`.
    pub(crate) fn start(
        name: String,
        channel: String,
        via: Via,
        interval: Duration,
        pad: usize,
        recorder: Arc<Recorder>,
        stop: CancellationToken,
    ) -> Publisher {
        let burst = Arc::new(AtomicU64::new(0));
        let task_burst = burst.clone();
        let task_name = name.clone();
        let task_channel = channel.clone();
        let task = tokio::spawn(async move {
            let mut sender = match Sender::new(via) {
                Ok(sender) => sender,
                Err(why) => {
                    eprintln!("audit: publisher {task_name} cannot start: {why}");
                    return;
                }
            };
            let pad = "x".repeat(pad);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut seq = 0;
            while !stop.is_cancelled() {
                let bursting = task_burst
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok();
                if !bursting {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => {}
                    }
                }
                seq += 1;
                let data =
                    serde_json::json!({"p": task_name, "seq": seq, "ch": task_channel, "pad": pad});
                let key = format!("{task_name}-{seq}");
                match sender.publish(&task_channel, &data, &key, &recorder).await {
                    Some(offset) => recorder.ack(
                        &task_channel,
                        MessageId {
                            publisher: task_name.clone(),
                            seq,
                        },
                        offset,
                    ),
                    None => recorder.unconfirmed(),
                }
            }
            sender.close().await;
        });
        Publisher {
            name,
            channel,
            burst,
            task: Some(task),
        }
    }

    /// Sends `count` more messages as fast as they are acknowledged.
    pub(crate) fn burst(&self, count: u64) {
        self.burst.fetch_add(count, Ordering::Relaxed);
    }

    /// Whether a burst is still being sent.
    pub(crate) fn bursting(&self) -> bool {
        self.burst.load(Ordering::Relaxed) > 0
    }

    /// Waits until the publisher stopped (after its stop token was cancelled; the message in
    /// flight is still retried to its end).
    pub(crate) async fn join(&mut self) {
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

enum Sender {
    Http {
        http: reqwest::Client,
        nodes: Vec<SocketAddr>,
        next: usize,
    },
    WebSocket(Client),
}

impl Sender {
    fn new(via: Via) -> Result<Sender, String> {
        Ok(match via {
            Via::Http(nodes) => Sender::Http {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(3))
                    .build()
                    .map_err(|error| error.to_string())?,
                nodes,
                next: 0,
            },
            Via::WebSocket(url) => Sender::WebSocket(
                Client::connect(
                    ClientConfig::new(url)
                        .backoff(
                            Backoff::default()
                                .initial(Duration::from_millis(100))
                                .max(Duration::from_secs(1)),
                        )
                        .healthy_after(Duration::from_secs(2))
                        .connect_timeout(Duration::from_secs(3))
                        .idle_timeout(Duration::from_secs(3))
                        .pong_timeout(Duration::from_secs(2))
                        .request_timeout(Duration::from_secs(5))
                        .publish_buffer(16),
                )
                .map_err(|error| error.to_string())?,
            ),
        })
    }

    /// Publishes with retries under the same key; the acknowledged offset, or `None` when
    /// given up.
    async fn publish(
        &mut self,
        channel: &str,
        data: &serde_json::Value,
        key: &str,
        recorder: &Recorder,
    ) -> Option<u64> {
        let deadline = Instant::now() + GIVE_UP;
        let mut pause = Duration::from_millis(50);
        loop {
            let outcome = match self {
                Sender::Http { http, nodes, next } => {
                    let node = nodes[*next % nodes.len()];
                    let body = serde_json::json!({"channel": channel, "data": data, "idempotency_key": key});
                    let answer = http
                        .post(format!("http://{node}/api/publish"))
                        .json(&body)
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status().is_success() => response
                            .json::<serde_json::Value>()
                            .await
                            .ok()
                            .and_then(|body| body["offset"].as_u64()),
                        _ => {
                            *next += 1;
                            None
                        }
                    }
                }
                Sender::WebSocket(client) => {
                    let raw = RawValue::from_string(data.to_string()).ok()?;
                    client.publish_raw_with_key(channel, raw, key).await.ok()
                }
            };
            if outcome.is_some() {
                return outcome;
            }
            if Instant::now() >= deadline {
                return None;
            }
            recorder.retry();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn close(self) {
        if let Sender::WebSocket(client) = self {
            let _ = tokio::time::timeout(Duration::from_secs(3), client.close()).await;
        }
    }
}
