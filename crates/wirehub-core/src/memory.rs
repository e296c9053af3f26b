//! The in-memory broker: one process, offsets and history kept in this process.
//!
//! Streams live in a sharded map (no global lock on the publish path). Each stream has its
//! own mutex, held while an offset is assigned, the frame stored and the publication handed to
//! the local fan-out, so that deliveries leave in offset order. Lock order: shard, then
//! stream. A stream with no watcher and no history is removed; it gets a new epoch when it is
//! created again, because its offsets start over.
//!
//! Each stream keeps its own history limits, the server-wide ones unless a `[[channels]]`
//! rule ([`ChannelRules`]) gives its channel a size or TTL of its own; they are looked up
//! once, when the stream is created.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::broker::{
    BoxFuture, Broker, BrokerError, Deliver, HistoryPage, HistoryQuery, Published,
    encode_publication,
};
use crate::history::{History, HistoryBudget, HistoryLimits};
use crate::outbox::lock;
use crate::policy::ChannelRules;
use crate::presence::{Departure, Joined, Left, MemoryPresence, PresencePage, ready};

const SHARDS: usize = 64;

/// One shard of the stream map.
type Shard = Mutex<HashMap<Arc<str>, Arc<Mutex<Stream>>>>;

/// The in-memory [`Broker`].
pub struct MemoryBroker {
    shards: Box<[Shard]>,
    hasher: RandomState,
    limits: HistoryLimits,
    rules: ChannelRules,
    budget: HistoryBudget,
    sink: Arc<dyn Deliver>,
    presence: MemoryPresence,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("limits", &self.limits)
            .field("history_bytes", &self.budget.used())
            .finish_non_exhaustive()
    }
}

struct Stream {
    /// This channel's history limits.
    limits: HistoryLimits,
    epoch: Arc<str>,
    top: u64,
    history: History,
    watchers: usize,
    /// Set when the stream was removed from its shard: a publisher that still holds it must
    /// look the channel up again.
    removed: bool,
}

/// A fresh random epoch: 16 hex digits.
pub fn new_epoch() -> Arc<str> {
    Arc::from(format!("{:016x}", rand::random::<u64>()))
}

impl MemoryBroker {
    /// A broker that keeps history within `limits` and delivers to `sink`.
    pub fn new(limits: HistoryLimits, sink: Arc<dyn Deliver>) -> Self {
        MemoryBroker {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            limits,
            rules: ChannelRules::default(),
            budget: HistoryBudget::default(),
            sink,
            presence: MemoryPresence::default(),
        }
    }

    /// Gives the channels that match a rule its history size and TTL instead of the broker's
    /// (streams created from now on).
    pub fn with_channel_rules(mut self, rules: ChannelRules) -> Self {
        self.rules = rules;
        self
    }

    /// Bytes of history held across all channels.
    pub fn history_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Number of streams held (watched or with history).
    pub fn stream_count(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn shard(&self, channel: &str) -> &Shard {
        let index = (self.hasher.hash_one(channel) as usize) % self.shards.len();
        &self.shards[index]
    }

    fn stream(&self, channel: &str) -> (Arc<str>, Arc<Mutex<Stream>>) {
        let mut shard = lock(self.shard(channel));
        if let Some((name, stream)) = shard.get_key_value(channel) {
            return (name.clone(), stream.clone());
        }
        let name: Arc<str> = Arc::from(channel);
        let stream = Arc::new(Mutex::new(Stream {
            limits: self.rules.history_limits(channel, self.limits),
            epoch: new_epoch(),
            top: 0,
            history: History::default(),
            watchers: 0,
            removed: false,
        }));
        shard.insert(name.clone(), stream.clone());
        (name, stream)
    }

    /// Removes the stream if nothing needs it any more.
    fn release_if_unused(&self, channel: &str) {
        let mut shard = lock(self.shard(channel));
        let Some(stream) = shard.get(channel) else {
            return;
        };
        let mut state = lock(stream);
        if state.watchers == 0 && state.history.is_empty() {
            state.removed = true;
            drop(state);
            shard.remove(channel);
        }
    }

    fn publish_now(&self, channel: &str, data: &[u8], key: Option<&str>) -> Published {
        loop {
            let (name, stream) = self.stream(channel);
            let mut state = lock(&stream);
            if state.removed {
                continue;
            }
            let now = Instant::now();
            let limits = state.limits;
            state.history.expire(&limits, &self.budget, now);
            if let Some(offset) = key.and_then(|key| state.history.offset_of_key(key)) {
                return Published {
                    offset,
                    duplicate: true,
                };
            }
            state.top += 1;
            let publication = encode_publication(name, state.epoch.clone(), state.top, data);
            self.sink.deliver(&publication);
            let offset = publication.offset;
            state
                .history
                .push(publication, key, &limits, &self.budget, now);
            let unused = state.watchers == 0 && state.history.is_empty();
            drop(state);
            if unused {
                self.release_if_unused(channel);
            }
            return Published {
                offset,
                duplicate: false,
            };
        }
    }

    fn history_now(&self, channel: &str, query: HistoryQuery) -> HistoryPage {
        let (_, stream) = self.stream(channel);
        let mut state = lock(&stream);
        let limits = state.limits;
        state.history.expire(&limits, &self.budget, Instant::now());
        let epoch = state.epoch.clone();
        let top = state.top;
        let (publications, complete) = match &query.since {
            Some(since) if *since.epoch == *epoch && since.offset <= top => {
                let limit = query.limit.unwrap_or(usize::MAX);
                let publications = state.history.after(since.offset, limit);
                // Complete when nothing after `since` has left the history and the limit did
                // not cut the page short.
                let kept_from = state.history.first_offset().unwrap_or(top + 1);
                let nothing_lost = since.offset + 1 >= kept_from;
                let reaches_top = publications.last().map_or(since.offset, |p| p.offset) == top;
                (publications, nothing_lost && reaches_top)
            }
            _ => (Vec::new(), false),
        };
        let unused = state.watchers == 0 && state.history.is_empty();
        drop(state);
        if unused {
            self.release_if_unused(channel);
        }
        HistoryPage {
            epoch,
            top,
            publications,
            complete,
        }
    }
}

impl Broker for MemoryBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: &'a [u8],
        key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        let published = self.publish_now(channel, data, key);
        Box::pin(async move { Ok(published) })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        let page = self.history_now(channel, query);
        Box::pin(async move { Ok(page) })
    }

    fn watch<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        loop {
            let (_, stream) = self.stream(channel);
            let mut state = lock(&stream);
            if state.removed {
                continue;
            }
            state.watchers += 1;
            break;
        }
        Box::pin(async { Ok(()) })
    }

    fn unwatch<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let stream = lock(self.shard(channel)).get(channel).cloned();
        if let Some(stream) = stream {
            let mut state = lock(&stream);
            state.watchers = state.watchers.saturating_sub(1);
            drop(state);
            self.release_if_unused(channel);
        }
        Box::pin(async { Ok(()) })
    }

    fn sweep(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.retain(|_, stream| {
                let mut state = lock(stream);
                let limits = state.limits;
                state.history.expire(&limits, &self.budget, now);
                if state.watchers == 0 && state.history.is_empty() {
                    state.history.clear(&self.budget);
                    state.removed = true;
                    false
                } else {
                    true
                }
            });
        }
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    fn presence_join<'a>(
        &'a self,
        channel: &'a str,
        member: wirehub_protocol::Member,
    ) -> BoxFuture<'a, Result<Joined, BrokerError>> {
        ready(self.presence.join(channel, member, &*self.sink))
    }

    fn presence_leave<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
        departure: Departure,
    ) -> BoxFuture<'a, Result<Option<wirehub_protocol::Member>, BrokerError>> {
        ready(self.presence.leave(channel, client, departure, &*self.sink))
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<PresencePage, BrokerError>> {
        ready(self.presence.read(channel, max))
    }

    fn presence_sweep(&self) -> BoxFuture<'_, Result<Vec<Left>, BrokerError>> {
        ready(self.presence.sweep(&*self.sink))
    }
}
