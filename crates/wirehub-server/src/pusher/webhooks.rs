//! The apps' webhooks in Pusher's format: `POST` of `{"time_ms": T, "events": [EVENT...]}`
//! with `X-Pusher-Key` (the app key) and `X-Pusher-Signature` (hex HMAC-SHA256 of the body
//! with the app secret), for `channel_occupied`, `channel_vacated`, `member_added`,
//! `member_removed` and `client_event`.
//!
//! Events are queued (bounded: beyond [`MAX_QUEUED`] they are counted and dropped), sent in
//! batches of at most [`MAX_BATCH`] per app by one task per node, and a batch that gets no
//! 2xx answer is sent again after 1, 2, 4... s (up to [`ATTEMPTS`] times): at least once
//! while the receiver comes back within a minute. Occupancy and presence are this node's
//! (see the README's Pusher section).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::config::PusherApp;
use super::sign;

/// Events held for delivery at most, over all apps.
pub(crate) const MAX_QUEUED: usize = 10_000;
/// Events in one POST at most.
pub(crate) const MAX_BATCH: usize = 100;
/// Tries per batch.
pub(crate) const ATTEMPTS: u32 = 6;

#[derive(Debug)]
struct Target {
    url: String,
    key: String,
    secret: String,
}

/// The node's webhook queue; emitting never blocks.
#[derive(Debug)]
pub(crate) struct Webhooks {
    /// Per app: where its webhooks go, when anywhere.
    targets: Vec<Option<Target>>,
    queue: Mutex<VecDeque<(usize, Value)>>,
    notify: Notify,
    pub(crate) dropped: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) failed: AtomicU64,
}

impl Webhooks {
    pub(crate) fn new(apps: &[PusherApp]) -> Self {
        Webhooks {
            targets: apps
                .iter()
                .map(|app| {
                    app.webhook_url.as_ref().map(|url| Target {
                        url: url.clone(),
                        key: app.key.clone(),
                        secret: app.secret.clone(),
                    })
                })
                .collect(),
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Whether any app has a webhook URL.
    pub(crate) fn is_on(&self) -> bool {
        self.targets.iter().any(Option::is_some)
    }

    /// Queues one event of `app` (nothing when the app has no webhook URL).
    pub(crate) fn emit(&self, app: usize, event: Value) {
        if !matches!(self.targets.get(app), Some(Some(_))) {
            return;
        }
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= MAX_QUEUED {
            drop(queue);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queue.push_back((app, event));
        drop(queue);
        self.notify.notify_one();
    }

    fn take_batch(&self) -> Option<(usize, Vec<Value>)> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let app = queue.front()?.0;
        let mut events = Vec::new();
        let mut rest = VecDeque::with_capacity(queue.len());
        while let Some((index, event)) = queue.pop_front() {
            if index == app && events.len() < MAX_BATCH {
                events.push(event);
            } else {
                rest.push_back((index, event));
            }
        }
        *queue = rest;
        Some((app, events))
    }

    /// Delivers queued events until `shutdown`, then what is still queued (one try each).
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        loop {
            while let Some((app, events)) = self.take_batch() {
                self.deliver(&client, app, events, &shutdown).await;
            }
            tokio::select! {
                () = self.notify.notified() => {}
                () = shutdown.cancelled() => break,
            }
        }
        while let Some((app, events)) = self.take_batch() {
            self.deliver(&client, app, events, &shutdown).await;
        }
    }

    async fn deliver(
        &self,
        client: &reqwest::Client,
        app: usize,
        events: Vec<Value>,
        shutdown: &CancellationToken,
    ) {
        let Some(Some(target)) = self.targets.get(app) else {
            return;
        };
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as u64);
        let body = json!({ "time_ms": time_ms, "events": events }).to_string();
        let signature = sign::sign(&target.secret, body.as_bytes());
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let answer = client
                .post(&target.url)
                .header("Content-Type", "application/json")
                .header("X-Pusher-Key", &target.key)
                .header("X-Pusher-Signature", &signature)
                .body(body.clone())
                .send()
                .await;
            match answer {
                Ok(response) if response.status().is_success() => {
                    self.sent.fetch_add(events.len() as u64, Ordering::Relaxed);
                    debug!(events = events.len(), "Pusher webhook delivered");
                    return;
                }
                Ok(response) => {
                    warn!(attempt, status = %response.status(), url = %target.url, "Pusher webhook refused");
                }
                Err(err) => {
                    warn!(attempt, error = %err, url = %target.url, "Pusher webhook failed")
                }
            }
            if attempt == ATTEMPTS || shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => {}
            }
            delay = (delay * 2).min(Duration::from_secs(30));
        }
        self.failed
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        warn!(events = events.len(), "Pusher webhook batch given up");
    }
}
