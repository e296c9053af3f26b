//! State shared by every connection and request of one server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirehub_core::{ControlBus, Hub, Lifecycle, MemoryOccupancy};

use crate::activity::Activity;
use crate::admission::{Admission, IpSlot};
use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// What handlers and sessions share.
#[derive(Debug)]
pub struct AppState {
    /// The settings.
    pub config: ServerConfig,
    /// Channels, history and the broker.
    pub hub: Arc<Hub>,
    /// Counters.
    pub metrics: Metrics,
    /// Tracks every session task, so that shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Verifies tokens when authentication is on.
    pub authenticator: Option<Authenticator>,
    /// Where lifecycle events (connect, subscribe, occupancy, presence) go; off by default.
    pub lifecycle: Lifecycle,
    /// The Pusher protocol's shared state, when Pusher apps are configured.
    pub(crate) pusher: Option<Arc<crate::pusher::Pusher>>,
    /// Connections and subscriptions as lifecycle events, occupancy counts, and the
    /// connections that `POST /api/disconnect` closes.
    pub(crate) activity: Arc<Activity>,
    /// Orders to the other nodes (Redis broker), e.g. closing a user's connections.
    pub(crate) control: Option<Arc<dyn ControlBus>>,
    /// The webhook deliveries (their metrics).
    pub(crate) webhooks: Vec<Arc<crate::webhooks::Webhooks>>,
    /// Admission control at the upgrade: the connection-rate bucket and the places held
    /// per client address.
    pub(crate) admission: Arc<Admission>,
    /// The samples of the last minutes, for `GET /api/stats`.
    pub(crate) stats: crate::stats::StatsRecorder,
    /// The TLS settings when TLS is on; replaced by [`AppState::reload_tls`].
    tls: Option<RwLock<Arc<rustls::ServerConfig>>>,
    sessions: AtomicU64,
}

impl AppState {
    /// State for a server with this config and hub.
    ///
    /// # Errors
    /// When the configured token key or TLS certificate cannot be used.
    pub fn new(
        config: ServerConfig,
        hub: Arc<Hub>,
        shutdown: CancellationToken,
    ) -> Result<Self, crate::Error> {
        let authenticator = config.auth.as_ref().map(Authenticator::new).transpose()?;
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?
            .map(RwLock::new);
        let pusher = if config.pusher.apps.is_empty() {
            None
        } else {
            config.pusher.validate().map_err(crate::Error::Pusher)?;
            Some(Arc::new(crate::pusher::Pusher::new(config.pusher.clone())))
        };
        // Replaced by `prepare`, which also starts the occupancy worker.
        let occupancy = Arc::new(crate::occupancy::Occupancy::new(
            Arc::new(MemoryOccupancy::new(config.vacate_delay)),
            Lifecycle::default(),
            config.vacate_delay,
            config.occupancy_lease,
        ));
        Ok(AppState {
            pusher,
            admission: Arc::new(Admission::new(&config.admission)),
            authenticator,
            activity: Arc::new(Activity::new(Lifecycle::default(), occupancy)),
            control: None,
            webhooks: Vec::new(),
            lifecycle: Lifecycle::default(),
            tls,
            config,
            hub,
            metrics: Metrics::default(),
            stats: crate::stats::StatsRecorder::new(),
            tracker: TaskTracker::new(),
            shutdown,
            sessions: AtomicU64::new(0),
        })
    }

    /// Replaces the certificate and key for every TLS handshake from now on (connections
    /// already open keep theirs), e.g. after a renewal. Nothing changes when the new pair
    /// cannot be used.
    ///
    /// # Errors
    /// [`crate::TlsError`] when the pair cannot be used, or when the server was started
    /// without TLS.
    pub fn reload_tls(&self, tls: &crate::TlsConfig) -> Result<(), crate::TlsError> {
        let Some(current) = &self.tls else {
            return Err(crate::TlsError::Config(
                "the server was started without TLS".to_owned(),
            ));
        };
        let settings = crate::tls::server_config(tls)?;
        *current.write().unwrap_or_else(PoisonError::into_inner) = settings;
        Ok(())
    }

    /// The TLS settings for the next handshake, when TLS is on.
    pub(crate) fn tls_settings(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(|current| {
            current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A reserved place among the server's WebSocket connections (`--max-connections`), counted
/// in the `wirehub_connections` gauge from the upgrade on and released when dropped, however
/// the connection ends: its session finishes, the upgrade fails, or the task is dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    state: Arc<AppState>,
    /// The place among its client address's connections, with `max_connections_per_ip`.
    _ip: Option<IpSlot>,
}

impl AppState {
    /// Reserves a connection slot, or `None` when `max_connections` are held already. The
    /// check and the count it guards are one atomic step, so a burst of upgrades cannot pass
    /// the limit. The slot keeps `ip` (the client address's place) for as long as it lives.
    pub(crate) fn reserve_connection(
        self: &Arc<Self>,
        ip: Option<IpSlot>,
    ) -> Option<ConnectionSlot> {
        let max = self.config.max_connections as u64;
        self.metrics
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (max == 0 || held < max).then_some(held + 1)
            })
            .ok()
            .map(|_| ConnectionSlot {
                state: self.clone(),
                _ip: ip,
            })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state
            .metrics
            .connections
            .fetch_sub(1, Ordering::AcqRel);
    }
}
