//! [`Subscription`]: the stream of one channel's deliveries.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use wirehub_protocol::StreamPosition;

use crate::client::Command;
use crate::{Error, Result};

/// A message delivered on a subscribed channel.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Message {
    /// The channel it was published to.
    pub channel: String,
    /// The published JSON, verbatim.
    pub data: Box<RawValue>,
    /// Its offset in the channel's stream (strictly increasing within an epoch).
    pub offset: u64,
}

impl Message {
    /// The published JSON text, e.g. `{"text":"hi"}`.
    pub fn json(&self) -> &str {
        self.data.get()
    }

    /// Deserializes the data into `T`.
    ///
    /// # Errors
    /// [`Error::Json`] when the data does not match `T`.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(serde_json::from_str(self.data.get())?)
    }
}

/// One item of a [`Subscription`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SubscriptionEvent {
    /// A delivered message.
    Message(Message),
    /// Messages after `since` up to `position` are lost for this subscriber: the server's
    /// history no longer has them (or the stream restarted in a new epoch). It comes at the
    /// place of the loss: every message up to `since` came before it, and deliveries continue
    /// after `position`. Sent when a resubscription after a reconnect, or a catch-up after the
    /// consumer fell behind or the server sent `gap`, could not replay everything. (The client
    /// also emits [`Event::RecoveryFailed`](crate::Event::RecoveryFailed).)
    RecoveryFailed {
        /// The position of the last message this subscription handed over.
        since: StreamPosition,
        /// The stream's position now.
        position: StreamPosition,
    },
    /// Never produced since the client catches a slow consumer up from history instead of
    /// dropping deliveries (a loss is [`SubscriptionEvent::RecoveryFailed`]); kept so that
    /// existing `match`es compile.
    Lagged {
        /// How many deliveries were dropped.
        missed: u64,
    },
    /// The subscription ended: the server refused to restore it after a reconnect, or the
    /// client stopped. This is the last item.
    Ended(Error),
}

/// The deliveries of one subscribed channel, as a [`Stream`] of [`SubscriptionEvent`]s.
///
/// Every message, in order, or an explicit gap: never a silent drop. The client keeps the
/// subscription across reconnects and resubscribes with the position of the last message
/// it handed over, so missed messages are replayed when the server still has them. A
/// consumer that reads too slowly for its queue
/// ([`ClientConfig::subscription_capacity`](crate::ClientConfig::subscription_capacity))
/// loses nothing either: the client stops queueing for it, and once it has read half the
/// queue, catches up from the server's history. Only what the history no longer holds is
/// lost, reported as [`SubscriptionEvent::RecoveryFailed`] at its place in the stream.
/// Duplicates (an offset not above the last one handed over in the same epoch) are dropped.
///
/// Dropping a `Subscription` unsubscribes (without waiting for the server);
/// [`Subscription::unsubscribe`] does the same and waits for the server's answer.
pub struct Subscription {
    channel: String,
    key: u64,
    receiver: mpsc::Receiver<SubscriptionEvent>,
    commands: mpsc::Sender<Command>,
    request_timeout: std::time::Duration,
    active: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(
        channel: String,
        key: u64,
        receiver: mpsc::Receiver<SubscriptionEvent>,
        commands: mpsc::Sender<Command>,
        request_timeout: std::time::Duration,
    ) -> Self {
        Subscription {
            channel,
            key,
            receiver,
            commands,
            request_timeout,
            active: true,
        }
    }

    /// Drops the subscription without unsubscribing (the connection task already
    /// removed it).
    pub(crate) fn disarm(mut self) {
        self.active = false;
    }

    /// The subscribed channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Waits for the next item; `None` after [`SubscriptionEvent::Ended`] (or when the
    /// client's connection task is gone).
    pub async fn recv(&mut self) -> Option<SubscriptionEvent> {
        self.receiver.recv().await
    }

    /// Waits for the next delivered message, skipping gap notifications
    /// ([`SubscriptionEvent::RecoveryFailed`]).
    ///
    /// # Errors
    /// The error that ended the subscription, or [`Error::Closed`] when the client is gone.
    pub async fn next_message(&mut self) -> Result<Message> {
        loop {
            match self.receiver.recv().await {
                Some(SubscriptionEvent::Message(message)) => return Ok(message),
                Some(SubscriptionEvent::Ended(error)) => return Err(error),
                Some(_) => continue,
                None => return Err(Error::Closed),
            }
        }
    }

    /// Unsubscribes and waits for the server's answer.
    ///
    /// # Errors
    /// [`Error::Timeout`] after the request timeout, or the client's fatal error. When the
    /// client is disconnected there is nothing to tell the server, and this succeeds at once.
    pub async fn unsubscribe(mut self) -> Result<()> {
        self.active = false;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let command = Command::Unsubscribe {
            channel: self.channel.clone(),
            key: Some(self.key),
            reply: Some(reply),
        };
        if self.commands.send(command).await.is_err() {
            return Ok(());
        }
        match tokio::time::timeout(self.request_timeout, answer).await {
            Ok(Ok(result)) => result,
            // The connection task is gone, and the subscription with it.
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(Error::Timeout),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.active {
            // Best effort: if the command queue is full, the connection task notices the
            // closed receiver at the next delivery and unsubscribes then.
            let _ = self.commands.try_send(Command::Unsubscribe {
                channel: std::mem::take(&mut self.channel),
                key: Some(self.key),
                reply: None,
            });
        }
    }
}

impl Stream for Subscription {
    type Item = SubscriptionEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}
