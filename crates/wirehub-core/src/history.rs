//! A channel stream's history: the last N publications, oldest first.
//!
//! Bounded by count per channel, by age (optional TTL), and by bytes across all channels (a
//! shared budget): appending beyond the budget evicts this channel's oldest entries first.
//! Whatever leaves the history makes recovery from before it report `recovered: false`.

use std::collections::VecDeque;
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
    entries: VecDeque<(Instant, Publication)>,
    bytes: usize,
}

impl History {
    /// Appends a publication, evicting what the limits require.
    pub(crate) fn push(
        &mut self,
        publication: Publication,
        limits: &HistoryLimits,
        budget: &HistoryBudget,
        now: Instant,
    ) {
        if limits.size == 0 {
            return;
        }
        let len = publication.frame.len();
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
        self.entries.push_back((now, publication));
    }

    /// Drops entries older than the TTL.
    pub(crate) fn expire(&mut self, limits: &HistoryLimits, budget: &HistoryBudget, now: Instant) {
        let Some(ttl) = limits.ttl else { return };
        while let Some((at, _)) = self.entries.front() {
            if now.saturating_duration_since(*at) < ttl {
                break;
            }
            self.pop_front(budget);
        }
    }

    fn pop_front(&mut self, budget: &HistoryBudget) {
        if let Some((_, publication)) = self.entries.pop_front() {
            let len = publication.frame.len();
            self.bytes -= len;
            budget.used.fetch_sub(len, Ordering::Relaxed);
        }
    }

    /// Frees everything (the stream is dropped).
    pub(crate) fn clear(&mut self, budget: &HistoryBudget) {
        budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        self.bytes = 0;
        self.entries.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The oldest offset kept.
    pub(crate) fn first_offset(&self) -> Option<u64> {
        self.entries.front().map(|(_, p)| p.offset)
    }

    /// The publications after `offset`, oldest first, at most `limit`.
    pub(crate) fn after(&self, offset: u64, limit: usize) -> Vec<Publication> {
        let start = self.entries.partition_point(|(_, p)| p.offset <= offset);
        self.entries
            .range(start..)
            .take(limit)
            .map(|(_, p)| p.clone())
            .collect()
    }
}
