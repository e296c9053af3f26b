//! Connection state changes, reported as a stream of [`Event`]s.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use wirehub_protocol::{Member, StreamPosition};

use crate::Error;

/// A change in the client's connection state, or something the application must know.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A connection attempt starts. `attempt` counts attempts since the last healthy
    /// connection, starting at 1.
    Connecting {
        /// The attempt number.
        attempt: u32,
    },
    /// A connection attempt failed before the WebSocket handshake completed.
    ConnectFailed {
        /// What went wrong.
        error: Error,
    },
    /// The server's `welcome` arrived: the connection is up. Subscriptions are being
    /// restored and buffered publishes sent.
    Connected {
        /// The session id the server assigned.
        session: String,
        /// Whether permessage-deflate was negotiated on this connection (see
        /// [`ClientConfig::compression`](crate::ClientConfig::compression)).
        compression: bool,
    },
    /// An established connection ended.
    Disconnected {
        /// The close code, when the server sent a close frame with one.
        code: Option<u16>,
        /// The close reason, or a description of why the connection was dropped
        /// (e.g. `"no pong within 10s"`).
        reason: String,
    },
    /// The client waits `delay` before attempt number `attempt`.
    Reconnecting {
        /// The attempt number that follows the delay.
        attempt: u32,
        /// The delay: the backoff delay (see [`Backoff`](crate::Backoff)), or the wait the
        /// server asked for.
        delay: Duration,
        /// Where the delay comes from.
        reason: ReconnectReason,
    },
    /// A resubscription after a reconnect, or a catch-up after the consumer fell behind or
    /// the server sent `gap`, could not replay every missed message: the history no longer
    /// has them. The application missed messages on `channel` and should reload its state;
    /// the subscription yields
    /// [`SubscriptionEvent::RecoveryFailed`](crate::SubscriptionEvent::RecoveryFailed) at the
    /// place of the loss.
    RecoveryFailed {
        /// The channel.
        channel: String,
        /// The position of the last message handed to the subscription's consumer.
        since: StreamPosition,
        /// The stream's position now; deliveries continue from here.
        position: StreamPosition,
    },
    /// The server refused a resubscription after a reconnect, or a catch-up, for a passing
    /// reason ([`Error::is_transient`]: `internal`, e.g. its broker is unavailable, or
    /// `rate_limited`): the subscription stays, and `subscribe` with the same `since` is
    /// sent again after `delay` (see
    /// [`ClientConfig::resubscribe_backoff`](crate::ClientConfig::resubscribe_backoff)).
    /// Its consumer sees nothing but the delay. Informational.
    SubscribeRetrying {
        /// The channel.
        channel: String,
        /// The server's refusal.
        error: Error,
        /// How long the client waits before asking again.
        delay: Duration,
    },
    /// The server refused a resubscription after a reconnect, or a catch-up, for good
    /// (e.g. `forbidden`, `invalid_channel`, `too_many_subscriptions`), or ended
    /// a subscription on its own (e.g. a refreshed token no longer allows the channel); the
    /// subscription ended with the same error.
    SubscriptionEnded {
        /// The channel.
        channel: String,
        /// The server's error.
        error: Error,
    },
    /// The client stopped for good and will not reconnect. `error` is `None` after
    /// [`Client::close`](crate::Client::close).
    Stopped {
        /// Why the client stopped.
        error: Option<Error>,
    },
    /// A member joined a presence channel this client is subscribed to (see
    /// [`Client::presence`](crate::Client::presence)); also the client's own join, after
    /// its subscription was confirmed.
    Join {
        /// The channel.
        channel: String,
        /// Who joined.
        member: Member,
    },
    /// A member left a presence channel this client is subscribed to.
    Leave {
        /// The channel.
        channel: String,
        /// Who left.
        member: Member,
    },
    /// This event stream was read too slowly and `missed` events were dropped from it.
    Lagged {
        /// How many events were skipped.
        missed: u64,
    },
}

/// Why the client waits as long as it does before reconnecting
/// ([`Event::Reconnecting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconnectReason {
    /// The client's own schedule ([`Backoff`](crate::Backoff)).
    Backoff,
    /// The server refused the upgrade as overloaded with this `Retry-After`; the delay is
    /// that plus a random part of a second.
    RetryAfter(Duration),
    /// The server's close reason carried this retry window (`retry=MIN-MAX`); the delay is
    /// a uniformly random point in it.
    RetryHint {
        /// The window's start.
        min: Duration,
        /// The window's end.
        max: Duration,
    },
}

/// The stream returned by [`Client::events`](crate::Client::events).
///
/// It ends after [`Event::Stopped`].
pub struct Events {
    inner: BroadcastStream<Event>,
    done: bool,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("done", &self.done).finish()
    }
}

impl Events {
    pub(crate) fn new(receiver: tokio::sync::broadcast::Receiver<Event>) -> Self {
        Events {
            inner: BroadcastStream::new(receiver),
            done: false,
        }
    }

    /// Waits for the next event; `None` once the client stopped and every event was read.
    pub async fn recv(&mut self) -> Option<Event> {
        futures_util::StreamExt::next(self).await
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(event))) => {
                if matches!(event, Event::Stopped { .. }) {
                    self.done = true;
                }
                Poll::Ready(Some(event))
            }
            Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(missed)))) => {
                Poll::Ready(Some(Event::Lagged { missed }))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
