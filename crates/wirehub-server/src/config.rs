//! The server's settings, as one typed struct passed down explicitly.
//!
//! The binary layers flags, `WIREHUB_*` environment variables and a TOML file into a
//! [`ServerConfig`]; this crate only consumes it. [`ServerConfig::new`] gives the documented
//! defaults and the builder-style setters change one knob each (tests use them for short
//! heartbeats and small queues). The defaults are the binary's embedded `wirehub.toml`; a
//! test of the binary checks that the two agree.

use std::net::SocketAddr;
use std::time::Duration;

use wirehub_broker_redis::RedisConfig;
use wirehub_core::ChannelRules;

use crate::admission::AdmissionConfig;
use crate::auth::AuthConfig;
use crate::deflate::DeflateSettings;
use crate::tls::TlsConfig;
use crate::webhooks::WebhookConfig;

/// Which origins may open a WebSocket from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// Only an `Origin` whose host (and port) matches the request's `Host` (the default).
    SameHost,
    /// Any origin.
    Any,
    /// These origins exactly (`scheme://host[:port]`).
    List(Vec<String>),
}

/// Which broker orders messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerConfig {
    /// In this process only.
    Memory,
    /// Through Redis (several nodes act as one). Its history settings are taken from the
    /// server's ([`ServerConfig::history_size`], [`ServerConfig::history_ttl`]).
    Redis(RedisConfig),
}

/// Everything the server needs to run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The address the binary binds (informational inside the library: `run` takes a bound
    /// listener).
    pub listen: SocketAddr,
    /// How often each connection is pinged; a pong missing at the next tick ends it.
    pub heartbeat_interval: Duration,
    /// On shutdown, closes (1001) are spread over this window.
    pub shutdown_drain: Duration,
    /// Largest accepted frame or message, in bytes (larger: close 1009).
    pub max_message_size: usize,
    /// Messages kept per channel for recovery.
    pub history_size: usize,
    /// How long history is kept (`None`: until pushed out).
    pub history_ttl: Option<Duration>,
    /// Bytes of history kept across all channels.
    pub history_max_bytes: usize,
    /// The broker.
    pub broker: BrokerConfig,
    /// An extra route that echoes every frame (protocol-conformance testing only).
    pub echo_path: Option<String>,
    /// When set, `POST /api/publish` needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// Origins allowed at the upgrade.
    pub allowed_origins: AllowedOrigins,
    /// Publishes per second per connection (burst of the same size) before `rate_limited`.
    pub publish_rate: u32,
    /// Frames queued for one connection before it is cut off as a slow consumer.
    pub max_queued_frames: usize,
    /// Bytes queued for one connection before it is cut off as a slow consumer.
    pub max_queued_bytes: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// WebSocket connections held at most (0: no limit); beyond it upgrades get 503.
    pub max_connections: usize,
    /// How long a client may take to send its HTTP request headers.
    pub header_read_timeout: Duration,
    /// Token authentication: when set, every WebSocket connection needs a valid token.
    pub auth: Option<AuthConfig>,
    /// TLS: when set, the port serves HTTPS and `wss://` only.
    pub tls: Option<TlsConfig>,
    /// The kernel's send buffer per connection (`SO_SNDBUF`), in bytes: with the outbox, it
    /// bounds what a connection that stopped reading holds. `None` leaves the kernel's
    /// autotuning.
    pub send_buffer: Option<usize>,
    /// Options per kind of channel (`[[channels]]` in the settings file): the first pattern
    /// that matches a channel's name wins.
    pub channels: ChannelRules,
    /// The Pusher apps served (`/app/KEY`, `/apps/ID/...`); none by default.
    pub pusher: crate::PusherConfig,
    /// Lifecycle webhooks: when set, events are POSTed there.
    pub webhooks: Option<WebhookConfig>,
    /// The key of the webhooks' HMAC-SHA256 signature (`X-Wirehub-Signature`).
    pub webhook_secret: Option<String>,
    /// How long a channel's last subscriber must stay gone before `channel_vacated` (a new
    /// subscriber within it cancels the vacate).
    pub vacate_delay: Duration,
    /// A node's lease on its channels' occupancy in Redis: a node that stops refreshing it
    /// (refreshed every third of it) is taken for dead and its channels released.
    pub occupancy_lease: Duration,
    /// How long the member of a connection that ended without a goodbye (lost, heartbeat
    /// timeout, shutdown, slow consumer) stays listed: a join of the same user on the same
    /// channel within it takes the member over without a `leave` or `join`.
    pub presence_grace: Duration,
    /// Members listed at most by a `presence` reply or `GET /api/presence` (the count stays
    /// exact; beyond it the list is truncated and says so).
    pub presence_max_members: usize,
    /// permessage-deflate with the clients that offer it (`None`: never negotiated).
    pub deflate: Option<DeflateSettings>,
    /// The listen backlog: connections the kernel completes and queues for the accept loop
    /// (capped by `net.core.somaxconn`). A burst larger than the queue has SYNs dropped and
    /// resent a second later.
    pub listen_backlog: i32,
    /// Admission control at the upgrade and the retry hints.
    pub admission: AdmissionConfig,
}

impl ServerConfig {
    /// The documented defaults.
    pub fn new() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            heartbeat_interval: Duration::from_secs(30),
            shutdown_drain: Duration::from_secs(5),
            max_message_size: 65_536,
            history_size: 100,
            history_ttl: Some(Duration::from_secs(300)),
            history_max_bytes: 64 << 20,
            broker: BrokerConfig::Memory,
            echo_path: None,
            api_key: None,
            allowed_origins: AllowedOrigins::SameHost,
            publish_rate: 100,
            max_queued_frames: 4096,
            max_queued_bytes: 4 << 20,
            max_subscriptions: 1024,
            max_connections: 0,
            header_read_timeout: Duration::from_secs(10),
            auth: None,
            tls: None,
            send_buffer: Some(128 << 10),
            channels: ChannelRules::default(),
            pusher: crate::PusherConfig::new(),
            webhooks: None,
            webhook_secret: None,
            vacate_delay: Duration::from_secs(3),
            occupancy_lease: Duration::from_secs(15),
            presence_grace: Duration::from_secs(5),
            presence_max_members: 1000,
            deflate: Some(DeflateSettings::new()),
            listen_backlog: 4096,
            admission: AdmissionConfig::new(),
        }
    }

    /// Sets [`ServerConfig::webhooks`].
    pub fn webhooks(mut self, value: Option<WebhookConfig>) -> Self {
        self.webhooks = value;
        self
    }

    /// Sets [`ServerConfig::webhook_secret`].
    pub fn webhook_secret(mut self, value: Option<String>) -> Self {
        self.webhook_secret = value;
        self
    }

    /// Sets [`ServerConfig::vacate_delay`].
    pub fn vacate_delay(mut self, value: Duration) -> Self {
        self.vacate_delay = value;
        self
    }

    /// Sets [`ServerConfig::occupancy_lease`].
    pub fn occupancy_lease(mut self, value: Duration) -> Self {
        self.occupancy_lease = value;
        self
    }

    /// Sets [`ServerConfig::presence_grace`].
    pub fn presence_grace(mut self, value: Duration) -> Self {
        self.presence_grace = value;
        self
    }

    /// Sets [`ServerConfig::presence_max_members`].
    pub fn presence_max_members(mut self, value: usize) -> Self {
        self.presence_max_members = value;
        self
    }

    /// Sets [`ServerConfig::listen_backlog`].
    pub fn listen_backlog(mut self, value: i32) -> Self {
        self.listen_backlog = value;
        self
    }

    /// Sets [`ServerConfig::admission`].
    pub fn admission(mut self, value: AdmissionConfig) -> Self {
        self.admission = value;
        self
    }

    /// Sets [`ServerConfig::heartbeat_interval`].
    pub fn heartbeat_interval(mut self, value: Duration) -> Self {
        self.heartbeat_interval = value;
        self
    }

    /// Sets [`ServerConfig::shutdown_drain`].
    pub fn shutdown_drain(mut self, value: Duration) -> Self {
        self.shutdown_drain = value;
        self
    }

    /// Sets [`ServerConfig::max_message_size`].
    pub fn max_message_size(mut self, value: usize) -> Self {
        self.max_message_size = value;
        self
    }

    /// Sets [`ServerConfig::history_size`].
    pub fn history_size(mut self, value: usize) -> Self {
        self.history_size = value;
        self
    }

    /// Sets [`ServerConfig::history_ttl`].
    pub fn history_ttl(mut self, value: Option<Duration>) -> Self {
        self.history_ttl = value;
        self
    }

    /// Sets [`ServerConfig::history_max_bytes`].
    pub fn history_max_bytes(mut self, value: usize) -> Self {
        self.history_max_bytes = value;
        self
    }

    /// Sets [`ServerConfig::broker`].
    pub fn broker(mut self, value: BrokerConfig) -> Self {
        self.broker = value;
        self
    }

    /// Sets [`ServerConfig::echo_path`].
    pub fn echo_path(mut self, value: Option<String>) -> Self {
        self.echo_path = value;
        self
    }

    /// Sets [`ServerConfig::api_key`].
    pub fn api_key(mut self, value: Option<String>) -> Self {
        self.api_key = value;
        self
    }

    /// Sets [`ServerConfig::allowed_origins`].
    pub fn allowed_origins(mut self, value: AllowedOrigins) -> Self {
        self.allowed_origins = value;
        self
    }

    /// Sets [`ServerConfig::publish_rate`].
    pub fn publish_rate(mut self, value: u32) -> Self {
        self.publish_rate = value;
        self
    }

    /// Sets [`ServerConfig::max_queued_frames`].
    pub fn max_queued_frames(mut self, value: usize) -> Self {
        self.max_queued_frames = value;
        self
    }

    /// Sets [`ServerConfig::max_queued_bytes`].
    pub fn max_queued_bytes(mut self, value: usize) -> Self {
        self.max_queued_bytes = value;
        self
    }

    /// Sets [`ServerConfig::max_subscriptions`].
    pub fn max_subscriptions(mut self, value: usize) -> Self {
        self.max_subscriptions = value;
        self
    }

    /// Sets [`ServerConfig::auth`].
    pub fn auth(mut self, value: Option<AuthConfig>) -> Self {
        self.auth = value;
        self
    }

    /// Sets [`ServerConfig::tls`].
    pub fn tls(mut self, value: Option<TlsConfig>) -> Self {
        self.tls = value;
        self
    }

    /// Sets [`ServerConfig::max_connections`].
    pub fn max_connections(mut self, value: usize) -> Self {
        self.max_connections = value;
        self
    }

    /// Sets [`ServerConfig::send_buffer`].
    pub fn send_buffer(mut self, value: Option<usize>) -> Self {
        self.send_buffer = value;
        self
    }

    /// Sets [`ServerConfig::pusher`].
    pub fn pusher(mut self, value: crate::PusherConfig) -> Self {
        self.pusher = value;
        self
    }

    /// Sets [`ServerConfig::channels`].
    pub fn channels(mut self, value: ChannelRules) -> Self {
        self.channels = value;
        self
    }

    /// Sets [`ServerConfig::deflate`].
    pub fn deflate(mut self, value: Option<DeflateSettings>) -> Self {
        self.deflate = value;
        self
    }

    /// Sets [`ServerConfig::header_read_timeout`].
    pub fn header_read_timeout(mut self, value: Duration) -> Self {
        self.header_read_timeout = value;
        self
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::new()
    }
}
