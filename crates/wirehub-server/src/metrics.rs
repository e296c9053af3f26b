//! Counters and gauges, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Plain atomics, bumped on the paths they count; nothing here allocates per message.
//! Figures that the hub already keeps (subscriptions, channels, deliveries, and what the
//! per-channel delivery policies did) are read from it when the page is rendered.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use wirehub_core::{DEPTH_BOUNDS, Hub, OnSlow};
use wirehub_protocol::{CloseCode, ErrorCode};

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicU64,
    /// WebSocket connections accepted since start.
    pub connections_total: AtomicU64,
    /// Upgrades refused (bad handshake, origin, auth).
    pub upgrades_refused_total: AtomicU64,
    /// WebSocket connections that negotiated permessage-deflate.
    pub deflate_connections_total: AtomicU64,
    /// Client messages (text frames) received.
    pub messages_in_total: AtomicU64,
    /// Frames written to clients.
    pub frames_out_total: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out_total: AtomicU64,
    /// Messages published (WebSocket and HTTP).
    pub published_total: AtomicU64,
    /// Publishes not carried out because their idempotency key matched a kept message.
    pub publish_duplicates_total: AtomicU64,
    /// Messages replayed from history on recovery.
    pub replayed_total: AtomicU64,
    /// Connections ended by a missing pong.
    pub heartbeat_terminations_total: AtomicU64,
    /// Connections cut off as slow consumers.
    pub slow_consumers_total: AtomicU64,
    /// Connections given up (no close reply in time, no pong) and reset instead of closed,
    /// so that the kernel dropped what it still held for them.
    pub connections_aborted_total: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    closes: [AtomicU64; CloseCode::ALL.len()],
    /// Connections that ended without a close handshake (reset, EOF, timeout).
    pub abrupt_disconnects_total: AtomicU64,
}

impl Metrics {
    /// Counts one `error` reply.
    pub fn error(&self, code: ErrorCode) {
        if let Some(index) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one connection closed by the server (or the client) with a close code.
    pub fn close(&self, code: CloseCode) {
        if let Some(index) = CloseCode::ALL.iter().position(|c| *c == code) {
            self.closes[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections closed so far, by close code (every code the server uses).
    pub fn closes(&self) -> impl Iterator<Item = (CloseCode, u64)> + '_ {
        CloseCode::ALL
            .iter()
            .copied()
            .zip(self.closes.iter().map(|c| c.load(Ordering::Relaxed)))
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, value: u64) {
        counter.fetch_add(value, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(
        &self,
        hub: &Hub,
        webhooks: &[std::sync::Arc<crate::webhooks::Webhooks>],
    ) -> String {
        let mut out = String::with_capacity(4096);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let fanout = hub.fanout();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "wirehub_connections",
            "gauge",
            "Open WebSocket connections.",
            get(&self.connections),
        );
        metric(
            "wirehub_connections_total",
            "counter",
            "WebSocket connections accepted.",
            get(&self.connections_total),
        );
        metric(
            "wirehub_upgrades_refused_total",
            "counter",
            "WebSocket upgrades refused.",
            get(&self.upgrades_refused_total),
        );
        metric(
            "wirehub_deflate_connections_total",
            "counter",
            "WebSocket connections that negotiated permessage-deflate.",
            get(&self.deflate_connections_total),
        );
        metric(
            "wirehub_deflate_compressions_total",
            "counter",
            "Publications compressed for permessage-deflate subscribers (at most once each).",
            fanout.compression_count(),
        );
        metric(
            "wirehub_subscriptions",
            "gauge",
            "Subscriptions held on this node (with those still waiting for the broker to take the channel).",
            fanout.subscription_count() as u64,
        );
        metric(
            "wirehub_channels",
            "gauge",
            "Channels with local subscribers.",
            fanout.channel_count() as u64,
        );
        metric(
            "wirehub_messages_in_total",
            "counter",
            "Client messages received.",
            get(&self.messages_in_total),
        );
        metric(
            "wirehub_messages_published_total",
            "counter",
            "Messages published.",
            get(&self.published_total),
        );
        metric(
            "wirehub_publish_duplicates_total",
            "counter",
            "Publishes acknowledged without publishing again: their idempotency key matched a message still in history.",
            get(&self.publish_duplicates_total),
        );
        metric(
            "wirehub_messages_delivered_total",
            "counter",
            "Message deliveries queued for subscribers.",
            fanout.delivery_count() as u64,
        );
        metric(
            "wirehub_messages_replayed_total",
            "counter",
            "Messages replayed from history.",
            get(&self.replayed_total),
        );
        metric(
            "wirehub_frames_out_total",
            "counter",
            "Frames written to clients.",
            get(&self.frames_out_total),
        );
        metric(
            "wirehub_bytes_out_total",
            "counter",
            "Bytes written to clients.",
            get(&self.bytes_out_total),
        );
        metric(
            "wirehub_heartbeat_terminations_total",
            "counter",
            "Connections ended because a pong did not arrive.",
            get(&self.heartbeat_terminations_total),
        );
        metric(
            "wirehub_slow_consumers_total",
            "counter",
            "Connections cut off as slow consumers.",
            get(&self.slow_consumers_total),
        );
        metric(
            "wirehub_connections_aborted_total",
            "counter",
            "Connections given up (no close reply within the grace, no pong) and reset, so that the kernel freed their send queues.",
            get(&self.connections_aborted_total),
        );
        metric(
            "wirehub_abrupt_disconnects_total",
            "counter",
            "Connections that ended without a close handshake.",
            get(&self.abrupt_disconnects_total),
        );
        let _ = writeln!(
            out,
            "# HELP wirehub_errors_total Error replies sent, by code.\n# TYPE wirehub_errors_total counter"
        );
        for (code, counter) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "wirehub_errors_total{{code=\"{code}\"}} {}",
                get(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wirehub_closes_total Connections closed, by close code.\n# TYPE wirehub_closes_total counter"
        );
        for (code, counter) in CloseCode::ALL.iter().zip(&self.closes) {
            let _ = writeln!(
                out,
                "wirehub_closes_total{{code=\"{}\",reason=\"{}\"}} {}",
                code.code(),
                code.reason(),
                get(counter)
            );
        }
        crate::ready::broker_metrics(hub, &mut out);
        for webhooks in webhooks {
            webhooks.render_metrics(&mut out);
        }
        render_policies(&mut out, hub);
        out
    }
}

/// The delivery policies' counters and the outbox depth histogram.
fn render_policies(out: &mut String, hub: &Hub) {
    let stats = hub.fanout().queue_stats();
    let _ = writeln!(
        out,
        "# HELP wirehub_slow_drops_total Messages not sent to a subscriber that could not keep up, by its channel's on_slow policy (gap: covered by a gap message; latest: replaced by a newer one).\n# TYPE wirehub_slow_drops_total counter"
    );
    for policy in [OnSlow::Gap, OnSlow::Latest] {
        let _ = writeln!(
            out,
            "wirehub_slow_drops_total{{policy=\"{}\"}} {}",
            policy.as_str(),
            stats.dropped(policy)
        );
    }
    let _ = writeln!(
        out,
        "# HELP wirehub_gaps_sent_total Gap messages sent to subscriptions whose queue overflowed (on_slow = gap).\n# TYPE wirehub_gaps_sent_total counter\nwirehub_gaps_sent_total {}",
        stats.gaps_sent()
    );
    let (buckets, count, sum) = stats.depth();
    let _ = writeln!(
        out,
        "# HELP wirehub_outbox_depth Frames a connection's writer took from its queue at once (the queue's depth when the socket had room).\n# TYPE wirehub_outbox_depth histogram"
    );
    for (bound, value) in DEPTH_BOUNDS.iter().zip(buckets) {
        let _ = writeln!(out, "wirehub_outbox_depth_bucket{{le=\"{bound}\"}} {value}");
    }
    let _ = writeln!(
        out,
        "wirehub_outbox_depth_bucket{{le=\"+Inf\"}} {count}\nwirehub_outbox_depth_sum {sum}\nwirehub_outbox_depth_count {count}"
    );
}
