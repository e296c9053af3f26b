//! Channel occupancy across the cluster: which channels have a subscriber anywhere, and the
//! seam through which a node learns that a channel just became occupied or vacated, so that
//! exactly one node announces each transition ([`OccupancyStore`]).
//!
//! A node tells the store its own subscriber count of a channel whenever it changes
//! ([`OccupancyStore::set_count`]); the store answers with the cluster-wide transition that
//! this node must announce, if any. A channel whose last subscriber left is *vacating*: the
//! announcement waits for the debounce and is cancelled when anyone subscribes meanwhile
//! ([`OccupancyStore::settle`], which says `Vacated` to one caller only). Periodic
//! [`OccupancyStore::maintain`] keeps the node's lease and finds the channels of dead nodes.
//!
//! [`MemoryOccupancy`] is the store of a single process; the Redis broker has one for a
//! cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::broker::{BoxFuture, BrokerError};

/// What a change of this node's count means for the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing to announce.
    Unchanged,
    /// The channel got its first subscriber anywhere: this node announces `channel_occupied`.
    Occupied,
    /// The channel's last subscriber anywhere is gone: once the debounce has passed, this
    /// node asks [`OccupancyStore::settle`] whether to announce `channel_vacated`.
    Vacating,
}

/// The answer of [`OccupancyStore::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The caller announces `channel_vacated` (no other caller gets this answer).
    Vacated,
    /// Nothing to announce: someone subscribed again within the debounce, or the vacate was
    /// settled already.
    Cancelled,
    /// The debounce has not passed yet: ask again after this long.
    Wait(Duration),
}

/// A channel and its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCount {
    /// The channel.
    pub channel: String,
    /// Subscriptions to it: on every node, for a cluster-wide store.
    pub subscribers: u64,
}

/// The outcome of [`OccupancyStore::maintain`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maintained {
    /// The node's lease had expired (it was taken for dead and its channels released): every
    /// count it holds must be set again.
    pub lease_lost: bool,
    /// Channels whose vacate is due (left by a dead node, or by a node that stopped before
    /// its debounce ended): settle them.
    pub due: Vec<Arc<str>>,
}

/// Where a node's subscriber counts meet those of the other nodes.
pub trait OccupancyStore: Send + Sync + fmt::Debug + 'static {
    /// Sets this node's subscriber count of `channel` (0: none left here). Calls for one
    /// channel are made one at a time, in order.
    fn set_count<'a>(
        &'a self,
        channel: &'a str,
        count: u64,
    ) -> BoxFuture<'a, Result<Transition, BrokerError>>;

    /// Whether a vacating channel is now vacated (see [`Settled`]).
    fn settle<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Settled, BrokerError>>;

    /// Refreshes this node's lease and releases the channels of nodes whose lease expired;
    /// called periodically.
    fn maintain(&self) -> BoxFuture<'_, Result<Maintained, BrokerError>> {
        Box::pin(async { Ok(Maintained::default()) })
    }

    /// Channels with subscribers whose name starts with `prefix`, in name order, after
    /// `after` (exclusive), at most `limit`.
    fn channels<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ChannelCount>, BrokerError>>;

    /// Whether the counts are those of several nodes.
    fn cluster_wide(&self) -> bool {
        false
    }
}

/// The occupancy of one process (the memory broker).
#[derive(Debug)]
pub struct MemoryOccupancy {
    debounce: Duration,
    channels: Mutex<BTreeMap<String, Occupancy>>,
}

#[derive(Debug)]
struct Occupancy {
    count: u64,
    /// When the vacate is due, while vacating.
    vacate_at: Option<Instant>,
}

impl MemoryOccupancy {
    /// A store whose vacates wait `debounce`.
    pub fn new(debounce: Duration) -> Self {
        MemoryOccupancy {
            debounce,
            channels: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Occupancy>> {
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, channel: &str, count: u64, now: Instant) -> Transition {
        let mut channels = self.lock();
        match channels.get_mut(channel) {
            None if count == 0 => Transition::Unchanged,
            None => {
                channels.insert(
                    channel.to_owned(),
                    Occupancy {
                        count,
                        vacate_at: None,
                    },
                );
                Transition::Occupied
            }
            Some(entry) => {
                entry.count = count;
                if count > 0 {
                    entry.vacate_at = None;
                    Transition::Unchanged
                } else {
                    entry.vacate_at.get_or_insert(now + self.debounce);
                    Transition::Vacating
                }
            }
        }
    }

    fn settle_at(&self, channel: &str, now: Instant) -> Settled {
        let mut channels = self.lock();
        let Some(entry) = channels.get(channel) else {
            return Settled::Cancelled;
        };
        match entry.vacate_at {
            _ if entry.count > 0 => Settled::Cancelled,
            Some(at) if at > now => Settled::Wait(at - now),
            _ => {
                channels.remove(channel);
                Settled::Vacated
            }
        }
    }
}

impl OccupancyStore for MemoryOccupancy {
    fn set_count<'a>(
        &'a self,
        channel: &'a str,
        count: u64,
    ) -> BoxFuture<'a, Result<Transition, BrokerError>> {
        let transition = self.set(channel, count, Instant::now());
        Box::pin(async move { Ok(transition) })
    }

    fn settle<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Settled, BrokerError>> {
        let settled = self.settle_at(channel, Instant::now());
        Box::pin(async move { Ok(settled) })
    }

    fn channels<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ChannelCount>, BrokerError>> {
        let page = {
            let channels = self.lock();
            let start = match after {
                Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_owned()),
                _ => std::ops::Bound::Included(prefix.to_owned()),
            };
            channels
                .range((start, std::ops::Bound::Unbounded))
                .take_while(|(name, _)| name.starts_with(prefix))
                .filter(|(_, entry)| entry.count > 0)
                .take(limit)
                .map(|(name, entry)| ChannelCount {
                    channel: name.clone(),
                    subscribers: entry.count,
                })
                .collect()
        };
        Box::pin(async move { Ok(page) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_occupied_and_one_vacated_per_transition_and_a_rejoin_cancels() {
        let store = MemoryOccupancy::new(Duration::from_secs(2));
        let t0 = Instant::now();
        assert_eq!(store.set("a", 1, t0), Transition::Occupied);
        assert_eq!(store.set("a", 2, t0), Transition::Unchanged);
        assert_eq!(store.set("a", 0, t0), Transition::Vacating);
        assert_eq!(
            store.settle_at("a", t0 + Duration::from_secs(1)),
            Settled::Wait(Duration::from_secs(1))
        );
        // Back within the debounce: no occupied, and the pending vacate is cancelled.
        assert_eq!(store.set("a", 1, t0), Transition::Unchanged);
        assert_eq!(
            store.settle_at("a", t0 + Duration::from_secs(3)),
            Settled::Cancelled
        );
        let t1 = t0 + Duration::from_secs(4);
        assert_eq!(store.set("a", 0, t1), Transition::Vacating);
        assert_eq!(
            store.settle_at("a", t1 + Duration::from_secs(2)),
            Settled::Vacated
        );
        assert_eq!(
            store.settle_at("a", t1 + Duration::from_secs(3)),
            Settled::Cancelled
        );
        assert_eq!(store.set("a", 1, t1), Transition::Occupied);
    }

    #[test]
    fn channels_are_listed_by_prefix_in_pages() {
        let store = MemoryOccupancy::new(Duration::ZERO);
        let now = Instant::now();
        for (name, count) in [("a:1", 1), ("a:2", 3), ("a:3", 0), ("b:1", 1), ("a:4", 2)] {
            store.set(name, count, now);
        }
        let list = |after: Option<&str>| {
            let page = store.channels("a:", after, 2);
            futures_lite(page).expect("memory store")
        };
        let first = list(None);
        assert_eq!(
            first,
            vec![
                ChannelCount {
                    channel: "a:1".into(),
                    subscribers: 1
                },
                ChannelCount {
                    channel: "a:2".into(),
                    subscribers: 3
                }
            ]
        );
        let second = list(Some("a:2"));
        assert_eq!(
            second,
            vec![ChannelCount {
                channel: "a:4".into(),
                subscribers: 2
            }]
        );
    }

    /// Polls a future that is ready at once (the memory store's are).
    fn futures_lite<T>(future: BoxFuture<'_, T>) -> T {
        let mut future = future;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match future.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("the memory store's futures are ready at once"),
        }
    }
}
