//! The registry: what outlives a connection.
//!
//! The subscriptions the application holds (each with the last position handed to its
//! consumer, so that the next connection resubscribes with `since`), and the publishes held
//! while no connection is ready. The connection task ([`crate::connection`]) owns one
//! [`Registry`] for its whole life and consults it on every frame and command; nothing here
//! touches the socket.

use std::collections::{BTreeMap, VecDeque};

use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use wirehub_protocol::StreamPosition;

use crate::client::Command;
use crate::{ClientConfig, Error, Result, Subscription, SubscriptionEvent};

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
}

/// A channel the application subscribed to; kept across reconnects.
pub(crate) struct Registration {
    pub(crate) key: u64,
    pub(crate) sender: mpsc::Sender<SubscriptionEvent>,
    /// The last position seen (from `subscribed` and every `message`).
    pub(crate) position: Option<StreamPosition>,
    /// The caller of `subscribe` still waiting for the first `subscribed`, with the
    /// subscription it will get.
    pub(crate) waiting: Option<(oneshot::Sender<Result<Subscription>>, Subscription)>,
    /// Whether `subscribe` was sent on the current connection.
    pub(crate) sent: bool,
    /// The id of the `subscribe` awaiting its answer, so that a late answer to an earlier
    /// request (before an unsubscribe) is not taken for this one.
    pub(crate) in_flight: Option<u64>,
    /// Deliveries dropped because the subscription's queue was full, not yet reported.
    pub(crate) missed: u64,
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
        }
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
                waiting.missed = 0;
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
                stale.missed = 0;
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
                        missed: 0,
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

/// Pushes an item to a subscription; reports earlier drops first. `false` when the
/// subscription's receiver is gone.
pub(crate) fn deliver(registration: &mut Registration, event: SubscriptionEvent) -> bool {
    use mpsc::error::TrySendError;
    if registration.missed > 0 {
        let lagged = SubscriptionEvent::Lagged {
            missed: registration.missed,
        };
        match registration.sender.try_send(lagged) {
            Ok(()) => registration.missed = 0,
            Err(TrySendError::Full(_)) => {
                registration.missed += 1;
                return true;
            }
            Err(TrySendError::Closed(_)) => return false,
        }
    }
    match registration.sender.try_send(event) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            registration.missed += 1;
            true
        }
        Err(TrySendError::Closed(_)) => false,
    }
}
