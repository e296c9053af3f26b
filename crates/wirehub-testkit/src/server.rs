//! [`TestServer`]: the real wirehub server on a loopback port chosen by the OS.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use wirehub_server::ServerConfig;

/// A running server. Dropping it cancels the server; [`TestServer::stop`] also waits for it.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts the server on `127.0.0.1:0`.
    ///
    /// # Panics
    /// When the loopback listener cannot be bound (the test cannot run at all then).
    pub async fn start(config: ServerConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
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
        Self::with_listener(listener, config)
    }

    fn with_listener(listener: TcpListener, config: ServerConfig) -> TestServer {
        let addr = listener.local_addr().expect("local address");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            if let Err(err) = wirehub_server::run(listener, config, token).await {
                panic!("server failed: {err}");
            }
        });
        TestServer {
            addr,
            shutdown,
            task: Some(task),
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

    /// The shutdown token (cancel it to start a graceful shutdown).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stops the server at once: the task is aborted, every socket it held is dropped
    /// without a close handshake (as when a process is killed).
    pub async fn kill(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
