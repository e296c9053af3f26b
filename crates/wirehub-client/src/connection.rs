//! The connection task: the one owner of the socket, driven by [`Command`]s.
//!
//! [`Actor::run`] loops over connection attempts. Each attempt connects (with a timeout,
//! through [`connector`]), then [`Actor::serve`] runs one `select!` loop over the socket, the
//! command queue, the idle/pong deadline and the health deadline until the connection ends.
//! The outcome and its close code decide between reconnecting after a backoff delay and
//! stopping.
//!
//! State that outlives a connection lives in the [`Registry`]: the registered subscriptions
//! with the last position handed to each consumer, and the buffer of publishes made while
//! disconnected; the actor also keeps the reconnect schedule. State of one connection lives
//! in [`Conn`]: requests awaiting an answer, whether `welcome` arrived, whether the connection
//! proved healthy.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, sleep_until, timeout};
use wirehub_protocol::{ClientMessage, ReconnectAdvice, ServerMessage, StreamPosition};
use wirehub_ws::CloseFrame;

use crate::backoff::ReconnectSchedule;
use crate::client::{Command, StopState};
use crate::connector::{self, Socket, Tls};
use crate::registry::{BufferedPublish, Offer, Registration, Registry, end_stream};
use crate::socket::Incoming;
use crate::{ClientConfig, Error, Event, Jitter, Message, ReconnectReason, Result};

/// The connection task.
pub(crate) struct Actor {
    config: ClientConfig,
    /// The TLS settings for a `wss://` URL, built once.
    tls: Option<Tls>,
    commands: mpsc::Receiver<Command>,
    events: broadcast::Sender<Event>,
    stopped: StopState,
    schedule: ReconnectSchedule<StdRng>,
    /// The jitter of subscribe retries after a passing refusal.
    rng: StdRng,
    /// Connection attempts since the last healthy connection.
    attempts: u32,
    /// The subscriptions and held publishes, kept across connections.
    registry: Registry,
    next_id: u64,
    close_reply: Option<oneshot::Sender<()>>,
    /// `presence` requests made while no connection was ready: sent at the next `welcome`.
    presence_waiting: Vec<(String, PresenceReplyTo)>,
}

/// Where the answer to a `presence` request goes.
type PresenceReplyTo = oneshot::Sender<Result<wirehub_protocol::PresenceReply>>;

/// A request sent on the current connection, awaiting its answer.
enum Pending {
    Subscribe {
        channel: String,
        /// Sent when `welcome` arrived (a resubscription): counts towards health.
        restoring: bool,
    },
    Unsubscribe {
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Publish(BufferedPublish),
    Refresh {
        reply: oneshot::Sender<Result<()>>,
    },
    Presence {
        reply: PresenceReplyTo,
    },
    Ping,
}

/// The state of one established connection.
struct Conn {
    socket: Socket,
    /// Whether `welcome` arrived.
    ready: bool,
    healthy: bool,
    pending: HashMap<u64, Pending>,
    /// Resubscriptions sent at `welcome` and not answered yet.
    restoring: usize,
    last_received: Instant,
    /// Set when an app-level ping was sent: the connection is dead if nothing arrives by then.
    ping_deadline: Option<Instant>,
}

/// How a connection (or the whole task) ended.
enum Ended {
    /// [`Client::close`](crate::Client::close) or every handle dropped.
    Closed,
    /// A fatal error: do not reconnect.
    Stop(Error),
    /// The connection was lost; reconnect as `advice` says.
    Lost {
        code: Option<u16>,
        reason: String,
        advice: ReconnectAdvice,
    },
}

/// What the loop does next after handling one frame or command.
type Flow = std::result::Result<(), Ended>;

enum Attempt {
    Open(Box<Socket>),
    Failed(Error),
    Closed,
}

impl Actor {
    pub(crate) fn new(
        config: ClientConfig,
        tls: Option<Tls>,
        commands: mpsc::Receiver<Command>,
        command_sender: mpsc::WeakSender<Command>,
        events: broadcast::Sender<Event>,
        stopped: StopState,
    ) -> Self {
        let schedule = ReconnectSchedule::new(config.backoff, StdRng::from_os_rng());
        Actor {
            config,
            tls,
            commands,
            events,
            stopped,
            schedule,
            rng: StdRng::from_os_rng(),
            attempts: 0,
            registry: Registry::new(command_sender),
            next_id: 1,
            close_reply: None,
            presence_waiting: Vec::new(),
        }
    }

    /// Connects, serves and reconnects until told to stop.
    pub(crate) async fn run(mut self) {
        loop {
            self.attempts = self.attempts.saturating_add(1);
            self.emit(Event::Connecting {
                attempt: self.attempts,
            });
            let (last_error, advice, hint) = match self.attempt().await {
                Attempt::Closed => return self.stop(None),
                Attempt::Failed(error) if connector::is_fatal_connect_error(&error) => {
                    return self.stop(Some(error));
                }
                Attempt::Failed(error) => {
                    tracing::debug!(%error, "connection attempt failed");
                    self.emit(Event::ConnectFailed {
                        error: error.clone(),
                    });
                    let hint = match &error {
                        Error::Overloaded {
                            retry_after: Some(wait),
                            ..
                        } => ReconnectReason::RetryAfter(*wait),
                        _ => ReconnectReason::Backoff,
                    };
                    (error, ReconnectAdvice::Backoff, hint)
                }
                Attempt::Open(socket) => match self.serve(*socket).await {
                    Ended::Closed => return self.stop(None),
                    Ended::Stop(error) => return self.stop(Some(error)),
                    Ended::Lost {
                        code,
                        reason,
                        advice,
                    } => {
                        tracing::debug!(?code, %reason, "disconnected");
                        let hint = match wirehub_protocol::parse_retry_hint(&reason) {
                            Some(window) if code.is_some() => ReconnectReason::RetryHint {
                                min: window.min,
                                max: window.max,
                            },
                            _ => ReconnectReason::Backoff,
                        };
                        self.emit(Event::Disconnected { code, reason });
                        (Error::Disconnected, advice, hint)
                    }
                },
            };
            if let Some(max) = self.config.max_reconnects
                && self.schedule.retries() >= max
            {
                return self.stop(Some(last_error));
            }
            // The schedule advances either way; a wait the server asked for replaces its delay.
            let backoff = self.schedule.next_delay(advice);
            let delay = match hint {
                ReconnectReason::RetryAfter(wait) => {
                    wait + Duration::from_secs(1).mul_f64(self.rng.random::<f64>())
                }
                ReconnectReason::RetryHint { min, max } => {
                    wirehub_protocol::RetryWindow::new(min, max).at(self.rng.random::<f64>())
                }
                _ => backoff,
            };
            self.emit(Event::Reconnecting {
                attempt: self.attempts.saturating_add(1),
                delay,
                reason: hint,
            });
            let wait = tokio::time::sleep(delay);
            if self.offline_until(wait).await.is_none() {
                return self.stop(None);
            }
        }
    }

    /// One connection attempt, handling commands while it is under way.
    async fn attempt(&mut self) -> Attempt {
        let config = self.config.clone();
        let tls = self.tls.clone();
        let connect = async move {
            match connector::connect(&config, tls).await {
                Ok(socket) => Attempt::Open(Box::new(socket)),
                Err(error) => Attempt::Failed(error),
            }
        };
        self.offline_until(connect).await.unwrap_or(Attempt::Closed)
    }

    /// Runs `future` while handling commands as a disconnected client would. `None` when
    /// the client was closed meanwhile.
    async fn offline_until<F: Future>(&mut self, future: F) -> Option<F::Output> {
        tokio::pin!(future);
        loop {
            tokio::select! {
                output = &mut future => return Some(output),
                command = self.commands.recv() => match command {
                    Some(command) => {
                        if self.handle_offline(command).is_err() {
                            return None;
                        }
                    }
                    None => return None,
                },
                // Caught up by the next connection's resubscription.
                _ = self.registry.drained() => {}
            }
        }
    }

    /// Handles a command while no session is ready (disconnected, connecting, or waiting
    /// for `welcome`). `Err` when the client must close.
    fn handle_offline(&mut self, command: Command) -> Flow {
        match command {
            Command::Subscribe { channel, reply } => {
                self.registry.register(&self.config, channel, reply);
            }
            Command::Unsubscribe {
                channel,
                key,
                reply,
            } => {
                self.registry.unregister(&channel, key);
                if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            Command::Publish {
                channel,
                data,
                key,
                reply,
            } => self.registry.hold(&self.config, channel, data, key, reply),
            Command::Refresh { token, reply } => {
                // Used at the next upgrade.
                self.config.token = Some(token);
                let _ = reply.send(Ok(()));
            }
            Command::Presence { channel, reply } => {
                self.presence_waiting.push((channel, reply));
            }
            Command::Close { reply } => {
                self.close_reply = Some(reply);
                return Err(Ended::Closed);
            }
        }
        Ok(())
    }

    /// Serves one established connection until it ends; fails what was in flight.
    async fn serve(&mut self, socket: Socket) -> Ended {
        let now = Instant::now();
        let mut conn = Conn {
            socket,
            ready: false,
            healthy: false,
            pending: HashMap::new(),
            restoring: 0,
            last_received: now,
            ping_deadline: None,
        };
        let healthy_at = now + self.config.healthy_after;
        let ended = match self.serve_loop(&mut conn, healthy_at).await {
            Ok(()) => Ended::Closed,
            Err(ended) => ended,
        };
        if matches!(ended, Ended::Closed) {
            let close = conn.socket.close(1000, "client closed");
            let _ = timeout(self.config.pong_timeout, close).await;
        }
        let error = match &ended {
            Ended::Closed => Error::Closed,
            Ended::Stop(error) => error.clone(),
            Ended::Lost { .. } => Error::Disconnected,
        };
        // Publishes whose ack was lost with the connection go back to the front of the
        // buffer, in the order they were sent, when they carry an idempotency key: sending
        // them again is safe, the server acknowledges a message it already has as a duplicate.
        let mut unacknowledged = Vec::new();
        for (id, pending) in conn.pending.drain() {
            match pending {
                Pending::Publish(publish) => {
                    if matches!(ended, Ended::Lost { .. })
                        && self.config.retry_publishes
                        && publish.key.is_some()
                        && !publish.reply.is_closed()
                    {
                        unacknowledged.push((id, publish));
                    } else {
                        let _ = publish.reply.send(Err(error.clone()));
                    }
                }
                Pending::Unsubscribe { reply: Some(reply) } => {
                    // The server forgets every subscription of a closed connection.
                    let _ = reply.send(Ok(()));
                }
                Pending::Refresh { reply } => {
                    // The next connection presents the new token at the upgrade.
                    let _ = reply.send(Ok(()));
                }
                Pending::Presence { reply } => {
                    let _ = reply.send(Err(error.clone()));
                }
                // Subscriptions stay registered and are restored by the next connection.
                Pending::Subscribe { .. }
                | Pending::Unsubscribe { reply: None }
                | Pending::Ping => {}
            }
        }
        unacknowledged.sort_unstable_by_key(|(id, _)| std::cmp::Reverse(*id));
        for (_, publish) in unacknowledged {
            self.registry.buffer.push_front(publish);
        }
        for registration in self.registry.subscriptions.values_mut() {
            registration.sent = false;
            registration.in_flight = None;
        }
        ended
    }

    async fn serve_loop(&mut self, conn: &mut Conn, healthy_at: Instant) -> Flow {
        // Timers are reset only when they fire, not on every frame: when the idle timer
        // fires early (something arrived meanwhile) it is moved to the real deadline.
        let idle = sleep_until(conn.last_received + self.config.idle_timeout);
        let health = sleep_until(healthy_at);
        tokio::pin!(idle, health);
        loop {
            tokio::select! {
                frame = conn.socket.next() => {
                    conn.last_received = Instant::now();
                    conn.ping_deadline = None;
                    match frame {
                        Some(Ok(Incoming::Text(text))) => {
                            // The decoder checked the UTF-8.
                            let text = std::str::from_utf8(&text).unwrap_or_default();
                            self.on_text(conn, text).await?;
                        }
                        Some(Ok(Incoming::Close(frame))) => return Err(closed_by_server(frame)),
                        Some(Ok(Incoming::Binary(_))) => {}
                        Some(Err(error)) => {
                            return Err(Ended::Lost {
                                code: None,
                                reason: error.to_string(),
                                advice: ReconnectAdvice::Backoff,
                            });
                        }
                        None => {
                            return Err(Ended::Lost {
                                code: None,
                                reason: "connection closed without a close frame".into(),
                                advice: ReconnectAdvice::Backoff,
                            });
                        }
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(conn, command).await?,
                    None => return Ok(()),
                },
                channel = self.registry.drained() => self.catch_up(conn, &channel).await?,
                () = &mut idle => {
                    let now = Instant::now();
                    if let Some(deadline) = conn.ping_deadline {
                        if now >= deadline {
                            return Err(Ended::Lost {
                                code: None,
                                reason: format!(
                                    "nothing arrived within {:?} of a ping: presumed dead",
                                    self.config.pong_timeout
                                ),
                                advice: ReconnectAdvice::Backoff,
                            });
                        }
                        idle.as_mut().reset(deadline);
                        continue;
                    }
                    let due = conn.last_received + self.config.idle_timeout;
                    if now < due {
                        idle.as_mut().reset(due);
                        continue;
                    }
                    let id = self.next_id();
                    conn.pending.insert(id, Pending::Ping);
                    self.send(conn, &ClientMessage::Ping { id: Some(id) }).await?;
                    let deadline = Instant::now() + self.config.pong_timeout;
                    conn.ping_deadline = Some(deadline);
                    idle.as_mut().reset(deadline);
                }
                () = &mut health, if !conn.healthy => self.mark_healthy(conn),
            }
        }
    }

    async fn on_command(&mut self, conn: &mut Conn, command: Command) -> Flow {
        if !conn.ready {
            return self.handle_offline(command);
        }
        match command {
            Command::Subscribe { channel, reply } => {
                if let Some(channel) = self.registry.register(&self.config, channel, reply) {
                    self.send_subscribe(conn, &channel, false).await?;
                }
            }
            Command::Unsubscribe {
                channel,
                key,
                reply,
            } => {
                if self.registry.unregister(&channel, key) {
                    let id = self.next_id();
                    let message = ClientMessage::Unsubscribe {
                        id: Some(id),
                        channel: channel.as_str().into(),
                    };
                    conn.pending.insert(id, Pending::Unsubscribe { reply });
                    self.send(conn, &message).await?;
                } else if let Some(reply) = reply {
                    let _ = reply.send(Ok(()));
                }
            }
            Command::Publish {
                channel,
                data,
                key,
                reply,
            } => {
                if !reply.is_closed() {
                    let publish = Registry::keyed(&self.config, channel, data, key, reply);
                    self.send_publish(conn, publish).await?;
                }
            }
            Command::Refresh { token, reply } => {
                let id = self.next_id();
                // Stored first: even if this connection drops, the next upgrade uses it.
                self.config.token = Some(token.clone());
                let message = ClientMessage::Refresh {
                    id: Some(id),
                    token: token.into(),
                };
                conn.pending.insert(id, Pending::Refresh { reply });
                self.send(conn, &message).await?;
            }
            Command::Presence { channel, reply } => {
                self.send_presence(conn, channel, reply).await?
            }
            Command::Close { reply } => {
                self.close_reply = Some(reply);
                return Err(Ended::Closed);
            }
        }
        Ok(())
    }

    async fn on_text(&mut self, conn: &mut Conn, text: &str) -> Flow {
        let message = match serde_json::from_str::<ServerMessage>(text) {
            Ok(message) => message,
            Err(error) => {
                // A newer server may send message types this version does not know.
                tracing::debug!(%error, "ignoring a message that could not be parsed");
                return Ok(());
            }
        };
        match message {
            ServerMessage::Welcome { session, .. } => {
                if conn.ready {
                    return Ok(());
                }
                conn.ready = true;
                self.emit(Event::Connected {
                    session,
                    compression: conn.socket.compressed(),
                });
                // A stalled subscription waits for its consumer and catches up then.
                let channels: Vec<String> = self
                    .registry
                    .subscriptions
                    .iter()
                    .filter(|(_, registration)| registration.stalled.is_none())
                    .map(|(channel, _)| channel.clone())
                    .collect();
                for channel in channels {
                    self.send_subscribe(conn, &channel, true).await?;
                }
                while let Some(publish) = self.registry.buffer.pop_front() {
                    if publish.reply.is_closed() {
                        continue;
                    }
                    self.send_publish(conn, publish).await?;
                }
                for (channel, reply) in std::mem::take(&mut self.presence_waiting) {
                    self.send_presence(conn, channel, reply).await?;
                }
                self.check_health(conn);
            }
            ServerMessage::Subscribed {
                id,
                channel,
                epoch,
                offset,
                recovered,
            } => {
                if let Some(id) = id
                    && let Some(Pending::Subscribe { restoring, .. }) = conn.pending.remove(&id)
                {
                    if restoring {
                        conn.restoring = conn.restoring.saturating_sub(1);
                    }
                    self.on_subscribed(&channel, id, StreamPosition { epoch, offset }, recovered);
                    self.check_health(conn);
                }
            }
            ServerMessage::Unsubscribed { id, channel } => {
                match id.and_then(|id| conn.pending.remove(&id)) {
                    Some(Pending::Unsubscribe { reply }) => {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Some(other) => {
                        // Not an answer to an unsubscribe: keep waiting for the real one.
                        if let Some(id) = id {
                            conn.pending.insert(id, other);
                        }
                    }
                    // Unasked: the server ended the subscription (e.g. a refreshed token no
                    // longer allows the channel).
                    None => self.on_revoked(&channel),
                }
            }
            ServerMessage::Message {
                channel,
                data,
                offset,
            } => {
                let message = Message {
                    channel,
                    data,
                    offset,
                };
                self.on_message(conn, message).await?;
            }
            // Messages the server will not send this subscription: catch up from history,
            // from the last position handed to the consumer.
            ServerMessage::Gap {
                channel,
                offset,
                from,
                to,
                ..
            } => {
                tracing::debug!(%channel, offset, ?from, ?to, "the server reported a gap");
                if self.registry.catch_up_after_gap(&channel) {
                    self.catch_up(conn, &channel).await?;
                }
            }
            ServerMessage::Ack { id, offset, .. } => {
                if let Some(Pending::Publish(publish)) = id.and_then(|id| conn.pending.remove(&id))
                {
                    let _ = publish.reply.send(Ok(offset));
                }
            }
            ServerMessage::Refreshed { id, .. } => {
                if let Some(Pending::Refresh { reply }) = id.and_then(|id| conn.pending.remove(&id))
                {
                    let _ = reply.send(Ok(()));
                }
            }
            ServerMessage::Pong { id } => {
                if let Some(id) = id {
                    conn.pending.remove(&id);
                }
            }
            ServerMessage::Presence {
                id,
                channel,
                count,
                members,
                truncated,
            } => {
                if let Some(Pending::Presence { reply }) =
                    id.and_then(|id| conn.pending.remove(&id))
                {
                    let _ = reply.send(Ok(wirehub_protocol::PresenceReply {
                        channel,
                        count,
                        members,
                        truncated,
                    }));
                }
            }
            ServerMessage::Join { channel, member } => {
                self.emit(Event::Join { channel, member });
            }
            ServerMessage::Leave { channel, member } => {
                self.emit(Event::Leave { channel, member });
            }
            ServerMessage::Error { id, code, message } => {
                let error = Error::Server { code, message };
                match id.and_then(|id| conn.pending.remove(&id)) {
                    Some(Pending::Publish(publish)) => {
                        let _ = publish.reply.send(Err(error));
                    }
                    Some(Pending::Unsubscribe { reply }) => {
                        if let Some(reply) = reply {
                            // `not_subscribed` means what was asked for is true already.
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Some(Pending::Subscribe { channel, restoring }) => {
                        if restoring {
                            conn.restoring = conn.restoring.saturating_sub(1);
                        }
                        self.on_subscribe_refused(&channel, id, error);
                        self.check_health(conn);
                    }
                    Some(Pending::Refresh { reply }) => {
                        let _ = reply.send(Err(error));
                    }
                    Some(Pending::Presence { reply }) => {
                        let _ = reply.send(Err(error));
                    }
                    Some(Pending::Ping) => {}
                    None => tracing::warn!(%error, "error from the server"),
                }
            }
        }
        Ok(())
    }

    /// Sends a `presence` request; its answer goes to `reply`.
    async fn send_presence(
        &mut self,
        conn: &mut Conn,
        channel: String,
        reply: PresenceReplyTo,
    ) -> Flow {
        if reply.is_closed() {
            return Ok(());
        }
        let id = self.next_id();
        let message = ClientMessage::Presence {
            id: Some(id),
            channel: channel.into(),
        };
        conn.pending.insert(id, Pending::Presence { reply });
        self.send(conn, &message).await
    }

    fn on_subscribed(
        &mut self,
        channel: &str,
        id: u64,
        position: StreamPosition,
        recovered: Option<bool>,
    ) {
        if let Some(event) =
            self.registry
                .on_subscribed(&self.config, channel, id, position, recovered)
        {
            self.emit(event);
        }
    }

    fn on_revoked(&mut self, channel: &str) {
        let Some(mut registration) = self.registry.subscriptions.remove(channel) else {
            return;
        };
        let error = Error::Revoked {
            channel: channel.to_owned(),
        };
        self.end_registration(channel, &mut registration, error);
    }

    /// Ends a removed registration with an error: the waiting `subscribe` caller gets it, or
    /// else the subscription's stream ends with it (and an event says so).
    fn end_registration(&self, channel: &str, registration: &mut Registration, error: Error) {
        if let Some((reply, subscription)) = registration.waiting.take() {
            subscription.disarm();
            let _ = reply.send(Err(error));
        } else {
            self.emit(Event::SubscriptionEnded {
                channel: channel.to_owned(),
                error: error.clone(),
            });
            end_stream(&registration.sender, error);
        }
    }

    fn on_subscribe_refused(&mut self, channel: &str, id: Option<u64>, error: Error) {
        let Some(registration) = self.registry.subscriptions.get(channel) else {
            return;
        };
        if id.is_none() || registration.in_flight != id {
            return;
        }
        // A subscription the application already holds (being restored or caught up) stays
        // through a passing refusal: nothing was handed over since its position, so asking
        // again later with the same `since` loses and repeats nothing. An awaited first
        // `subscribe` returns the refusal instead, for the caller to decide.
        if error.is_transient() && registration.waiting.is_none() {
            let k = registration.refusals;
            let sample = match self.config.resubscribe_backoff.jitter {
                Jitter::None => 0.0,
                _ => self.rng.random::<f64>(),
            };
            let delay = self.config.resubscribe_backoff.delay(k, sample);
            if let Some(registration) = self.registry.subscriptions.get_mut(channel) {
                registration.refusals = k.saturating_add(1);
            }
            tracing::debug!(channel, %error, ?delay, "subscribe refused for now: retrying");
            self.registry.retry_later(channel, delay);
            self.emit(Event::SubscribeRetrying {
                channel: channel.to_owned(),
                error,
                delay,
            });
            return;
        }
        if let Some(mut registration) = self.registry.subscriptions.remove(channel) {
            self.end_registration(channel, &mut registration, error);
        }
    }

    async fn on_message(&mut self, conn: &mut Conn, message: Message) -> Flow {
        let channel = match self.registry.offer(&self.config, message) {
            Offer::Queued | Offer::Skipped => return Ok(()),
            Offer::Abandoned(channel) => channel,
        };
        // The Subscription was dropped: stop the server from sending more.
        if self.registry.unregister(&channel, None) {
            self.send_unsubscribe(conn, &channel, None).await?;
        }
        Ok(())
    }

    async fn send_unsubscribe(
        &mut self,
        conn: &mut Conn,
        channel: &str,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) -> Flow {
        let id = self.next_id();
        conn.pending.insert(id, Pending::Unsubscribe { reply });
        let message = ClientMessage::Unsubscribe {
            id: Some(id),
            channel: channel.into(),
        };
        self.send(conn, &message).await
    }

    /// Catches a subscription up from the server's history, from the last position handed
    /// to its consumer: `unsubscribe` (when subscribed on this connection), then `subscribe`
    /// with `since`. Until the answer, deliveries of the old server-side subscription are
    /// skipped; the replay that follows it goes through the bounded queue like any delivery.
    /// Without a ready connection there is nothing to do: the next `welcome` resubscribes.
    async fn catch_up(&mut self, conn: &mut Conn, channel: &str) -> Flow {
        if !conn.ready {
            return Ok(());
        }
        let Some(registration) = self.registry.subscriptions.get(channel) else {
            return Ok(());
        };
        if registration.sender.is_closed() && registration.waiting.is_none() {
            // The consumer is gone rather than caught up.
            if self.registry.unregister(channel, None) {
                self.send_unsubscribe(conn, channel, None).await?;
            }
            return Ok(());
        }
        if registration.sent {
            self.send_unsubscribe(conn, channel, None).await?;
        }
        tracing::debug!(
            channel,
            since = ?self.registry.subscriptions.get(channel).and_then(|r| r.position.clone()),
            "catching up from history"
        );
        self.send_subscribe(conn, channel, false).await
    }

    async fn send_subscribe(&mut self, conn: &mut Conn, channel: &str, restoring: bool) -> Flow {
        let Some(registration) = self.registry.subscriptions.get_mut(channel) else {
            return Ok(());
        };
        let id = self.next_id;
        self.next_id += 1;
        registration.sent = true;
        registration.in_flight = Some(id);
        let message = ClientMessage::Subscribe {
            id: Some(id),
            channel: channel.into(),
            since: registration.position.clone(),
        };
        conn.pending.insert(
            id,
            Pending::Subscribe {
                channel: channel.to_owned(),
                restoring,
            },
        );
        if restoring {
            conn.restoring += 1;
        }
        self.send(conn, &message).await
    }

    async fn send_publish(&mut self, conn: &mut Conn, publish: BufferedPublish) -> Flow {
        let id = self.next_id();
        let message = ClientMessage::Publish {
            id: Some(id),
            channel: publish.channel.as_str().into(),
            data: std::borrow::Cow::Borrowed(&publish.data),
            idempotency_key: publish.key.as_deref().map(std::borrow::Cow::Borrowed),
        };
        let sent = self.send(conn, &message).await;
        conn.pending.insert(id, Pending::Publish(publish));
        sent
    }

    /// Writes one request; a write that blocks for `pong_timeout` means a dead connection.
    async fn send(&self, conn: &mut Conn, message: &ClientMessage<'_>) -> Flow {
        let text = match serde_json::to_string(message) {
            Ok(text) => text,
            Err(error) => {
                tracing::error!(%error, "could not encode a request");
                return Ok(());
            }
        };
        match timeout(self.config.pong_timeout, conn.socket.send_text(&text)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(Ended::Lost {
                code: None,
                reason: format!("write failed: {error}"),
                advice: ReconnectAdvice::Backoff,
            }),
            Err(_) => Err(Ended::Lost {
                code: None,
                reason: format!(
                    "a write blocked for {:?}: presumed dead",
                    self.config.pong_timeout
                ),
                advice: ReconnectAdvice::Backoff,
            }),
        }
    }

    fn check_health(&mut self, conn: &mut Conn) {
        if conn.ready && conn.restoring == 0 {
            self.mark_healthy(conn);
        }
    }

    fn mark_healthy(&mut self, conn: &mut Conn) {
        if !conn.healthy {
            conn.healthy = true;
            self.schedule.reset();
            self.attempts = 0;
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Records why the task stopped, fails everything still waiting, and tells listeners.
    fn stop(mut self, error: Option<Error>) {
        let _ = self.stopped.set(error.clone());
        let fail = error.clone().unwrap_or(Error::Closed);
        if let Some(error) = &error {
            tracing::warn!(%error, "client stopped");
        }
        for publish in self.registry.buffer.drain(..) {
            let _ = publish.reply.send(Err(fail.clone()));
        }
        for (_, mut registration) in std::mem::take(&mut self.registry.subscriptions) {
            if let Some((reply, subscription)) = registration.waiting.take() {
                subscription.disarm();
                let _ = reply.send(Err(fail.clone()));
            } else {
                end_stream(&registration.sender, fail.clone());
            }
        }
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(fail.clone()));
                }
                Command::Unsubscribe { reply, .. } => {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Command::Publish { reply, .. } => {
                    let _ = reply.send(Err(fail.clone()));
                }
                Command::Refresh { reply, .. } => {
                    let _ = reply.send(Err(fail.clone()));
                }
                Command::Presence { reply, .. } => {
                    let _ = reply.send(Err(fail.clone()));
                }
                Command::Close { reply } => {
                    let _ = reply.send(());
                }
            }
        }
        self.emit(Event::Stopped { error });
        if let Some(reply) = self.close_reply.take() {
            let _ = reply.send(());
        }
    }
}

fn closed_by_server(frame: Option<CloseFrame>) -> Ended {
    let Some(frame) = frame else {
        return Ended::Lost {
            code: None,
            reason: "closed by the server without a code".into(),
            advice: ReconnectAdvice::Backoff,
        };
    };
    let code = frame.code;
    let reason = frame.reason;
    match ReconnectAdvice::for_code(code) {
        ReconnectAdvice::Stop => Ended::Stop(Error::Rejected { code, reason }),
        advice => Ended::Lost {
            code: Some(code),
            reason,
            advice,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_map_to_the_contract() {
        let frame = |code: u16| {
            Some(CloseFrame {
                code,
                reason: "why".into(),
            })
        };
        for code in [1000, 1001, 4200, 4299] {
            assert!(
                matches!(closed_by_server(frame(code)), Ended::Lost { advice: ReconnectAdvice::Reconnect, code: Some(c), .. } if c == code),
                "{code}"
            );
        }
        for code in [4100, 4101, 4199, 1011, 1002] {
            assert!(
                matches!(
                    closed_by_server(frame(code)),
                    Ended::Lost {
                        advice: ReconnectAdvice::Backoff,
                        ..
                    }
                ),
                "{code}"
            );
        }
        for code in [4000, 4001, 4003, 4099] {
            assert!(
                matches!(closed_by_server(frame(code)), Ended::Stop(Error::Rejected { code: c, .. }) if c == code),
                "{code}"
            );
        }
        assert!(matches!(
            closed_by_server(None),
            Ended::Lost {
                advice: ReconnectAdvice::Backoff,
                code: None,
                ..
            }
        ));
    }
}
