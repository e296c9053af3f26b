//! `GET /api/stats`: the figures the dashboard at `/dashboard` draws, as JSON
//! ([`wirehub_protocol::StatsReply`]).
//!
//! The server takes a sample of its counters once a second (on the tick that also sweeps the
//! broker) and keeps the last [`StatsReply::MAX_SAMPLES`]: a dashboard opened now draws the
//! last minutes at once, and then asks only for the samples after the last one it has
//! (`?since=T`). Needs the API key when one is set, like the rest of `/api/`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use wirehub_protocol::{BrokerStats, CloseCount, StatsQuery, StatsReply, StatsSample};

use crate::state::AppState;

/// Time between two samples.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// The samples of the last minutes.
#[derive(Debug)]
pub(crate) struct StatsRecorder {
    started: Instant,
    samples: Mutex<VecDeque<StatsSample>>,
}

impl StatsRecorder {
    pub(crate) fn new() -> StatsRecorder {
        StatsRecorder {
            started: Instant::now(),
            samples: Mutex::new(VecDeque::with_capacity(StatsReply::MAX_SAMPLES)),
        }
    }

    /// Takes one sample (called every [`INTERVAL`]).
    pub(crate) fn record(&self, state: &AppState) {
        let sample = sample(state);
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() == StatsReply::MAX_SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The kept samples taken after `since` (every one without it), oldest first.
    fn after(&self, since: Option<u64>) -> Vec<StatsSample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let since = since.unwrap_or(0);
        let first = samples.partition_point(|s| s.time_ms <= since);
        samples.range(first..).copied().collect()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The server's figures now.
fn sample(state: &AppState) -> StatsSample {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let metrics = &state.metrics;
    let fanout = state.hub.fanout();
    StatsSample {
        time_ms: unix_ms(),
        connections: get(&metrics.connections),
        subscriptions: fanout.subscription_count() as u64,
        channels: fanout.channel_count() as u64,
        connections_total: get(&metrics.connections_total),
        messages_in_total: get(&metrics.messages_in_total),
        published_total: get(&metrics.published_total),
        delivered_total: fanout.delivery_count() as u64,
        bytes_out_total: get(&metrics.bytes_out_total),
        slow_consumers_total: get(&metrics.slow_consumers_total),
        heartbeat_terminations_total: get(&metrics.heartbeat_terminations_total),
    }
}

/// Answers `GET /api/stats[?since=T]`.
pub(crate) async fn stats(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = match crate::http::authorized_query(&state, &headers, query) {
        Ok(query) => query,
        Err(response) => return *response,
    };
    let broker = state.hub.broker();
    let health = broker.health();
    let reply = StatsReply {
        uptime_ms: u64::try_from(state.stats.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ready: health.reachable && !state.shutdown.is_cancelled(),
        broker: BrokerStats {
            kind: broker.name().to_owned(),
            reachable: health.reachable,
            resubscribes_total: health.resubscribes,
        },
        now: sample(&state),
        closes: state
            .metrics
            .closes()
            .map(|(code, count)| CloseCount {
                code: code.code(),
                reason: code.reason().to_owned(),
                count,
            })
            .collect(),
        interval_ms: u64::try_from(INTERVAL.as_millis()).unwrap_or(u64::MAX),
        samples: state.stats.after(query.since),
    };
    // Figures of now: never from a cache.
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(reply)).into_response()
}
