//! The run's record: every subscriber's observations, every acknowledged publish and every
//! fault, shared by the tasks that produce them and read once at the end by the oracles.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use serde::Deserialize;

use crate::oracle::{Ack, Item, MessageId, Stream};

/// Which client library a subscriber uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ClientKind {
    /// `wirehub_client::Client`, in this process.
    RustSdk,
    /// `wirehub sub` processes.
    Sub,
    /// The TypeScript SDK under Node.
    TypeScript,
}

impl ClientKind {
    /// The name in the table.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ClientKind::RustSdk => "rust-sdk",
            ClientKind::Sub => "wirehub-sub",
            ClientKind::TypeScript => "typescript",
        }
    }
}

/// The payload every audit publish carries: `{"p": P, "seq": N, "ch": C, "pad": ...}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Payload {
    /// The publisher.
    pub(crate) p: String,
    /// Its sequence number.
    pub(crate) seq: u64,
    /// The channel it was published to.
    pub(crate) ch: String,
}

impl Payload {
    /// Reads a payload from JSON text; `None` for data that is not one.
    pub(crate) fn parse(json: &str) -> Option<Payload> {
        serde_json::from_str(json).ok()
    }

    /// Reads a payload from a parsed JSON value.
    pub(crate) fn from_value(value: &serde_json::Value) -> Option<Payload> {
        Payload::deserialize(value).ok()
    }

    /// Its identity.
    pub(crate) fn id(&self) -> MessageId {
        MessageId {
            publisher: self.p.clone(),
            seq: self.seq,
        }
    }
}

/// The faults injected, counted for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum FaultCount {
    /// A proxied link cut.
    Cut,
    /// A node killed with SIGKILL and restarted.
    Kill,
    /// Redis killed and restarted empty.
    RedisRestart,
    /// Redis paused with SIGSTOP, then SIGCONT.
    RedisPause,
    /// A subscriber's application stopped reading for a while.
    Stall,
    /// A subscriber process frozen with SIGSTOP (it stops reading its socket).
    Freeze,
    /// A publisher sending as fast as it can for a while.
    Burst,
}

/// Shared, append-only record of the run.
#[derive(Debug)]
pub(crate) struct Recorder {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Per subscriber index and channel.
    streams: HashMap<(usize, String), Stream>,
    /// Per channel.
    acks: HashMap<String, Vec<Ack>>,
    /// Publishes given up on (their outcome is unknown).
    unconfirmed: u64,
    /// Publish attempts that failed and were retried.
    retries: u64,
    faults: BTreeMap<FaultCount, u64>,
    /// Close codes seen per subscriber.
    closes: HashMap<usize, BTreeMap<String, u64>>,
    /// Problems of a subscriber itself (did not start, exited, text it could not parse).
    problems: Vec<(usize, String)>,
    last_delivery: Instant,
}

impl Recorder {
    /// An empty record.
    pub(crate) fn new() -> Recorder {
        Recorder {
            state: Mutex::new(State {
                streams: HashMap::new(),
                acks: HashMap::new(),
                unconfirmed: 0,
                retries: 0,
                faults: BTreeMap::new(),
                closes: HashMap::new(),
                problems: Vec::new(),
                last_delivery: Instant::now(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Subscriber `sub` was handed a message on `channel`.
    pub(crate) fn deliver(
        &self,
        sub: usize,
        channel: &str,
        offset: Option<u64>,
        id: Option<MessageId>,
    ) {
        let mut state = self.lock();
        state.last_delivery = Instant::now();
        state
            .streams
            .entry((sub, channel.to_owned()))
            .or_default()
            .items
            .push(Item::Delivery { offset, id });
    }

    /// Subscriber `sub`'s client reported a loss on `channel`.
    pub(crate) fn gap(&self, sub: usize, channel: &str, what: String) {
        self.lock()
            .streams
            .entry((sub, channel.to_owned()))
            .or_default()
            .items
            .push(Item::Gap(what));
    }

    /// A connection of subscriber `sub` ended with `code` (`none`: no close frame).
    pub(crate) fn closed(&self, sub: usize, code: Option<u16>) {
        let code = code.map_or_else(|| "none".to_owned(), |code| code.to_string());
        *self
            .lock()
            .closes
            .entry(sub)
            .or_default()
            .entry(code)
            .or_default() += 1;
    }

    /// Something wrong with subscriber `sub` itself.
    pub(crate) fn problem(&self, sub: usize, what: String) {
        self.lock().problems.push((sub, what));
    }

    /// A publish was acknowledged.
    pub(crate) fn ack(&self, channel: &str, id: MessageId, offset: u64) {
        self.lock()
            .acks
            .entry(channel.to_owned())
            .or_default()
            .push(Ack { id, offset });
    }

    /// A publish attempt failed and is retried.
    pub(crate) fn retry(&self) {
        self.lock().retries += 1;
    }

    /// A publish was given up on.
    pub(crate) fn unconfirmed(&self) {
        self.lock().unconfirmed += 1;
    }

    /// A fault was injected.
    pub(crate) fn fault(&self, fault: FaultCount) {
        *self.lock().faults.entry(fault).or_default() += 1;
    }

    /// Whether subscriber `sub` has had at least one delivery on each of `channels`.
    pub(crate) fn has_delivery_on_all(&self, sub: usize, channels: &[String]) -> bool {
        let state = self.lock();
        channels.iter().all(|channel| {
            state
                .streams
                .get(&(sub, channel.clone()))
                .is_some_and(|stream| {
                    stream
                        .items
                        .iter()
                        .any(|i| matches!(i, Item::Delivery { .. }))
                })
        })
    }

    /// How many acknowledged workload publishes of `channel` subscriber `sub` has not seen
    /// yet (a cheap count for the drain phase, not an oracle).
    pub(crate) fn missing(&self, sub: usize, channel: &str) -> usize {
        let state = self.lock();
        let Some(acks) = state.acks.get(channel) else {
            return 0;
        };
        let seen: std::collections::HashSet<&MessageId> = state
            .streams
            .get(&(sub, channel.to_owned()))
            .map(|stream| {
                stream
                    .items
                    .iter()
                    .filter_map(|item| match item {
                        Item::Delivery { id: Some(id), .. } => Some(id),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        acks.iter()
            .filter(|ack| ack.id.publisher != crate::oracle::PROBE && !seen.contains(&ack.id))
            .count()
    }

    /// When the last delivery to any subscriber happened.
    pub(crate) fn last_delivery(&self) -> Instant {
        self.lock().last_delivery
    }

    /// Everything recorded, for the oracles and the table.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.lock();
        Snapshot {
            streams: state.streams.clone(),
            acks: state.acks.clone(),
            unconfirmed: state.unconfirmed,
            retries: state.retries,
            faults: state.faults.clone(),
            closes: state.closes.clone(),
            problems: state.problems.clone(),
        }
    }
}

/// A copy of the record at the end of the run.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// Per subscriber index and channel.
    pub(crate) streams: HashMap<(usize, String), Stream>,
    /// Per channel.
    pub(crate) acks: HashMap<String, Vec<Ack>>,
    /// Publishes given up on.
    pub(crate) unconfirmed: u64,
    /// Publish attempts retried.
    pub(crate) retries: u64,
    /// Faults injected.
    pub(crate) faults: BTreeMap<FaultCount, u64>,
    /// Close codes per subscriber.
    pub(crate) closes: HashMap<usize, BTreeMap<String, u64>>,
    /// Problems of subscribers themselves.
    pub(crate) problems: Vec<(usize, String)>,
}
