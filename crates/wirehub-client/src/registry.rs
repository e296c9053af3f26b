//! The registry: what outlives a connection.
//!
//! The subscriptions the application holds (each with the last position handed to its
//! consumer, so that the next connection resubscribes with `since`), and the publishes held
//! while no connection is ready. The connection task ([`crate::connection`]) owns one
//! [`Registry`] for its whole life and consults it on every frame and command; nothing here
//! touches the socket.
//!
//! # Flow control: every message, or an explicit gap
//!
//! Each subscription's queue is bounded ([`ClientConfig::subscription_capacity`]). A delivery
//! is handed over only when it fits, and the subscription's position then advances to it:
//! the position is always that of the last item the consumer will see. When the queue is
//! full the subscription *stalls*: deliveries for it are dropped, its position stays, and a
//! waiter ([`Registry::drained`]) resolves once the consumer has made room for half the
//! queue. The connection task then catches up from the server's history (`unsubscribe`, then
//! `subscribe` with `since` = the position), exactly as after a reconnect: the replay goes
//! through the same bounded queue (a replay larger than the queue stalls again, at a later
//! position, so catching up converges), and only when the history no longer covers the
//! position does the consumer get [`SubscriptionEvent::RecoveryFailed`], at that point of the
//! stream. Other subscriptions on the connection flow on meanwhile.

use std::collections::{BTreeMap, VecDeque};

use futures_util::StreamExt;
use std::future::Future;
use std::pin::Pin;

use futures_util::future::{AbortHandle, Abortable};
use futures_util::stream::FuturesUnordered;
use serde_json::value::RawValue;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use wirehub_protocol::StreamPosition;

use crate::client::Command;
use crate::{ClientConfig, Error, Event, Message, Result, Subscription, SubscriptionEvent};

/// The subscriptions and held publishes of one client.
pub(crate) struct Registry {
    /// Every registered subscription, by channel.
    pub(crate) subscriptions: BTreeMap<String, Registration>,
    /// Publishes held until the next connection is ready, in order.
    pub(crate) buffer: VecDeque<BufferedPublish>,
    /// Given to each [`Subscription`] so that dropping it can unsubscribe; weak so that the
    /// task does not keep itself alive.
    command_sender: mpsc::WeakSender<Command>,
    next_key: u64,
    /// One waiter per stalled subscription: resolves with its channel and key once its
    /// consumer made room (or dropped the subscription).
    drains: FuturesUnordered<Abortable<Waiter>>,
}

/// Resolves with a subscription's channel and key once its consumer made room. `Sync` so
/// that the connection task can be borrowed across an await.
type Waiter = Pin<Box<dyn Future<Output = (String, u64)> + Send + Sync>>;

/// What became of a delivery offered to a subscription.
pub(crate) enum Offer {
    /// Queued for the consumer; the subscription's position advanced to it.
    Queued,
    /// Not queued, and nothing is lost: a duplicate, a delivery of an earlier server-side
    /// subscription while catching up, or the subscription is stalled (it catches up from
    /// history once its consumer made room).
    Skipped,
    /// The application dropped the [`Subscription`] of this channel: the server must be
    /// told to stop.
    Abandoned(String),
}

/// A channel the application subscribed to; kept across reconnects.
pub(crate) struct Registration {
    pub(crate) key: u64,
    pub(crate) sender: mpsc::Sender<SubscriptionEvent>,
    /// The position of the last item handed to the consumer (from `subscribed` and every
    /// queued `message`): what a resubscription or a catch-up asks for with `since`.
    pub(crate) position: Option<StreamPosition>,
    /// The caller of `subscribe` still waiting for the first `subscribed`, with the
    /// subscription it will get.
    pub(crate) waiting: Option<(oneshot::Sender<Result<Subscription>>, Subscription)>,
    /// Whether `subscribe` was sent on the current connection.
    pub(crate) sent: bool,
    /// The id of the `subscribe` awaiting its answer, so that a late answer to an earlier
    /// request (before an unsubscribe) is not taken for this one.
    pub(crate) in_flight: Option<u64>,
    /// Set while the consumer's queue is full, or while a subscribe the server refused for
    /// a passing reason waits for its retry ([`Registry::retry_later`]): deliveries are
    /// skipped until the waiter in [`Registry::drained`] resolves, then the subscription
    /// catches up from history.
    pub(crate) stalled: Option<AbortHandle>,
    /// Consecutive passing refusals of this subscription's `subscribe` (`k` of the retry
    /// backoff); back to 0 once the server confirms it.
    pub(crate) refusals: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // The waiter holds a sender of the queue: let it go, so that the stream ends.
        if let Some(stalled) = self.stalled.take() {
            stalled.abort();
        }
    }
}

/// A publish waiting to be sent or acknowledged.
pub(crate) struct BufferedPublish {
    pub(crate) channel: String,
    pub(crate) data: Box<RawValue>,
    /// Sent with the publish, so that sending it again after a lost ack is safe.
    pub(crate) key: Option<Box<str>>,
    pub(crate) reply: oneshot::Sender<Result<u64>>,
}

impl Registry {
    pub(crate) fn new(command_sender: mpsc::WeakSender<Command>) -> Self {
        Registry {
            subscriptions: BTreeMap::new(),
            buffer: VecDeque::new(),
            command_sender,
            next_key: 1,
            drains: FuturesUnordered::new(),
        }
    }

    /// Waits until a stalled subscription's consumer has made room, clears its stall and
    /// returns its channel: the caller catches it up from history. Pending while nothing is
    /// stalled. Cancel-safe: a waiter that resolved is handled before the next await.
    pub(crate) async fn drained(&mut self) -> String {
        loop {
            let Some(resolved) = self.drains.next().await else {
                return std::future::pending().await;
            };
            let Ok((channel, key)) = resolved else {
                continue;
            };
            if let Some(registration) = self.subscriptions.get_mut(&channel)
                && registration.key == key
                && registration.stalled.take().is_some()
            {
                return channel;
            }
        }
    }

    /// Offers a delivery to the channel's subscription.
    pub(crate) fn offer(&mut self, config: &ClientConfig, message: Message) -> Offer {
        let Some(registration) = self.subscriptions.get_mut(&message.channel) else {
            return Offer::Skipped;
        };
        if registration.in_flight.is_some() || registration.stalled.is_some() {
            // While a (re)subscription is in flight, what arrives belongs to the previous
            // server-side subscription; the new one replays from the position.
            return Offer::Skipped;
        }
        if let Some(position) = &registration.position
            && message.offset <= position.offset
        {
            tracing::debug!(
                channel = message.channel,
                offset = message.offset,
                last = position.offset,
                "dropping a duplicate"
            );
            return Offer::Skipped;
        }
        if registration.sender.is_closed() && registration.waiting.is_none() {
            return Offer::Abandoned(message.channel);
        }
        let offset = message.offset;
        match registration
            .sender
            .try_send(SubscriptionEvent::Message(message))
        {
            Ok(()) => {
                if let Some(position) = &mut registration.position {
                    position.offset = offset;
                }
                Offer::Queued
            }
            Err(TrySendError::Full(SubscriptionEvent::Message(message))) => {
                tracing::debug!(
                    channel = message.channel,
                    offset,
                    "the consumer is behind: catching up from history once it made room"
                );
                let channel = message.channel;
                self.stall(config, &channel);
                Offer::Skipped
            }
            Err(TrySendError::Full(_)) => Offer::Skipped,
            Err(TrySendError::Closed(event)) => match event {
                SubscriptionEvent::Message(message) => Offer::Abandoned(message.channel),
                _ => Offer::Skipped,
            },
        }
    }

    /// Stops queueing for a subscription until its consumer has made room for half the queue.
    fn stall(&mut self, config: &ClientConfig, channel: &str) {
        let Some(registration) = self.subscriptions.get_mut(channel) else {
            return;
        };
        if registration.stalled.is_some() {
            return;
        }
        let room = (config.subscription_capacity.max(1) / 2).max(1);
        let sender = registration.sender.clone();
        let owner = (channel.to_owned(), registration.key);
        let (handle, registration_handle) = AbortHandle::new_pair();
        let wait: Waiter = Box::pin(async move {
            // Fails at once when the consumer is gone: the caller then finds out.
            let _ = sender.reserve_many(room).await;
            owner
        });
        self.drains.push(Abortable::new(wait, registration_handle));
        registration.stalled = Some(handle);
    }

    /// Catches a subscription up from its position again after `delay`: the server refused
    /// its `subscribe` for a passing reason. Nothing is subscribed on the server meanwhile;
    /// deliveries are skipped (none should come) and [`Registry::drained`] returns the
    /// channel when the delay is over. A reconnect meanwhile resubscribes it at `welcome`
    /// only after the delay, as the waiter is still pending then.
    pub(crate) fn retry_later(&mut self, channel: &str, delay: std::time::Duration) {
        let Some(registration) = self.subscriptions.get_mut(channel) else {
            return;
        };
        registration.in_flight = None;
        registration.sent = false;
        if let Some(stalled) = registration.stalled.take() {
            stalled.abort();
        }
        let owner = (channel.to_owned(), registration.key);
        let (handle, registration_handle) = AbortHandle::new_pair();
        let wait: Waiter = Box::pin(async move {
            tokio::time::sleep(delay).await;
            owner
        });
        self.drains.push(Abortable::new(wait, registration_handle));
        registration.stalled = Some(handle);
    }

    /// Handles the server's `subscribed` for a registration's pending request: sets the
    /// position to continue from and, when the server could not replay everything since the
    /// last position handed over, queues [`SubscriptionEvent::RecoveryFailed`] at this point
    /// of the stream. Returns the event to tell the application.
    pub(crate) fn on_subscribed(
        &mut self,
        config: &ClientConfig,
        channel: &str,
        id: u64,
        position: StreamPosition,
        recovered: Option<bool>,
    ) -> Option<Event> {
        let registration = self.subscriptions.get_mut(channel)?;
        if registration.in_flight != Some(id) {
            return None;
        }
        registration.in_flight = None;
        registration.refusals = 0;
        let since = registration.position.take();
        let lost = match (&since, recovered) {
            (None, _) => false,
            (Some(_), Some(false)) => true,
            // Replayed messages (before or after this answer) advance the offset themselves.
            (Some(since), Some(true)) => since.epoch != position.epoch,
            // A server that does not say: only an unchanged position proves nothing was missed.
            (Some(since), None) => *since != position,
        };
        let mut event = None;
        let mut stall = false;
        match since {
            Some(since) if !lost && since.epoch == position.epoch => {
                registration.position = Some(since);
            }
            Some(since) if lost => {
                let notice = SubscriptionEvent::RecoveryFailed {
                    since: since.clone(),
                    position: position.clone(),
                };
                match registration.sender.try_send(notice) {
                    Ok(()) => {
                        tracing::debug!(channel, ?since, ?position, ?recovered, "recovery failed");
                        event = Some(Event::RecoveryFailed {
                            channel: channel.to_owned(),
                            since,
                            position: position.clone(),
                        });
                        registration.position = Some(position);
                    }
                    Err(TrySendError::Full(_)) => {
                        // No room for the notice: keep the old position; the catch-up once
                        // the consumer made room finds the same loss and reports it then.
                        registration.position = Some(since);
                        stall = true;
                    }
                    Err(TrySendError::Closed(_)) => registration.position = Some(position),
                }
            }
            _ => registration.position = Some(position),
        }
        if let Some((reply, subscription)) = registration.waiting.take() {
            // If the caller gave up meanwhile, the returned subscription is dropped here,
            // which unsubscribes.
            let _ = reply.send(Ok(subscription));
        }
        if stall {
            self.stall(config, channel);
        }
        event
    }

    /// Whether a `gap` from the server calls for catching up now: not while a
    /// (re)subscription is in flight (the gap is the previous server-side subscription's) or
    /// the subscription is stalled (it catches up once its consumer made room).
    pub(crate) fn catch_up_after_gap(&self, channel: &str) -> bool {
        self.subscriptions.get(channel).is_some_and(|registration| {
            registration.sent && registration.in_flight.is_none() && registration.stalled.is_none()
        })
    }

    /// Registers a subscription. Returns the channel when `subscribe` must be sent for it.
    pub(crate) fn register(
        &mut self,
        config: &ClientConfig,
        channel: String,
        reply: oneshot::Sender<Result<Subscription>>,
    ) -> Option<String> {
        let Some(commands) = self.command_sender.upgrade() else {
            // Every handle is gone; nobody will read the answer.
            return None;
        };
        let key = self.next_key;
        self.next_key += 1;
        let (sender, receiver) = mpsc::channel(config.subscription_capacity.max(1));
        let subscription = Subscription::new(
            channel.clone(),
            key,
            receiver,
            commands,
            config.request_timeout,
        );
        match self.subscriptions.get_mut(&channel) {
            Some(waiting)
                if waiting
                    .waiting
                    .as_ref()
                    .is_some_and(|(old, _)| old.is_closed()) =>
            {
                // An earlier `subscribe` for this channel timed out before the server
                // answered: this caller takes its place.
                if let Some((_, abandoned)) = waiting.waiting.take() {
                    abandoned.disarm();
                }
                waiting.key = key;
                waiting.sender = sender;
                waiting.waiting = Some((reply, subscription));
                None
            }
            Some(existing) if !existing.sender.is_closed() || existing.waiting.is_some() => {
                let _ = reply.send(Err(Error::AlreadySubscribed { channel }));
                None
            }
            Some(stale) => {
                // The old Subscription was dropped but the server-side subscription is
                // still in place: hand the channel to the new one. (The old one's
                // unsubscribe, if still queued, carries the old key and is ignored.)
                stale.key = key;
                stale.sender = sender;
                if let Some(stalled) = stale.stalled.take() {
                    // The new consumer's queue is empty: catch up at once.
                    stalled.abort();
                    let owner = (channel.clone(), key);
                    let (handle, registration_handle) = AbortHandle::new_pair();
                    let ready: Waiter = Box::pin(std::future::ready(owner));
                    self.drains.push(Abortable::new(ready, registration_handle));
                    stale.stalled = Some(handle);
                }
                // If the caller is gone, dropping the subscription unsubscribes again.
                let _ = reply.send(Ok(subscription));
                None
            }
            None => {
                self.subscriptions.insert(
                    channel.clone(),
                    Registration {
                        key,
                        sender,
                        position: None,
                        waiting: Some((reply, subscription)),
                        sent: false,
                        in_flight: None,
                        stalled: None,
                        refusals: 0,
                    },
                );
                Some(channel)
            }
        }
    }

    /// Removes a registration; returns whether `unsubscribe` must be sent to the server.
    pub(crate) fn unregister(&mut self, channel: &str, key: Option<u64>) -> bool {
        match self.subscriptions.get(channel) {
            Some(registration) if key.is_none_or(|key| key == registration.key) => {
                let sent = registration.sent;
                if let Some(mut registration) = self.subscriptions.remove(channel)
                    && let Some((reply, subscription)) = registration.waiting.take()
                {
                    let _ = reply.send(Err(Error::Closed));
                    subscription.disarm();
                }
                sent
            }
            _ => false,
        }
    }

    /// Holds a publish until the next session, or refuses it when the buffer is full.
    pub(crate) fn hold(
        &mut self,
        config: &ClientConfig,
        channel: String,
        data: Box<RawValue>,
        key: Option<Box<str>>,
        reply: oneshot::Sender<Result<u64>>,
    ) {
        if reply.is_closed() {
            return;
        }
        if self.buffer.len() >= config.publish_buffer {
            let _ = reply.send(Err(Error::BufferFull {
                capacity: config.publish_buffer,
            }));
            return;
        }
        let publish = Self::keyed(config, channel, data, key, reply);
        self.buffer.push_back(publish);
    }

    /// A publish with its idempotency key: the caller's, else a fresh random one (128 bits,
    /// hex) when publishes are retried.
    pub(crate) fn keyed(
        config: &ClientConfig,
        channel: String,
        data: Box<RawValue>,
        key: Option<Box<str>>,
        reply: oneshot::Sender<Result<u64>>,
    ) -> BufferedPublish {
        let key = key.or_else(|| {
            config
                .retry_publishes
                .then(|| format!("{:032x}", rand::random::<u128>()).into_boxed_str())
        });
        BufferedPublish {
            channel,
            data,
            key,
            reply,
        }
    }
}

/// Queues a subscription's last item, [`SubscriptionEvent::Ended`]. When the queue is full, a
/// task hands it over once the consumer made room, so that the consumer still learns why its
/// stream ended, after everything that came before.
pub(crate) fn end_stream(sender: &mpsc::Sender<SubscriptionEvent>, error: Error) {
    if let Err(TrySendError::Full(last)) = sender.try_send(SubscriptionEvent::Ended(error)) {
        let sender = sender.clone();
        tokio::spawn(async move {
            let _ = sender.send(last).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    fn message(offset: u64) -> Message {
        Message {
            channel: "c".into(),
            data: serde_json::value::to_raw_value(&offset).expect("JSON"),
            offset,
        }
    }

    /// A registry with one confirmed subscription to `c` whose queue holds 4.
    fn subscribed() -> (Registry, ClientConfig, mpsc::Sender<Command>, Subscription) {
        let config = ClientConfig::new("ws://127.0.0.1:1/ws").subscription_capacity(4);
        let (commands, _receiver) = mpsc::channel(8);
        let mut registry = Registry::new(commands.downgrade());
        let (reply, mut answer) = oneshot::channel();
        assert_eq!(
            registry.register(&config, "c".into(), reply).as_deref(),
            Some("c")
        );
        registry
            .subscriptions
            .get_mut("c")
            .expect("registered")
            .in_flight = Some(1);
        let position = StreamPosition {
            epoch: "e".into(),
            offset: 0,
        };
        assert!(
            registry
                .on_subscribed(&config, "c", 1, position, None)
                .is_none()
        );
        let subscription = answer.try_recv().expect("answered").expect("subscribed");
        (registry, config, commands, subscription)
    }

    fn offset_of(item: Option<SubscriptionEvent>) -> u64 {
        match item {
            Some(SubscriptionEvent::Message(message)) => message.offset,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_stalls_until_half_of_it_was_read_and_the_wait_is_cancel_safe() {
        let (mut registry, config, _commands, mut subscription) = subscribed();
        for offset in 1..=4 {
            assert!(matches!(
                registry.offer(&config, message(offset)),
                Offer::Queued
            ));
        }
        // The fifth does not fit: skipped, and so is everything after it, while stalled.
        for offset in 5..=7 {
            assert!(matches!(
                registry.offer(&config, message(offset)),
                Offer::Skipped
            ));
        }
        let registration = &registry.subscriptions["c"];
        assert!(registration.stalled.is_some());
        assert_eq!(registration.position.as_ref().map(|p| p.offset), Some(4));

        // A wait started and abandoned (as a `select!` does) loses nothing.
        assert!(registry.drained().now_or_never().is_none());
        assert_eq!(offset_of(subscription.recv().await), 1);
        assert!(
            registry.drained().now_or_never().is_none(),
            "one read is not half"
        );
        assert_eq!(offset_of(subscription.recv().await), 2);
        let channel = tokio::time::timeout(Duration::from_secs(5), registry.drained())
            .await
            .expect("room for half the queue");
        assert_eq!(channel, "c");
        assert!(registry.subscriptions["c"].stalled.is_none());
        // Nothing more to wait for.
        assert!(registry.drained().now_or_never().is_none());
    }

    #[tokio::test]
    async fn duplicates_are_skipped_and_a_dropped_consumer_is_abandoned() {
        let (mut registry, config, _commands, subscription) = subscribed();
        assert!(matches!(registry.offer(&config, message(1)), Offer::Queued));
        assert!(matches!(
            registry.offer(&config, message(1)),
            Offer::Skipped
        ));
        drop(subscription);
        assert!(matches!(
            registry.offer(&config, message(2)),
            Offer::Abandoned(channel) if channel == "c"
        ));
    }

    #[tokio::test]
    async fn a_stalled_consumer_that_goes_away_ends_the_wait() {
        let (mut registry, config, _commands, subscription) = subscribed();
        for offset in 1..=5 {
            registry.offer(&config, message(offset));
        }
        assert!(registry.subscriptions["c"].stalled.is_some());
        drop(subscription);
        let channel = tokio::time::timeout(Duration::from_secs(5), registry.drained())
            .await
            .expect("the wait ends with the consumer");
        assert_eq!(channel, "c");
    }
}
