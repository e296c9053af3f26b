//! A channel stream's history: the last N publications, oldest first.
//!
//! Bounded by count per channel, by age (optional TTL), and by bytes across all channels (a
//! shared budget): appending beyond the budget evicts this channel's oldest entries first.
//! Whatever leaves the history makes recovery from before it report `recovered: false`.
//!
//! It also remembers the `idempotency_key` of each kept publication that had one, so that a
//! retried publish is recognized for as long as the original is kept (the key's bytes count
//! against the same budget).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Publication;

/// How much history to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per channel (0 keeps none).
    pub size: usize,
    /// How long a message is kept (`None`: until pushed out by newer ones).
    pub ttl: Option<Duration>,
    /// Bytes of history kept across all channels.
    pub max_total_bytes: usize,
}

/// The bytes of history held across all channels.
#[derive(Debug, Default)]
pub(crate) struct HistoryBudget {
    used: AtomicUsize,
}

impl HistoryBudget {
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(crate) struct History {
    entries: VecDeque<Entry>,
    bytes: usize,
    /// Idempotency key → offset, for the kept entries that have a key (the same allocation
    /// as the entry's key).
    keys: HashMap<Arc<str>, u64>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    publication: Publication,
    key: Option<Arc<str>>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.publication.frame.len() + self.key.as_ref().map_or(0, |key| key.len())
    }
}

impl History {
    /// Appends a publication (with its idempotency key, if it had one), evicting what the
    /// limits require.
    pub(crate) fn push(
        &mut self,
        publication: Publication,
        key: Option<&str>,
        limits: &HistoryLimits,
        budget: &HistoryBudget,
        now: Instant,
    ) {
        if limits.size == 0 {
            return;
        }
        let entry = Entry {
            at: now,
            publication,
            key: key.map(Arc::from),
        };
        let len = entry.bytes();
        while self.entries.len() >= limits.size
            || (!self.entries.is_empty() && budget.used() + len > limits.max_total_bytes)
        {
            self.pop_front(budget);
        }
        if budget.used() + len > limits.max_total_bytes {
            return;
        }
        budget.used.fetch_add(len, Ordering::Relaxed);
        self.bytes += len;
        if let Some(key) = &entry.key {
            self.keys.insert(Arc::clone(key), entry.publication.offset);
        }
        self.entries.push_back(entry);
    }

    /// Drops entries older than the TTL.
    pub(crate) fn expire(&mut self, limits: &HistoryLimits, budget: &HistoryBudget, now: Instant) {
        let Some(ttl) = limits.ttl else { return };
        while let Some(entry) = self.entries.front() {
            if now.saturating_duration_since(entry.at) < ttl {
                break;
            }
            self.pop_front(budget);
        }
    }

    fn pop_front(&mut self, budget: &HistoryBudget) {
        if let Some(entry) = self.entries.pop_front() {
            let len = entry.bytes();
            self.bytes -= len;
            budget.used.fetch_sub(len, Ordering::Relaxed);
            if let Some(key) = entry.key.as_deref()
                && self.keys.get(key) == Some(&entry.publication.offset)
            {
                self.keys.remove(key);
            }
        }
    }

    /// The offset of the kept publication published with `key`, if there is one.
    pub(crate) fn offset_of_key(&self, key: &str) -> Option<u64> {
        self.keys.get(key).copied()
    }

    /// Frees everything (the stream is dropped).
    pub(crate) fn clear(&mut self, budget: &HistoryBudget) {
        budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
        self.entries.clear();
        self.keys.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest offset kept.
    pub(crate) fn first_offset(&self) -> Option<u64> {
        self.entries.front().map(|entry| entry.publication.offset)
    }

    /// The publications after `offset`, oldest first, at most `limit`.
    pub(crate) fn after(&self, offset: u64, limit: usize) -> Vec<Publication> {
        let start = self
            .entries
            .partition_point(|entry| entry.publication.offset <= offset);
        self.entries
            .range(start..)
            .take(limit)
            .map(|entry| entry.publication.clone())
            .collect()
    }
}
