//! One WebSocket connection: a single task running one `select!` loop.
//!
//! The loop owns the socket and waits on: the socket becoming readable, the socket becoming
//! writable (only while frames are waiting), the connection's [`Outbox`] (frames queued by the
//! hub or by replies), the next deadline, and shutdown. Reads and writes use readiness and
//! `try_read`/`try_write_vectored` on the `TcpStream` itself, so one task drives both
//! directions and an idle connection holds no read or write buffer at all: the read buffer
//! exists only while bytes are being decoded, and frames are written straight from the shared
//! `Bytes` that the hub built once for every subscriber.
//!
//! The connection's life is one [`Phase`]: open, draining (shutdown was signalled), closing
//! (our close frame is queued and the client's awaited) and flushing (nothing more is read;
//! what is queued goes out, then the connection ends). Every close, whoever starts it, goes
//! through [`Session::start_close`]. The requests themselves are handled in `requests`, one
//! handler per request type.
//!
//! Bad input is answered with an `error` and the loop goes on. Only the causes in the close
//! code table end a connection; whichever way it ends, its subscriptions are released. A
//! connection the server gave up on (no close reply, no pong) is reset rather than closed, so
//! that the kernel frees what it still held for it at once.

mod presence;
mod requests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};
use wirehub_core::{Outbox, OutboxLimits, text_frame};
use wirehub_protocol::{
    CloseCode, ErrorCode, PROTOCOL_VERSION, ServerMessage, encode_server_message,
};
use wirehub_ws::{Decoder, Deflate, Message, OpCode, ProtocolError};

use crate::auth::Claims;
use crate::heartbeat::Heartbeat;
use crate::metrics::Metrics;
use crate::rate::PublishLimiter;
use crate::state::{AppState, ConnectionSlot};
use crate::transport::Transport;

/// What the connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The wirehub protocol.
    PubSub,
    /// Echo every data frame back (protocol-conformance testing).
    Echo,
    /// The Pusher protocol (`/app/KEY`), handled in `crate::pusher::conn`.
    Pusher,
}

/// Bytes read from the socket per readiness event at most, so that a client that floods the
/// server cannot starve its own writes and heartbeat.
const READ_BUDGET: usize = 256 * 1024;
/// Size of each read.
const READ_CHUNK: usize = 8 * 1024;
/// Frames handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long the server waits, once its close frame is queued, for the frame to go out and the
/// client's to come back. Past it the connection is reset: this is the grace a given-up
/// connection gets before the kernel drops what it still holds for it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the connection is in its life; one value decides what the loop reads, writes and
/// waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Serving requests.
    Open,
    /// Shutdown was signalled: requests are still served until `at` (a random point in the
    /// drain window, so that clients do not all come back at once), then the connection
    /// closes with 1001.
    Draining {
        /// When the close starts.
        at: Instant,
    },
    /// Our close frame is queued; the client's is awaited until `deadline`. Anything else the
    /// client sends is ignored.
    Closing {
        /// The close code sent (and counted).
        code: CloseCode,
        /// When the connection is given up if the close handshake has not completed.
        deadline: Instant,
    },
    /// Nothing more is read (the client's close frame came, or its input broke the protocol):
    /// what is queued is written, then the connection ends; past `deadline` it is given up.
    Flushing {
        /// The close code sent (and counted).
        code: CloseCode,
        /// When the connection is given up if what is queued has not been written.
        deadline: Instant,
    },
}

impl Phase {
    /// Whether our close frame is queued.
    fn is_closing(self) -> bool {
        matches!(self, Phase::Closing { .. } | Phase::Flushing { .. })
    }
}

/// Who ends the connection, which decides what goes out before the close frame and what the
/// loop waits for after it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Closer {
    /// The server (shutdown, token expiry, abuse, a full outbox): what is queued goes first
    /// (for a slow consumer it is dropped), then the client's close frame is awaited.
    Server,
    /// The client's input broke the protocol: as `Server`, but nothing more is read.
    BadInput,
    /// The client's close frame, with its code: ours echoes the code at once, and what was
    /// queued is dropped.
    Client(u16),
}

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
    /// Our close frame was queued but the close handshake did not complete in time: the client
    /// did not answer, or did not even read the frame.
    CloseTimeout(CloseCode),
}

impl End {
    /// Whether the server gave up on the connection: it is then reset, not closed, so that
    /// the kernel discards what it still holds for a client that stopped reading instead of
    /// retrying it for minutes.
    fn given_up(&self) -> bool {
        matches!(self, End::HeartbeatTimeout | End::CloseTimeout(_))
    }
}

/// Runs a connection until it ends. `leftover` holds bytes that arrived with the upgrade
/// request; `slot` is the connection's place under `--max-connections`, released when this
/// returns (or when the task is dropped); `deflate` the permessage-deflate negotiated at the
/// upgrade, if any.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    transport: Transport,
    leftover: Bytes,
    peer: SocketAddr,
    state: Arc<AppState>,
    mode: Mode,
    claims: Option<Claims>,
    shutdown: CancellationToken,
    slot: ConnectionSlot,
    deflate: Option<Deflate>,
    pusher: Option<crate::pusher::conn::Start>,
) {
    let id = state.next_session_id();
    let name = match &pusher {
        Some(start) => start.socket_id.to_string(),
        None => format!("{:016x}", rand::random::<u64>()),
    };
    let user = claims.as_ref().map(|c| c.sub.clone());
    let span = tracing::info_span!("session", id, %peer, session = %name, user);
    let mut session = Session::new(id, name, transport, leftover, state, mode, deflate);
    session.set_claims(claims);
    session.user = user.map(Arc::from);
    if let Some(start) = pusher {
        session.start_pusher(start);
    }
    if matches!(mode, Mode::PubSub | Mode::Pusher) {
        session.register();
    }
    let end = session.run(shutdown).instrument(span.clone()).await;
    session.finish(end).instrument(span).await;
    drop(slot);
}

pub(crate) struct Session {
    pub(crate) id: u64,
    /// The session id in `welcome` (and in the connection's log span).
    pub(crate) name: String,
    transport: Transport,
    pub(crate) state: Arc<AppState>,
    mode: Mode,
    pub(crate) outbox: Arc<Outbox>,
    decoder: Decoder,
    read_buf: BytesMut,
    /// Frames taken from the outbox and not yet fully written; the first one is written from
    /// `write_offset` on.
    writing: VecDeque<Bytes>,
    write_offset: usize,
    pub(crate) subscriptions: HashSet<String>,
    /// Presence channels the connection is a member of, with the member's `client` (an
    /// earlier connection's after a takeover within the grace).
    presence: HashMap<String, String>,
    heartbeat: Heartbeat,
    publish_limiter: PublishLimiter,
    phase: Phase,
    /// The connection's token claims, when authentication is on.
    claims: Option<Claims>,
    /// The session id as lifecycle events carry it.
    pub(crate) client: Arc<str>,
    /// The token's `sub`.
    user: Option<Arc<str>>,
    /// The close code and reason of an order to close the connection (`POST /api/disconnect`).
    kicked: Arc<Mutex<Option<(u16, String)>>>,
    /// The close code and reason the connection ended with, once its close started.
    close_info: Option<(u16, String)>,
    /// When the token expires: the connection is closed with 4001 unless it is refreshed.
    /// `None` also for an expiry too far away for the clock to represent.
    token_deadline: Option<Instant>,
    /// The Pusher side of a `/app/KEY` connection.
    pub(crate) pusher: Option<Box<crate::pusher::conn::Conn>>,
    /// The close code and reason sent instead of the close code's own (a Pusher
    /// connection's code for the same cause).
    pub(crate) close_as: Option<(u16, &'static str)>,
}

impl Session {
    fn new(
        id: u64,
        name: String,
        transport: Transport,
        leftover: Bytes,
        state: Arc<AppState>,
        mode: Mode,
        deflate: Option<Deflate>,
    ) -> Self {
        let config = &state.config;
        let mut decoder = Decoder::new(config.max_message_size);
        let mut outbox = Outbox::new(limits_for(mode, config));
        if let Some(deflate) = &deflate {
            Metrics::add(&state.metrics.deflate_connections_total, 1);
            // An inflated message is held to the same size limit as an uncompressed one.
            decoder = decoder.with_deflate(deflate, config.max_message_size);
            let threshold = config.deflate.map_or(0, |settings| settings.threshold);
            outbox = outbox.with_deflate(deflate.compresses_outgoing().then_some(threshold));
        }
        let heartbeat = match mode {
            Mode::PubSub | Mode::Pusher => Heartbeat::new(config.heartbeat_interval),
            Mode::Echo => Heartbeat::disabled(),
        };
        Session {
            id,
            client: Arc::from(name.as_str()),
            user: None,
            kicked: Arc::new(Mutex::new(None)),
            close_info: None,
            name,
            transport,
            decoder,
            read_buf: BytesMut::from(&leftover[..]),
            publish_limiter: PublishLimiter::new(config.publish_rate, std::time::Instant::now()),
            state,
            mode,
            outbox: Arc::new(outbox),
            writing: VecDeque::new(),
            write_offset: 0,
            subscriptions: HashSet::new(),
            presence: HashMap::new(),
            heartbeat,
            phase: Phase::Open,
            claims: None,
            token_deadline: None,
            pusher: None,
            close_as: None,
        }
    }

    /// Sets the connection's token claims and the deadline of their expiry. An expiry beyond
    /// what the clock can represent (a signed `exp` near `u64::MAX`) sets no deadline.
    fn set_claims(&mut self, claims: Option<Claims>) {
        self.token_deadline = claims
            .as_ref()
            .and_then(|claims| Instant::now().checked_add(claims.expires_in()));
        self.claims = claims;
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Reports the connection (lifecycle `connect`) and registers how to close it on order.
    fn register(&self) {
        let outbox = self.outbox.clone();
        let kicked = self.kicked.clone();
        let kick: crate::activity::Kick = Arc::new(move |code: u16, reason: &str| {
            if outbox.closed().is_none() {
                let mut slot = kicked.lock().unwrap_or_else(PoisonError::into_inner);
                slot.get_or_insert_with(|| (code, reason.to_owned()));
                drop(slot);
                outbox.close(ordered_close(code));
            }
        });
        self.state
            .activity
            .connected(&self.client, self.user.as_ref(), kick);
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
        if self.mode == Mode::Pusher {
            self.pusher_welcome();
        }
        // The accept loop set TCP_NODELAY; the upgraded stream must still have it.
        let nodelay = self.transport.tcp().nodelay().unwrap_or(false);
        if !nodelay {
            warn!("TCP_NODELAY is off on this connection");
        }
        debug!(nodelay, "connection opened");
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
            match self.phase {
                Phase::Flushing { code, .. } if self.writing.is_empty() => {
                    return End::Closed(code);
                }
                Phase::Open | Phase::Draining { .. } => {
                    if let Some(code) = self.outbox.closed() {
                        self.start_close(code, Closer::Server);
                        continue;
                    }
                }
                Phase::Closing { .. } | Phase::Flushing { .. } => {}
            }
            let want_write = !self.writing.is_empty() || self.transport.wants_write();
            let deadline = self.next_deadline();
            if deadline != armed {
                if let Some(deadline) = deadline {
                    timer.as_mut().reset(deadline);
                }
                armed = deadline;
            }
            let open = self.phase == Phase::Open;
            let tcp = self.transport.tcp();
            let event = tokio::select! {
                biased;
                () = &mut cancelled, if open => Event::Shutdown,
                () = &mut timer, if armed.is_some() => Event::Deadline,
                ready = poll_fn(|cx| tcp.poll_read_ready(cx)) => Event::Readable(ready),
                ready = poll_fn(|cx| tcp.poll_write_ready(cx)), if want_write => Event::Writable(ready),
                () = &mut queued => Event::Queued,
            };
            match event {
                Event::Shutdown => {
                    let at = Instant::now() + spread(self.state.config.shutdown_drain);
                    self.phase = Phase::Draining { at };
                }
                Event::Deadline => {
                    armed = None;
                    if let Some(end) = self.on_deadline() {
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

    /// The earliest deadline the loop waits for: the end of the close handshake while
    /// closing, otherwise the shutdown drain, the token's expiry or the next heartbeat.
    fn next_deadline(&self) -> Option<Instant> {
        let drain_at = match self.phase {
            Phase::Closing { deadline, .. } | Phase::Flushing { deadline, .. } => {
                return Some(deadline);
            }
            Phase::Draining { at } => Some(at),
            Phase::Open => None,
        };
        [drain_at, self.token_deadline, self.heartbeat.deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on the deadline that passed (one per call; the loop comes back for the next).
    fn on_deadline(&mut self) -> Option<End> {
        let now = Instant::now();
        match self.phase {
            Phase::Closing { code, deadline } | Phase::Flushing { code, deadline } => {
                return (deadline <= now).then_some(End::CloseTimeout(code));
            }
            Phase::Draining { at } if at <= now => {
                self.start_close(CloseCode::GoingAway, Closer::Server);
                return None;
            }
            Phase::Open | Phase::Draining { .. } => {}
        }
        if self.token_deadline.is_some_and(|at| at <= now) {
            info!("token expired; closing");
            self.token_deadline = None;
            self.start_close(CloseCode::Unauthorized, Closer::Server);
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
                if self.phase.is_closing() {
                    return Ok(());
                }
                self.outbox.drain_into(&mut self.writing);
                if self.writing.is_empty() {
                    return Ok(());
                }
                if self.mode == Mode::Pusher {
                    crate::pusher::conn::rewrite_v1_frames(&mut self.writing);
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
                    return Err(match self.phase {
                        Phase::Closing { code, .. } | Phase::Flushing { code, .. } => {
                            End::Closed(code)
                        }
                        Phase::Open | Phase::Draining { .. } => {
                            End::Abrupt("connection reset or EOF without a close frame".into())
                        }
                    });
                }
                Ok(read) => {
                    budget = budget.saturating_sub(read);
                    self.decode_all().await?;
                    if matches!(self.phase, Phase::Flushing { .. }) {
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
            if matches!(self.phase, Phase::Flushing { .. }) {
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
        if code == CloseCode::MessageTooBig && self.mode == Mode::PubSub && !self.phase.is_closing()
        {
            // Say why in the protocol too, before the close frame.
            self.send_error(None, ErrorCode::TooLarge, &err.to_string());
        }
        self.start_close(code, Closer::BadInput);
    }

    async fn on_message(&mut self, message: Message) {
        match message {
            Message::Ping(payload) => {
                if !self.phase.is_closing() {
                    self.queue(wirehub_ws::encode_frame(OpCode::Pong, &payload));
                }
            }
            Message::Pong(_) => self.heartbeat.pong_received(),
            Message::Close(frame) => {
                let code = frame.as_ref().map_or(1000, |f| f.code);
                debug!(code, "client closed the connection");
                self.start_close(CloseCode::Normal, Closer::Client(code));
            }
            _ if self.phase.is_closing() => {}
            Message::Text(text) => match self.mode {
                Mode::Echo => self.queue(self.data_frame(OpCode::Text, &text)),
                // Boxed: a request handler's state (hub calls) is large and rarely alive;
                // kept inline, it would be part of every idle session's task.
                Mode::PubSub => Box::pin(self.on_text(&text)).await,
                Mode::Pusher => Box::pin(self.on_pusher_text(&text)).await,
            },
            Message::Binary(data) => match self.mode {
                Mode::Echo => self.queue(self.data_frame(OpCode::Binary, &data)),
                Mode::PubSub => self.send_error(
                    None,
                    ErrorCode::BinaryNotSupported,
                    "binary frames are not part of protocol v1; send JSON in text frames",
                ),
                Mode::Pusher => {
                    self.queue(crate::pusher::wire::error(
                        None,
                        "binary frames are not supported",
                    ));
                }
            },
        }
    }

    fn send(&mut self, message: &ServerMessage) {
        let json = encode_server_message(message);
        let frame = match self.outbox.deflate() {
            Some(threshold) if json.len() >= threshold => {
                self.data_frame(OpCode::Text, json.as_bytes())
            }
            _ => text_frame(&json),
        };
        self.queue(frame);
    }

    /// A text or binary frame of this connection's own (a reply, an echo): compressed when
    /// the connection negotiated permessage-deflate, the payload reaches the threshold and
    /// compression makes it smaller.
    fn data_frame(&self, opcode: OpCode, payload: &[u8]) -> Bytes {
        self.outbox
            .deflate()
            .filter(|threshold| payload.len() >= *threshold)
            .and_then(|_| wirehub_ws::deflate_frame(opcode, payload))
            .unwrap_or_else(|| wirehub_ws::encode_frame(opcode, payload))
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
    pub(crate) fn queue(&mut self, frame: Bytes) {
        let _ = self.outbox.push(frame);
    }

    /// Starts the close handshake, once per connection: closes the outbox, queues our close
    /// frame (after what is queued, or instead of it for a slow consumer and in answer to the
    /// client's close), counts the close code and moves to the phase that waits for the
    /// handshake's end, bounded by [`CLOSE_TIMEOUT`].
    ///
    /// Once closing, a client's close frame or a protocol error only stops the reading.
    pub(crate) fn start_close(&mut self, code: CloseCode, closer: Closer) {
        match (self.phase, closer) {
            (Phase::Open | Phase::Draining { .. }, _) => {}
            (Phase::Closing { code, deadline }, Closer::BadInput | Closer::Client(_)) => {
                self.phase = Phase::Flushing { code, deadline };
                return;
            }
            (Phase::Closing { .. } | Phase::Flushing { .. }, _) => return,
        }
        self.outbox.close(code);
        self.metrics().close(code);
        if code == CloseCode::SlowConsumer {
            Metrics::add(&self.metrics().slow_consumers_total, 1);
            warn!(
                queued = self.outbox.len() + self.writing.len(),
                "slow consumer; closing"
            );
        }
        let ordered = self
            .kicked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let frame = match (closer, ordered) {
            (Closer::Client(client_code), _) => {
                self.close_info = Some((client_code, "closed by the client".to_owned()));
                wirehub_ws::encode_close(client_code, "")
            }
            (Closer::Server, Some((ordered_code, reason))) => {
                let frame = wirehub_ws::encode_close(ordered_code, &reason);
                self.close_info = Some((ordered_code, reason));
                frame
            }
            (Closer::Server | Closer::BadInput, _) if self.mode == Mode::Pusher => {
                // Pusher's code for the same cause, or the one set for this close.
                let (number, reason) = self.close_frame_code(code);
                self.close_info = Some((number, reason.to_owned()));
                wirehub_ws::encode_close(number, reason)
            }
            (Closer::Server | Closer::BadInput, _) => {
                let reason = crate::admission::close_reason(&self.state, code);
                let frame = wirehub_ws::encode_close(code.code(), &reason);
                self.close_info = Some((code.code(), reason.to_string()));
                frame
            }
        };
        if code == CloseCode::SlowConsumer || matches!(closer, Closer::Client(_)) {
            // Keep only a partly written frame: the close frame must follow whole frames.
            self.writing.truncate(usize::from(self.write_offset > 0));
        } else {
            self.outbox.drain_into(&mut self.writing);
        }
        self.writing.push_back(frame);
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        self.phase = match closer {
            Closer::Server => Phase::Closing { code, deadline },
            Closer::BadInput | Closer::Client(_) => Phase::Flushing { code, deadline },
        };
    }

    /// Releases everything the connection held and logs how it ended. A connection the
    /// server gave up on is reset (`SO_LINGER` 0) when the socket is dropped, so that the
    /// kernel frees its send queue at once instead of holding it in FIN-WAIT-1.
    async fn finish(&mut self, end: End) {
        if self.pusher.is_some() {
            let departure = self.departure(&end);
            self.pusher_finish(departure).await;
        }
        self.presence_end(&end).await;
        for channel in std::mem::take(&mut self.subscriptions) {
            if let Err(err) = self.state.hub.unsubscribe(&channel, self.id).await {
                warn!(%channel, error = %err, "releasing subscription failed");
            }
            self.state.activity.unsubscribed(&self.client, &channel);
        }
        if self.mode == Mode::PubSub {
            let (code, reason) = match (&end, self.close_info.take()) {
                (End::Closed(_) | End::CloseTimeout(_), Some(info)) => info,
                (End::Closed(code) | End::CloseTimeout(code), None) => {
                    (code.code(), code.reason().to_owned())
                }
                (End::HeartbeatTimeout, _) => (
                    CloseCode::HeartbeatTimeout.code(),
                    CloseCode::HeartbeatTimeout.reason().to_owned(),
                ),
                (End::Abrupt(reason), _) => (1006, format!("connection lost: {reason}")),
            };
            self.state
                .activity
                .disconnected(&self.client, self.user.as_ref(), code, &reason);
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
                    unwritten = self.writing.len(),
                    "no close reply in time; resetting the connection"
                );
            }
            End::HeartbeatTimeout => {
                Metrics::add(&self.metrics().heartbeat_terminations_total, 1);
                self.metrics().close(CloseCode::HeartbeatTimeout);
                warn!("no pong before the next heartbeat; terminating connection");
                // Best effort: a dead peer will not read it, and the reset below discards it
                // unless the kernel could send it at once.
                let (number, reason) = self.close_frame_code(CloseCode::HeartbeatTimeout);
                let frame = wirehub_ws::encode_close(number, reason);
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
        if end.given_up() {
            Metrics::add(&self.metrics().connections_aborted_total, 1);
            if let Err(err) = self.transport.tcp().set_zero_linger() {
                warn!(error = %err, "could not set SO_LINGER to 0; the socket closes normally");
            }
        }
    }
}

impl Session {
    /// The close code and reason sent for `code`: its own, or, on a Pusher connection,
    /// Pusher's code for the same cause (or the one set for this close).
    fn close_frame_code(&self, code: CloseCode) -> (u16, &'static str) {
        if let Some(close_as) = self.close_as {
            return close_as;
        }
        match self.mode {
            Mode::Pusher => crate::pusher::close_code(code),
            Mode::PubSub | Mode::Echo => (code.code(), code.reason()),
        }
    }
}

/// The close code counted for a connection closed by order with `code` (the close frame
/// carries `code` itself).
fn ordered_close(code: u16) -> CloseCode {
    match code {
        1000 => CloseCode::Normal,
        1001 => CloseCode::GoingAway,
        4100..=4199 => CloseCode::PolicyViolation,
        4200..=4299 => CloseCode::Reconnect,
        _ => CloseCode::Forbidden,
    }
}

/// The outbox limits of a connection in `mode`.
fn limits_for(mode: Mode, config: &crate::config::ServerConfig) -> OutboxLimits {
    match mode {
        Mode::PubSub | Mode::Pusher => OutboxLimits {
            max_frames: config.max_queued_frames,
            max_bytes: config.max_queued_bytes,
        },
        Mode::Echo => OutboxLimits {
            max_frames: 1 << 16,
            max_bytes: config.max_message_size.saturating_mul(4).max(1 << 20),
        },
    }
}

/// A random point in `[0, window)`: spreads closes (and first heartbeats) over a window.
pub(crate) fn spread(window: Duration) -> Duration {
    if window.is_zero() {
        return Duration::ZERO;
    }
    window.mul_f64(rand::random::<f64>())
}
