//! State shared by every connection and request of one server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirehub_core::Hub;

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
    /// The TLS settings when TLS is on.
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
            .transpose()?;
        Ok(AppState {
            authenticator,
            tls,
            config,
            hub,
            metrics: Metrics::default(),
            tracker: TaskTracker::new(),
            shutdown,
            sessions: AtomicU64::new(0),
        })
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.sessions.fetch_add(1, Ordering::Relaxed) + 1
    }
}
