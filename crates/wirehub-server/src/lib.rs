//! The wirehub server as a library: HTTP and WebSocket on one port.
//!
//! [`run`] serves a bound listener until its shutdown token is cancelled; [`router`] builds
//! the HTTP routes for tests that drive them without a socket. The `wirehub` binary only
//! parses settings, binds, installs signal handlers and calls [`run`].
//!
//! # Layout
//! - `config`: [`ServerConfig`], the typed settings.
//! - `admission`: admission control at the upgrade (connection rate, per-address cap,
//!   `--max-connections`), the refusals' `Retry-After` and the close reasons' retry hints.
//! - `http`: the routes (`/healthz`, `/metrics`, `/api/publish`, `/api/history`,
//!   `/schema/protocol.json`, `/`, `/ws`, the echo route).
//! - `upgrade`: the WebSocket handshake on hyper's upgrade.
//! - `deflate`: permessage-deflate settings and the answer to a client's offer.
//! - `session`: one connection's loop (reads, writes, heartbeat, shutdown, the close as one
//!   phase); `session::requests`: one handler per request.
//! - `auth`: tokens at the upgrade, channel permissions, refresh.
//! - `tls`, `transport`: HTTPS/`wss://` on the same port; the session's socket, plain or TLS.
//! - `heartbeat`: ping scheduling and pong deadlines.
//! - `metrics`: counters and the Prometheus page.
//! - `presence`: `GET /api/presence`, the presence housekeeping task and the members'
//!   lifecycle events; `session::presence`: a subscription to a presence channel is a member.
//! - `rate`: the per-connection publish limiter.
//! - `pusher`: the Pusher protocol (`/app/KEY`, the HTTP API `/apps/ID/...`, Pusher-format
//!   webhooks) on the same hub.
//! - `assets`: the page at `/`, the dashboard at `/dashboard` and their files (`/assets/`),
//!   built from `web/` and compiled in.
//! - `stats`: `GET /api/stats`, the dashboard's figures and the samples of the last minutes.
//! - `ready`: `/readyz` (the node serves fully: broker reachable, not shutting down).
//! - `state`: what every connection shares, and the connection slots of `--max-connections`.
//! - `activity`: connections and subscriptions as lifecycle events, the registry that
//!   `POST /api/disconnect` closes; `occupancy`: the node's subscriber counts and the worker
//!   announcing `channel_occupied` / `channel_vacated` (one node per transition).
//! - `webhooks`: the lifecycle sink that POSTs signed batches, with retries and a
//!   dead-letter file.
//! - `shutdown` (in [`run`]): stop accepting, spread closes over the drain window, wait.

mod activity;
mod admission;
mod assets;
mod auth;
mod config;
mod deflate;
mod heartbeat;
mod http;
mod http_admin;
mod metrics;
mod occupancy;
mod presence;
mod pusher;
mod rate;
mod ready;
mod session;
mod state;
mod stats;
mod tls;
mod transport;
mod upgrade;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};
use wirehub_broker_redis::RedisBroker;
use wirehub_core::{HistoryLimits, Hub, HubConfig};

pub use admission::{AdmissionConfig, IpNet};
pub use auth::{AuthConfig, AuthError, Authenticator, Claims};
pub use config::{AllowedOrigins, BrokerConfig, ServerConfig};
pub use deflate::DeflateSettings;
pub use http::router;
pub use metrics::Metrics;
pub use pusher::{PusherApp, PusherConfig};
pub use state::AppState;
pub use tls::{TlsConfig, TlsError};
pub use webhooks::WebhookConfig;
pub use wirehub_broker_redis::{Error as RedisError, RedisConfig};
pub use wirehub_core::{ChannelOptions, ChannelRules, OnSlow};

use crate::upgrade::PeerAddr;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Redis broker could not start (bad URL, or Redis unreachable).
    #[error(transparent)]
    Redis(#[from] wirehub_broker_redis::Error),
    /// The token key cannot be used.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Pusher apps' settings cannot be used.
    #[error("Pusher apps: {0}")]
    Pusher(String),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The webhook settings cannot be used.
    #[error("webhooks: {0}")]
    Webhooks(String),
}

/// A convenient result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds the hub (and its broker) for a config; for Redis, connects first. The broker's
/// tasks are spawned on `tasks` and end once `shutdown` is cancelled and the node has no
/// subscriber left.
///
/// # Errors
/// [`Error::Redis`] when the Redis settings cannot be used or Redis cannot be reached.
pub async fn build_hub(
    config: &ServerConfig,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<Arc<Hub>> {
    Ok(build_node(config, tasks, shutdown).await?.0)
}

/// [`build_hub`], and for Redis the broker's cluster-wide occupancy and control bus.
async fn build_node(
    config: &ServerConfig,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(Arc<Hub>, Option<wirehub_broker_redis::RedisCluster>)> {
    let hub_config = HubConfig {
        history: HistoryLimits {
            size: config.history_size,
            ttl: config.history_ttl,
            max_total_bytes: config.history_max_bytes,
        },
        max_pending: config.max_queued_frames,
        channels: config.channels.clone(),
    };
    match &config.broker {
        BrokerConfig::Memory => Ok((Arc::new(Hub::in_memory(hub_config)), None)),
        BrokerConfig::Redis(redis) => {
            let redis = redis
                .clone()
                .history_size(config.history_size)
                .history_ttl(config.history_ttl);
            redis.validate()?;
            let link = RedisBroker::connect(redis).await?;
            let (tasks, shutdown) = (tasks.clone(), shutdown.clone());
            let channels = config.channels.clone();
            let mut cluster = None;
            let hub = Arc::new(Hub::new(hub_config, |sink| {
                let broker = link
                    .start_on(sink, &tasks, shutdown)
                    .with_channel_rules(channels);
                cluster = Some(broker.cluster());
                Arc::new(broker)
            }));
            Ok((hub, cluster))
        }
    }
}

/// Serves HTTP and WebSocket on `listener` until `shutdown` is cancelled, then closes every
/// WebSocket with 1001 (spread over `config.shutdown_drain`) and returns once all
/// connections are gone (or the drain window and a grace period have passed).
///
/// # Errors
/// When the broker cannot be built (for Redis: when Redis cannot be reached at start).
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    let state = prepare(config, shutdown).await?;
    serve(listener, state).await;
    Ok(())
}

/// Builds the broker and the shared state, ready for [`serve`]; `run` is `prepare` then
/// `serve`. Keep a clone of the state to act on the running server, e.g.
/// [`AppState::reload_tls`].
///
/// # Errors
/// As [`run`], and when the token key or TLS certificate cannot be used.
pub async fn prepare(config: ServerConfig, shutdown: CancellationToken) -> Result<Arc<AppState>> {
    let tasks = TaskTracker::new();
    if let Some(webhooks) = &config.webhooks {
        webhooks.validate().map_err(Error::Webhooks)?;
    }
    let (hub, cluster) = build_node(&config, &tasks, &shutdown).await?;
    let mut state = AppState::new(config, hub, shutdown.clone())?;
    // The broker's tasks are on the tracker shutdown waits for.
    state.tracker = tasks;
    wire_lifecycle(&mut state, cluster)?;
    let state = Arc::new(state);
    for webhooks in &state.webhooks {
        let weak = Arc::downgrade(&state);
        webhooks.until_quiet(move || {
            weak.upgrade().is_none_or(|state| {
                state
                    .metrics
                    .connections
                    .load(std::sync::atomic::Ordering::Acquire)
                    == 0
                    && state.activity.occupancy().finished()
            })
        });
    }
    Ok(state)
}

/// Starts the webhook delivery (when configured), the occupancy worker (on the cluster's
/// store for Redis) and the control bus, and hands them to the state.
fn wire_lifecycle(
    state: &mut AppState,
    cluster: Option<wirehub_broker_redis::RedisCluster>,
) -> Result<()> {
    let config = &state.config;
    let shutdown = state.shutdown.clone();
    // Sessions close over the drain window, each within its close grace after it.
    let stop_after = config.shutdown_drain + Duration::from_secs(2);
    let mut lifecycle = wirehub_core::Lifecycle::default();
    if let Some(webhooks) = &config.webhooks {
        let format = Arc::new(webhooks::WirehubFormat::new(config.webhook_secret.clone()));
        let delivery = webhooks::Webhooks::start(
            "wirehub",
            webhooks.clone().flush_window(stop_after),
            format,
            &state.tracker,
            shutdown.clone(),
        )
        .map_err(|err| Error::Webhooks(err.to_string()))?;
        lifecycle = wirehub_core::Lifecycle::new(delivery.clone());
        state.webhooks.push(delivery);
    }
    if let Some(pusher) = &state.pusher
        && pusher.webhooks.is_on()
    {
        let started = pusher
            .webhooks
            .start(
                &pusher.config.apps,
                config.webhooks.as_ref(),
                stop_after,
                &state.tracker,
                &shutdown,
            )
            .map_err(Error::Webhooks)?;
        state.webhooks.extend(started);
        lifecycle = wirehub_core::Lifecycle::new(Arc::new(pusher::PusherLifecycle::new(
            pusher.clone(),
            lifecycle,
        )));
    }
    let store: Arc<dyn wirehub_core::OccupancyStore> = match &cluster {
        Some(cluster) => cluster.occupancy(config.vacate_delay, config.occupancy_lease),
        None => Arc::new(wirehub_core::MemoryOccupancy::new(config.vacate_delay)),
    };
    let occupancy = Arc::new(occupancy::Occupancy::new(
        store,
        lifecycle.clone(),
        config.vacate_delay,
        config.occupancy_lease,
    ));
    state
        .tracker
        .spawn(occupancy.clone().run(shutdown.clone(), stop_after));
    let activity = Arc::new(activity::Activity::new(lifecycle.clone(), occupancy));
    if let Some(cluster) = &cluster {
        let receiver = activity.clone();
        let handler: wirehub_core::ControlHandler =
            Arc::new(move |payload: &[u8]| http_admin::on_control(&receiver, payload));
        let control: Arc<dyn wirehub_core::ControlBus> =
            cluster.control(handler, &state.tracker, shutdown);
        state.control = Some(control);
    }
    state.activity = activity;
    state.lifecycle = lifecycle;
    Ok(())
}

/// Socket options for every accepted connection: `TCP_NODELAY`, so that small pushes leave at
/// once instead of waiting for Nagle's algorithm and the peer's delayed ACK (tens of ms), and
/// `SO_SNDBUF` when `send_buffer` is set, so that what the kernel holds for a client that
/// stopped reading is bounded (autotuned, it grows to megabytes).
fn configure_accepted(
    stream: &tokio::net::TcpStream,
    send_buffer: Option<usize>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    if !stream.nodelay()? {
        return Err(std::io::Error::other("TCP_NODELAY did not stick"));
    }
    if let Some(size) = send_buffer {
        socket2::SockRef::from(stream).set_send_buffer_size(size)?;
    }
    Ok(())
}

/// Serves HTTP/1.1 (with upgrades) on one accepted connection until it ends or shutdown.
async fn serve_http<I>(
    io: I,
    app: axum::Router,
    peer: std::net::SocketAddr,
    shutdown: CancellationToken,
    header_timeout: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(PeerAddr(peer));
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        debug!(%peer, error = %err, "HTTP connection ended with an error");
    }
}

/// Serves with a prepared state (see [`run`]).
pub async fn serve(listener: TcpListener, state: Arc<AppState>) {
    let app = router(state.clone());
    let shutdown = state.shutdown.clone();
    {
        let state = state.clone();
        state.tracker.clone().spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = state.shutdown.cancelled() => break,
                    _ = tick.tick() => {
                        state.hub.broker().sweep();
                        state.stats.record(&state);
                    }
                }
            }
        });
    }
    state
        .tracker
        .clone()
        .spawn(crate::presence::sweep(state.clone()));
    // The accept queue: tokio (mio) listens with a backlog of 128, which a burst of
    // connections overflows while the accept loop is a moment behind; the kernel then drops
    // the SYN and the client sends it again only after a second. Listening again on Linux
    // only changes the backlog (the kernel caps it at net.core.somaxconn).
    if let Err(err) = socket2::SockRef::from(&listener).listen(state.config.listen_backlog) {
        warn!(error = %err, backlog = state.config.listen_backlog, "could not set the listen backlog");
    }
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, broker = state.hub.broker().name(), "listening (HTTP and WebSocket)");
    }
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Typically out of file descriptors: wait a moment instead of spinning.
                    warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = configure_accepted(&stream, state.config.send_buffer) {
            warn!(%peer, error = %err, "could not set TCP_NODELAY or SO_SNDBUF");
        }
        let app = app.clone();
        let shutdown = shutdown.clone();
        let header_timeout = state.config.header_read_timeout;
        let tls = state.tls_settings().map(tokio_rustls::TlsAcceptor::from);
        state.tracker.spawn(async move {
            match tls {
                None => serve_http(TokioIo::new(stream), app, peer, shutdown, header_timeout).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_http(TokioIo::new(stream), app, peer, shutdown, header_timeout)
                                .await;
                        }
                        Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    info!("shutting down: closing connections");
    state.tracker.close();
    let grace = state.config.shutdown_drain + Duration::from_secs(3);
    if tokio::time::timeout(grace, state.tracker.wait())
        .await
        .is_err()
    {
        warn!(
            remaining = state.tracker.len(),
            "connections still open after the drain window"
        );
    }
    info!("stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_get_tcp_nodelay_and_the_send_buffer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        assert!(!accepted.nodelay().expect("read option"), "off by default");
        configure_accepted(&accepted, Some(128 << 10)).expect("configure");
        assert!(accepted.nodelay().expect("read option"));
        // Linux doubles the value for its bookkeeping and reports the doubled size.
        let size = socket2::SockRef::from(&accepted)
            .send_buffer_size()
            .expect("read option");
        assert!((128 << 10..=256 << 10).contains(&size), "SO_SNDBUF {size}");
        drop(client);
    }
}
