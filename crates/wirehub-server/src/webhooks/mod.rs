//! Lifecycle webhooks: the [`LifecycleSink`] that POSTs events to an HTTP endpoint.
//!
//! [`Webhooks::emit`] (called by sessions and the occupancy worker, never blocking) gives the
//! event its `id` and `time_ms` and appends it to a bounded queue. One delivery task (on the
//! server's `TaskTracker`) takes batches of up to `batch_size` events, waiting at most
//! `batch_delay` for a batch to fill, encodes them with the delivery's [`WebhookFormat`] and
//! POSTs them. A non-2xx answer or none within `timeout` is retried, the same batch with
//! the same ids, after an exponential backoff with jitter; batches go out one at a time, in
//! the order of their events. So every event is delivered at least once; a receiver
//! de-duplicates by `id`.
//!
//! Nothing is dropped in silence: an event that finds the queue full, a batch refused
//! `max_attempts` times, and what is still queued when the server stops (after the shutdown
//! drain) are written to the dead-letter file (JSON lines, see `dead_letter`), counted, and
//! logged (rate-limited).
//!
//! The body and headers are the format's ([`WirehubFormat`]: `{"events": [...]}` signed
//! with `X-Wirehub-Signature`); another format (a Pusher app's webhooks, with its own URL)
//! reuses the queue, retries and dead-letter file with a [`WebhookFormat`] of its own.

mod dead_letter;
mod delivery;
mod format;

use std::collections::VecDeque;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirehub_core::{LifecycleEvent, LifecycleSink};
use wirehub_protocol::{WebhookEvent, WebhookEventKind};

pub use dead_letter::DeadLetter;
pub use format::{Encoded, SIGNATURE_HEADER, WebhookFormat, WirehubFormat, signature};

/// Settings of one webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookConfig {
    /// Where the batches are POSTed (`http://` or `https://`).
    pub url: String,
    /// Events waiting at most; beyond, new events go to the dead-letter file.
    pub queue_capacity: usize,
    /// Events per request at most.
    pub batch_size: usize,
    /// How long the first event of a batch waits for more before the batch is sent.
    pub batch_delay: Duration,
    /// How long a request may take before it counts as failed (and is retried).
    pub timeout: Duration,
    /// Attempts per batch (the first included) before it goes to the dead-letter file.
    pub max_attempts: u32,
    /// The dead-letter file (JSON lines, appended).
    pub dead_letter: PathBuf,
    /// The first retry's delay; each next one doubles, up to `retry_max` (each jittered
    /// down to half).
    pub retry_initial: Duration,
    /// The longest delay between two attempts.
    pub retry_max: Duration,
    /// After shutdown, how long events may still be delivered before what is left goes to
    /// the dead-letter file.
    pub flush_window: Duration,
}

impl WebhookConfig {
    /// The documented defaults, for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        WebhookConfig {
            url: url.into(),
            queue_capacity: 10_000,
            batch_size: 100,
            batch_delay: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            max_attempts: 12,
            dead_letter: PathBuf::from("wirehub-webhooks.dead.jsonl"),
            retry_initial: Duration::from_millis(250),
            retry_max: Duration::from_secs(30),
            flush_window: Duration::from_secs(7),
        }
    }

    /// Sets [`WebhookConfig::queue_capacity`].
    pub fn queue_capacity(mut self, value: usize) -> Self {
        self.queue_capacity = value;
        self
    }

    /// Sets [`WebhookConfig::batch_size`].
    pub fn batch_size(mut self, value: usize) -> Self {
        self.batch_size = value;
        self
    }

    /// Sets [`WebhookConfig::batch_delay`].
    pub fn batch_delay(mut self, value: Duration) -> Self {
        self.batch_delay = value;
        self
    }

    /// Sets [`WebhookConfig::timeout`].
    pub fn timeout(mut self, value: Duration) -> Self {
        self.timeout = value;
        self
    }

    /// Sets [`WebhookConfig::max_attempts`].
    pub fn max_attempts(mut self, value: u32) -> Self {
        self.max_attempts = value;
        self
    }

    /// Sets [`WebhookConfig::dead_letter`].
    pub fn dead_letter(mut self, value: impl Into<PathBuf>) -> Self {
        self.dead_letter = value.into();
        self
    }

    /// Sets [`WebhookConfig::retry_initial`] and [`WebhookConfig::retry_max`].
    pub fn retry(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_initial = initial;
        self.retry_max = max;
        self
    }

    /// Sets [`WebhookConfig::flush_window`].
    pub fn flush_window(mut self, value: Duration) -> Self {
        self.flush_window = value;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// A message naming the setting that cannot be used.
    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|err| format!("webhook_url {:?}: {err}", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "webhook_url {:?}: use http:// or https://",
                self.url
            ));
        }
        if self.queue_capacity == 0 || self.batch_size == 0 || self.max_attempts == 0 {
            return Err(
                "webhook_queue, webhook_batch_size and webhook_max_attempts must be at least 1"
                    .to_owned(),
            );
        }
        if self.timeout.is_zero() {
            return Err("webhook_timeout must be more than 0".to_owned());
        }
        Ok(())
    }
}

/// An event as queued: the lifecycle event with its id and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique: the node's random prefix and a sequence number.
    pub id: String,
    /// Milliseconds since the Unix epoch when it was emitted.
    pub time_ms: u64,
    /// What happened.
    pub event: LifecycleEvent,
}

impl Envelope {
    /// The event as the wire type of wirehub's webhook body; `None` for a foreign event.
    pub fn to_wire(&self) -> Option<WebhookEvent> {
        Some(WebhookEvent {
            id: self.id.clone(),
            time_ms: self.time_ms,
            kind: wire_kind(&self.event)?,
        })
    }

    /// The event as a line of the dead-letter file holds it: the wire type, or a foreign
    /// event's own JSON with the envelope's `id` and `time_ms` beside it.
    pub fn to_json(&self) -> serde_json::Value {
        match (&self.event, self.to_wire()) {
            (_, Some(wire)) => serde_json::to_value(wire).unwrap_or_default(),
            (LifecycleEvent::Foreign { json }, None) => serde_json::json!({
                "id": self.id,
                "time_ms": self.time_ms,
                "foreign": serde_json::from_str::<serde_json::Value>(json).unwrap_or_default(),
            }),
            (_, None) => serde_json::Value::Null,
        }
    }
}

fn wire_kind(event: &LifecycleEvent) -> Option<WebhookEventKind> {
    let s = |value: &Arc<str>| value.to_string();
    Some(match event {
        LifecycleEvent::Connect { client, user } => WebhookEventKind::Connect {
            client: s(client),
            user: user.as_ref().map(s),
        },
        LifecycleEvent::Disconnect {
            client,
            user,
            code,
            reason,
        } => WebhookEventKind::Disconnect {
            client: s(client),
            user: user.as_ref().map(s),
            code: *code,
            reason: reason.clone(),
        },
        LifecycleEvent::Subscribe { client, channel } => WebhookEventKind::Subscribe {
            client: s(client),
            channel: s(channel),
        },
        LifecycleEvent::Unsubscribe { client, channel } => WebhookEventKind::Unsubscribe {
            client: s(client),
            channel: s(channel),
        },
        LifecycleEvent::ChannelOccupied { channel } => WebhookEventKind::ChannelOccupied {
            channel: s(channel),
        },
        LifecycleEvent::ChannelVacated { channel } => WebhookEventKind::ChannelVacated {
            channel: s(channel),
        },
        LifecycleEvent::MemberJoin { channel, member } => WebhookEventKind::MemberJoin {
            channel: s(channel),
            member: member.clone(),
        },
        LifecycleEvent::MemberLeave { channel, member } => WebhookEventKind::MemberLeave {
            channel: s(channel),
            member: member.clone(),
        },
        LifecycleEvent::Foreign { .. } => return None,
    })
}

/// The counters of one delivery (`wirehub_webhook_*{target="NAME"}` on `/metrics`).
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    /// Events taken into the queue.
    pub queued: AtomicU64,
    /// Events delivered (their request was answered 2xx).
    pub sent: AtomicU64,
    /// Requests sent again after a failure.
    pub retried: AtomicU64,
    /// Requests that failed (non-2xx, no answer in time, connection error).
    pub failed: AtomicU64,
    /// Events written to the dead-letter file, by why: the queue was full.
    pub dead_overflow: AtomicU64,
    /// ... their batch was refused `max_attempts` times.
    pub dead_attempts: AtomicU64,
    /// ... they were still queued when the server stopped.
    pub dead_shutdown: AtomicU64,
    /// Events lost: the dead-letter file could not be written either (logged as errors).
    pub lost: AtomicU64,
}

/// Why events went to the dead-letter file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// The queue was full.
    Overflow,
    /// The batch was refused `max_attempts` times.
    Attempts,
    /// Still queued (or being retried) when the server stopped.
    Shutdown,
}

impl DeadReason {
    /// The word in the file and in the metric's label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::Overflow => "overflow",
            DeadReason::Attempts => "attempts",
            DeadReason::Shutdown => "shutdown",
        }
    }
}

/// One webhook delivery: queue, delivery task, dead-letter file.
pub struct Webhooks {
    name: String,
    config: WebhookConfig,
    format: Arc<dyn WebhookFormat>,
    queue: Mutex<VecDeque<Envelope>>,
    notify: Notify,
    node: String,
    sequence: AtomicU64,
    metrics: WebhookMetrics,
    dead_letter: DeadLetter,
    /// Whether nothing will emit events any more (the server's sessions are gone); after
    /// shutdown, the delivery task ends once this holds and the queue is empty.
    quiet: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
}

impl Webhooks {
    /// Starts a delivery named `name` (the metrics' `target` label) on `tracker`: it runs
    /// until `shutdown` is cancelled and then, for at most [`WebhookConfig::flush_window`],
    /// until the queue is empty and [`Webhooks::until_quiet`]'s check holds.
    ///
    /// # Errors
    /// The HTTP client cannot be built (no TLS roots).
    pub fn start(
        name: impl Into<String>,
        config: WebhookConfig,
        format: Arc<dyn WebhookFormat>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Arc<Webhooks>, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wirehub/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let webhooks = Arc::new(Webhooks {
            name: name.into(),
            dead_letter: DeadLetter::new(config.dead_letter.clone()),
            config,
            format,
            queue: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            node: format!("{:016x}", rand::random::<u64>()),
            sequence: AtomicU64::new(0),
            metrics: WebhookMetrics::default(),
            quiet: OnceLock::new(),
        });
        tracker.spawn(delivery::run(webhooks.clone(), client, shutdown));
        Ok(webhooks)
    }

    /// Sets the check that nothing will emit events any more (once; later calls do nothing).
    pub fn until_quiet(&self, quiet: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.quiet.set(Box::new(quiet));
    }

    /// The counters.
    pub fn metrics(&self) -> &WebhookMetrics {
        &self.metrics
    }

    /// Events waiting in the queue.
    pub fn depth(&self) -> usize {
        self.lock_queue().len()
    }

    /// The metrics' `target` label.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends this delivery's metrics in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let target = &self.name;
        let m = &self.metrics;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{target=\"{target}\"}} {value}"
            );
        };
        metric(
            "wirehub_webhook_events_queued_total",
            "counter",
            "Lifecycle events taken into the webhook queue.",
            get(&m.queued),
        );
        metric(
            "wirehub_webhook_events_sent_total",
            "counter",
            "Lifecycle events delivered (their request was answered 2xx).",
            get(&m.sent),
        );
        metric(
            "wirehub_webhook_retries_total",
            "counter",
            "Webhook requests sent again after a failure.",
            get(&m.retried),
        );
        metric(
            "wirehub_webhook_requests_failed_total",
            "counter",
            "Webhook requests that failed (non-2xx, no answer in time, connection error).",
            get(&m.failed),
        );
        metric(
            "wirehub_webhook_queue_depth",
            "gauge",
            "Lifecycle events waiting to be sent.",
            self.depth() as u64,
        );
        metric(
            "wirehub_webhook_events_lost_total",
            "counter",
            "Lifecycle events that could be neither delivered nor written to the dead-letter file.",
            get(&m.lost),
        );
        let _ = writeln!(
            out,
            "# HELP wirehub_webhook_events_dead_lettered_total Lifecycle events written to the dead-letter file, by why.\n# TYPE wirehub_webhook_events_dead_lettered_total counter"
        );
        for (reason, counter) in [
            (DeadReason::Overflow, &m.dead_overflow),
            (DeadReason::Attempts, &m.dead_attempts),
            (DeadReason::Shutdown, &m.dead_shutdown),
        ] {
            let _ = writeln!(
                out,
                "wirehub_webhook_events_dead_lettered_total{{target=\"{target}\",reason=\"{}\"}} {}",
                reason.as_str(),
                get(counter)
            );
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Envelope>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn envelope(&self, event: LifecycleEvent) -> Envelope {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        Envelope {
            id: format!("{}-{sequence}", self.node),
            time_ms: now_ms(),
            event,
        }
    }

    /// Writes events to the dead-letter file and counts them.
    fn bury(&self, envelopes: &[Envelope], reason: DeadReason) {
        if envelopes.is_empty() {
            return;
        }
        let counter = match reason {
            DeadReason::Overflow => &self.metrics.dead_overflow,
            DeadReason::Attempts => &self.metrics.dead_attempts,
            DeadReason::Shutdown => &self.metrics.dead_shutdown,
        };
        match self.dead_letter.write(&self.config.url, reason, envelopes) {
            Ok(()) => {
                counter.fetch_add(envelopes.len() as u64, Ordering::Relaxed);
            }
            Err(err) => {
                self.metrics
                    .lost
                    .fetch_add(envelopes.len() as u64, Ordering::Relaxed);
                tracing::error!(
                    target_name = %self.name,
                    path = %self.config.dead_letter.display(),
                    error = %err,
                    events = envelopes.len(),
                    "webhook events lost: the dead-letter file cannot be written"
                );
            }
        }
    }
}

impl LifecycleSink for Webhooks {
    fn emit(&self, event: LifecycleEvent) {
        if !self.format.accepts(&event) {
            return;
        }
        let envelope = self.envelope(event);
        let mut queue = self.lock_queue();
        if queue.len() >= self.config.queue_capacity {
            drop(queue);
            self.bury(std::slice::from_ref(&envelope), DeadReason::Overflow);
            self.dead_letter
                .warn_overflow(&self.name, self.config.queue_capacity);
            return;
        }
        queue.push_back(envelope);
        drop(queue);
        self.metrics.queued.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_one();
    }
}

impl fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhooks")
            .field("name", &self.name)
            .field("url", &self.config.url)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

/// Several sinks as one: each event goes to every sink (e.g. the server's webhooks and a
/// Pusher app's).
#[derive(Debug)]
pub struct Fanout(pub Vec<Arc<dyn LifecycleSink>>);

impl LifecycleSink for Fanout {
    fn emit(&self, event: LifecycleEvent) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.emit(event.clone());
            }
            last.emit(event);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
