//! The node's side of channel occupancy: its subscriber count per channel, kept as sessions
//! subscribe and unsubscribe, and one worker task that tells the [`OccupancyStore`] every
//! change (coalesced: a burst on one channel is one update) and announces the transitions
//! the store hands this node: `channel_occupied` at once, `channel_vacated` once the
//! debounce has passed without a new subscriber (asked with `settle`, which answers
//! `Vacated` to one node only). Periodically it keeps the node's lease in the store and
//! settles the vacates of nodes that died or stopped.
//!
//! Sessions never wait for the store: counting is a short critical section and a wake-up.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use wirehub_core::{Lifecycle, LifecycleEvent, OccupancyStore, Settled, Transition};

/// How long a failed store request waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);

/// The node's subscriber counts and the worker's wake-up.
#[derive(Debug)]
pub(crate) struct Occupancy {
    store: Arc<dyn OccupancyStore>,
    lifecycle: Lifecycle,
    debounce: Duration,
    maintain_every: Duration,
    state: Mutex<Counts>,
    notify: Notify,
    /// Set when the worker ended (after shutdown, once every count was released).
    finished: AtomicBool,
}

#[derive(Debug, Default)]
struct Counts {
    /// Channels with local subscribers.
    counts: HashMap<Arc<str>, u64>,
    /// Channels whose count changed since the store was last told.
    dirty: HashSet<Arc<str>>,
}

impl Occupancy {
    /// Counts for `store`; transitions go to `lifecycle`. `lease` is the node's lease in a
    /// cluster-wide store (refreshed every third of it).
    pub(crate) fn new(
        store: Arc<dyn OccupancyStore>,
        lifecycle: Lifecycle,
        debounce: Duration,
        lease: Duration,
    ) -> Self {
        Occupancy {
            store,
            lifecycle,
            debounce,
            maintain_every: (lease / 3).max(Duration::from_millis(10)),
            state: Mutex::new(Counts::default()),
            notify: Notify::new(),
            finished: AtomicBool::new(false),
        }
    }

    /// The store (for `GET /api/channels`).
    pub(crate) fn store(&self) -> &dyn OccupancyStore {
        &*self.store
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A local subscription to `channel` began.
    pub(crate) fn add(&self, channel: &str) {
        let mut state = self.lock();
        let key = match state.counts.get_key_value(channel) {
            Some((key, _)) => key.clone(),
            None => Arc::from(channel),
        };
        *state.counts.entry(key.clone()).or_insert(0) += 1;
        state.dirty.insert(key);
        drop(state);
        self.notify.notify_one();
    }

    /// A local subscription to `channel` ended.
    pub(crate) fn remove(&self, channel: &str) {
        let mut state = self.lock();
        let Some((key, count)) = state.counts.get_key_value(channel) else {
            return;
        };
        let (key, count) = (key.clone(), *count);
        if count <= 1 {
            state.counts.remove(channel);
        } else {
            state.counts.insert(key.clone(), count - 1);
        }
        state.dirty.insert(key);
        drop(state);
        self.notify.notify_one();
    }

    /// Whether the worker ended.
    pub(crate) fn finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// The worker: runs until `shutdown` is cancelled and every count was released (or
    /// `stop_after` more has passed), then ends.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken, stop_after: Duration) {
        let mut worker = Worker {
            occupancy: &self,
            vacating: BTreeMap::new(),
            retry_at: None,
        };
        worker.maintain().await;
        let mut next_maintain = Instant::now() + self.maintain_every;
        let mut stop_at: Option<Instant> = None;
        loop {
            worker.flush().await;
            if stop_at.is_none() && shutdown.is_cancelled() {
                stop_at = Some(Instant::now() + stop_after);
            }
            if let Some(at) = stop_at {
                let idle = {
                    let state = self.lock();
                    state.counts.is_empty() && state.dirty.is_empty()
                };
                if idle || Instant::now() >= at {
                    break;
                }
            }
            let settle_at = worker.vacating.keys().next().copied();
            let wake = [Some(next_maintain), settle_at, worker.retry_at, stop_at]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_maintain);
            tokio::select! {
                () = self.notify.notified() => {}
                () = sleep_until(wake) => {}
                () = shutdown.cancelled(), if stop_at.is_none() => {}
            }
            let now = Instant::now();
            if worker.retry_at.is_some_and(|at| at <= now) {
                worker.retry_at = None;
            }
            if now >= next_maintain {
                worker.maintain().await;
                next_maintain = Instant::now() + self.maintain_every;
            }
            worker.settle_due().await;
        }
        if !self.store.cluster_wide() {
            // One process: the node that stops takes its channels' vacates with it, now.
            for channel in worker.vacating.into_values().flatten() {
                if matches!(
                    self.store.settle(&channel).await,
                    Ok(Settled::Vacated | Settled::Wait(_))
                ) {
                    self.lifecycle
                        .emit(LifecycleEvent::ChannelVacated { channel });
                }
            }
        }
        // In a cluster, vacates still pending are settled by the other nodes (or by the next
        // node to start).
        self.finished.store(true, Ordering::Release);
    }
}

struct Worker<'a> {
    occupancy: &'a Occupancy,
    /// Vacating channels, by when to settle them.
    vacating: BTreeMap<Instant, Vec<Arc<str>>>,
    /// A store request failed: dirty channels wait until then.
    retry_at: Option<Instant>,
}

impl Worker<'_> {
    /// Tells the store every changed count and announces what it answers.
    async fn flush(&mut self) {
        if self.retry_at.is_some() {
            return;
        }
        loop {
            let batch: Vec<(Arc<str>, u64)> = {
                let mut state = self.occupancy.lock();
                if state.dirty.is_empty() {
                    return;
                }
                let dirty: Vec<Arc<str>> = state.dirty.drain().collect();
                dirty
                    .into_iter()
                    .map(|channel| {
                        let count = state.counts.get(&channel).copied().unwrap_or(0);
                        (channel, count)
                    })
                    .collect()
            };
            let mut failed = Vec::new();
            for (channel, count) in batch {
                if !failed.is_empty() {
                    failed.push(channel);
                    continue;
                }
                match self.occupancy.store.set_count(&channel, count).await {
                    Ok(Transition::Unchanged) => {}
                    Ok(Transition::Occupied) => {
                        debug!(%channel, "channel occupied");
                        self.occupancy
                            .lifecycle
                            .emit(LifecycleEvent::ChannelOccupied { channel });
                    }
                    Ok(Transition::Vacating) => {
                        let at = Instant::now() + self.occupancy.debounce;
                        self.vacating.entry(at).or_default().push(channel);
                    }
                    Err(err) => {
                        warn!(%channel, error = %err, "occupancy update failed; retrying");
                        failed.push(channel);
                    }
                }
            }
            if !failed.is_empty() {
                let mut state = self.occupancy.lock();
                state.dirty.extend(failed);
                self.retry_at = Some(Instant::now() + RETRY);
                return;
            }
        }
    }

    /// Settles the vacating channels whose debounce has passed.
    async fn settle_due(&mut self) {
        let now = Instant::now();
        let later = self.vacating.split_off(&(now + Duration::from_nanos(1)));
        let due = std::mem::replace(&mut self.vacating, later);
        for channel in due.into_values().flatten() {
            self.settle(channel).await;
        }
    }

    async fn settle(&mut self, channel: Arc<str>) {
        match self.occupancy.store.settle(&channel).await {
            Ok(Settled::Vacated) => {
                debug!(%channel, "channel vacated");
                self.occupancy
                    .lifecycle
                    .emit(LifecycleEvent::ChannelVacated { channel });
            }
            Ok(Settled::Cancelled) => {}
            Ok(Settled::Wait(wait)) => {
                let at = Instant::now() + wait.max(Duration::from_millis(1));
                self.vacating.entry(at).or_default().push(channel);
            }
            Err(err) => {
                warn!(%channel, error = %err, "settling a vacated channel failed; retrying");
                self.vacating
                    .entry(Instant::now() + RETRY)
                    .or_default()
                    .push(channel);
            }
        }
    }

    /// Keeps the node's lease; settles the vacates left by other nodes.
    async fn maintain(&mut self) {
        match self.occupancy.store.maintain().await {
            Ok(maintained) => {
                if maintained.lease_lost {
                    warn!("this node's occupancy lease had expired; announcing its channels again");
                    let mut state = self.occupancy.lock();
                    let channels: Vec<Arc<str>> = state.counts.keys().cloned().collect();
                    state.dirty.extend(channels);
                }
                for channel in maintained.due {
                    self.settle(channel).await;
                }
            }
            Err(err) => warn!(error = %err, "occupancy maintenance failed"),
        }
    }
}
