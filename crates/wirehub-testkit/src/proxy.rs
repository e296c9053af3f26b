//! [`TcpProxy`]: a loopback TCP proxy that a test can cut and restore, to play a flaky
//! network between a real client and a real server (or between a node and Redis).
//!
//! Two kinds of fault: [`TcpProxy::cut`] takes the link down (open connections end, new ones
//! are refused until [`TcpProxy::restore`]), [`TcpProxy::reset`] is a blip (open connections
//! end, new ones go through at once).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A proxy from a port of its own to `target`.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct ProxyState {
    /// Cancelled by `cut`: ends every connection of the current generation.
    generation: CancellationToken,
    /// While set, new connections are accepted and dropped at once (the link is down).
    down: bool,
    connections: u64,
}

impl ProxyState {
    fn end_connections(&mut self) {
        self.generation.cancel();
        self.generation = CancellationToken::new();
    }
}

impl TcpProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `target`.
    ///
    /// # Panics
    /// When the loopback listener cannot be bound.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(ProxyState {
            generation: CancellationToken::new(),
            down: false,
            connections: 0,
        }));
        let stop = CancellationToken::new();
        let task_state = state.clone();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = task_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let generation = {
                    let mut state = task_state.lock().unwrap_or_else(|e| e.into_inner());
                    if state.down {
                        continue;
                    }
                    state.connections += 1;
                    state.generation.clone()
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    tokio::select! {
                        () = generation.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        TcpProxy { addr, state, stop }
    }

    /// The proxy's own address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://PROXY/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Cuts the link: drops every proxied connection (both sides see a reset or EOF, no
    /// close handshake) and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.down = true;
        state.end_connections();
    }

    /// Drops every proxied connection as [`TcpProxy::cut`] does, but keeps accepting new ones
    /// (a blip rather than an outage).
    pub fn reset(&self) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .end_connections();
    }

    /// Brings the link back.
    pub fn restore(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).down = false;
    }

    /// Connections proxied so far.
    pub fn connections(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connections
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
            .cancel();
    }
}
