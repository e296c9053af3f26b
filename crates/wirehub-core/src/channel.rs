//! The node's local subscribers, per channel: the fan-out side of the hub.
//!
//! A sharded map from channel name to the outboxes of the sessions subscribed here. A
//! publication is pushed (the same shared frame) into every subscriber's [`Outbox`]; a full
//! outbox closes its session as a slow consumer and never slows the others down. A channel
//! entry is removed with its last subscriber.
//!
//! A subscriber joins *pending*: deliveries are buffered until the hub has read the stream's
//! position (and replayed history), then [`Fanout::activate`] flushes what came after that
//! position. This is what makes the seam between replay and live messages exact.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::broker::{Deliver, Publication};
use crate::outbox::{Outbox, lock};

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
    /// Deliveries held back while the subscription is being set up.
    pending: Option<Vec<Publication>>,
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
    max_pending: usize,
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

impl Fanout {
    /// An empty registry. `max_pending` bounds the deliveries held for one subscriber while its
    /// subscription is set up (beyond it, the subscriber is a slow consumer).
    pub fn new(max_pending: usize) -> Self {
        Fanout {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            subscriptions: AtomicUsize::new(0),
            channels: AtomicUsize::new(0),
            deliveries: AtomicUsize::new(0),
            max_pending,
        }
    }

    fn shard(&self, channel: &str) -> &Shard {
        let index = (self.hasher.hash_one(channel) as usize) % self.shards.len();
        &self.shards[index]
    }

    /// Subscriptions held on this node.
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

    pub(crate) fn add_pending(&self, channel: &str, session: &SessionRef) -> Added {
        let mut shard = lock(self.shard(channel));
        let subscribers = match shard.get_mut(channel) {
            Some(subscribers) => subscribers,
            None => {
                self.channels.fetch_add(1, Ordering::Relaxed);
                shard.entry(Arc::from(channel)).or_default()
            }
        };
        if subscribers.iter().any(|s| s.session == session.id) {
            return Added::Duplicate;
        }
        subscribers.push(Subscriber {
            session: session.id,
            outbox: session.outbox.clone(),
            pending: Some(Vec::new()),
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
        before_live: impl FnOnce(&Outbox) -> (Arc<str>, u64),
    ) -> bool {
        let mut shard = lock(self.shard(channel));
        let Some(subscriber) = shard
            .get_mut(channel)
            .and_then(|subs| subs.iter_mut().find(|s| s.session == session))
        else {
            return false;
        };
        let (epoch, offset) = before_live(&subscriber.outbox);
        for publication in subscriber.pending.take().unwrap_or_default() {
            if publication.offset > offset || *publication.epoch != *epoch {
                if subscriber.outbox.push(publication.frame).is_err() {
                    break;
                }
                self.deliveries.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// Removes a subscription. Returns `Some(true)` when it was the channel's last local one,
    /// `Some(false)` when others remain, `None` when the session was not subscribed.
    pub(crate) fn remove(&self, channel: &str, session: u64) -> Option<bool> {
        let mut shard = lock(self.shard(channel));
        let subscribers = shard.get_mut(channel)?;
        let index = subscribers.iter().position(|s| s.session == session)?;
        subscribers.swap_remove(index);
        self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        if subscribers.is_empty() {
            shard.remove(channel);
            self.channels.fetch_sub(1, Ordering::Relaxed);
            Some(true)
        } else {
            Some(false)
        }
    }
}

impl Deliver for Fanout {
    fn deliver(&self, publication: &Publication) {
        let mut shard = lock(self.shard(&publication.channel));
        let Some(subscribers) = shard.get_mut(&*publication.channel) else {
            return;
        };
        let mut delivered = 0;
        for subscriber in subscribers.iter_mut() {
            match &mut subscriber.pending {
                None => {
                    if subscriber.outbox.push(publication.frame.clone()).is_ok() {
                        delivered += 1;
                    }
                }
                Some(pending) if pending.len() < self.max_pending => {
                    pending.push(publication.clone());
                }
                Some(_) => {
                    subscriber
                        .outbox
                        .close(wirehub_protocol::CloseCode::SlowConsumer);
                }
            }
        }
        self.deliveries.fetch_add(delivered, Ordering::Relaxed);
    }

    /// Sends every local subscriber of `channel` (pending ones too) a `gap` message with the
    /// stream's position now, built once and shared: the connection and its other
    /// subscriptions are untouched, and the client recovers with `subscribe` + `since`, which
    /// tells it whether the history still covers what it missed.
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
        for subscriber in subscribers {
            // A full outbox closes the connection as a slow consumer, as for any frame.
            let _ = subscriber.outbox.push(frame.clone());
        }
    }
}
