//! [`TestServer`]: the real wirehub server on a loopback port chosen by the OS.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use wirehub_protocol::{HistoryQuery, HistoryReply, PublishReply, PublishRequest};
use wirehub_server::ServerConfig;

use crate::TIMEOUT;

/// A running server, on a runtime of its own (in its own thread) so that [`TestServer::kill`]
/// can drop it whole, like a killed process. Dropping it shuts the server down gracefully.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    kill: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl TestServer {
    /// Starts the server on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When the loopback listener cannot be bound (the test cannot run at all then).
    pub async fn start(config: ServerConfig) -> TestServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        Self::with_listener(listener, config)
    }

    /// Starts the server on a given address (to restart one on the port it had).
    ///
    /// # Panics
    /// When the address cannot be bound.
    pub async fn start_on(addr: SocketAddr, config: ServerConfig) -> TestServer {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(addr).expect("bind the previous address");
        let listener = socket.listen(1024).expect("listen");
        Self::with_listener(listener.into_std().expect("std listener"), config)
    }

    fn with_listener(listener: std::net::TcpListener, config: ServerConfig) -> TestServer {
        let addr = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("non-blocking");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("tokio listener");
                tokio::select! {
                    result = wirehub_server::run(listener, config, token) => {
                        if let Err(err) = result {
                            panic!("server failed: {err}");
                        }
                    }
                    _ = kill_rx => {}
                }
            });
            // Dropping the runtime drops every task: sockets close without a close handshake.
            runtime.shutdown_background();
            let _ = done_tx.send(());
        });
        TestServer {
            addr,
            shutdown,
            kill: Some(kill_tx),
            done: Some(done_rx),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://ADDR` followed by `path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The value of a metric from `GET /metrics` (`name` with its labels, if any, as written
    /// on the page, e.g. `wirehub_errors_total{code="invalid_json"}`).
    ///
    /// # Panics
    /// When the page cannot be read or lacks the metric.
    pub async fn metric(&self, name: &str) -> u64 {
        let page = reqwest::get(self.http_url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    /// Polls a metric until it has the wanted value (the server updates some asynchronously).
    ///
    /// # Panics
    /// When it does not get there within [`TIMEOUT`].
    pub async fn wait_for_metric(&self, name: &str, want: u64) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let value = self.metric(name).await;
            if value == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stayed {value}, wanted {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Publishes over `POST /api/publish` and returns the offset.
    ///
    /// # Panics
    /// When the request fails or the answer is not a [`PublishReply`].
    pub async fn publish_http(&self, channel: &str, data: serde_json::Value) -> u64 {
        let data = serde_json::value::to_raw_value(&data).expect("JSON data");
        let request = PublishRequest {
            channel: channel.into(),
            data: &data,
            idempotency_key: None,
        };
        let reply: PublishReply = reqwest::Client::new()
            .post(self.http_url("/api/publish"))
            .json(&request)
            .send()
            .await
            .expect("POST /api/publish")
            .json()
            .await
            .expect("a publish reply");
        reply.offset
    }

    /// `GET /api/history` with `query`, as JSON; also checks that the answer reads as a
    /// [`HistoryReply`].
    ///
    /// # Panics
    /// When the request fails or the answer is not a history page.
    pub async fn history_http(&self, query: &HistoryQuery) -> serde_json::Value {
        let page: serde_json::Value = reqwest::Client::new()
            .get(self.http_url("/api/history"))
            .query(query)
            .send()
            .await
            .expect("GET /api/history")
            .json()
            .await
            .expect("a JSON answer");
        if let Err(err) = serde_json::from_value::<HistoryReply>(page.clone()) {
            panic!("{page} is not a history page: {err}");
        }
        page
    }

    /// The shutdown token (cancel it to start a graceful shutdown).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }

    /// Stops the server at once, as when its process is killed: every task is dropped and
    /// every socket closed without a close handshake.
    pub async fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
