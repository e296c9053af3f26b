//! One WebSocket connection: a single task running one `select!` loop.
//!
//! The loop owns the socket and waits on: the socket becoming readable, the socket becoming
//! writable (only while frames are waiting), the connection's [`Outbox`] (frames queued by the
//! hub or by replies), the next heartbeat, and shutdown. Reads and writes use readiness and
//! `try_read`/`try_write_vectored` on the `TcpStream` itself, so one task drives both
//! directions and an idle connection holds no read or write buffer at all: the read buffer
//! exists only while bytes are being decoded, and frames are written straight from the shared
//! `Bytes` that the hub built once for every subscriber.
//!
//! Bad input is answered with an `error` and the loop goes on. Only the causes in the close
//! code table end a connection; whichever way it ends, its subscriptions are released.

use std::collections::{HashSet, VecDeque};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use wirehub_core::{Outbox, OutboxLimits, SessionRef, text_frame};
use wirehub_protocol::{
    ClientMessage, CloseCode, ErrorCode, PROTOCOL_VERSION, ServerMessage, encode_server_message,
    parse_client_message,
};
use wirehub_ws::{Decoder, Message, OpCode, ProtocolError};

use crate::auth::Claims;
use crate::heartbeat::Heartbeat;
use crate::metrics::Metrics;
use crate::rate::{PublishLimiter, Verdict};
use crate::state::AppState;
use crate::transport::Transport;

/// What the connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The wirehub protocol.
    PubSub,
    /// Echo every data frame back (protocol-conformance testing).
    Echo,
}

/// Bytes read from the socket per readiness event at most, so that a client that floods the
/// server cannot starve its own writes and heartbeat.
const READ_BUDGET: usize = 256 * 1024;
/// Size of each read.
const READ_CHUNK: usize = 8 * 1024;
/// Frames handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long the server waits for the client's close frame after sending its own.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What woke the loop.
enum Event {
    Shutdown,
    Deadline,
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    Queued,
}

/// Why the loop ended.
#[derive(Debug)]
enum End {
    /// The close handshake completed (or we sent our close frame and the client went away).
    Closed(CloseCode),
    /// The peer vanished: EOF or a socket error without a close handshake.
    Abrupt(String),
    /// No pong arrived before the next heartbeat tick.
    HeartbeatTimeout,
    /// Our close frame was sent but the client never answered it.
    CloseTimeout(CloseCode),
}

/// Runs a connection until it ends. `leftover` holds bytes that arrived with the upgrade
/// request.
pub(crate) async fn run(
    transport: Transport,
    leftover: Bytes,
    peer: SocketAddr,
    state: Arc<AppState>,
    mode: Mode,
    claims: Option<Claims>,
    shutdown: CancellationToken,
) {
    let id = state.next_session_id();
    let user = claims.as_ref().map(|c| c.sub.clone());
    let span = tracing::info_span!("session", id, %peer, user);
    let mut session = Session::new(id, transport, leftover, state, mode);
    session.set_claims(claims);
    let end = session.run(shutdown).instrument(span.clone()).await;
    session.finish(end).instrument(span).await;
}

struct Session {
    id: u64,
    name: String,
    transport: Transport,
    state: Arc<AppState>,
    mode: Mode,
    outbox: Arc<Outbox>,
    decoder: Decoder,
    read_buf: BytesMut,
    /// Frames taken from the outbox and not yet fully written; the first one is written from
    /// `write_offset` on.
    writing: VecDeque<Bytes>,
    write_offset: usize,
    subscriptions: HashSet<String>,
    heartbeat: Heartbeat,
    publish_limiter: PublishLimiter,
    /// Set once our close frame is queued: the code and the deadline for the client's reply.
    closing: Option<(CloseCode, Instant)>,
    /// Set once the client's close frame arrived (and ours answering it is queued).
    close_received: bool,
    /// The connection's token claims, when authentication is on.
    claims: Option<Claims>,
    /// When the token expires: the connection is closed with 4001 unless it is refreshed.
    token_deadline: Option<Instant>,
}

impl Session {
    fn new(
        id: u64,
        transport: Transport,
        leftover: Bytes,
        state: Arc<AppState>,
        mode: Mode,
    ) -> Self {
        let config = &state.config;
        let limits = match mode {
            Mode::PubSub => OutboxLimits {
                max_frames: config.max_queued_frames,
                max_bytes: config.max_queued_bytes,
            },
            Mode::Echo => OutboxLimits {
                max_frames: 1 << 16,
                max_bytes: config.max_message_size.saturating_mul(4).max(1 << 20),
            },
        };
        let heartbeat = match mode {
            Mode::PubSub => Heartbeat::new(config.heartbeat_interval),
            Mode::Echo => Heartbeat::disabled(),
        };
        Session {
            id,
            name: format!("{:016x}", rand::random::<u64>()),

            transport,
            decoder: Decoder::new(config.max_message_size),
            read_buf: BytesMut::from(&leftover[..]),
            publish_limiter: PublishLimiter::new(config.publish_rate, std::time::Instant::now()),
            state,
            mode,
            outbox: Arc::new(Outbox::new(limits)),
            writing: VecDeque::new(),
            write_offset: 0,
            subscriptions: HashSet::new(),
            heartbeat,
            closing: None,
            close_received: false,
            claims: None,
            token_deadline: None,
        }
    }

    fn set_claims(&mut self, claims: Option<Claims>) {
        self.token_deadline = claims
            .as_ref()
            .map(|claims| Instant::now() + claims.expires_in());
        self.claims = claims;
    }

    fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    async fn run(&mut self, shutdown: CancellationToken) -> End {
        if self.mode == Mode::PubSub {
            let welcome = ServerMessage::Welcome {
                version: PROTOCOL_VERSION,
                session: self.name.clone(),
                heartbeat: self.state.config.heartbeat_interval.as_secs_f64(),
            };
            self.send(&welcome);
        }
        // The accept loop set TCP_NODELAY; the upgraded stream must still have it.
        let nodelay = self.transport.tcp().nodelay().unwrap_or(false);
        if !nodelay {
            warn!("TCP_NODELAY is off on this connection");
        }
        debug!(session = %self.name, nodelay, "connection opened");
        // With TLS, rustls may hold decrypted bytes already: read them before waiting for
        // the socket.
        if self.transport.is_tls()
            && let Err(end) = self.read().await
        {
            return end;
        }
        // Leftover bytes from the upgrade request are decoded before waiting for more.
        if !self.read_buf.is_empty()
            && let Err(end) = self.decode_all().await
        {
            return end;
        }
        let mut shutdown_at: Option<Instant> = None;
        // Futures that live as long as the loop: the shutdown signal, the outbox's wake-up,
        // and one timer for all of the loop's deadlines (heartbeat, shutdown drain, close
        // reply, token expiry), re-armed only when the earliest deadline changes. A wake-up
        // per delivered message then registers nothing with the timer wheel, the token or
        // the notifier, and the select's futures are gone before an event is handled, which
        // keeps an idle session's task small.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let outbox = self.outbox.clone();
        let queued = outbox.ready();
        tokio::pin!(queued);
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            if let Err(err) = self.flush() {
                return End::Abrupt(err.to_string());
            }
            if let Some((code, _)) = self.closing {
                if self.close_received && self.writing.is_empty() {
                    return End::Closed(code);
                }
            } else if let Some(code) = self.outbox.closed() {
                self.start_close(code);
                continue;
            }
            let want_write = !self.writing.is_empty() || self.transport.wants_write();
            let deadline = self.next_deadline(shutdown_at);
            if deadline != armed {
                if let Some(deadline) = deadline {
                    timer.as_mut().reset(deadline);
                }
                armed = deadline;
            }
            let tcp = self.transport.tcp();
            let event = tokio::select! {
                biased;
                () = &mut cancelled, if shutdown_at.is_none() && self.closing.is_none() => Event::Shutdown,
                () = &mut timer, if armed.is_some() => Event::Deadline,
                ready = poll_fn(|cx| tcp.poll_read_ready(cx)) => Event::Readable(ready),
                ready = poll_fn(|cx| tcp.poll_write_ready(cx)), if want_write => Event::Writable(ready),
                () = &mut queued => Event::Queued,
            };
            match event {
                Event::Shutdown => {
                    shutdown_at = Some(Instant::now() + spread(self.state.config.shutdown_drain));
                }
                Event::Deadline => {
                    armed = None;
                    if let Some(end) = self.on_deadline(shutdown_at) {
                        return end;
                    }
                }
                Event::Readable(Err(err)) | Event::Writable(Err(err)) => {
                    return End::Abrupt(err.to_string());
                }
                Event::Readable(Ok(())) => {
                    if let Err(end) = self.read().await {
                        return end;
                    }
                }
                Event::Writable(Ok(())) => {}
                Event::Queued => queued.set(outbox.ready()),
            }
        }
    }

    /// The earliest deadline the loop waits for: the client's close reply while closing,
    /// otherwise the shutdown drain, the token's expiry or the next heartbeat.
    fn next_deadline(&self, shutdown_at: Option<Instant>) -> Option<Instant> {
        if let Some((_, deadline)) = self.closing {
            return Some(deadline);
        }
        [shutdown_at, self.token_deadline, self.heartbeat.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on the deadline that passed (one per call; the loop comes back for the next).
    fn on_deadline(&mut self, shutdown_at: Option<Instant>) -> Option<End> {
        let now = Instant::now();
        if let Some((code, deadline)) = self.closing {
            return (deadline <= now).then_some(End::CloseTimeout(code));
        }
        if shutdown_at.is_some_and(|at| at <= now) {
            self.start_close(CloseCode::GoingAway);
        } else if self.token_deadline.is_some_and(|at| at <= now) {
            info!("token expired; closing");
            self.token_deadline = None;
            self.start_close(CloseCode::Unauthorized);
        } else if self.heartbeat.deadline().is_some_and(|at| at <= now) {
            if self.heartbeat.awaiting_pong() {
                return Some(End::HeartbeatTimeout);
            }
            self.heartbeat.sent_ping();
            self.queue(wirehub_ws::encode_frame(OpCode::Ping, b""));
        }
        None
    }

    /// Writes queued frames until the socket would block or nothing is left.
    fn flush(&mut self) -> io::Result<()> {
        // Encrypted bytes from an earlier write go first (TLS only).
        match self.transport.flush_pending() {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) => return Err(err),
        }
        loop {
            if self.writing.is_empty() {
                // Frames are taken from the outbox only once the previous batch is written,
                // so that a stalled socket fills the (bounded) outbox and not this queue.
                if self.closing.is_some() {
                    return Ok(());
                }
                self.outbox.drain_into(&mut self.writing);
                if self.writing.is_empty() {
                    return Ok(());
                }
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (index, frame) in self.writing.iter().take(MAX_IOVECS).enumerate() {
                let bytes = if index == 0 {
                    &frame[self.write_offset..]
                } else {
                    &frame[..]
                };
                slices[index] = IoSlice::new(bytes);
                count += 1;
            }
            match self.transport.try_write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(mut written) => {
                    Metrics::add(&self.metrics().bytes_out_total, written as u64);
                    while written > 0 {
                        let Some(front) = self.writing.front() else {
                            break;
                        };
                        let remaining = front.len() - self.write_offset;
                        if written >= remaining {
                            written -= remaining;
                            self.write_offset = 0;
                            self.writing.pop_front();
                            Metrics::add(&self.metrics().frames_out_total, 1);
                        } else {
                            self.write_offset += written;
                            written = 0;
                        }
                    }
                    if self.writing.capacity() > 256 && self.writing.is_empty() {
                        self.writing = VecDeque::new();
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) => return Err(err),
            }
        }
    }

    /// Reads what the socket has (up to a budget) and handles every complete message.
    async fn read(&mut self) -> Result<(), End> {
        let mut budget = READ_BUDGET;
        while budget > 0 {
            if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 2 {
                self.read_buf.reserve(READ_CHUNK);
            }
            match self.transport.try_read_buf(&mut self.read_buf) {
                Ok(0) => {
                    return Err(if self.closing.is_some() {
                        End::Closed(self.closing.map_or(CloseCode::Normal, |(code, _)| code))
                    } else {
                        End::Abrupt("connection reset or EOF without a close frame".into())
                    });
                }
                Ok(read) => {
                    budget = budget.saturating_sub(read);
                    self.decode_all().await?;
                    if self.close_received {
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) => return Err(End::Abrupt(err.to_string())),
            }
        }
        if self.read_buf.is_empty() {
            // An idle connection keeps no read buffer.
            self.read_buf = BytesMut::new();
        }
        Ok(())
    }

    async fn decode_all(&mut self) -> Result<(), End> {
        loop {
            if self.close_received {
                self.read_buf.clear();
                return Ok(());
            }
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(message)) => self.on_message(message).await,
                Ok(None) => return Ok(()),
                Err(err) => {
                    self.on_protocol_error(&err);
                    return Ok(());
                }
            }
        }
    }

    fn on_protocol_error(&mut self, err: &ProtocolError) {
        let code = match err.close_code() {
            1007 => CloseCode::InvalidPayload,
            1009 => CloseCode::MessageTooBig,
            _ => CloseCode::ProtocolError,
        };
        info!(error = %err, close_code = code.code(), "protocol error; closing");
        self.read_buf.clear();
        if self.closing.is_none() {
            if code == CloseCode::MessageTooBig && self.mode == Mode::PubSub {
                // Say why in the protocol too, before the close frame.
                self.send_error(None, ErrorCode::TooLarge, &err.to_string());
            }
            self.start_close(code);
        }
        // Nothing more from this client can be trusted: stop reading it.
        self.close_received = true;
    }

    async fn on_message(&mut self, message: Message) {
        match message {
            Message::Ping(payload) => {
                if self.closing.is_none() {
                    self.queue(wirehub_ws::encode_frame(OpCode::Pong, &payload));
                }
            }
            Message::Pong(_) => self.heartbeat.pong_received(),
            Message::Close(frame) => {
                self.close_received = true;
                if self.closing.is_none() {
                    let code = frame.as_ref().map_or(1000, |f| f.code);
                    debug!(code, "client closed the connection");
                    self.metrics().close(CloseCode::Normal);
                    self.closing = Some((CloseCode::Normal, Instant::now() + CLOSE_TIMEOUT));
                    self.outbox.close(CloseCode::Normal);
                    self.writing.truncate(usize::from(self.write_offset > 0));
                    self.writing.push_back(wirehub_ws::encode_close(code, ""));
                }
            }
            _ if self.closing.is_some() => {}
            Message::Text(text) => match self.mode {
                Mode::Echo => self.queue(wirehub_ws::encode_frame(OpCode::Text, &text)),
                // Boxed: a request handler's state (hub calls) is large and rarely alive;
                // kept inline, it would be part of every idle session's task.
                Mode::PubSub => Box::pin(self.on_text(&text)).await,
            },
            Message::Binary(data) => match self.mode {
                Mode::Echo => self.queue(wirehub_ws::encode_frame(OpCode::Binary, &data)),
                Mode::PubSub => self.send_error(
                    None,
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not part of protocol v1; send JSON in text frames",
                ),
            },
        }
    }

    async fn on_text(&mut self, text: &[u8]) {
        Metrics::add(&self.metrics().messages_in_total, 1);
        let Ok(text) = std::str::from_utf8(text) else {
            // The decoder validated UTF-8 already; this cannot happen.
            return self.send_error(None, ErrorCode::InvalidJson, "text frame is not UTF-8");
        };
        let request = match parse_client_message(text) {
            Ok(request) => request,
            Err(err) => return self.send_error(err.id, err.code, &err.message),
        };
        match request {
            ClientMessage::Subscribe { id, channel, since } => {
                if self.subscriptions.contains(&*channel) {
                    return self.send_error(
                        id,
                        ErrorCode::AlreadySubscribed,
                        &format!("already subscribed to {channel:?}"),
                    );
                }
                if self.subscriptions.len() >= self.state.config.max_subscriptions {
                    return self.send_error(
                        id,
                        ErrorCode::TooManySubscriptions,
                        &format!(
                            "a connection may hold {} subscriptions",
                            self.state.config.max_subscriptions
                        ),
                    );
                }
                if self
                    .claims
                    .as_ref()
                    .is_some_and(|c| !c.may_subscribe(&channel))
                {
                    return self.send_error(
                        id,
                        ErrorCode::Forbidden,
                        &format!("the token does not allow subscribing to {channel:?}"),
                    );
                }
                let session = SessionRef {
                    id: self.id,
                    outbox: self.outbox.clone(),
                };
                match self
                    .state
                    .hub
                    .subscribe(&session, &channel, id, since)
                    .await
                {
                    Ok(subscribed) => {
                        Metrics::add(&self.metrics().replayed_total, subscribed.replayed as u64);
                        self.subscriptions.insert(channel.into_owned());
                    }
                    Err(err) => self.send_error(id, err.code(), &err.to_string()),
                }
            }
            ClientMessage::Unsubscribe { id, channel } => {
                if !self.subscriptions.remove(&*channel) {
                    return self.send_error(
                        id,
                        ErrorCode::NotSubscribed,
                        &format!("not subscribed to {channel:?}"),
                    );
                }
                match self.state.hub.unsubscribe(&channel, self.id).await {
                    Ok(()) => self.send(&ServerMessage::Unsubscribed {
                        id,
                        channel: channel.into_owned(),
                    }),
                    Err(err) => self.send_error(id, err.code(), &err.to_string()),
                }
            }
            ClientMessage::Publish {
                id,
                channel,
                data,
                idempotency_key,
            } => {
                if self
                    .claims
                    .as_ref()
                    .is_some_and(|c| !c.may_publish(&channel))
                {
                    return self.send_error(
                        id,
                        ErrorCode::Forbidden,
                        &format!("the token does not allow publishing to {channel:?}"),
                    );
                }
                match self.publish_limiter.check(std::time::Instant::now()) {
                    Verdict::Allowed => {}
                    verdict => {
                        self.send_error(
                            id,
                            ErrorCode::RateLimited,
                            &format!(
                                "more than {} publishes per second on this connection",
                                self.state.config.publish_rate
                            ),
                        );
                        if verdict == Verdict::Abuse {
                            warn!("publishing far beyond the rate limit; closing");
                            self.start_close(CloseCode::PolicyViolation);
                        }
                        return;
                    }
                }
                match self
                    .state
                    .hub
                    .publish(&channel, data.get().as_bytes(), idempotency_key.as_deref())
                    .await
                {
                    Ok(published) => {
                        let counter = if published.duplicate {
                            &self.metrics().publish_duplicates_total
                        } else {
                            &self.metrics().published_total
                        };
                        Metrics::add(counter, 1);
                        self.send(&ServerMessage::Ack {
                            id,
                            offset: published.offset,
                            duplicate: published.duplicate,
                        });
                    }
                    Err(err) => self.send_error(id, err.code(), &err.to_string()),
                }
            }
            ClientMessage::Ping { id } => self.send(&ServerMessage::Pong { id }),
            ClientMessage::Refresh { id, token } => self.refresh(id, &token).await,
        }
    }

    /// Replaces the connection's token; subscriptions the new token no longer allows end.
    async fn refresh(&mut self, id: Option<u64>, token: &str) {
        let Some(authenticator) = &self.state.authenticator else {
            return self.send_error(
                id,
                ErrorCode::Unauthorized,
                "this server does not use tokens (no --jwt-secret or --jwt-public-key)",
            );
        };
        let claims = match authenticator.verify(token) {
            Ok(claims) => claims,
            Err(err) => return self.send_error(id, ErrorCode::Unauthorized, &err.to_string()),
        };
        if let Some(old) = &self.claims
            && old.sub != claims.sub
        {
            return self.send_error(
                id,
                ErrorCode::Forbidden,
                "a refreshed token must be for the same user (sub)",
            );
        }
        let revoked: Vec<String> = self
            .subscriptions
            .iter()
            .filter(|channel| !claims.may_subscribe(channel))
            .cloned()
            .collect();
        for channel in revoked {
            self.subscriptions.remove(&channel);
            if let Err(err) = self.state.hub.unsubscribe(&channel, self.id).await {
                warn!(%channel, error = %err, "releasing subscription failed");
            }
            self.send(&ServerMessage::Unsubscribed { id: None, channel });
        }
        let expires = claims.exp;
        self.set_claims(Some(claims));
        self.send(&ServerMessage::Refreshed { id, expires });
    }

    fn send(&mut self, message: &ServerMessage) {
        self.queue(text_frame(&encode_server_message(message)));
    }

    fn send_error(&mut self, id: Option<u64>, code: ErrorCode, message: &str) {
        self.metrics().error(code);
        debug!(%code, message, "error reply");
        self.send(&ServerMessage::Error {
            id,
            code,
            message: message.to_owned(),
        });
    }

    /// Queues a frame behind everything queued before it. A full outbox closes the
    /// connection as a slow consumer (seen by the loop).
    fn queue(&mut self, frame: Bytes) {
        let _ = self.outbox.push(frame);
    }

    /// Sends our close frame after what is queued (or, for a slow consumer, instead of it)
    /// and waits a bounded time for the client's.
    fn start_close(&mut self, code: CloseCode) {
        self.outbox.close(code);
        if code == CloseCode::SlowConsumer {
            Metrics::add(&self.metrics().slow_consumers_total, 1);
            warn!(
                queued = self.outbox.len() + self.writing.len(),
                "slow consumer; closing"
            );
            // Keep only a partly written frame: the close frame must follow whole frames.
            self.writing.truncate(usize::from(self.write_offset > 0));
        } else {
            self.outbox.drain_into(&mut self.writing);
        }
        self.metrics().close(code);
        self.writing
            .push_back(wirehub_ws::encode_close(code.code(), code.reason()));
        self.closing = Some((code, Instant::now() + CLOSE_TIMEOUT));
    }

    /// Releases everything the connection held and logs how it ended.
    async fn finish(&mut self, end: End) {
        for channel in std::mem::take(&mut self.subscriptions) {
            if let Err(err) = self.state.hub.unsubscribe(&channel, self.id).await {
                warn!(%channel, error = %err, "releasing subscription failed");
            }
        }
        self.outbox.close(CloseCode::Normal);
        match &end {
            End::Closed(code) => {
                info!(
                    close_code = code.code(),
                    reason = code.reason(),
                    "connection closed"
                );
            }
            End::CloseTimeout(code) => {
                info!(
                    close_code = code.code(),
                    reason = code.reason(),
                    "connection closed (no close reply)"
                );
            }
            End::HeartbeatTimeout => {
                Metrics::add(&self.metrics().heartbeat_terminations_total, 1);
                self.metrics().close(CloseCode::HeartbeatTimeout);
                warn!("no pong before the next heartbeat; terminating connection");
                // Best effort: a dead peer will not read it.
                let frame = wirehub_ws::encode_close(
                    CloseCode::HeartbeatTimeout.code(),
                    CloseCode::HeartbeatTimeout.reason(),
                );
                if self.write_offset == 0 {
                    let _ = self.transport.try_write_vectored(&[IoSlice::new(&frame)]);
                    let _ = self.transport.flush_pending();
                }
            }
            End::Abrupt(reason) => {
                Metrics::add(&self.metrics().abrupt_disconnects_total, 1);
                info!(reason = %reason, "connection lost");
            }
        }
        self.metrics().connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A random point in `[0, window)`: spreads closes (and first heartbeats) over a window.
pub(crate) fn spread(window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    window.mul_f64(rand::random::<f64>())
}
