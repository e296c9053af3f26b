//! The bounded outbound queue of one connection, and what happens when it is full.
//!
//! Everything a connection sends goes through its [`Outbox`] as ready-made WebSocket frames
//! (`Bytes`, shared between all the subscribers of a message), in the order it must reach the
//! client: replies, replayed history, live deliveries. The session's writer drains the whole
//! queue at once and writes it with one vectored write.
//!
//! The queue is bounded in frames and in bytes. Each queued frame carries the *slot* of the
//! subscription it belongs to (0 for replies), so that a full queue is handled per channel,
//! as the channel's [`OnSlow`] policy says:
//!
//! - `disconnect` (the default, and every reply): the outbox closes itself with
//!   [`CloseCode::SlowConsumer`]; the connection is closed and the client recovers from
//!   history when it reconnects. Before it gives up, the queued frames of `gap` and `latest`
//!   subscriptions are dropped (as their policies allow) to make room, so that a busy ticker
//!   cannot push a chat line out.
//! - `gap`: the subscription's queued frames are dropped and it is *in gap*: its deliveries
//!   are not queued but widen the gap, and the next drain (the writer has room again) appends
//!   one `gap` message with the range it will not be sent. Then deliveries resume. A replay
//!   (recovery with `since`) that does not fit keeps its queued part and the gap starts where
//!   it stopped, so that recovering again from there makes progress.
//! - `latest`: the subscription's queued frames are dropped and only its newest frame is
//!   kept aside, replaced by each newer one, and appended by the next drain.
//!
//! A frame the writer has taken (its `writing` queue, possibly half written) is never
//! touched. No message is ever skipped silently: a drop is either a closed connection, a
//! `gap` message, or the documented behaviour of `latest`.
//!
//! An outbox that never queued anything holds no allocation. The common path (a delivery with
//! room, `disconnect` policy) is one lock and one push of a shared `Bytes` clone; frames of
//! `gap` and `latest` subscriptions also push a small tag (slot, offset) beside the queue. The
//! writer takes the frames by swapping the whole queue.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use tokio::sync::Notify;
use wirehub_protocol::{CloseCode, ServerMessage, encode_server_message};

use crate::broker::{Dialect, Publication};
use crate::policy::OnSlow;

/// Limits of one outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Frames queued at most.
    pub max_frames: usize,
    /// Bytes queued at most (frame lengths added up, even where frames are shared).
    pub max_bytes: usize,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue is full: the outbox is now closed as a slow consumer.
    #[error("outbound queue full (slow consumer)")]
    Overflow,
    /// The outbox was closed before (the connection is going away).
    #[error("connection closing")]
    Closed,
}

/// Upper bounds of the queue-depth histogram's buckets (frames per drain).
pub const DEPTH_BOUNDS: [u64; 7] = [1, 4, 16, 64, 256, 1024, 4096];

/// What the delivery policies did, across every connection of a node; read by the metrics.
#[derive(Debug, Default)]
pub struct QueueStats {
    dropped_gap: AtomicU64,
    dropped_latest: AtomicU64,
    gaps_sent: AtomicU64,
    /// Drains per depth bucket (not cumulative; the last one is beyond every bound).
    depth: [AtomicU64; DEPTH_BOUNDS.len() + 1],
    depth_sum: AtomicU64,
}

impl QueueStats {
    /// Deliveries not sent to a subscriber because of its policy (`gap`: dropped and covered
    /// by a `gap` message; `latest`: replaced by a newer one). Always 0 for `disconnect`.
    pub fn dropped(&self, policy: OnSlow) -> u64 {
        match policy {
            OnSlow::Gap => self.dropped_gap.load(Ordering::Relaxed),
            OnSlow::Latest => self.dropped_latest.load(Ordering::Relaxed),
            OnSlow::Disconnect => 0,
        }
    }

    /// `gap` messages queued because a subscription's queue overflowed.
    pub fn gaps_sent(&self) -> u64 {
        self.gaps_sent.load(Ordering::Relaxed)
    }

    /// The queue-depth histogram: for each bound of [`DEPTH_BOUNDS`], how many drains took at
    /// most that many frames (cumulative, as Prometheus wants it), then the count of all
    /// drains and the sum of their frames.
    pub fn depth(&self) -> ([u64; DEPTH_BOUNDS.len()], u64, u64) {
        let mut cumulative = [0; DEPTH_BOUNDS.len()];
        let mut total = 0;
        for (index, bucket) in self.depth.iter().enumerate() {
            total += bucket.load(Ordering::Relaxed);
            if let Some(slot) = cumulative.get_mut(index) {
                *slot = total;
            }
        }
        (cumulative, total, self.depth_sum.load(Ordering::Relaxed))
    }

    pub(crate) fn count_drops(&self, policy: OnSlow, count: u64) {
        let counter = match policy {
            OnSlow::Gap => &self.dropped_gap,
            OnSlow::Latest => &self.dropped_latest,
            _ => return,
        };
        counter.fetch_add(count, Ordering::Relaxed);
    }

    fn record_depth(&self, frames: usize) {
        let frames = frames as u64;
        let index = DEPTH_BOUNDS
            .iter()
            .position(|bound| frames <= *bound)
            .unwrap_or(DEPTH_BOUNDS.len());
        self.depth[index].fetch_add(1, Ordering::Relaxed);
        self.depth_sum.fetch_add(frames, Ordering::Relaxed);
    }
}

/// The outcome of [`Outbox::offer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offered {
    /// Queued.
    Queued,
    /// Not queued, as the subscription's policy says (in gap, or kept aside as its latest).
    Held,
    /// Not queued: the outbox is closed (now or before).
    Refused(PushError),
}

/// A connection's bounded outbound queue of WebSocket frames.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    notify: Notify,
    limits: OutboxLimits,
    /// The node's counters, attached when the connection first subscribes.
    stats: OnceLock<Arc<QueueStats>>,
    /// The connection's wire dialect and its tag in it, when it is not protocol v1.
    dialect: Option<(Arc<dyn Dialect>, Arc<str>)>,
    /// permessage-deflate: the connection is sent compressed frames for messages of at
    /// least this many bytes.
    deflate: Option<usize>,
}

#[derive(Debug)]
struct OutboxState {
    /// The queued frames, handed to the writer by swapping the whole queue.
    frames: VecDeque<Bytes>,
    /// Which frames of `frames` belong to a `gap` or `latest` subscription, in queue order
    /// (replies and `disconnect` messages have no tag: their path is one push).
    tags: VecDeque<Tag>,
    bytes: usize,
    closed: Option<CloseCode>,
    /// The subscriptions whose policy is `gap` or `latest`, by ascending slot.
    tagged: Vec<Tagged>,
    /// How many of `tagged` hold something for the next drain.
    held: usize,
    next_slot: u32,
}

#[derive(Debug, Clone, Copy)]
struct Tag {
    /// The frame's index in `frames`.
    at: usize,
    /// The message's offset.
    offset: u64,
    /// The subscription it belongs to.
    slot: u32,
}

/// A `gap` or `latest` subscription of this connection.
#[derive(Debug)]
struct Tagged {
    slot: u32,
    policy: OnSlow,
    channel: Arc<str>,
    /// The epoch of its latest delivery.
    epoch: Option<Arc<str>>,
    held: Held,
}

/// What a subscription holds for the next drain after its queue overflowed.
#[derive(Debug, Default)]
enum Held {
    #[default]
    Nothing,
    /// In gap: a `gap` message for the stream at `epoch`/`offset`, and the offsets not sent
    /// (`None` when they are not known, e.g. the epoch changed meanwhile).
    Gap {
        epoch: Arc<str>,
        offset: u64,
        range: Option<(u64, u64)>,
    },
    /// Its newest frame.
    Latest(Bytes),
}

impl OutboxState {
    fn is_full(&self, len: usize, limits: &OutboxLimits) -> bool {
        // A frame larger than the byte limit still goes through an empty queue, so that one
        // message of up to --max-message-size always fits.
        !self.frames.is_empty()
            && (self.frames.len() >= limits.max_frames || self.bytes + len > limits.max_bytes)
    }

    /// Queues a frame; `tag` (slot, offset) for a `gap` or `latest` subscription's.
    fn push(&mut self, frame: Bytes, tag: Option<(u32, u64)>) -> bool {
        let was_empty = self.frames.is_empty();
        if let Some((slot, offset)) = tag {
            self.tags.push_back(Tag {
                at: self.frames.len(),
                offset,
                slot,
            });
        }
        self.bytes += frame.len();
        self.frames.push_back(frame);
        was_empty
    }

    fn tagged_mut(&mut self, slot: u32) -> Option<&mut Tagged> {
        let index = self.tagged.binary_search_by_key(&slot, |t| t.slot).ok()?;
        self.tagged.get_mut(index)
    }

    /// Drops the queued frames of the `gap`/`latest` subscriptions (only `slot`'s when given),
    /// each of them then holding a gap or its newest frame. Returns how many were dropped.
    fn evict(&mut self, only: Option<u32>, stats: Option<&QueueStats>) -> usize {
        let OutboxState {
            frames,
            tags,
            bytes,
            tagged,
            held,
            ..
        } = self;
        if tagged.is_empty() {
            return 0;
        }
        let droppable = |tag: &Tag| {
            only.is_none_or(|slot| slot == tag.slot)
                && tagged.binary_search_by_key(&tag.slot, |t| t.slot).is_ok()
        };
        if !tags.iter().any(droppable) {
            return 0;
        }
        let before = frames.len();
        let mut kept_frames = VecDeque::with_capacity(before);
        let mut kept_tags = VecDeque::with_capacity(tags.len());
        let mut old_tags = std::mem::take(tags).into_iter().peekable();
        for (at, frame) in std::mem::take(frames).into_iter().enumerate() {
            let Some(tag) = old_tags.next_if(|tag| tag.at == at) else {
                kept_frames.push_back(frame);
                continue;
            };
            let index = tagged.binary_search_by_key(&tag.slot, |t| t.slot);
            match index {
                Ok(index) if only.is_none_or(|slot| slot == tag.slot) => {
                    let subscription = &mut tagged[index];
                    *bytes -= frame.len();
                    let epoch = subscription.epoch.clone();
                    if subscription.hold(frame, epoch.as_ref(), tag.offset, stats) {
                        *held += 1;
                    }
                }
                _ => {
                    kept_tags.push_back(Tag {
                        at: kept_frames.len(),
                        ..tag
                    });
                    kept_frames.push_back(frame);
                }
            }
        }
        *frames = kept_frames;
        *tags = kept_tags;
        before - frames.len()
    }
}

impl Tagged {
    /// Takes a delivery that is not queued: in gap it widens the gap, for `latest` it
    /// replaces the held frame. Returns true when the subscription held nothing before.
    fn hold(
        &mut self,
        frame: Bytes,
        epoch: Option<&Arc<str>>,
        offset: u64,
        stats: Option<&QueueStats>,
    ) -> bool {
        let was_empty = matches!(self.held, Held::Nothing);
        if let Some(stats) = stats
            && (self.policy == OnSlow::Gap || !was_empty)
        {
            stats.count_drops(self.policy, 1);
        }
        match (&mut self.held, self.policy) {
            (
                Held::Gap {
                    epoch: gap_epoch,
                    offset: top,
                    range,
                },
                _,
            ) => {
                match epoch {
                    Some(epoch) if **epoch == **gap_epoch => {
                        *range = range.map(|(from, _)| (from, offset));
                    }
                    // Offsets of another epoch are not comparable: the range is unknown.
                    Some(epoch) => {
                        *gap_epoch = epoch.clone();
                        *range = None;
                    }
                    None => *range = None,
                }
                *top = offset;
            }
            (held, OnSlow::Gap) => {
                *held = Held::Gap {
                    epoch: epoch.cloned().unwrap_or_else(|| Arc::from("")),
                    offset,
                    range: epoch.map(|_| (offset, offset)),
                };
            }
            (held, _) => *held = Held::Latest(frame),
        }
        was_empty
    }

    fn note_epoch(&mut self, epoch: &Arc<str>) {
        let same = self
            .epoch
            .as_ref()
            .is_some_and(|known| Arc::ptr_eq(known, epoch) || **known == **epoch);
        if !same {
            self.epoch = Some(epoch.clone());
        }
    }
}

impl Outbox {
    /// An empty outbox with the given limits.
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            state: Mutex::new(OutboxState {
                frames: VecDeque::new(),
                tags: VecDeque::new(),
                bytes: 0,
                closed: None,
                tagged: Vec::new(),
                held: 0,
                next_slot: 1,
            }),
            notify: Notify::new(),
            limits,
            stats: OnceLock::new(),
            dialect: None,
            deflate: None,
        }
    }

    /// The outbox of a connection that speaks another wire `dialect`, known in it as `tag`:
    /// publications reach it as the dialect encodes them (see [`Dialect`]).
    #[must_use]
    pub fn with_dialect(mut self, dialect: Arc<dyn Dialect>, tag: Arc<str>) -> Self {
        self.dialect = Some((dialect, tag));
        self
    }

    /// The connection's wire dialect and its tag in it, when it is not protocol v1.
    pub(crate) fn dialect(&self) -> Option<(&Arc<dyn Dialect>, &str)> {
        self.dialect
            .as_ref()
            .map(|(dialect, tag)| (dialect, &**tag))
    }

    /// The frame this connection gets for `publication`: for protocol v1, the shared frame
    /// (compressed once for all when the connection negotiated permessage-deflate, counting
    /// each compression in `compressions`); for another dialect, the dialect's frame
    /// (encoded once per node, sent uncompressed, which RFC 7692 allows per message); `None`
    /// when it must not get it.
    pub(crate) fn frame_for<'a>(
        &self,
        publication: &'a Publication,
        compressions: Option<&AtomicU64>,
    ) -> Option<&'a Bytes> {
        let Some((dialect, tag)) = &self.dialect else {
            return Some(publication.frame_counting(self.deflate, compressions));
        };
        let alternate = publication.alternate_in(&**dialect)?;
        match &alternate.skip {
            Some(skip) if **skip == **tag => None,
            _ => Some(&alternate.frame),
        }
    }

    /// Whether `publication` must not reach this connection, or a connection of its dialect
    /// known as one of `excluded` (false for protocol v1, which excludes no connection).
    pub(crate) fn excludes(&self, publication: &Publication, excluded: &[Arc<str>]) -> bool {
        let Some((dialect, own)) = &self.dialect else {
            return false;
        };
        match publication
            .alternate_in(&**dialect)
            .and_then(|a| a.skip.as_deref())
        {
            Some(skip) => **own == *skip || excluded.iter().any(|tag| **tag == *skip),
            None => false,
        }
    }

    /// The same outbox for a connection that negotiated permessage-deflate and is sent
    /// messages of at least `threshold` bytes compressed (`None`: none).
    pub fn with_deflate(mut self, threshold: Option<usize>) -> Self {
        self.deflate = threshold;
        self
    }

    /// The threshold of [`Outbox::with_deflate`]: from which message size the connection
    /// gets compressed frames, `None` when it gets none.
    pub fn deflate(&self) -> Option<usize> {
        self.deflate
    }

    /// Whether a replayed frame of `len` bytes fits in the half of the queue a recovery may
    /// use: the other half stays for live messages, so that a large recovery neither closes
    /// the connection as a slow consumer nor starves what is published meanwhile. An empty
    /// queue takes any frame, so that every recovery makes progress.
    pub(crate) fn has_replay_room(&self, len: usize) -> bool {
        let state = lock(&self.state);
        state.frames.is_empty()
            || (state.frames.len() < self.limits.max_frames / 2
                && state.bytes + len <= self.limits.max_bytes / 2)
    }

    /// Queues one frame (a reply: it is never dropped by a policy).
    ///
    /// # Errors
    /// [`PushError::Overflow`] when the queue is full even after the `gap` and `latest`
    /// subscriptions gave up their queued frames (the outbox closes itself as a slow
    /// consumer), [`PushError::Closed`] when it was closed before.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut state = lock(&self.state);
        if state.closed.is_some() {
            return Err(PushError::Closed);
        }
        if state.is_full(frame.len(), &self.limits) && !self.make_room(&mut state, frame.len()) {
            return Err(self.overflow(state));
        }
        let was_empty = state.push(frame, None);
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Closes the outbox with a reason; later pushes fail. The first reason wins.
    pub fn close(&self, code: CloseCode) {
        let mut state = lock(&self.state);
        if state.closed.is_none() {
            state.closed = Some(code);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Why the outbox was closed, if it was.
    pub fn closed(&self) -> Option<CloseCode> {
        lock(&self.state).closed
    }

    /// Moves every queued frame to the back of `out` and returns the close reason, if any.
    /// After them come the `gap` messages of the subscriptions in gap and the newest frames
    /// of the `latest` subscriptions that overflowed; those subscriptions are queued normally
    /// again from then on.
    ///
    /// Frames queued before a slow-consumer close are still handed out, so the writer may
    /// flush them before it closes the connection.
    pub fn drain_into(&self, out: &mut VecDeque<Bytes>) -> Option<CloseCode> {
        let mut state = lock(&self.state);
        let drained = state.frames.len();
        if out.is_empty() {
            std::mem::swap(out, &mut state.frames);
        } else {
            out.append(&mut state.frames);
        }
        state.tags.clear();
        state.bytes = 0;
        if state.frames.capacity() > 64 {
            state.frames = VecDeque::new();
        }
        if state.tags.capacity() > 64 {
            state.tags = VecDeque::new();
        }
        let stats = self.stats.get();
        if state.held > 0 {
            state.held = 0;
            for subscription in &mut state.tagged {
                match std::mem::take(&mut subscription.held) {
                    Held::Nothing => {}
                    Held::Latest(frame) => out.push_back(frame),
                    Held::Gap {
                        epoch,
                        offset,
                        range,
                    } => {
                        out.push_back(gap_frame(&subscription.channel, &epoch, offset, range));
                        if let Some(stats) = stats {
                            stats.gaps_sent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        let closed = state.closed;
        drop(state);
        if drained > 0
            && let Some(stats) = stats
        {
            stats.record_depth(drained);
        }
        closed
    }

    /// Number of frames queued now (with those held for the next drain).
    pub fn len(&self) -> usize {
        let state = lock(&self.state);
        state.frames.len() + state.held
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until a frame is queued or the outbox is closed (returns at once if a wake-up
    /// arrived since the last call). Cancel-safe.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }

    /// A new subscription of this connection to `channel`: returns its slot, which tags its
    /// frames. `stats` are the node's counters.
    pub(crate) fn register(
        &self,
        channel: &Arc<str>,
        policy: OnSlow,
        stats: &Arc<QueueStats>,
    ) -> u32 {
        let _ = self.stats.get_or_init(|| stats.clone());
        let mut state = lock(&self.state);
        let slot = state.next_slot;
        // Slot 0 is for replies. Slots grow (a connection would need 2^32 subscriptions to
        // wrap), so `tagged` stays sorted by pushing at its end.
        state.next_slot = state.next_slot.checked_add(1).unwrap_or(1);
        if policy != OnSlow::Disconnect {
            let tagged = Tagged {
                slot,
                policy,
                channel: channel.clone(),
                epoch: None,
                held: Held::Nothing,
            };
            match state.tagged.binary_search_by_key(&slot, |t| t.slot) {
                Ok(index) => state.tagged[index] = tagged,
                Err(index) => state.tagged.insert(index, tagged),
            }
        }
        slot
    }

    /// The subscription ended: what it held for the next drain is forgotten (its frames
    /// already queued are still sent, before the `unsubscribed` reply).
    pub(crate) fn unregister(&self, slot: u32) {
        let mut state = lock(&self.state);
        if let Ok(index) = state.tagged.binary_search_by_key(&slot, |t| t.slot) {
            let tagged = state.tagged.remove(index);
            if !matches!(tagged.held, Held::Nothing) {
                state.held -= 1;
            }
        }
    }

    /// Queues a message of the subscription `slot`, or handles it as its `policy` says when
    /// the queue is full or the subscription is in gap / holding its latest.
    pub(crate) fn offer(
        &self,
        slot: u32,
        policy: OnSlow,
        frame: &Bytes,
        epoch: &Arc<str>,
        offset: u64,
    ) -> Offered {
        self.offer_as(slot, policy, frame, epoch, offset, true)
    }

    /// As [`Outbox::offer`], for a replayed message: a `gap` subscription whose replay does
    /// not fit keeps what was queued of it, and the gap starts at this message, so that a
    /// client that recovers again from there makes progress.
    pub(crate) fn offer_replayed(
        &self,
        slot: u32,
        policy: OnSlow,
        frame: &Bytes,
        epoch: &Arc<str>,
        offset: u64,
    ) -> Offered {
        self.offer_as(slot, policy, frame, epoch, offset, false)
    }

    fn offer_as(
        &self,
        slot: u32,
        policy: OnSlow,
        frame: &Bytes,
        epoch: &Arc<str>,
        offset: u64,
        drop_queued: bool,
    ) -> Offered {
        let mut state = lock(&self.state);
        if state.closed.is_some() {
            return Offered::Refused(PushError::Closed);
        }
        let tagged = policy != OnSlow::Disconnect && state.tagged_mut(slot).is_some();
        if tagged {
            let stats = self.stats.get().map(|s| &**s);
            if let Some(subscription) = state.tagged_mut(slot) {
                subscription.note_epoch(epoch);
                if !matches!(subscription.held, Held::Nothing) {
                    subscription.hold(frame.clone(), Some(epoch), offset, stats);
                    return Offered::Held;
                }
            }
            if state.is_full(frame.len(), &self.limits) {
                if drop_queued || policy == OnSlow::Latest {
                    state.evict(Some(slot), stats);
                }
                let newly = state
                    .tagged_mut(slot)
                    .is_some_and(|s| s.hold(frame.clone(), Some(epoch), offset, stats));
                if newly {
                    state.held += 1;
                }
                drop(state);
                self.notify.notify_one();
                return Offered::Held;
            }
        } else if state.is_full(frame.len(), &self.limits)
            && !self.make_room(&mut state, frame.len())
        {
            return Offered::Refused(self.overflow(state));
        }
        let was_empty = state.push(frame.clone(), tagged.then_some((slot, offset)));
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Offered::Queued
    }

    /// Queues a `gap` notice of the broker (`frame`) for the subscription `slot`. A
    /// subscription in gap merges it into its own (the range becomes unknown); a full queue
    /// closes the connection (`disconnect`), puts a `gap` subscription in gap, and drops the
    /// notice for a `latest` one (it never promised a gap-free stream).
    pub(crate) fn notice(
        &self,
        slot: u32,
        policy: OnSlow,
        frame: &Bytes,
        epoch: &Arc<str>,
        offset: u64,
    ) {
        let mut state = lock(&self.state);
        if state.closed.is_some() {
            return;
        }
        let full = state.is_full(frame.len(), &self.limits);
        if policy != OnSlow::Disconnect
            && let Some(subscription) = state.tagged_mut(slot)
        {
            subscription.note_epoch(epoch);
            if let Held::Gap {
                epoch: gap_epoch,
                offset: top,
                range,
            } = &mut subscription.held
            {
                *gap_epoch = epoch.clone();
                *top = offset;
                *range = None;
                return;
            }
            if full {
                if policy == OnSlow::Gap {
                    let was_empty = matches!(subscription.held, Held::Nothing);
                    subscription.held = Held::Gap {
                        epoch: epoch.clone(),
                        offset,
                        range: None,
                    };
                    if was_empty {
                        state.held += 1;
                    }
                }
                return;
            }
        }
        if full && !self.make_room(&mut state, frame.len()) {
            let _ = self.overflow(state);
            return;
        }
        let was_empty = state.push(frame.clone(), None);
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
    }

    /// Puts the subscription `slot` in gap for the offsets `from..=to` of `epoch` (they were
    /// dropped before its queue took them; `None` when unknown), the stream being at
    /// `offset`.
    pub(crate) fn begin_gap(
        &self,
        slot: u32,
        epoch: &Arc<str>,
        offset: u64,
        range: Option<(u64, u64)>,
    ) {
        let mut state = lock(&self.state);
        if state.closed.is_some() {
            return;
        }
        let Some(subscription) = state.tagged_mut(slot) else {
            return;
        };
        let was_empty = matches!(subscription.held, Held::Nothing);
        subscription.held = Held::Gap {
            epoch: epoch.clone(),
            offset,
            range,
        };
        if was_empty {
            state.held += 1;
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Makes room for a frame of `len` bytes that must not be dropped: the `gap` and
    /// `latest` subscriptions give up their queued frames. Returns whether it fits now.
    fn make_room(&self, state: &mut OutboxState, len: usize) -> bool {
        state.evict(None, self.stats.get().map(|s| &**s)) > 0 && !state.is_full(len, &self.limits)
    }

    /// Closes the outbox as a slow consumer.
    fn overflow(&self, mut state: std::sync::MutexGuard<'_, OutboxState>) -> PushError {
        state.closed = Some(CloseCode::SlowConsumer);
        drop(state);
        self.notify.notify_one();
        PushError::Overflow
    }
}

/// The `gap` message for a subscription of `channel`.
fn gap_frame(channel: &str, epoch: &str, offset: u64, range: Option<(u64, u64)>) -> Bytes {
    crate::hub::text_frame(&encode_server_message(&ServerMessage::Gap {
        channel: channel.to_owned(),
        epoch: epoch.to_owned(),
        offset,
        from: range.map(|(from, _)| from),
        to: range.map(|(_, to)| to),
    }))
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the state of these
/// queues stays consistent at every step, so it is safe to go on).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn outbox(max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox::new(OutboxLimits {
            max_frames,
            max_bytes,
        })
    }

    /// An outbox of `max_frames` with a `gap` feed (slot 1), a `latest` ticker (slot 2) and
    /// a `disconnect` chat (slot 3).
    fn with_subscriptions(max_frames: usize) -> (Outbox, Arc<QueueStats>) {
        let outbox = outbox(max_frames, 1 << 20);
        let stats = Arc::new(QueueStats::default());
        assert_eq!(outbox.register(&Arc::from("feed"), OnSlow::Gap, &stats), 1);
        assert_eq!(
            outbox.register(&Arc::from("ticker"), OnSlow::Latest, &stats),
            2
        );
        assert_eq!(
            outbox.register(&Arc::from("chat"), OnSlow::Disconnect, &stats),
            3
        );
        (outbox, stats)
    }

    fn epoch() -> Arc<str> {
        Arc::from("e")
    }

    /// A stand-in for a message frame: `channel:offset`.
    fn frame(channel: &str, offset: u64) -> Bytes {
        Bytes::from(format!("{channel}:{offset}"))
    }

    fn offer(outbox: &Outbox, slot: u32, offset: u64) -> Offered {
        let (channel, policy) = match slot {
            1 => ("feed", OnSlow::Gap),
            2 => ("ticker", OnSlow::Latest),
            _ => ("chat", OnSlow::Disconnect),
        };
        outbox.offer(slot, policy, &frame(channel, offset), &epoch(), offset)
    }

    /// The drained frames: stand-ins as they are, `gap` messages as `gap:from-to@offset`.
    fn drain(outbox: &Outbox) -> Vec<String> {
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        out.iter()
            .map(|frame| match frame.first() {
                Some(0x81) => {
                    let json: Value =
                        serde_json::from_slice(&frame[2..]).expect("a short JSON text frame");
                    assert_eq!(json["type"], "gap");
                    format!(
                        "gap:{}:{}-{}@{}",
                        json["channel"].as_str().unwrap_or_default(),
                        json["from"],
                        json["to"],
                        json["offset"]
                    )
                }
                _ => String::from_utf8_lossy(frame).into_owned(),
            })
            .collect()
    }

    #[test]
    fn keeps_order_and_drains_everything() {
        let outbox = outbox(10, 1000);
        for i in 0..5u8 {
            outbox.push(Bytes::from(vec![i])).expect("room");
        }
        let mut out = VecDeque::new();
        assert_eq!(outbox.drain_into(&mut out), None);
        assert_eq!(
            out.iter().map(|b| b[0]).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(outbox.is_empty());
    }

    #[test]
    fn overflow_closes_as_slow_consumer() {
        let outbox = outbox(2, 1000);
        outbox.push(Bytes::from_static(b"a")).expect("room");
        outbox.push(Bytes::from_static(b"b")).expect("room");
        assert_eq!(
            outbox.push(Bytes::from_static(b"c")),
            Err(PushError::Overflow)
        );
        assert_eq!(outbox.closed(), Some(CloseCode::SlowConsumer));
        assert_eq!(
            outbox.push(Bytes::from_static(b"d")),
            Err(PushError::Closed)
        );
        let mut out = VecDeque::new();
        assert_eq!(outbox.drain_into(&mut out), Some(CloseCode::SlowConsumer));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn byte_limit() {
        let outbox = outbox(100, 5);
        outbox
            .push(Bytes::from_static(b"larger than the limit"))
            .expect("an empty queue takes any frame");
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        outbox.push(Bytes::from_static(b"abc")).expect("room");
        assert_eq!(
            outbox.push(Bytes::from_static(b"def")),
            Err(PushError::Overflow)
        );
    }

    #[test]
    fn a_gap_subscription_that_overflows_gets_one_gap_and_then_its_messages() {
        let (outbox, stats) = with_subscriptions(4);
        // What the writer took already is out of reach.
        assert_eq!(offer(&outbox, 1, 1), Offered::Queued);
        let taken = drain(&outbox);
        assert_eq!(taken, ["feed:1"]);
        for offset in 2..=4 {
            assert_eq!(offer(&outbox, 1, offset), Offered::Queued);
        }
        assert_eq!(offer(&outbox, 3, 1), Offered::Queued);
        // Full: the feed's queued frames go, and it is in gap.
        assert_eq!(offer(&outbox, 1, 5), Offered::Held);
        assert_eq!(offer(&outbox, 1, 6), Offered::Held);
        // The chat and the rest of the connection are untouched.
        assert_eq!(offer(&outbox, 3, 2), Offered::Queued);
        assert_eq!(outbox.closed(), None);
        assert_eq!(drain(&outbox), ["chat:1", "chat:2", "gap:feed:2-6@6"]);
        // Delivered normally again after the gap.
        assert_eq!(offer(&outbox, 1, 7), Offered::Queued);
        assert_eq!(drain(&outbox), ["feed:7"]);
        assert_eq!(stats.dropped(OnSlow::Gap), 5);
        assert_eq!(stats.gaps_sent(), 1);
    }

    #[test]
    fn a_gap_subscription_with_nothing_queued_starts_its_gap_at_the_refused_message() {
        let (outbox, _) = with_subscriptions(2);
        assert_eq!(offer(&outbox, 3, 1), Offered::Queued);
        assert_eq!(offer(&outbox, 3, 2), Offered::Queued);
        assert_eq!(offer(&outbox, 1, 9), Offered::Held);
        assert_eq!(drain(&outbox), ["chat:1", "chat:2", "gap:feed:9-9@9"]);
    }

    #[test]
    fn a_replay_that_does_not_fit_keeps_its_first_part_and_the_gap_starts_after_it() {
        let (outbox, _) = with_subscriptions(3);
        for offset in 4..=9 {
            let queued =
                outbox.offer_replayed(1, OnSlow::Gap, &frame("feed", offset), &epoch(), offset);
            assert_eq!(queued == Offered::Queued, offset < 7, "{offset}");
        }
        assert_eq!(offer(&outbox, 1, 10), Offered::Held);
        assert_eq!(
            drain(&outbox),
            ["feed:4", "feed:5", "feed:6", "gap:feed:7-10@10"]
        );
    }

    #[test]
    fn a_latest_subscription_keeps_only_its_newest_message() {
        let (outbox, stats) = with_subscriptions(4);
        for offset in 1..=3 {
            assert_eq!(offer(&outbox, 2, offset), Offered::Queued);
        }
        assert_eq!(offer(&outbox, 3, 1), Offered::Queued);
        for offset in 4..=8 {
            assert_eq!(offer(&outbox, 2, offset), Offered::Held);
        }
        assert_eq!(outbox.len(), 2);
        assert_eq!(drain(&outbox), ["chat:1", "ticker:8"]);
        assert_eq!(stats.dropped(OnSlow::Latest), 7);
        assert_eq!(stats.gaps_sent(), 0);
        assert_eq!(offer(&outbox, 2, 9), Offered::Queued);
        assert_eq!(drain(&outbox), ["ticker:9"]);
    }

    #[test]
    fn a_disconnect_message_makes_room_by_dropping_what_the_policies_allow() {
        let (outbox, stats) = with_subscriptions(4);
        assert_eq!(offer(&outbox, 1, 1), Offered::Queued);
        assert_eq!(offer(&outbox, 2, 1), Offered::Queued);
        assert_eq!(offer(&outbox, 2, 2), Offered::Queued);
        assert_eq!(offer(&outbox, 1, 2), Offered::Queued);
        assert_eq!(offer(&outbox, 3, 1), Offered::Queued);
        // A reply makes room the same way.
        outbox.push(Bytes::from_static(b"reply")).expect("room");
        assert_eq!(outbox.closed(), None);
        assert_eq!(offer(&outbox, 1, 3), Offered::Held);
        assert_eq!(offer(&outbox, 2, 3), Offered::Held);
        assert_eq!(
            drain(&outbox),
            ["chat:1", "reply", "gap:feed:1-3@3", "ticker:3"]
        );
        assert_eq!(stats.dropped(OnSlow::Gap), 3);
        assert_eq!(stats.dropped(OnSlow::Latest), 2);
    }

    #[test]
    fn a_disconnect_channel_that_fills_the_queue_itself_closes_the_connection() {
        let (outbox, _) = with_subscriptions(3);
        assert_eq!(offer(&outbox, 2, 1), Offered::Queued);
        assert_eq!(offer(&outbox, 3, 1), Offered::Queued);
        assert_eq!(offer(&outbox, 3, 2), Offered::Queued);
        // The ticker's frame makes room once...
        assert_eq!(offer(&outbox, 3, 3), Offered::Queued);
        // ...and then there is nothing left to drop.
        assert_eq!(offer(&outbox, 3, 4), Offered::Refused(PushError::Overflow));
        assert_eq!(outbox.closed(), Some(CloseCode::SlowConsumer));
        assert_eq!(offer(&outbox, 1, 1), Offered::Refused(PushError::Closed));
    }

    #[test]
    fn an_ended_subscription_leaves_nothing_for_the_next_drain() {
        let (outbox, stats) = with_subscriptions(1);
        assert_eq!(offer(&outbox, 3, 1), Offered::Queued);
        assert_eq!(offer(&outbox, 1, 1), Offered::Held);
        assert_eq!(offer(&outbox, 2, 1), Offered::Held);
        assert_eq!(outbox.len(), 3);
        outbox.unregister(1);
        outbox.unregister(2);
        assert_eq!(outbox.len(), 1);
        assert_eq!(drain(&outbox), ["chat:1"]);
        assert_eq!(stats.gaps_sent(), 0);
    }

    #[test]
    fn a_broker_gap_notice_follows_each_policy() {
        let (outbox, stats) = with_subscriptions(1);
        let notice = Bytes::from_static(b"notice");
        // Room: queued as a reply.
        outbox.notice(1, OnSlow::Gap, &notice, &epoch(), 5);
        // Full: the gap subscription goes in gap with an unknown range, the latest one drops
        // the notice.
        outbox.notice(1, OnSlow::Gap, &notice, &epoch(), 6);
        outbox.notice(2, OnSlow::Latest, &notice, &epoch(), 6);
        assert_eq!(outbox.closed(), None);
        assert_eq!(offer(&outbox, 1, 7), Offered::Held);
        // A notice while in gap makes the range unknown too.
        outbox.notice(1, OnSlow::Gap, &notice, &Arc::from("other"), 1);
        assert_eq!(drain(&outbox), ["notice", "gap:feed:null-null@1"]);
        assert_eq!(stats.gaps_sent(), 1);
        // A disconnect subscription with a full queue is closed, as before.
        outbox.push(Bytes::from_static(b"x")).expect("room");
        outbox.notice(3, OnSlow::Disconnect, &notice, &epoch(), 8);
        assert_eq!(outbox.closed(), Some(CloseCode::SlowConsumer));
    }

    #[test]
    fn the_depth_histogram_counts_frames_per_drain() {
        let (outbox, stats) = with_subscriptions(100);
        drain(&outbox);
        for offset in 1..=5 {
            offer(&outbox, 3, offset);
        }
        drain(&outbox);
        offer(&outbox, 3, 6);
        drain(&outbox);
        let (buckets, count, sum) = stats.depth();
        assert_eq!((count, sum), (2, 6));
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[1], 1);
        assert_eq!(buckets[2], 2);
        assert_eq!(buckets[DEPTH_BOUNDS.len() - 1], 2);
    }

    #[tokio::test]
    async fn ready_wakes_on_push_and_close() {
        let outbox = std::sync::Arc::new(outbox(10, 100));
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.ready().await })
        };
        outbox.push(Bytes::from_static(b"x")).expect("room");
        waiter.await.expect("woken");
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        outbox.close(CloseCode::GoingAway);
        outbox.ready().await;
        assert_eq!(outbox.closed(), Some(CloseCode::GoingAway));
    }
}
