//! The node's local subscribers, per channel: the fan-out side of the hub.
//!
//! A sharded map from channel name to the outboxes of the sessions subscribed here. A
//! publication is pushed (the same shared frame) into every subscriber's [`Outbox`], tagged
//! with the subscription's slot and handled, when the outbox is full, as the channel's
//! delivery policy ([`OnSlow`], looked up in the [`ChannelRules`] when the session subscribes)
//! says: a `disconnect` subscriber's session is closed as a slow consumer, a `gap` one gets a
//! `gap` message, a `latest` one keeps its newest message; none of them slows the others down.
//! A channel entry is removed with its last subscriber.
//!
//! A subscriber joins *pending*: deliveries are buffered (bounded, with the same policies)
//! until the hub has read the stream's position (and replayed history), then
//! [`Fanout::activate`] flushes what came after that position. This is what makes the seam
//! between replay and live messages exact.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::broker::{Deliver, Publication};
use crate::outbox::{Offered, Outbox, QueueStats, lock};
use crate::policy::{ChannelRules, OnSlow};

const SHARDS: usize = 64;

/// A session's identity and outbound queue, as the hub sees it.
#[derive(Debug, Clone)]
pub struct SessionRef {
    /// The session's id, unique in this process.
    pub id: u64,
    /// Its outbound queue.
    pub outbox: Arc<Outbox>,
}

#[derive(Debug)]
struct Subscriber {
    session: u64,
    outbox: Arc<Outbox>,
    /// Tags this subscription's frames in the outbox.
    slot: u32,
    policy: OnSlow,
    /// Set while the subscription is being set up.
    setup: Option<Box<Setup>>,
}

/// Deliveries held back while a subscription is being set up.
#[derive(Debug, Default)]
struct Setup {
    pending: Vec<Publication>,
    /// `gap` policy, pending list full: the epoch of the deliveries dropped, the first one
    /// (`None` when the epoch changed meanwhile) and the last one.
    dropped: Option<(Arc<str>, Option<u64>, u64)>,
}

/// One shard of the registry: channel name → its local subscribers.
type Shard = Mutex<HashMap<Arc<str>, Vec<Subscriber>>>;

/// Local subscribers per channel.
#[derive(Debug)]
pub struct Fanout {
    shards: Box<[Shard]>,
    hasher: RandomState,
    subscriptions: AtomicUsize,
    channels: AtomicUsize,
    deliveries: AtomicUsize,
    /// Publications compressed for permessage-deflate subscribers (once each at most).
    compressions: AtomicU64,
    max_pending: usize,
    rules: ChannelRules,
    stats: Arc<QueueStats>,
}

/// The result of [`Fanout::add_pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// The first local subscriber of the channel.
    First,
    /// The channel had local subscribers already.
    More,
    /// The session was subscribed already.
    Duplicate,
}

/// What [`Fanout::activate`] lets the hub queue before a subscription goes live.
#[derive(Debug)]
pub(crate) struct Replay<'a> {
    outbox: &'a Outbox,
    slot: u32,
    policy: OnSlow,
    compressions: &'a AtomicU64,
}

impl Replay<'_> {
    /// Queues a reply (never dropped by a policy).
    pub(crate) fn reply(&self, frame: Bytes) {
        let _ = self.outbox.push(frame);
    }

    /// Whether a replayed frame of `len` bytes fits in the part of the queue a recovery may
    /// use.
    pub(crate) fn has_room(&self, len: usize) -> bool {
        self.outbox.has_replay_room(len)
    }

    /// Whether `publication` must not reach this connection, or a connection of its dialect
    /// known as one of `excluded` (earlier connections of the same client).
    pub(crate) fn excludes(&self, publication: &Publication, excluded: &[Arc<str>]) -> bool {
        self.outbox.excludes(publication, excluded)
    }

    /// Queues a replayed message under the subscription's policy. Returns false when the
    /// connection is closing.
    pub(crate) fn message(&self, publication: &Publication) -> bool {
        let Some(frame) = self.outbox.frame_for(publication, Some(self.compressions)) else {
            return true;
        };
        !matches!(
            self.outbox.offer_replayed(
                self.slot,
                self.policy,
                frame,
                &publication.epoch,
                publication.offset
            ),
            Offered::Refused(_)
        )
    }
}

impl Fanout {
    /// An empty registry. `max_pending` bounds the deliveries held for one subscriber while its
    /// subscription is set up (beyond it, the subscriber's policy applies). Every channel
    /// uses the `disconnect` policy; see [`Fanout::with_rules`].
    pub fn new(max_pending: usize) -> Self {
        Fanout::with_rules(max_pending, ChannelRules::default())
    }

    /// An empty registry whose channels get their delivery policy from `rules`.
    pub fn with_rules(max_pending: usize, rules: ChannelRules) -> Self {
        Fanout {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            subscriptions: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
            deliveries: AtomicUsize::new(0),
            compressions: AtomicU64::new(0),
            max_pending,
            rules,
            stats: Arc::new(QueueStats::default()),
        }
    }

    fn shard(&self, channel: &str) -> &Shard {
        let index = (self.hasher.hash_one(channel) as usize) % self.shards.len();
        &self.shards[index]
    }

    /// Subscriptions held on this node, with those still waiting for the broker to take the
    /// channel (added, not yet active).
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.channels.load(Ordering::Relaxed)
    }

    /// Frames queued for subscribers since start (deliveries out).
    pub fn delivery_count(&self) -> usize {
        self.deliveries.load(Ordering::Relaxed)
    }

    /// Publications compressed since start for subscribers that negotiated
    /// permessage-deflate: at most one per publication, whatever the number of subscribers.
    pub fn compression_count(&self) -> u64 {
        self.compressions.load(Ordering::Relaxed)
    }

    /// What the delivery policies did, and the depth of the outboxes when drained.
    pub fn queue_stats(&self) -> &QueueStats {
        &self.stats
    }

    /// The channel rules the policies come from.
    pub fn rules(&self) -> &ChannelRules {
        &self.rules
    }

    pub(crate) fn add_pending(&self, channel: &str, session: &SessionRef) -> Added {
        let mut shard = lock(self.shard(channel));
        let name: Arc<str> = match shard.get_key_value(channel) {
            Some((name, _)) => name.clone(),
            None => {
                self.channels.fetch_add(1, Ordering::Relaxed);
                Arc::from(channel)
            }
        };
        let subscribers = shard.entry(name.clone()).or_default();
        if subscribers.iter().any(|s| s.session == session.id) {
            return Added::Duplicate;
        }
        let policy = self.rules.on_slow(channel);
        let slot = session.outbox.register(&name, policy, &self.stats);
        subscribers.push(Subscriber {
            session: session.id,
            outbox: session.outbox.clone(),
            slot,
            policy,
            setup: Some(Box::default()),
        });
        self.subscriptions.fetch_add(1, Ordering::Relaxed);
        if subscribers.len() == 1 {
            Added::First
        } else {
            Added::More
        }
    }

    /// Ends the pending state: under the channel's lock, `before_live` queues what must come
    /// first (the reply, replayed history) and returns the offset the subscriber is now at;
    /// then buffered deliveries after that offset are queued and the subscriber goes live.
    /// Returns false when the subscriber is gone (unsubscribed meanwhile).
    pub(crate) fn activate(
        &self,
        channel: &str,
        session: u64,
        before_live: impl FnOnce(&Replay<'_>) -> (Arc<str>, u64),
    ) -> bool {
        let mut shard = lock(self.shard(channel));
        let Some(subscriber) = shard
            .get_mut(channel)
            .and_then(|subs| subs.iter_mut().find(|s| s.session == session))
        else {
            return false;
        };
        let replay = Replay {
            outbox: &subscriber.outbox,
            slot: subscriber.slot,
            policy: subscriber.policy,
            compressions: &self.compressions,
        };
        let (epoch, offset) = before_live(&replay);
        let setup = subscriber.setup.take().unwrap_or_default();
        for publication in &setup.pending {
            if publication.offset > offset || *publication.epoch != *epoch {
                if !replay.message(publication) {
                    break;
                }
                self.deliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some((dropped_epoch, from, to)) = setup.dropped {
            match from {
                Some(from) if *dropped_epoch == *epoch => {
                    if to > offset {
                        let range = (from.max(offset + 1), to);
                        subscriber
                            .outbox
                            .begin_gap(subscriber.slot, &epoch, to, Some(range));
                    }
                }
                _ => subscriber
                    .outbox
                    .begin_gap(subscriber.slot, &dropped_epoch, to, None),
            }
        }
        true
    }

    /// Runs `f` under the channel's lock with the queue of `session`'s live subscription to
    /// `channel`, as [`Fanout::activate`] does for a new one: what `f` queues comes before
    /// any delivery that follows. `None` when the session has no live subscription there.
    pub(crate) fn with_live<R>(
        &self,
        channel: &str,
        session: u64,
        f: impl FnOnce(&Replay<'_>) -> R,
    ) -> Option<R> {
        let shard = lock(self.shard(channel));
        let subscriber = shard
            .get(channel)?
            .iter()
            .find(|s| s.session == session && s.setup.is_none())?;
        Some(f(&Replay {
            outbox: &subscriber.outbox,
            slot: subscriber.slot,
            policy: subscriber.policy,
            compressions: &self.compressions,
        }))
    }

    /// Removes a subscription. Returns `Some(true)` when it was the channel's last local one,
    /// `Some(false)` when others remain, `None` when the session was not subscribed.
    pub(crate) fn remove(&self, channel: &str, session: u64) -> Option<bool> {
        let mut shard = lock(self.shard(channel));
        let subscribers = shard.get_mut(channel)?;
        let index = subscribers.iter().position(|s| s.session == session)?;
        let subscriber = subscribers.swap_remove(index);
        subscriber.outbox.unregister(subscriber.slot);
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if subscribers.is_empty() {
            shard.remove(channel);
            self.channels.fetch_sub(1, Ordering::Relaxed);
            Some(true)
        } else {
            Some(false)
        }
    }

    /// A delivery to a subscriber that is still being set up.
    fn hold_pending(&self, subscriber: &mut Subscriber, publication: &Publication) {
        let Some(setup) = subscriber.setup.as_deref_mut() else {
            return;
        };
        if let Some((epoch, from, to)) = &mut setup.dropped {
            self.stats.count_drops(OnSlow::Gap, 1);
            if **epoch != *publication.epoch {
                *epoch = publication.epoch.clone();
                *from = None;
            }
            *to = publication.offset;
            return;
        }
        if setup.pending.len() < self.max_pending {
            setup.pending.push(publication.clone());
            return;
        }
        match subscriber.policy {
            OnSlow::Latest => {
                self.stats
                    .count_drops(OnSlow::Latest, setup.pending.len() as u64);
                setup.pending.clear();
                setup.pending.push(publication.clone());
            }
            OnSlow::Gap => {
                let from = setup
                    .pending
                    .iter()
                    .find(|p| *p.epoch == *publication.epoch)
                    .map_or(publication.offset, |p| p.offset);
                self.stats
                    .count_drops(OnSlow::Gap, setup.pending.len() as u64 + 1);
                setup.pending.clear();
                setup.dropped = Some((publication.epoch.clone(), Some(from), publication.offset));
            }
            _ => subscriber
                .outbox
                .close(wirehub_protocol::CloseCode::SlowConsumer),
        }
    }
}

impl Deliver for Fanout {
    /// Queues one `join`/`leave` frame, built once, for every live local subscriber of the
    /// channel (one still being set up reads the members after its `subscribed` instead);
    /// a connection of another dialect gets the dialect's frame ([`crate::Dialect::member`]). A
    /// subscriber whose queue cannot take it is a slow consumer.
    fn member(&self, channel: &str, event: wirehub_protocol::MemberEvent, member: &[u8]) {
        let shard = lock(self.shard(channel));
        let Some(subscribers) = shard.get(channel) else {
            return;
        };
        let mut json = Vec::new();
        wirehub_protocol::encode_member_event(&mut json, event, channel, member);
        let frame = wirehub_ws::encode_frame(wirehub_ws::OpCode::Text, &json);
        let mut delivered = 0;
        // Connections of another dialect get the dialect's frame, asked for once.
        let mut alternate: Option<Option<crate::broker::Alternate>> = None;
        for subscriber in subscribers.iter() {
            let frame = match subscriber.outbox.dialect() {
                None => Some(&frame),
                Some((dialect, tag)) => alternate
                    .get_or_insert_with(|| dialect.member(channel, event, member))
                    .as_ref()
                    .filter(|alternate| alternate.skip.as_deref() != Some(tag))
                    .map(|alternate| &alternate.frame),
            };
            if let Some(frame) = frame
                && subscriber.setup.is_none()
                && subscriber.outbox.push(frame.clone()).is_ok()
            {
                delivered += 1;
            }
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }

    fn deliver(&self, publication: &Publication) {
        let mut shard = lock(self.shard(&publication.channel));
        let Some(subscribers) = shard.get_mut(&*publication.channel) else {
            return;
        };
        let mut delivered = 0;
        for subscriber in subscribers.iter_mut() {
            if subscriber.setup.is_some() {
                self.hold_pending(subscriber, publication);
                continue;
            }
            // Without permessage-deflate, the plain frame; with it, the compressed frame,
            // built by the first such subscriber and shared by the others; for a connection
            // of another dialect, the dialect's frame, also built once.
            let Some(frame) = subscriber
                .outbox
                .frame_for(publication, Some(&self.compressions))
            else {
                continue;
            };
            let offered = subscriber.outbox.offer(
                subscriber.slot,
                subscriber.policy,
                frame,
                &publication.epoch,
                publication.offset,
            );
            if offered == Offered::Queued {
                delivered += 1;
            }
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }

    /// Sends every local subscriber of `channel` (pending ones too) a `gap` message with the
    /// stream's position now, built once and shared: the connection and its other
    /// subscriptions are untouched, and the client recovers with `subscribe` + `since`, which
    /// tells it whether the history still covers what it missed. A full outbox is handled as
    /// the subscription's policy says (see [`Outbox`]).
    fn lost(&self, channel: &str, epoch: &str, offset: u64) {
        let shard = lock(self.shard(channel));
        let Some(subscribers) = shard.get(channel) else {
            return;
        };
        let frame = crate::hub::text_frame(&wirehub_protocol::encode_server_message(
            &wirehub_protocol::ServerMessage::Gap {
                channel: channel.to_owned(),
                epoch: epoch.to_owned(),
                offset,
                from: None,
                to: None,
            },
        ));
        let epoch: Arc<str> = Arc::from(epoch);
        for subscriber in subscribers {
            subscriber
                .outbox
                .notice(subscriber.slot, subscriber.policy, &frame, &epoch, offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use serde_json::Value;

    use super::*;
    use crate::broker::encode_publication;
    use crate::outbox::OutboxLimits;
    use crate::policy::ChannelOptions;

    fn fanout(max_pending: usize) -> Fanout {
        Fanout::with_rules(
            max_pending,
            ChannelRules::new(vec![
                ChannelOptions::new("feed").on_slow(OnSlow::Gap),
                ChannelOptions::new("ticker").on_slow(OnSlow::Latest),
            ]),
        )
    }

    fn session(id: u64, max_frames: usize) -> SessionRef {
        SessionRef {
            id,
            outbox: Arc::new(Outbox::new(OutboxLimits {
                max_frames,
                max_bytes: 1 << 20,
            })),
        }
    }

    fn publish(fanout: &Fanout, channel: &str, offset: u64) {
        let publication = encode_publication(Arc::from(channel), Arc::from("e"), offset, b"{}");
        fanout.deliver(&publication);
    }

    /// What the session would write: (type, offset or gap range).
    fn drain(session: &SessionRef) -> Vec<String> {
        let mut out = VecDeque::new();
        session.outbox.drain_into(&mut out);
        out.iter()
            .map(|frame| {
                let json: Value = serde_json::from_slice(&frame[2..]).expect("JSON");
                match json["type"].as_str() {
                    Some("gap") => format!("gap {}-{}", json["from"], json["to"]),
                    Some(kind) => format!("{kind} {}", json["offset"]),
                    None => panic!("{json}"),
                }
            })
            .collect()
    }

    /// Subscribes `session` to `channel` with `during_setup` deliveries before it goes live
    /// at stream offset `at`.
    fn subscribe(fanout: &Fanout, session: &SessionRef, channel: &str, during_setup: u64, at: u64) {
        assert_ne!(fanout.add_pending(channel, session), Added::Duplicate);
        for offset in 1..=during_setup {
            publish(fanout, channel, offset);
        }
        let live = fanout.activate(channel, session.id, |queue| {
            queue.reply(crate::hub::text_frame(
                r#"{"type":"subscribed","offset":0}"#,
            ));
            (Arc::from("e"), at)
        });
        assert!(live);
    }

    #[test]
    fn a_full_setup_queue_follows_the_channels_policy() {
        let fanout = fanout(3);
        // gap: the deliveries after the position read are reported as one gap.
        let feed = session(1, 100);
        subscribe(&fanout, &feed, "feed", 10, 2);
        assert_eq!(drain(&feed), ["subscribed 0", "gap 3-10"]);
        publish(&fanout, "feed", 11);
        assert_eq!(drain(&feed), ["message 11"]);
        // latest: only the newest is kept.
        let ticker = session(2, 100);
        subscribe(&fanout, &ticker, "ticker", 10, 2);
        assert_eq!(drain(&ticker), ["subscribed 0", "message 10"]);
        // disconnect: the connection is closed as a slow consumer.
        let chat = session(3, 100);
        subscribe(&fanout, &chat, "chat", 10, 2);
        assert_eq!(
            chat.outbox.closed(),
            Some(wirehub_protocol::CloseCode::SlowConsumer)
        );
        // Within the bound, nothing is dropped.
        let calm = session(4, 100);
        subscribe(&fanout, &calm, "feed2", 3, 1);
        assert_eq!(drain(&calm), ["subscribed 0", "message 2", "message 3"]);
        assert_eq!(fanout.queue_stats().dropped(OnSlow::Gap), 10);
    }

    #[test]
    fn a_gap_covered_by_the_position_read_is_no_gap() {
        let fanout = fanout(3);
        let feed = session(1, 100);
        subscribe(&fanout, &feed, "feed", 10, 10);
        assert_eq!(drain(&feed), ["subscribed 0"]);
    }

    #[test]
    fn policies_are_per_subscription_on_a_shared_connection() {
        let fanout = fanout(100);
        let client = session(1, 4);
        let other = session(2, 100);
        for channel in ["feed", "ticker", "chat"] {
            subscribe(&fanout, &client, channel, 0, 0);
            subscribe(&fanout, &other, channel, 0, 0);
        }
        drain(&client);
        drain(&other);
        for offset in 1..=20 {
            publish(&fanout, "feed", offset);
            publish(&fanout, "ticker", offset);
            if offset % 10 == 0 {
                publish(&fanout, "chat", offset / 10);
            }
        }
        assert_eq!(client.outbox.closed(), None);
        // The feed's gap and the ticker's newest come after the chat lines, which are all
        // there.
        assert_eq!(
            drain(&client),
            ["message 1", "message 2", "gap 1-20", "message 20"]
        );
        // The other connection, not full, got everything.
        assert_eq!(drain(&other).len(), 42);
        // Unsubscribing forgets the subscription's gap.
        for offset in 21..=25 {
            publish(&fanout, "feed", offset);
        }
        assert_eq!(fanout.remove("feed", 1), Some(false));
        assert_eq!(drain(&client), Vec::<String>::new());
    }
}

#[cfg(test)]
mod deflate_tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::broker::encode_publication;
    use crate::outbox::OutboxLimits;

    fn session(id: u64, deflate: Option<usize>) -> SessionRef {
        SessionRef {
            id,
            outbox: Arc::new(
                Outbox::new(OutboxLimits {
                    max_frames: 100,
                    max_bytes: 1 << 20,
                })
                .with_deflate(deflate),
            ),
        }
    }

    fn live(fanout: &Fanout, session: &SessionRef, channel: &str) {
        assert_ne!(fanout.add_pending(channel, session), Added::Duplicate);
        assert!(fanout.activate(channel, session.id, |_| (Arc::from("e"), 0)));
    }

    fn drain(session: &SessionRef) -> Vec<Bytes> {
        let mut out = VecDeque::new();
        session.outbox.drain_into(&mut out);
        out.into()
    }

    const LARGE: &[u8] = br#"{"text":"a sentence that repeats, a sentence that repeats, a sentence that repeats, a sentence that repeats"}"#;

    #[test]
    fn issue_14_one_compression_per_publication_shared_by_every_deflate_subscriber() {
        let fanout = Fanout::new(16);
        let deflating: Vec<SessionRef> = (1..=50).map(|id| session(id, Some(64))).collect();
        let plain: Vec<SessionRef> = (51..=60).map(|id| session(id, None)).collect();
        for session in deflating.iter().chain(&plain) {
            live(&fanout, session, "news");
        }
        for offset in 1..=3 {
            let publication = encode_publication(Arc::from("news"), Arc::from("e"), offset, LARGE);
            fanout.deliver(&publication);
        }
        assert_eq!(fanout.compression_count(), 3);
        let first: Vec<Vec<Bytes>> = deflating.iter().map(drain).collect();
        for frames in &first {
            assert_eq!(frames.len(), 3);
            for (frame, reference) in frames.iter().zip(&first[0]) {
                // The very same buffer, not an equal copy.
                assert_eq!(frame.as_ptr(), reference.as_ptr());
                assert_eq!(frame[0], 0xC1, "FIN, RSV1, text");
            }
        }
        assert!(first[0][0].len() < LARGE.len());
        for session in &plain {
            for frame in drain(session) {
                assert_eq!(frame[0], 0x81, "plain text frame");
            }
        }
    }

    #[test]
    fn issue_14_no_compression_below_the_threshold_or_without_deflate_subscribers() {
        let fanout = Fanout::new(16);
        let plain = session(1, None);
        live(&fanout, &plain, "news");
        fanout.deliver(&encode_publication(
            Arc::from("news"),
            Arc::from("e"),
            1,
            LARGE,
        ));
        assert_eq!(fanout.compression_count(), 0);
        let small = session(2, Some(4096));
        live(&fanout, &small, "news");
        fanout.deliver(&encode_publication(
            Arc::from("news"),
            Arc::from("e"),
            2,
            LARGE,
        ));
        assert_eq!(fanout.compression_count(), 0);
        let plain_frames = drain(&plain);
        let small_frames = drain(&small);
        assert_eq!(small_frames.len(), 1);
        assert_eq!(small_frames[0].as_ptr(), plain_frames[1].as_ptr());
        assert_eq!(small_frames[0][0], 0x81);
    }
}
