//! [`Client`]: the cloneable handle that talks to the connection task.

use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::{broadcast, mpsc, oneshot};
use wirehub_protocol::validate_channel;

use crate::connection::Actor;
use crate::connector;
use crate::{ClientConfig, Error, Event, Events, Result, Subscription};

/// How many commands may wait for the connection task before callers wait to enqueue.
const COMMAND_QUEUE: usize = 1024;
/// How many events each [`Events`] stream holds before it reports [`Event::Lagged`].
const EVENT_QUEUE: usize = 256;

/// A request from a [`Client`] handle (or a [`Subscription`]) to the connection task.
#[derive(Debug)]
pub(crate) enum Command {
    Subscribe {
        channel: String,
        reply: oneshot::Sender<Result<Subscription>>,
    },
    Unsubscribe {
        channel: String,
        /// Only the registration with this key is removed (`None`: whichever exists), so a
        /// late drop of an old [`Subscription`] never removes a newer one.
        key: Option<u64>,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Publish {
        channel: String,
        data: Box<RawValue>,
        /// Chosen by the caller; `None`: the client picks one (when retrying publishes).
        key: Option<Box<str>>,
        reply: oneshot::Sender<Result<u64>>,
    },
    Refresh {
        token: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Presence {
        channel: String,
        reply: oneshot::Sender<Result<wirehub_protocol::PresenceReply>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Why the connection task ended: `None` after [`Client::close`], else the fatal error.
pub(crate) type StopState = Arc<OnceLock<Option<Error>>>;

/// A handle to one reconnecting connection. Cheap to clone; every clone drives the same
/// connection.
///
/// The connection task runs until [`Client::close`] is called, the server tells the client
/// to stop (close codes 4000–4099, HTTP 401/403), the reconnect limit is reached, or every
/// `Client` and [`Subscription`] is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    events: broadcast::Sender<Event>,
    first_events: Mutex<Option<broadcast::Receiver<Event>>>,
    stopped: StopState,
    request_timeout: std::time::Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stopped", &self.inner.stopped.get())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Starts the connection task and returns at once; the connection is established in the
    /// background and re-established after every disconnect (see the crate docs).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that is not `ws://` or `wss://`,
    /// [`Error::InvalidToken`] for a token that cannot be sent in a header, [`Error::Tls`]
    /// for a root certificate that cannot be used, and
    /// [`Error::NoRuntime`] outside a Tokio runtime.
    pub fn connect(config: ClientConfig) -> Result<Client> {
        let tls = connector::validate(&config)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (commands, command_receiver) = mpsc::channel(COMMAND_QUEUE);
        let (events, first_events) = broadcast::channel(EVENT_QUEUE);
        let stopped = StopState::default();
        let request_timeout = config.request_timeout;
        let actor = Actor::new(
            config,
            tls,
            command_receiver,
            commands.downgrade(),
            events.clone(),
            stopped.clone(),
        );
        runtime.spawn(actor.run());
        Ok(Client {
            inner: Arc::new(Inner {
                commands,
                events,
                first_events: Mutex::new(Some(first_events)),
                stopped,
                request_timeout,
            }),
        })
    }

    /// Subscribes to `channel` and waits until the server confirmed it.
    ///
    /// When the client is disconnected, the subscription is registered at once and sent
    /// with the next connection; the call waits for that (up to the request timeout).
    /// A client holds at most one [`Subscription`] per channel.
    ///
    /// # Errors
    /// [`Error::InvalidChannel`], [`Error::AlreadySubscribed`], [`Error::Server`] when the
    /// server refused (e.g. `forbidden`), [`Error::Timeout`], or the client's fatal error.
    pub async fn subscribe(&self, channel: impl Into<String>) -> Result<Subscription> {
        let channel = channel.into();
        validate_channel(&channel)?;
        self.request(|reply| Command::Subscribe { channel, reply })
            .await
    }

    /// Unsubscribes from `channel`, ending its [`Subscription`] stream, and waits for the
    /// server's answer. Succeeds at once when the client is disconnected or not subscribed.
    ///
    /// # Errors
    /// [`Error::InvalidChannel`], [`Error::Timeout`], or the client's fatal error.
    pub async fn unsubscribe(&self, channel: impl Into<String>) -> Result<()> {
        let channel = channel.into();
        validate_channel(&channel)?;
        self.request(|reply| Command::Unsubscribe {
            channel,
            key: None,
            reply: Some(reply),
        })
        .await
    }

    /// Publishes `data` (serialized to JSON) to `channel` and returns the offset the server
    /// assigned, once it acknowledged the message.
    ///
    /// While disconnected, the publish is held in a bounded buffer and sent, in order,
    /// after the next connection resubscribed. A publish that was sent but not yet
    /// acknowledged when the connection dropped is **not** resent: it fails with
    /// [`Error::Disconnected`], because the server may or may not have accepted it.
    ///
    /// # Errors
    /// [`Error::InvalidChannel`], [`Error::Json`], [`Error::BufferFull`] (at once, nothing
    /// sent), [`Error::Server`] (e.g. `forbidden`, `rate_limited`), [`Error::Disconnected`],
    /// [`Error::Timeout`], or the client's fatal error.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: impl Into<String>,
        data: &T,
    ) -> Result<u64> {
        let data = serde_json::value::to_raw_value(data)?;
        self.publish_raw(channel, data).await
    }

    /// Like [`Client::publish`], with data that is already JSON.
    ///
    /// # Errors
    /// As for [`Client::publish`].
    pub async fn publish_raw(
        &self,
        channel: impl Into<String>,
        data: Box<RawValue>,
    ) -> Result<u64> {
        let channel = channel.into();
        validate_channel(&channel)?;
        self.request(|reply| Command::Publish {
            channel,
            data,
            key: None,
            reply,
        })
        .await
    }

    /// Like [`Client::publish_raw`], with an idempotency key of the caller's choosing instead
    /// of a random one: publishing again with the same key (from this client or any other,
    /// e.g. a script that retries) returns the first message's offset without publishing
    /// twice, while that message is in the channel's history.
    ///
    /// # Errors
    /// [`Error::InvalidIdempotencyKey`] for a key that is not 1 to 64 visible ASCII
    /// characters, else as for [`Client::publish`].
    pub async fn publish_raw_with_key(
        &self,
        channel: impl Into<String>,
        data: Box<RawValue>,
        key: impl Into<String>,
    ) -> Result<u64> {
        let channel = channel.into();
        validate_channel(&channel)?;
        let key = key.into();
        wirehub_protocol::validate_idempotency_key(&key).map_err(Error::InvalidIdempotencyKey)?;
        self.request(|reply| Command::Publish {
            channel,
            data,
            key: Some(key.into_boxed_str()),
            reply,
        })
        .await
    }

    /// Replaces the token before it expires, without reconnecting: sends `refresh` on the
    /// current connection and uses the new token for every later upgrade. While
    /// disconnected, the token is only stored for the next connection.
    ///
    /// # Errors
    /// [`Error::InvalidToken`] for a token that cannot be sent in a header,
    /// [`Error::Server`] (`unauthorized`) when the server refuses it (the old token stays in
    /// force on the current connection), [`Error::Timeout`], or the client's fatal error.
    pub async fn refresh_token(&self, token: impl Into<String>) -> Result<()> {
        let token = token.into();
        connector::check_token(&token)?;
        self.request(|reply| Command::Refresh { token, reply })
            .await
    }

    /// The members of a presence channel (one whose `[[channels]]` table on the server says
    /// `presence = true`): the exact `count` and at most the server's
    /// `presence_max_members` of them (`truncated` when fewer than `count` are listed). The
    /// token must allow subscribing to the channel; no subscription is needed. Changes
    /// arrive as [`Event::Join`] and [`Event::Leave`] while the client is subscribed to the
    /// channel. Asked while disconnected, the request is sent with the next connection
    /// (within the request timeout).
    ///
    /// # Errors
    /// [`Error::InvalidChannel`]; [`Error::Server`] with `presence_disabled` for a channel
    /// without presence, `forbidden` when the token does not allow subscribing to it;
    /// [`Error::Disconnected`] when the connection was lost before the answer;
    /// [`Error::Timeout`]; [`Error::Closed`] once the client stopped.
    pub async fn presence(&self, channel: &str) -> Result<wirehub_protocol::PresenceReply> {
        validate_channel(channel)?;
        let channel = channel.to_owned();
        self.request(|reply| Command::Presence { channel, reply })
            .await
    }

    /// The client's state changes as a stream of [`Event`]s.
    ///
    /// The first call returns every event since [`Client::connect`] (up to 256 of them);
    /// later calls see the events that follow the call. A stream that is read too slowly
    /// yields [`Event::Lagged`]. Every stream ends after [`Event::Stopped`]; on a stopped
    /// client it yields that event and ends.
    pub fn events(&self) -> Events {
        let first = self
            .inner
            .first_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let receiver = first.unwrap_or_else(|| self.inner.events.subscribe());
        if let Some(stopped) = self.inner.stopped.get() {
            // The Stopped event may be gone from the queue: replay it in a stream of its own.
            let (sender, receiver) = broadcast::channel(1);
            let _ = sender.send(Event::Stopped {
                error: stopped.clone(),
            });
            return Events::new(receiver);
        }
        Events::new(receiver)
    }

    /// Closes the connection (close code 1000) and stops the client. Requests still waiting
    /// fail with [`Error::Closed`]. Returns once the connection task has stopped; does
    /// nothing when it already has.
    pub async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .commands
            .send(Command::Close { reply })
            .await
            .is_ok()
        {
            let _ = done.await;
        }
    }

    /// The error that stopped the client, if it stopped because of one.
    pub fn stop_error(&self) -> Option<Error> {
        self.inner.stopped.get().cloned().flatten()
    }

    /// The error to report when the connection task is gone.
    fn gone(&self) -> Error {
        self.inner
            .stopped
            .get()
            .cloned()
            .flatten()
            .unwrap_or(Error::Closed)
    }

    /// Sends a command and waits for its reply, within the request timeout.
    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        let exchange = async {
            self.inner
                .commands
                .send(command(reply))
                .await
                .map_err(|_| self.gone())?;
            answer.await.map_err(|_| self.gone())?
        };
        match tokio::time::timeout(self.inner.request_timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout),
        }
    }
}
