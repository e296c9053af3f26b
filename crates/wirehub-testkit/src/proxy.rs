//! [`TcpProxy`]: a loopback TCP proxy that a test can cut and restore, to play a flaky
//! network between a real client and a real server (or between a node and Redis).
//!
//! Two kinds of fault: [`TcpProxy::cut`] takes the link down (open connections end, new ones
//! are refused until [`TcpProxy::restore`]), [`TcpProxy::reset`] is a blip (open connections
//! end, new ones go through at once).
//!
//! It also counts the bytes it carried each way ([`TcpProxy::bytes_to_clients`],
//! [`TcpProxy::bytes_to_target`]), for tests of what crosses the wire.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A proxy from a port of its own to `target`.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: CancellationToken,
    counts: Arc<Counts>,
}

/// Bytes carried each way, over every connection.
#[derive(Debug, Default)]
struct Counts {
    to_clients: AtomicU64,
    to_target: AtomicU64,
}

/// A writer that counts what it wrote.
struct Counting<'a, W> {
    inner: W,
    count: &'a AtomicU64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Counting<'_, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            self.count.fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies `from` to `to`, counting, then passes the end of the stream on; false when the
/// copy failed (a reset), which ends the other direction too.
async fn pipe<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: R,
    to: W,
    count: &AtomicU64,
) -> bool {
    let mut to = Counting { inner: to, count };
    tokio::io::copy(&mut from, &mut to).await.is_ok() && to.shutdown().await.is_ok()
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
        let counts = Arc::new(Counts::default());
        let task_counts = counts.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = task_stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else {
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
                let counts = task_counts.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (client_read, client_write) = inbound.into_split();
                    let (target_read, target_write) = outbound.into_split();
                    let both = async {
                        let up = pipe(client_read, target_write, &counts.to_target);
                        let down = pipe(target_read, client_write, &counts.to_clients);
                        tokio::pin!(up, down);
                        // A clean end of one direction leaves the other running (a half
                        // close); a failure ends both, as a reset does.
                        tokio::select! {
                            clean = &mut up => if clean { down.await; },
                            clean = &mut down => if clean { up.await; },
                        }
                    };
                    tokio::select! {
                        () = generation.cancelled() => {}
                        _ = both => {}
                    }
                });
            }
        });
        TcpProxy {
            addr,
            state,
            stop,
            counts,
        }
    }

    /// Bytes written to the clients so far (what the target sent them), over all connections.
    pub fn bytes_to_clients(&self) -> u64 {
        self.counts.to_clients.load(Ordering::Relaxed)
    }

    /// Bytes written to the target so far (what the clients sent), over all connections.
    pub fn bytes_to_target(&self) -> u64 {
        self.counts.to_target.load(Ordering::Relaxed)
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
