//! Scripted fake servers that misbehave on purpose, to test how clients cope.
//!
//! [`FakeServer`] accepts WebSocket connections on `127.0.0.1:0` and treats each one as its
//! script says ([`Behavior`]): refuse the upgrade with an HTTP status, close right after the
//! handshake, send `welcome` and then freeze, or act as a small but faithful server
//! (subscribe, publish with acks and fan-out, history replay through `since`, ping/pong).
//! It records when each TCP connection was accepted, the `Authorization` header of each
//! upgrade, and every request it received, so tests can assert on reconnect timing and on
//! what the client sent.
//!
//! [`BlackHole`] accepts TCP connections and never answers at all.
//!
//! Every wait helper takes a timeout and panics with a clear message when it expires.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wirehub_protocol::{
    ClientMessage, ErrorCode, ServerMessage, encode_message, encode_server_message,
    parse_client_message,
};

/// What the fake server does with one connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Behavior {
    /// Refuse the WebSocket upgrade with this HTTP status (e.g. 401).
    RejectHttp(u16),
    /// Refuse the WebSocket upgrade as overloaded: this status (503, 429) with this
    /// `Retry-After` header value.
    RejectRetryAfter(u16, String),
    /// Complete the handshake, then close at once: with `Some(code)` a close frame with that
    /// code, with `None` by dropping the TCP connection without a close frame.
    CloseAfterHandshake(Option<u16>),
    /// Complete the handshake, then close at once with this code and reason (a retry hint
    /// such as `overloaded; retry=1500-1700`).
    CloseWithReason(u16, String),
    /// Send `welcome`, then never read or write again (not even WebSocket pongs): a frozen
    /// server. The socket stays open until the fake server is dropped.
    Freeze,
    /// Act like a real server (see [`ServeOptions`]).
    Serve(ServeOptions),
}

impl Behavior {
    /// [`Behavior::Serve`] with the default options.
    pub fn serve() -> Behavior {
        Behavior::Serve(ServeOptions::default())
    }
}

/// How a [`Behavior::Serve`] connection behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// The epoch of every channel stream on this connection. A `since` with another epoch
    /// cannot be recovered (`recovered: false`). Default `"e1"`.
    pub epoch: String,
    /// Whether publishes are acknowledged (and fanned out). When `false` they are only
    /// recorded, as if the server never got to them. Default `true`.
    pub ack_publishes: bool,
    /// Whether `since` is honoured by replaying history. When `false` the answer is
    /// `recovered: false`. Default `true`.
    pub history: bool,
    /// Whether `subscribe` is answered. When `false` it is only recorded, so a client that
    /// resubscribes never finishes restoring its subscriptions. Default `true`.
    pub answer_subscribes: bool,
    /// Close the connection with this code after this long. Default never.
    pub close_after: Option<(Duration, u16)>,
    /// Whether acks are lost: publishes are carried out (fanned out, their idempotency keys
    /// remembered) but never acknowledged. Default `false`.
    pub lose_acks: bool,
    /// Refuse the first `n` subscribes of each connection with `error` of this code, as a
    /// real server does while its broker is unavailable (`internal`) or for good
    /// (`forbidden`). Default none.
    pub refuse_subscribes: Option<(ErrorCode, usize)>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            epoch: "e1".into(),
            ack_publishes: true,
            history: true,
            answer_subscribes: true,
            close_after: None,
            lose_acks: false,
            refuse_subscribes: None,
        }
    }
}

impl ServeOptions {
    /// Sets the epoch.
    pub fn epoch(mut self, epoch: impl Into<String>) -> Self {
        self.epoch = epoch.into();
        self
    }

    /// Sets whether publishes are acknowledged.
    pub fn ack_publishes(mut self, ack: bool) -> Self {
        self.ack_publishes = ack;
        self
    }

    /// Sets whether `since` is honoured.
    pub fn history(mut self, history: bool) -> Self {
        self.history = history;
        self
    }

    /// Sets whether `subscribe` is answered.
    pub fn answer_subscribes(mut self, answer: bool) -> Self {
        self.answer_subscribes = answer;
        self
    }

    /// Sets whether publishes are carried out without an ack reaching the client.
    pub fn lose_acks(mut self, lose: bool) -> Self {
        self.lose_acks = lose;
        self
    }

    /// Refuses the first `n` subscribes of each connection with an error of `code`.
    pub fn refuse_subscribes(mut self, code: ErrorCode, n: usize) -> Self {
        self.refuse_subscribes = Some((code, n));
        self
    }

    /// Closes each connection with `code` after `after`.
    pub fn close_after(mut self, after: Duration, code: u16) -> Self {
        self.close_after = Some((after, code));
        self
    }
}

/// A request the fake server received.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Received {
    /// The index of the connection (0 for the first one accepted).
    pub connection: usize,
    /// The request as JSON.
    pub message: Value,
}

impl Received {
    /// The request's `type`.
    pub fn kind(&self) -> &str {
        self.message["type"].as_str().unwrap_or("")
    }
}

/// A scripted fake wirehub server on `127.0.0.1:0`. Dropping it closes every connection.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

type Script = Box<dyn Fn(usize) -> Behavior + Send + Sync>;

struct Shared {
    script: Script,
    log: Mutex<Log>,
    /// Bumped on every change to `log`, so waiters wake up.
    version: watch::Sender<u64>,
    streams: Mutex<HashMap<String, Stream>>,
    /// Control queues of live connections, by connection index.
    connections: Mutex<HashMap<usize, mpsc::UnboundedSender<Control>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Log {
    attempts: Vec<Instant>,
    authorization: Vec<Option<String>>,
    received: Vec<Received>,
}

/// One channel's stream: its offset counter, history and subscribers.
#[derive(Default)]
struct Stream {
    offset: u64,
    history: Vec<(u64, Box<RawValue>)>,
    /// Idempotency key → offset of the message published with it.
    keys: HashMap<String, u64>,
    subscribers: HashMap<usize, mpsc::UnboundedSender<Control>>,
}

enum Control {
    Send(String),
    Close(u16),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FakeServer {
    /// Starts a server that treats connection number `n` (from 0) as `script(n)` says.
    ///
    /// # Panics
    /// When `127.0.0.1:0` cannot be bound.
    pub async fn start(script: impl Fn(usize) -> Behavior + Send + Sync + 'static) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            script: Box::new(script),
            log: Mutex::new(Log::default()),
            version: watch::channel(0).0,
            streams: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        FakeServer {
            addr,
            shared,
            accept,
        }
    }

    /// Starts a server that treats every connection the same way.
    pub async fn always(behavior: Behavior) -> FakeServer {
        FakeServer::start(move |_| behavior.clone()).await
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// When each TCP connection was accepted, in order.
    pub fn attempts(&self) -> Vec<Instant> {
        lock(&self.shared.log).attempts.clone()
    }

    /// The `Authorization` header of each upgrade request that got that far, in order.
    pub fn authorization_headers(&self) -> Vec<Option<String>> {
        lock(&self.shared.log).authorization.clone()
    }

    /// Every request received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.shared.log).received.clone()
    }

    /// Waits until at least `n` connections were accepted and returns their times.
    ///
    /// # Panics
    /// When that takes longer than `timeout`.
    pub async fn wait_for_attempts(&self, n: usize, timeout: Duration) -> Vec<Instant> {
        self.wait_until(timeout, |log| {
            (log.attempts.len() >= n).then(|| log.attempts.clone())
        })
        .await
        .unwrap_or_else(|seen| {
            panic!(
                "waited {timeout:?} for {n} connection attempts; saw {}",
                seen.attempts.len()
            )
        })
    }

    /// Waits until `n` received requests match `predicate` and returns them.
    ///
    /// # Panics
    /// When that takes longer than `timeout`.
    pub async fn wait_for_received(
        &self,
        n: usize,
        timeout: Duration,
        predicate: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        self.wait_until(timeout, |log| {
            let matching: Vec<Received> = log
                .received
                .iter()
                .filter(|r| predicate(r))
                .cloned()
                .collect();
            (matching.len() >= n).then_some(matching)
        })
        .await
        .unwrap_or_else(|seen| {
            panic!(
                "waited {timeout:?} for {n} matching requests; received: {:?}",
                seen.received
            )
        })
    }

    /// Publishes `data` on `channel` as if another client had: assigns the next offset,
    /// keeps it in history and delivers it to every subscribed connection.
    pub fn publish(&self, channel: &str, data: &Value) -> u64 {
        let raw = serde_json::value::to_raw_value(data).expect("JSON value serializes");
        publish(&self.shared, channel, raw)
    }

    /// Publishes `data` on `channel` without delivering it: the offset is assigned and the
    /// message kept in history, but no subscriber is sent it, as when a broker fault loses a
    /// publication on its way. Follow it with a `gap` ([`FakeServer::send_all`]) to tell them.
    pub fn publish_unsent(&self, channel: &str, data: &Value) -> u64 {
        let raw = serde_json::value::to_raw_value(data).expect("JSON value serializes");
        let mut streams = lock(&self.shared.streams);
        let stream = streams.entry(channel.to_owned()).or_default();
        stream.offset += 1;
        stream.history.push((stream.offset, raw));
        stream.offset
    }

    /// Sends a raw text frame to every live connection (e.g. a duplicate `message`).
    pub fn send_all(&self, text: &str) {
        for connection in lock(&self.shared.connections).values() {
            let _ = connection.send(Control::Send(text.to_owned()));
        }
    }

    /// Closes every live connection with `code`.
    pub fn close_all(&self, code: u16) {
        for connection in lock(&self.shared.connections).values() {
            let _ = connection.send(Control::Close(code));
        }
    }

    /// Runs `check` on the log until it returns `Some` or `timeout` passes (then the log).
    async fn wait_until<T>(
        &self,
        timeout: Duration,
        check: impl Fn(&Log) -> Option<T>,
    ) -> Result<T, LogSnapshot> {
        let deadline = Instant::now() + timeout;
        let mut version = self.shared.version.subscribe();
        loop {
            version.borrow_and_update();
            {
                let log = lock(&self.shared.log);
                if let Some(found) = check(&log) {
                    return Ok(found);
                }
            }
            if tokio::time::timeout_at(deadline, version.changed())
                .await
                .is_err()
            {
                let log = lock(&self.shared.log);
                return Err(LogSnapshot {
                    attempts: log.attempts.clone(),
                    received: log.received.clone(),
                });
            }
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

/// What the log held when a wait timed out (for the panic message).
#[derive(Debug)]
struct LogSnapshot {
    attempts: Vec<Instant>,
    received: Vec<Received>,
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    let mut index = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                lock(&shared.log).attempts.push(Instant::now());
                shared.version.send_modify(|v| *v += 1);
                let behavior = (shared.script)(index);
                connections.spawn(connection(stream, index, behavior, shared.clone()));
                index += 1;
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn connection(stream: TcpStream, index: usize, behavior: Behavior, shared: Arc<Shared>) {
    let reject = match &behavior {
        Behavior::RejectHttp(status) => Some((*status, None)),
        Behavior::RejectRetryAfter(status, retry_after) => Some((*status, Some(retry_after))),
        _ => None,
    };
    let mut authorization = None;
    // The signature is tungstenite's callback type; its error is an HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        authorization = request
            .headers()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        match reject {
            Some((status, retry_after)) => {
                let mut refusal = ErrorResponse::new(Some(format!("refused with {status}")));
                *refusal.status_mut() =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
                if let Some(value) = retry_after.and_then(|v| v.parse().ok()) {
                    refusal.headers_mut().insert("retry-after", value);
                }
                Err(refusal)
            }
            None => Ok(response),
        }
    };
    let handshake = tokio_tungstenite::accept_hdr_async(stream, callback).await;
    lock(&shared.log).authorization.push(authorization);
    shared.version.send_modify(|v| *v += 1);
    let Ok(mut socket) = handshake else { return };
    match behavior {
        Behavior::RejectHttp(_) | Behavior::RejectRetryAfter(..) => {}
        Behavior::CloseAfterHandshake(None) => drop(socket),
        Behavior::CloseAfterHandshake(Some(code)) => {
            close_at_once(&mut socket, close_frame(code)).await;
        }
        Behavior::CloseWithReason(code, reason) => {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            close_at_once(&mut socket, frame).await;
        }
        Behavior::Freeze => {
            let _ = socket.send(Message::text(welcome(index))).await;
            std::future::pending::<()>().await;
        }
        Behavior::Serve(options) => serve(socket, index, options, shared).await,
    }
}

/// Sends `frame` and waits (briefly) for the client's answer so that the close handshake
/// completes.
async fn close_at_once(socket: &mut WebSocketStream<TcpStream>, frame: CloseFrame) {
    let _ = socket.close(Some(frame)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.next()).await;
}

fn close_frame(code: u16) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(code),
        reason: "fake server".into(),
    }
}

fn welcome(index: usize) -> String {
    encode_server_message(&ServerMessage::Welcome {
        version: wirehub_protocol::PROTOCOL_VERSION,
        session: format!("fake-{index}"),
        heartbeat: 30.0,
    })
}

async fn serve(
    mut socket: WebSocketStream<TcpStream>,
    index: usize,
    options: ServeOptions,
    shared: Arc<Shared>,
) {
    let (control, mut controls) = mpsc::unbounded_channel();
    lock(&shared.connections).insert(index, control.clone());
    let close_at = options
        .close_after
        .map(|(after, code)| (Instant::now() + after, code));
    let close_timer = async {
        match close_at {
            Some((at, code)) => {
                tokio::time::sleep_until(at).await;
                code
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(close_timer);
    let mut refused = 0;
    if socket.send(Message::text(welcome(index))).await.is_ok() {
        loop {
            tokio::select! {
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        for reply in handle(text.as_str(), index, &options, &shared, &control, &mut refused) {
                            if socket.send(Message::text(reply)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                control = controls.recv() => match control {
                    Some(Control::Send(text)) => {
                        if socket.send(Message::text(text)).await.is_err() {
                            break;
                        }
                    }
                    Some(Control::Close(code)) => {
                        let _ = socket.close(Some(close_frame(code))).await;
                        break;
                    }
                    None => break,
                },
                code = &mut close_timer => {
                    let _ = socket.close(Some(close_frame(code))).await;
                    break;
                }
            }
        }
    }
    lock(&shared.connections).remove(&index);
    for stream in lock(&shared.streams).values_mut() {
        stream.subscribers.remove(&index);
    }
}

/// Handles one request; returns the frames to send back, in order.
fn handle(
    text: &str,
    index: usize,
    options: &ServeOptions,
    shared: &Shared,
    control: &mpsc::UnboundedSender<Control>,
    refused: &mut usize,
) -> Vec<String> {
    if let Ok(message) = serde_json::from_str::<Value>(text) {
        lock(&shared.log).received.push(Received {
            connection: index,
            message,
        });
        shared.version.send_modify(|v| *v += 1);
    }
    let request = match parse_client_message(text) {
        Ok(request) => request,
        Err(error) => {
            return vec![encode_server_message(&ServerMessage::Error {
                id: error.id,
                code: error.code,
                message: error.message,
            })];
        }
    };
    match request {
        ClientMessage::Subscribe { .. } if !options.answer_subscribes => Vec::new(),
        ClientMessage::Subscribe { id, .. }
            if options.refuse_subscribes.is_some_and(|(_, n)| *refused < n) =>
        {
            *refused += 1;
            let code = options
                .refuse_subscribes
                .map_or(ErrorCode::Internal, |(code, _)| code);
            vec![encode_server_message(&ServerMessage::Error {
                id,
                code,
                message: "refused by the fake server".into(),
            })]
        }
        ClientMessage::Subscribe { id, channel, since } => {
            let mut streams = lock(&shared.streams);
            let stream = streams.entry(channel.to_string()).or_default();
            stream.subscribers.insert(index, control.clone());
            let recovered = since.as_ref().map(|since| {
                options.history
                    && since.epoch == options.epoch
                    && stream
                        .history
                        .first()
                        .is_none_or(|(first, _)| *first <= since.offset + 1)
            });
            let mut replies = vec![encode_server_message(&ServerMessage::Subscribed {
                id,
                channel: channel.to_string(),
                epoch: options.epoch.clone(),
                offset: stream.offset,
                recovered,
            })];
            if let (Some(true), Some(since)) = (recovered, &since) {
                for (offset, data) in &stream.history {
                    if *offset > since.offset {
                        let mut out = Vec::new();
                        encode_message(&mut out, &channel, *offset, data.get().as_bytes());
                        replies.push(String::from_utf8_lossy(&out).into_owned());
                    }
                }
            }
            replies
        }
        ClientMessage::Unsubscribe { id, channel } => {
            if let Some(stream) = lock(&shared.streams).get_mut(&*channel) {
                stream.subscribers.remove(&index);
            }
            vec![encode_server_message(&ServerMessage::Unsubscribed {
                id,
                channel: channel.to_string(),
            })]
        }
        ClientMessage::Publish {
            id,
            channel,
            data,
            idempotency_key,
        } => {
            if !options.ack_publishes {
                return Vec::new();
            }
            let seen = idempotency_key.as_deref().and_then(|key| {
                lock(&shared.streams)
                    .get(&*channel)
                    .and_then(|stream| stream.keys.get(key).copied())
            });
            let (offset, duplicate) = match seen {
                Some(offset) => (offset, true),
                None => {
                    let offset = publish(shared, &channel, data.into_owned());
                    if let Some(key) = idempotency_key
                        && let Some(stream) = lock(&shared.streams).get_mut(&*channel)
                    {
                        stream.keys.insert(key.into_owned(), offset);
                    }
                    (offset, false)
                }
            };
            if options.lose_acks {
                return Vec::new();
            }
            vec![encode_server_message(&ServerMessage::Ack {
                id,
                offset,
                duplicate,
            })]
        }
        ClientMessage::Ping { id } => vec![encode_server_message(&ServerMessage::Pong { id })],
        ClientMessage::Refresh { .. } => Vec::new(),
        // The fake server keeps no presence.
        ClientMessage::Presence { id, .. } => vec![encode_server_message(&ServerMessage::Error {
            id,
            code: ErrorCode::PresenceDisabled,
            message: "the fake server keeps no presence".into(),
        })],
    }
}

fn publish(shared: &Shared, channel: &str, data: Box<RawValue>) -> u64 {
    let mut streams = lock(&shared.streams);
    let stream = streams.entry(channel.to_owned()).or_default();
    stream.offset += 1;
    let offset = stream.offset;
    let mut out = Vec::new();
    encode_message(&mut out, channel, offset, data.get().as_bytes());
    let text = String::from_utf8_lossy(&out).into_owned();
    for subscriber in stream.subscribers.values() {
        let _ = subscriber.send(Control::Send(text.clone()));
    }
    stream.history.push((offset, data));
    offset
}

/// A TCP listener on `127.0.0.1:0` that accepts connections and never answers: no
/// handshake, no data, no close. Dropping it closes them.
#[derive(Debug)]
pub struct BlackHole {
    addr: SocketAddr,
    attempts: Arc<Mutex<Vec<Instant>>>,
    version: watch::Receiver<u64>,
    accept: JoinHandle<()>,
}

impl BlackHole {
    /// Starts it.
    ///
    /// # Panics
    /// When `127.0.0.1:0` cannot be bound.
    pub async fn start() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let (bump, version) = watch::channel(0u64);
        let log = attempts.clone();
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                lock(&log).push(Instant::now());
                bump.send_modify(|v| *v += 1);
                held.push(stream);
            }
        });
        BlackHole {
            addr,
            attempts,
            version,
            accept,
        }
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// When each TCP connection was accepted, in order.
    pub fn attempts(&self) -> Vec<Instant> {
        lock(&self.attempts).clone()
    }

    /// Waits until at least `n` connections were accepted and returns their times.
    ///
    /// # Panics
    /// When that takes longer than `timeout`.
    pub async fn wait_for_attempts(&self, n: usize, timeout: Duration) -> Vec<Instant> {
        let deadline = Instant::now() + timeout;
        let mut version = self.version.clone();
        loop {
            version.borrow_and_update();
            let attempts = self.attempts();
            if attempts.len() >= n {
                return attempts;
            }
            if tokio::time::timeout_at(deadline, version.changed())
                .await
                .is_err()
            {
                panic!(
                    "waited {timeout:?} for {n} connection attempts; saw {}",
                    attempts.len()
                );
            }
        }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
