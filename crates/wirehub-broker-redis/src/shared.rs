//! What the broker handle and its listener task share: the connections, the channels this
//! node watches, and the requests (publish, history, watch) built on them.
//!
//! **Watching.** A channel's state is registered synchronously when the hub calls `watch`
//! (before the returned future first runs), then `reconcile` makes Redis' subscriptions
//! follow the registered states, one change at a time under the pub/sub mutex. `watch`
//! returns once Redis confirmed the `SUBSCRIBE`.
//!
//! **Fences.** Redis can run a `read` after a `publish` whose `PUBLISH` this node has not
//! handed to the fan-out yet. A subscription set up from such a read would then receive that
//! message live although its offset is already covered by `subscribed.offset`. So a read of
//! a channel this node watches also publishes a token on the node's private pub/sub channel
//! (inside the same script); the listener sees the token after every publication that came
//! before the read, and the read returns only then.
//!
//! **Last delivered.** Per watched channel, the listener keeps the epoch and offset it last
//! handed to the fan-out. It skips what it already delivered and fills gaps from the
//! history; a gap it cannot fill is reported with `Deliver::lost`.
//!
//! **History per channel.** The history size and TTL passed to the scripts are the
//! channel's own when a `[[channels]]` rule ([`ChannelRules`], given with
//! [`RedisBroker::with_channel_rules`]) sets them, else the [`RedisConfig`]'s.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::debug;
use wirehub_core::{
    ChannelRules, Deliver, HistoryLimits, HistoryPage, HistoryQuery, Publication, Published,
    encode_publication, new_epoch,
};
use wirehub_protocol::StreamPosition;

use crate::RedisBroker;
use crate::commands::{Commands, Endpoint};
use crate::config::RedisConfig;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::pubsub::SubSink;
use crate::scripts::{Scripts, Snapshot};

/// A stream position: epoch and offset.
pub(crate) type Position = (Arc<str>, u64);

pub(crate) struct Shared {
    pub(crate) config: RedisConfig,
    pub(crate) keys: Keys,
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) commands: Commands,
    pub(crate) scripts: Scripts,
    pub(crate) sink: Arc<dyn Deliver>,
    /// The command half of the pub/sub connection, `None` while it is down. Locked while the
    /// set of Redis subscriptions changes.
    pub(crate) pubsub: tokio::sync::Mutex<Option<SubSink>>,
    /// The cluster canary channels subscribed on the current pub/sub connection.
    pub(crate) canaries: Mutex<std::collections::HashSet<String>>,
    /// Whether the pub/sub connection is up and every watched channel subscribed.
    pub(crate) link: watch::Sender<bool>,
    pub(crate) channels: Mutex<HashMap<Arc<str>, Watched>>,
    fences: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next_fence: AtomicU64,
    /// History size and TTL per kind of channel, over the config's.
    rules: RwLock<ChannelRules>,
}

/// A channel's history arguments for the scripts.
struct HistoryArgs {
    size: usize,
    /// 0: no TTL.
    ttl_millis: u64,
    /// The expiry of the epoch and offset keys.
    keep_millis: u64,
}

impl RedisBroker {
    /// Gives the channels that match a rule its history size and TTL instead of the
    /// [`RedisConfig`]'s (from the next publish or read on). Every node sharing the Redis
    /// should use the same rules: the node that publishes a message trims the history.
    pub fn with_channel_rules(self, rules: ChannelRules) -> Self {
        *self
            .shared
            .rules
            .write()
            .unwrap_or_else(PoisonError::into_inner) = rules;
        self
    }
}

/// A channel this node watches.
pub(crate) struct Watched {
    pub(crate) name: Arc<str>,
    /// `watch` calls minus `unwatch` calls.
    pub(crate) watchers: usize,
    /// Whether Redis confirmed the subscription (on the current pub/sub connection).
    pub(crate) subscribed: bool,
    /// Mirrors `subscribed`, for requests waiting for it.
    pub(crate) ready: watch::Sender<bool>,
    /// The epoch and offset last handed to the fan-out (or known to be covered).
    pub(crate) last: Option<Position>,
    /// A hash of the data of the publication at `last`, when it was delivered through here:
    /// after a reconnect, a history holding other data at that offset means the stream was
    /// rewound (a failover lost what this node had delivered).
    pub(crate) last_hash: Option<u64>,
    /// An epoch this node moved the stream away from (`rewind`): publications of it still
    /// arriving are dropped (they are covered by the `gap` sent then).
    pub(crate) retired: Option<Arc<str>>,
    /// The pub/sub connection broke while the channel was live: what was published
    /// meanwhile must be read from the history.
    pub(crate) recover: bool,
}

/// What to do with one publication, as seen by [`Shared::step`].
pub(crate) enum Step {
    /// Hand it to the fan-out.
    Deliver(Publication),
    /// Delivered already (or covered by the subscriptions' starting position).
    Skip,
    /// Publications between the last delivered one (this epoch and offset) and it are missing.
    Gap(Arc<str>, u64),
    /// It starts a new epoch: whatever the subscribers had is gone. Deliver it after telling
    /// them.
    NewEpoch(Publication),
}

impl Shared {
    pub(crate) fn new(
        config: RedisConfig,
        endpoint: Arc<Endpoint>,
        commands: Commands,
        sink: Arc<dyn Deliver>,
    ) -> Shared {
        let node = format!("{:016x}", rand::random::<u64>());
        Shared {
            keys: Keys::new(&config.prefix, &node),
            config,
            endpoint,
            commands,
            scripts: Scripts::new(),
            sink,
            pubsub: tokio::sync::Mutex::new(None),
            canaries: Mutex::new(std::collections::HashSet::new()),
            link: watch::Sender::new(false),
            channels: Mutex::new(HashMap::new()),
            fences: Mutex::new(HashMap::new()),
            next_fence: AtomicU64::new(1),
            rules: RwLock::new(ChannelRules::default()),
        }
    }

    /// The history arguments of `channel`: its rule's, else the config's.
    fn history_args(&self, channel: &str) -> HistoryArgs {
        let rules = self.rules.read().unwrap_or_else(PoisonError::into_inner);
        if rules.is_empty() {
            return HistoryArgs {
                size: self.config.history_size,
                ttl_millis: self.config.history_ttl_millis(),
                keep_millis: self.config.keep_millis(),
            };
        }
        let base = HistoryLimits {
            size: self.config.history_size,
            ttl: self.config.history_ttl,
            max_total_bytes: usize::MAX,
        };
        let limits = rules.history_limits(channel, base);
        // As RedisConfig::keep_millis: a stream never forgets its epoch while it still has
        // history.
        let keep = limits.ttl.map_or(self.config.stream_ttl, |ttl| {
            self.config.stream_ttl.max(ttl)
        });
        HistoryArgs {
            size: limits.size,
            ttl_millis: limits.ttl.map_or(0, |ttl| millis(ttl).max(1)),
            keep_millis: millis(keep).max(1),
        }
    }

    pub(crate) fn channels(&self) -> MutexGuard<'_, HashMap<Arc<str>, Watched>> {
        lock(&self.channels)
    }

    /// Publishes `data` on `channel`; returns its offset.
    pub(crate) async fn publish(
        &self,
        channel: &str,
        data: &[u8],
        key: Option<&str>,
    ) -> Result<Published> {
        let [epoch, offset, history] = self.keys.stream(channel);
        let args = self.history_args(channel);
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation
            .key(epoch)
            .key(offset)
            .key(history)
            .key(self.keys.idempotency(channel))
            .arg(&*new_epoch())
            .arg(data)
            .arg(args.size)
            .arg(args.ttl_millis)
            .arg(args.keep_millis)
            .arg(self.keys.messages(channel))
            .arg(key.unwrap_or(""))
            .arg(self.publish_command());
        let (offset, duplicate): (u64, u8) = self.commands.invoke(&invocation).await?;
        Ok(Published {
            offset,
            duplicate: duplicate == 1,
        })
    }

    /// Runs the `read` script: the stream's position and its kept entries after `since`.
    pub(crate) async fn read(
        &self,
        channel: &str,
        since: Option<(&str, u64)>,
        limit: Option<usize>,
        fence: Option<u64>,
    ) -> Result<Snapshot> {
        let [epoch, offset, history] = self.keys.stream(channel);
        let (since_epoch, since_offset) = since.unwrap_or(("", 0));
        let limit = limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        let args = self.history_args(channel);
        let mut invocation = self.scripts.read.prepare_invoke();
        invocation
            .key(epoch)
            .key(offset)
            .key(history)
            .arg(&*new_epoch())
            .arg(since_epoch)
            .arg(since_offset)
            .arg(limit)
            .arg(args.ttl_millis)
            .arg(args.keep_millis);
        match fence {
            // On a cluster the fence follows the channel's publications through its shard.
            Some(token) if self.endpoint.is_cluster() => invocation
                .arg(self.keys.messages(channel))
                .arg(self.keys.fence_payload(token)),
            Some(token) => invocation.arg(self.keys.node_channel()).arg(token),
            None => invocation.arg("").arg(0),
        };
        invocation.arg(self.publish_command());
        self.commands.invoke(&invocation).await
    }

    /// `SPUBLISH` on a cluster (sharded pub/sub), else `PUBLISH`.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.endpoint.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Moves `channel`'s stream to a new epoch if it is still in `seen_epoch` (see the
    /// `rewind` script); returns the stream's epoch and top offset now.
    pub(crate) async fn rewind(&self, channel: &str, seen_epoch: &str) -> Result<(String, u64)> {
        let [epoch, offset, history] = self.keys.stream(channel);
        let args = self.history_args(channel);
        let mut invocation = self.scripts.rewind.prepare_invoke();
        invocation
            .key(epoch)
            .key(offset)
            .key(history)
            .arg(&*new_epoch())
            .arg(seen_epoch)
            .arg(args.keep_millis);
        self.commands.invoke(&invocation).await
    }

    /// Reads a channel's position and history (see the module docs on fences).
    pub(crate) async fn history(&self, channel: &str, query: HistoryQuery) -> Result<HistoryPage> {
        let timeout = self.config.timeout;
        let ready = self
            .channels()
            .get(channel)
            .filter(|state| state.watchers > 0)
            .map(|state| state.ready.subscribe());
        let mut fence = None;
        if let Some(mut ready) = ready {
            let subscribed = tokio::time::timeout(timeout, ready.wait_for(|ready| *ready))
                .await
                .map_err(|_| Error::Timeout(timeout))?
                .is_ok();
            // Not subscribed any more: the channel was unwatched meanwhile.
            if subscribed {
                fence = Some(self.fence()?);
            }
        }
        let since = query
            .since
            .as_ref()
            .map(|since| (since.epoch.as_str(), since.offset));
        let snapshot = self
            .read(channel, since, query.limit, fence.as_ref().map(|f| f.token))
            .await?;
        if let Some(mut fence) = fence {
            tokio::time::timeout(timeout, &mut fence.passed)
                .await
                .map_err(|_| Error::Timeout(timeout))?
                .map_err(|_| Error::Disconnected)?;
            // Everything up to `top` has reached the fan-out: a channel that had no position
            // yet (first watched, nothing delivered since) starts from here.
            if let Some(state) = self.channels().get_mut(channel)
                && state.last.is_none()
                && state.subscribed
            {
                state.last = Some((Arc::from(snapshot.epoch.as_str()), snapshot.top));
            }
        }
        Ok(page(Arc::from(channel), snapshot, query.since.as_ref()))
    }

    /// Registers a fence; the listener resolves it when its token comes back.
    fn fence(&self) -> Result<Fence<'_>> {
        if !*self.link.borrow() {
            return Err(Error::Disconnected);
        }
        let token = self.next_fence.fetch_add(1, Ordering::Relaxed);
        let (tx, passed) = oneshot::channel();
        lock(&self.fences).insert(token, tx);
        Ok(Fence {
            shared: self,
            token,
            passed,
        })
    }

    /// The listener saw a fence token.
    pub(crate) fn fence_passed(&self, token: u64) {
        if let Some(tx) = lock(&self.fences).remove(&token) {
            let _ = tx.send(());
        }
    }

    /// The pub/sub connection broke: fences will not come back.
    pub(crate) fn drop_fences(&self) {
        lock(&self.fences).clear();
    }

    /// The synchronous part of `watch`: counts the watcher and returns the channel's
    /// readiness.
    pub(crate) fn register(&self, channel: &str) -> watch::Receiver<bool> {
        let mut channels = self.channels();
        let state = channels
            .entry(Arc::from(channel))
            .or_insert_with_key(|name| Watched {
                name: name.clone(),
                watchers: 0,
                subscribed: false,
                ready: watch::Sender::new(false),
                last: None,
                last_hash: None,
                retired: None,
                recover: false,
            });
        state.watchers += 1;
        state.ready.subscribe()
    }

    /// The synchronous part of `unwatch`.
    pub(crate) fn unregister(&self, channel: &str) {
        if let Some(state) = self.channels().get_mut(channel) {
            state.watchers = state.watchers.saturating_sub(1);
        }
    }

    /// Waits until the channel registered by [`Shared::register`] is subscribed in Redis.
    /// On failure the registration is undone.
    pub(crate) async fn watch(
        &self,
        channel: &str,
        mut ready: watch::Receiver<bool>,
    ) -> Result<()> {
        let timeout = self.config.timeout;
        let result = async {
            let mut link = self.link.subscribe();
            tokio::time::timeout(timeout, link.wait_for(|up| *up))
                .await
                .map_err(|_| Error::Disconnected)?
                .map_err(|_| Error::Disconnected)?;
            self.reconcile(channel).await?;
            tokio::time::timeout(timeout, ready.wait_for(|ready| *ready))
                .await
                .map_err(|_| Error::Timeout(timeout))?
                .map_err(|_| Error::Disconnected)?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.unregister(channel);
            if let Err(err) = self.reconcile(channel).await {
                debug!(%channel, error = %err, "undoing a failed watch");
            }
        }
        result
    }

    /// Makes Redis' subscription to `channel` match its registered watchers.
    pub(crate) async fn reconcile(&self, channel: &str) -> Result<()> {
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.reconcile_now(channel))
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    async fn reconcile_now(&self, channel: &str) -> Result<()> {
        let mut pubsub = self.pubsub.lock().await;
        let redis_channel = self.keys.messages(channel);
        loop {
            let (want, have) = match self.channels().get(channel) {
                Some(state) => (state.watchers > 0, state.subscribed),
                None => return Ok(()),
            };
            match (want, have) {
                (true, true) => return Ok(()),
                (true, false) => {
                    let sink = pubsub.as_mut().ok_or(Error::Disconnected)?;
                    sink.subscribe(&redis_channel).await?;
                    if let Some(state) = self.channels().get_mut(channel) {
                        state.subscribed = true;
                        state.ready.send_replace(true);
                    }
                }
                (false, true) => {
                    // Recorded before the command is sent: Redis runs a connection's commands
                    // in order and may still run this one after a timeout cancelled the wait
                    // for its answer (Redis paused), so the state must follow what was sent.
                    // A later watcher then sends SUBSCRIBE, which Redis runs after it.
                    if let Some(state) = self.channels().get_mut(channel) {
                        state.subscribed = false;
                        state.ready.send_replace(false);
                        state.last = None;
                        state.last_hash = None;
                    }
                    if let Some(sink) = pubsub.as_mut()
                        && let Err(err) = sink.unsubscribe(&redis_channel).await
                    {
                        // The connection is going; the listener will not resubscribe.
                        debug!(%channel, error = %err, "unsubscribe failed");
                    }
                }
                (false, false) => {
                    self.channels().remove(channel);
                    return Ok(());
                }
            }
        }
    }

    /// Decides what to do with a publication of a watched channel and records it as
    /// delivered when it is to be delivered.
    pub(crate) fn step(&self, channel: &str, epoch: &str, offset: u64, data: &[u8]) -> Step {
        let (name, epoch, new_epoch) = {
            let mut channels = self.channels();
            let Some(state) = channels.get_mut(channel) else {
                return Step::Skip;
            };
            if state.retired.as_deref() == Some(epoch) {
                return Step::Skip;
            }
            match &state.last {
                Some((last_epoch, last)) if **last_epoch == *epoch => {
                    if offset <= *last {
                        return Step::Skip;
                    }
                    if offset > *last + 1 {
                        return Step::Gap(last_epoch.clone(), *last);
                    }
                    let epoch = last_epoch.clone();
                    state.last = Some((epoch.clone(), offset));
                    state.last_hash = Some(data_hash(data));
                    (state.name.clone(), epoch, false)
                }
                last => {
                    let new_epoch = last.is_some();
                    let epoch: Arc<str> = Arc::from(epoch);
                    state.last = Some((epoch.clone(), offset));
                    state.last_hash = Some(data_hash(data));
                    (state.name.clone(), epoch, new_epoch)
                }
            }
        };
        let publication = encode_publication(name, epoch, offset, data);
        if new_epoch {
            Step::NewEpoch(publication)
        } else {
            Step::Deliver(publication)
        }
    }

    /// Records that the stream of `channel` left epoch `old` for `epoch` at `top` (a rewind).
    pub(crate) fn retire(&self, channel: &str, old: &str, epoch: &str, top: u64) {
        if let Some(state) = self.channels().get_mut(channel) {
            if old != epoch {
                state.retired = Some(Arc::from(old));
            }
            state.last = Some((Arc::from(epoch), top));
            state.last_hash = None;
        }
    }

    /// Records a channel's position after publications were lost.
    pub(crate) fn jump(&self, channel: &str, epoch: &str, top: u64) {
        if let Some(state) = self.channels().get_mut(channel) {
            state.last = Some((Arc::from(epoch), top));
            state.last_hash = None;
        }
    }
}

/// The hash of a publication's data kept for the rewind check (fixed keys: the same on
/// every run).
pub(crate) fn data_hash(data: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(data);
    hasher.finish()
}

/// A registered fence; dropping it unregisters it.
struct Fence<'a> {
    shared: &'a Shared,
    token: u64,
    passed: oneshot::Receiver<()>,
}

impl Drop for Fence<'_> {
    fn drop(&mut self) {
        lock(&self.shared.fences).remove(&self.token);
    }
}

/// Whether `snapshot` holds every publication after offset `since` (of its epoch), as the
/// in-memory broker decides it: nothing after `since` has left the history, the entries follow
/// each other, and they reach the top (no limit cut them short).
pub(crate) fn covers(since: u64, snapshot: &Snapshot) -> bool {
    let contiguous = snapshot
        .entries
        .iter()
        .zip(since + 1..)
        .all(|((offset, _), want)| *offset == want);
    let last = snapshot.entries.last().map_or(since, |(offset, _)| *offset);
    since <= snapshot.top && since + 1 >= snapshot.kept_from && contiguous && last == snapshot.top
}

/// A history page from a snapshot, with `complete` computed like [`wirehub_core::MemoryBroker`]'s.
pub(crate) fn page(
    channel: Arc<str>,
    snapshot: Snapshot,
    since: Option<&StreamPosition>,
) -> HistoryPage {
    let epoch: Arc<str> = Arc::from(snapshot.epoch.as_str());
    let top = snapshot.top;
    match since {
        Some(since) if *since.epoch == *epoch && since.offset <= top => {
            let complete = covers(since.offset, &snapshot);
            let publications = snapshot
                .entries
                .into_iter()
                .filter(|(offset, _)| *offset > since.offset)
                .map(|(offset, data)| {
                    encode_publication(channel.clone(), epoch.clone(), offset, &data)
                })
                .collect();
            HistoryPage {
                epoch,
                top,
                publications,
                complete,
            }
        }
        _ => HistoryPage {
            epoch,
            top,
            publications: Vec::new(),
            complete: false,
        },
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(top: u64, kept_from: u64, offsets: &[u64]) -> Snapshot {
        Snapshot {
            epoch: "e".to_owned(),
            top,
            kept_from,
            entries: offsets.iter().map(|o| (*o, b"1".to_vec())).collect(),
        }
    }

    fn position(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: epoch.to_owned(),
            offset,
        }
    }

    #[track_caller]
    fn check(snapshot: Snapshot, since: Option<StreamPosition>, want: (&[u64], bool)) {
        let page = page(Arc::from("c"), snapshot, since.as_ref());
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        assert_eq!((offsets.as_slice(), page.complete), want);
    }

    #[test]
    fn complete_means_what_it_means_for_the_memory_broker() {
        // Everything after `since` kept.
        check(
            snapshot(5, 1, &[3, 4, 5]),
            Some(position("e", 2)),
            (&[3, 4, 5], true),
        );
        // Up to date.
        check(snapshot(5, 1, &[]), Some(position("e", 5)), (&[], true));
        // Nothing kept, but nothing missed either.
        check(snapshot(5, 6, &[]), Some(position("e", 5)), (&[], true));
        // Trimmed past `since`.
        check(
            snapshot(9, 5, &[5, 6, 7, 8, 9]),
            Some(position("e", 2)),
            (&[5, 6, 7, 8, 9], false),
        );
        // A limit cut the page short.
        check(
            snapshot(9, 1, &[3, 4]),
            Some(position("e", 2)),
            (&[3, 4], false),
        );
        // Another epoch, an offset from the future, no `since`.
        check(snapshot(5, 1, &[]), Some(position("x", 2)), (&[], false));
        check(snapshot(5, 1, &[]), Some(position("e", 6)), (&[], false));
        check(snapshot(5, 1, &[]), None, (&[], false));
        // A hole in the history (a node with a smaller history size trimmed it).
        check(
            snapshot(5, 1, &[3, 5]),
            Some(position("e", 2)),
            (&[3, 5], false),
        );
    }
}
