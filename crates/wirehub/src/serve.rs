//! `wirehub serve`: the settings, written once, then the server library runs until
//! SIGINT/SIGTERM.
//!
//! [`Settings`] is both the command line (clap, each flag also read from `WIREHUB_<NAME>`) and
//! the TOML table of a `--config` file and of the embedded `wirehub.toml`, which is the one
//! source of defaults (`wirehub config` prints it). They are merged once, flag > env > file >
//! embedded, and [`resolve`] turns the result into a [`ServerConfig`], naming the setting that
//! cannot be used (exit code 2).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wirehub_server::{
    AdmissionConfig, AllowedOrigins, AuthConfig, BrokerConfig, ChannelOptions, ChannelRules,
    DeflateSettings, IpNet, OnSlow, RedisConfig, ServerConfig, TlsConfig, WebhookConfig,
};

use crate::duration::Dur;

/// The embedded default settings (also printed by `wirehub config`).
pub(crate) const DEFAULT_CONFIG: &str = include_str!("../wirehub.toml");

/// Declares [`Settings`] (every field optional: a layer may leave it out) and
/// [`Settings::or`], which fills what a layer leaves out from the layer below.
macro_rules! settings {
    ($( $(#[$attr:meta])* $field:ident : $ty:ty, )*) => {
        /// Settings of `wirehub serve`: flags (each also `WIREHUB_<NAME>`), and the keys of the
        /// TOML file, with the same names (dashes become underscores).
        #[derive(Args, Deserialize, Debug, Default, Clone)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct Settings {
            /// TOML file with settings (keys as in `wirehub config`, e.g. heartbeat_interval = "10s").
            #[arg(long, env = "WIREHUB_CONFIG")]
            #[serde(skip)]
            config: Option<PathBuf>,
            $( $(#[$attr])* $field: Option<$ty>, )*
            /// `[[channels]]` tables (file only): options by channel-name pattern.
            #[arg(skip)]
            channels: Option<Vec<ChannelTable>>,
            /// `[[pusher_apps]]` tables (file only): Pusher apps, each with its own
            /// credentials, channel prefix, limits and webhook URL.
            #[arg(skip)]
            pusher_apps: Option<Vec<PusherAppTable>>,
        }

        impl Settings {
            /// This layer, with what it leaves out taken from `lower`.
            fn or(self, lower: Settings) -> Settings {
                Settings {
                    config: self.config.or(lower.config),
                    $( $field: self.$field.or(lower.$field), )*
                    channels: self.channels.or(lower.channels),
                    pusher_apps: self.pusher_apps.or(lower.pusher_apps),
                }
            }
        }
    };
}

settings! {
    /// Address for HTTP and WebSocket, one port.
    #[arg(long, env = "WIREHUB_LISTEN")]
    listen: SocketAddr,
    /// WebSocket ping interval; no pong by the next tick closes the connection.
    #[arg(long, env = "WIREHUB_HEARTBEAT_INTERVAL")]
    heartbeat_interval: Dur,
    /// On SIGTERM/SIGINT, closes (1001) are spread over this window.
    #[arg(long, env = "WIREHUB_SHUTDOWN_DRAIN")]
    shutdown_drain: Dur,
    /// Largest frame or message in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "WIREHUB_MAX_MESSAGE_SIZE")]
    max_message_size: usize,
    /// Messages kept per channel for recovery after a reconnect (0: none).
    #[arg(long, env = "WIREHUB_HISTORY_SIZE")]
    history_size: usize,
    /// How long history is kept; 0 keeps it until pushed out.
    #[arg(long, env = "WIREHUB_HISTORY_TTL")]
    history_ttl: Dur,
    /// Bytes of history kept across all channels.
    #[arg(long, env = "WIREHUB_HISTORY_MAX_BYTES")]
    history_max_bytes: usize,
    /// `memory`, or `redis://HOST:PORT` (`rediss://` for TLS) to run several nodes as one.
    #[arg(long, env = "WIREHUB_BROKER")]
    broker: String,
    /// Prefix of every Redis key and pub/sub channel, so deployments can share a Redis.
    #[arg(long, env = "WIREHUB_REDIS_PREFIX")]
    redis_prefix: String,
    /// PEM CA certificates for a rediss:// broker, instead of the system's trust store.
    #[arg(long, env = "WIREHUB_REDIS_CA_CERT")]
    redis_ca_cert: PathBuf,
    /// How long one Redis request may take before it fails.
    #[arg(long, env = "WIREHUB_REDIS_TIMEOUT")]
    redis_timeout: Dur,
    /// How often the Redis pub/sub connection is checked with a PING.
    #[arg(long, env = "WIREHUB_REDIS_PING_INTERVAL")]
    redis_ping_interval: Dur,
    /// How often a canary checks that the Redis pub/sub connection still delivers.
    #[arg(long, env = "WIREHUB_REDIS_CANARY_INTERVAL")]
    redis_canary_interval: Dur,
    /// With Redis: how long a presence member lives unless its node renews it (a dead node's members leave after it).
    #[arg(long, env = "WIREHUB_REDIS_PRESENCE_LEASE")]
    redis_presence_lease: Dur,
    /// How long the member of a connection lost without a goodbye stays listed; the same user rejoining within it is no leave/join.
    #[arg(long, env = "WIREHUB_PRESENCE_GRACE")]
    presence_grace: Dur,
    /// Members listed at most by `presence` and GET /api/presence (the count stays exact).
    #[arg(long, env = "WIREHUB_PRESENCE_MAX_MEMBERS")]
    presence_max_members: usize,
    /// Extra WebSocket route that echoes every frame (conformance testing only).
    #[arg(long, env = "WIREHUB_ECHO_PATH")]
    echo_path: String,
    /// HS256 secret: every WebSocket connection then needs a valid token.
    #[arg(long, env = "WIREHUB_JWT_SECRET")]
    jwt_secret: String,
    /// PEM public key for RS256/ES256 tokens.
    #[arg(long, env = "WIREHUB_JWT_PUBLIC_KEY")]
    jwt_public_key: PathBuf,
    /// When set, POST /api/publish and GET /api/history need `Authorization: Bearer KEY`.
    #[arg(long, env = "WIREHUB_API_KEY")]
    api_key: String,
    /// Pusher app id: with --pusher-app-key and --pusher-app-secret, serve the Pusher protocol
    /// (/app/KEY, /apps/ID/...) for this app.
    #[arg(long, env = "WIREHUB_PUSHER_APP_ID")]
    pusher_app_id: String,
    /// Pusher app key (the WebSocket path /app/KEY and every signature).
    #[arg(long, env = "WIREHUB_PUSHER_APP_KEY")]
    pusher_app_key: String,
    /// Pusher app secret (signs channel authorizations, API requests and webhooks).
    #[arg(long, env = "WIREHUB_PUSHER_APP_SECRET")]
    pusher_app_secret: String,
    /// Where the Pusher app of the flags POSTs its webhooks (Pusher's format), when set.
    #[arg(long, env = "WIREHUB_PUSHER_WEBHOOK_URL")]
    pusher_webhook_url: String,
    /// Origins allowed at the upgrade: comma-separated, `*` for any, empty for the same host.
    #[arg(long, env = "WIREHUB_ALLOWED_ORIGINS")]
    allowed_origins: String,
    /// Publishes per second per connection before `rate_limited` errors; 0: no limit.
    #[arg(long, env = "WIREHUB_PUBLISH_RATE")]
    publish_rate: u32,
    /// PEM certificate chain: serve HTTPS and wss:// on the same port.
    #[arg(long, env = "WIREHUB_TLS_CERT")]
    tls_cert: PathBuf,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "WIREHUB_TLS_KEY")]
    tls_key: PathBuf,
    /// Frames queued for one connection before it is closed as a slow consumer.
    #[arg(long, env = "WIREHUB_MAX_QUEUED_FRAMES")]
    max_queued_frames: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer.
    #[arg(long, env = "WIREHUB_MAX_QUEUED_BYTES")]
    max_queued_bytes: usize,
    /// Subscriptions one connection may hold.
    #[arg(long, env = "WIREHUB_MAX_SUBSCRIPTIONS")]
    max_subscriptions: usize,
    /// WebSocket connections held at most; beyond it upgrades get 503 (0: no limit).
    #[arg(long, env = "WIREHUB_MAX_CONNECTIONS")]
    max_connections: usize,
    /// The kernel's send buffer per connection (SO_SNDBUF) in bytes; 0 leaves the kernel's autotuning.
    #[arg(long, env = "WIREHUB_SEND_BUFFER", value_name = "BYTES")]
    send_buffer: usize,
    /// permessage-deflate with clients that offer it (true or false).
    #[arg(long, env = "WIREHUB_DEFLATE", value_name = "BOOL")]
    deflate: bool,
    /// Messages shorter than this many bytes are sent uncompressed under permessage-deflate.
    #[arg(long, env = "WIREHUB_DEFLATE_THRESHOLD", value_name = "BYTES")]
    deflate_threshold: usize,
    /// Let clients keep their compression context between messages (a decompressor per connection).
    #[arg(long, env = "WIREHUB_DEFLATE_CLIENT_CONTEXT_TAKEOVER", value_name = "BOOL")]
    deflate_client_context_takeover: bool,
    /// Log format on stderr: text or json (verbosity from RUST_LOG).
    #[arg(long, env = "WIREHUB_LOG_FORMAT")]
    log_format: String,
    /// Lifecycle events are POSTed to this URL (empty: no webhooks).
    #[arg(long, env = "WIREHUB_WEBHOOK_URL")]
    webhook_url: String,
    /// Key of the webhooks' HMAC-SHA256 signature (X-Wirehub-Signature).
    #[arg(long, env = "WIREHUB_WEBHOOK_SECRET")]
    webhook_secret: String,
    /// Webhook events waiting at most; beyond, they go to the dead-letter file.
    #[arg(long, env = "WIREHUB_WEBHOOK_QUEUE")]
    webhook_queue: usize,
    /// Webhook events per request at most.
    #[arg(long, env = "WIREHUB_WEBHOOK_BATCH_SIZE")]
    webhook_batch_size: usize,
    /// How long a webhook event waits for others to share its request.
    #[arg(long, env = "WIREHUB_WEBHOOK_BATCH_DELAY")]
    webhook_batch_delay: Dur,
    /// How long a webhook request may take before it is retried.
    #[arg(long, env = "WIREHUB_WEBHOOK_TIMEOUT")]
    webhook_timeout: Dur,
    /// Attempts per webhook request before its events go to the dead-letter file.
    #[arg(long, env = "WIREHUB_WEBHOOK_MAX_ATTEMPTS")]
    webhook_max_attempts: u32,
    /// File (JSON lines) for webhook events that could not be delivered.
    #[arg(long, env = "WIREHUB_WEBHOOK_DEAD_LETTER")]
    webhook_dead_letter: PathBuf,
    /// How long a channel stays without subscribers before channel_vacated (a rejoin cancels it).
    #[arg(long, env = "WIREHUB_VACATE_DELAY")]
    vacate_delay: Dur,
    /// With Redis: a node's lease on its channels' occupancy (a node silent for longer is taken for dead).
    #[arg(long, env = "WIREHUB_OCCUPANCY_LEASE")]
    occupancy_lease: Dur,
    /// Connections the kernel queues for the accept loop (capped by net.core.somaxconn).
    #[arg(long, env = "WIREHUB_LISTEN_BACKLOG")]
    listen_backlog: i32,
    /// New WebSocket connections admitted per second; beyond it upgrades get 503 (0: no limit).
    #[arg(long, env = "WIREHUB_CONNECT_RATE")]
    connect_rate: u32,
    /// Connections the rate limiter admits at once after a quiet time (0: --connect-rate).
    #[arg(long, env = "WIREHUB_CONNECT_BURST")]
    connect_burst: u32,
    /// WebSocket connections one client address may hold; beyond it upgrades get 429 (0: no limit).
    #[arg(long, env = "WIREHUB_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: u32,
    /// Comma-separated proxy addresses or CIDR blocks whose X-Forwarded-For names the client.
    #[arg(long, env = "WIREHUB_TRUSTED_PROXIES")]
    trusted_proxies: String,
    /// Base wait told to clients refused by a connection limit (they get RETRY..2×RETRY).
    #[arg(long, env = "WIREHUB_OVERLOAD_RETRY_AFTER")]
    overload_retry_after: Dur,
    /// Longest wait a connection-rate refusal is told.
    #[arg(long, env = "WIREHUB_OVERLOAD_MAX_RETRY_AFTER")]
    overload_max_retry_after: Dur,
    /// Window in which clients closed on shutdown are told to come back (close reason retry=LO-HI); 0: no hint.
    #[arg(long, env = "WIREHUB_DRAIN_RETRY")]
    drain_retry: Dur,
    /// Refuse browsers (requests with Origin) by upgrading and closing with 4103 and the retry hint.
    #[arg(long, env = "WIREHUB_CLOSE_REFUSED_BROWSERS")]
    close_refused_browsers: bool,
}

/// `wirehub serve --help` with each flag's default, read from the embedded settings (so that
/// the help cannot disagree with them).
pub(crate) fn with_defaults(serve: clap::Command) -> clap::Command {
    let Ok(table) = DEFAULT_CONFIG.parse::<toml::Table>() else {
        return serve;
    };
    table.iter().fold(serve, |serve, (key, value)| {
        let shown = match value {
            toml::Value::String(text) if text.is_empty() => "\"\"".to_owned(),
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            _ => return serve,
        };
        if !serve
            .get_arguments()
            .any(|arg| arg.get_id() == key.as_str())
        {
            return serve;
        }
        serve.mut_arg(key.as_str(), |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!("{help} [default: {shown}]"))
        })
    })
}

/// One `[[channels]]` table of the settings file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct ChannelTable {
    /// A channel name, or a prefix followed by `*`.
    pattern: String,
    /// `disconnect`, `gap` or `latest`.
    on_slow: Option<String>,
    /// Messages kept per channel (instead of the server-wide `history_size`).
    history_size: Option<usize>,
    /// How long messages are kept (instead of the server-wide `history_ttl`).
    history_ttl: Option<Dur>,
    /// Members, `join`/`leave` and the `presence` request.
    presence: Option<bool>,
}

/// A `[[pusher_apps]]` table of the settings file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct PusherAppTable {
    /// The app id (`/apps/ID/...`).
    id: String,
    /// The public key (`/app/KEY`).
    key: String,
    /// The secret of every signature.
    secret: String,
    /// `NAME:` keeps the app's channels apart from other apps' (default: none).
    channel_prefix: Option<String>,
    /// Client events per connection per second (default 10; 0: no limit).
    client_event_rate: Option<u32>,
    /// Largest event data of the HTTP API in bytes (default 10 240).
    max_event_size: Option<usize>,
    /// Where the app's webhooks (Pusher's format) are POSTed.
    webhook_url: Option<String>,
}

/// The Pusher apps: the one of the flags (`--pusher-app-*`), then the `[[pusher_apps]]`.
fn pusher_apps(
    id: Option<String>,
    key: Option<String>,
    secret: Option<String>,
    webhook_url: Option<String>,
    tables: Vec<PusherAppTable>,
) -> Result<wirehub_server::PusherConfig, ConfigError> {
    let url = |field: String, url: Option<String>| -> Result<Option<String>, ConfigError> {
        match url.filter(|url| !url.is_empty()) {
            Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => Err(bad(
                field,
                format!("{url:?}: use an http:// or https:// URL"),
            )),
            url => Ok(url),
        }
    };
    let webhook_url = url("pusher_webhook_url".to_owned(), webhook_url)?;
    let mut apps = match (
        id.filter(|v| !v.is_empty()),
        key.filter(|v| !v.is_empty()),
        secret.filter(|v| !v.is_empty()),
    ) {
        (None, None, None) => Vec::new(),
        (Some(id), Some(key), Some(secret)) => {
            vec![wirehub_server::PusherApp::new(id, key, secret).webhook_url(webhook_url)]
        }
        _ => {
            return Err(bad(
                "pusher_app_id",
                "--pusher-app-id, --pusher-app-key and --pusher-app-secret go together",
            ));
        }
    };
    for (index, table) in tables.into_iter().enumerate() {
        let webhook_url = url(
            format!("pusher_apps[{index}].webhook_url"),
            table.webhook_url,
        )?;
        let mut app = wirehub_server::PusherApp::new(table.id, table.key, table.secret)
            .webhook_url(webhook_url);
        if let Some(prefix) = table.channel_prefix {
            app = app.channel_prefix(prefix);
        }
        if let Some(rate) = table.client_event_rate {
            app = app.client_event_rate(rate);
        }
        if let Some(size) = table.max_event_size {
            app = app.max_event_size(size);
        }
        apps.push(app);
    }
    let config = wirehub_server::PusherConfig::new().apps(apps);
    config.validate().map_err(|why| bad("pusher_apps", why))?;
    Ok(config)
}

/// A setting that could not be used: names the field (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{field}`: {problem}")]
pub(crate) struct ConfigError {
    field: String,
    problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// A setting every layer left out: the embedded defaults must have it.
fn need<T>(value: Option<T>, field: &'static str) -> Result<T, ConfigError> {
    value.ok_or_else(|| bad(field, "missing (also from the embedded defaults)"))
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// The resolved settings of `serve`.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) server: ServerConfig,
    pub(crate) log_format: LogFormat,
    /// The certificate and key files, read again on SIGHUP.
    pub(crate) tls_files: Option<(PathBuf, PathBuf)>,
}

fn parse_file(text: &str, origin: &str) -> Result<Settings, ConfigError> {
    toml::from_str(text).map_err(|err| {
        // The TOML error names the key and shows the line.
        bad("config", format!("{origin}: {err}"))
    })
}

fn read_file(field: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|err| bad(field, format!("cannot read {}: {err}", path.display())))
}

/// Merges flags/env over the file over the embedded defaults, then checks and converts.
pub(crate) fn resolve(args: &Settings) -> Result<Resolved, ConfigError> {
    let defaults = parse_file(DEFAULT_CONFIG, "embedded defaults")?;
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| bad("config", format!("cannot read {}: {err}", path.display())))?;
            parse_file(&text, &path.display().to_string())?
        }
        None => Settings::default(),
    };
    convert(args.clone().or(file).or(defaults))
}

/// The merged settings as a [`ServerConfig`] (and what only the binary uses).
fn convert(settings: Settings) -> Result<Resolved, ConfigError> {
    let mut config = ServerConfig::new();
    webhooks(&mut config, &settings)?;
    let admission = admission(&settings)?;
    config.listen = need(settings.listen, "listen")?;
    config.heartbeat_interval = need(settings.heartbeat_interval, "heartbeat_interval")?.0;
    if config.heartbeat_interval.is_zero() {
        return Err(bad("heartbeat_interval", "must be more than 0"));
    }
    config.shutdown_drain = need(settings.shutdown_drain, "shutdown_drain")?.0;
    config.max_message_size = need(settings.max_message_size, "max_message_size")?;
    if config.max_message_size < 128 {
        return Err(bad("max_message_size", "must be at least 128 bytes"));
    }
    config.history_size = need(settings.history_size, "history_size")?;
    let ttl = need(settings.history_ttl, "history_ttl")?.0;
    config.history_ttl = (!ttl.is_zero()).then_some(ttl);
    config.history_max_bytes = need(settings.history_max_bytes, "history_max_bytes")?;
    config.broker = broker(&settings)?;
    let echo_path = need(settings.echo_path, "echo_path")?;
    config.echo_path = match echo_path.as_str() {
        "" => None,
        path if path.starts_with('/')
            && !matches!(path, "/ws" | "/" | "/healthz" | "/readyz" | "/metrics") =>
        {
            Some(path.to_owned())
        }
        path => {
            return Err(bad(
                "echo_path",
                format!("{path:?}: must start with / and not clash with another route"),
            ));
        }
    };
    config.api_key = settings.api_key.filter(|key| !key.is_empty());
    config.allowed_origins = match need(settings.allowed_origins, "allowed_origins")?.trim() {
        "" => AllowedOrigins::SameHost,
        "*" => AllowedOrigins::Any,
        list => AllowedOrigins::List(
            list.split(',')
                .map(|origin| origin.trim().to_owned())
                .filter(|origin| !origin.is_empty())
                .collect(),
        ),
    };
    config.publish_rate = need(settings.publish_rate, "publish_rate")?;
    config.max_queued_frames = need(settings.max_queued_frames, "max_queued_frames")?;
    if config.max_queued_frames == 0 {
        return Err(bad("max_queued_frames", "must be at least 1"));
    }
    config.max_queued_bytes = need(settings.max_queued_bytes, "max_queued_bytes")?;
    config.max_subscriptions = need(settings.max_subscriptions, "max_subscriptions")?;
    config.max_connections = need(settings.max_connections, "max_connections")?;
    config.send_buffer = match need(settings.send_buffer, "send_buffer")? {
        0 => None,
        bytes if bytes < 4096 => {
            return Err(bad(
                "send_buffer",
                "use at least 4096 bytes, or 0 for the kernel's autotuning",
            ));
        }
        bytes => Some(bytes),
    };
    config.deflate = need(settings.deflate, "deflate")?.then_some(DeflateSettings {
        threshold: need(settings.deflate_threshold, "deflate_threshold")?,
        client_context_takeover: need(
            settings.deflate_client_context_takeover,
            "deflate_client_context_takeover",
        )?,
    });
    config.listen_backlog = need(settings.listen_backlog, "listen_backlog")?;
    if config.listen_backlog < 1 {
        return Err(bad("listen_backlog", "must be at least 1"));
    }
    config.admission = admission;
    config.channels = channels(settings.channels.unwrap_or_default())?;
    config.pusher = pusher_apps(
        settings.pusher_app_id,
        settings.pusher_app_key,
        settings.pusher_app_secret,
        settings.pusher_webhook_url,
        settings.pusher_apps.unwrap_or_default(),
    )?;
    config.presence_grace = need(settings.presence_grace, "presence_grace")?.0;
    config.presence_max_members = need(settings.presence_max_members, "presence_max_members")?;
    config.auth = auth(settings.jwt_secret, settings.jwt_public_key)?;
    let mut tls_files = None;
    config.tls = match (settings.tls_cert, settings.tls_key) {
        (None, None) => None,
        (Some(_), None) => return Err(bad("tls_key", "--tls-cert needs --tls-key")),
        (None, Some(_)) => return Err(bad("tls_cert", "--tls-key needs --tls-cert")),
        (Some(cert), Some(key)) => {
            let tls = read_tls_files(&cert, &key)?;
            tls.check()
                .map_err(|err| bad("tls_cert", err.to_string()))?;
            tls_files = Some((cert, key));
            Some(tls)
        }
    };
    let log_format = match need(settings.log_format, "log_format")?.as_str() {
        "" | "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(bad("log_format", format!("{other:?}: use text or json"))),
    };
    Ok(Resolved {
        server: config,
        log_format,
        tls_files,
    })
}

/// The webhook and occupancy settings.
fn webhooks(config: &mut ServerConfig, settings: &Settings) -> Result<(), ConfigError> {
    config.vacate_delay = need(settings.vacate_delay, "vacate_delay")?.0;
    config.occupancy_lease = need(settings.occupancy_lease, "occupancy_lease")?.0;
    if config.occupancy_lease < Duration::from_millis(30) {
        return Err(bad("occupancy_lease", "must be at least 30ms"));
    }
    config.webhook_secret = settings
        .webhook_secret
        .clone()
        .filter(|secret| !secret.is_empty());
    let url = need(settings.webhook_url.clone(), "webhook_url")?;
    if url.is_empty() {
        return Ok(());
    }
    let webhooks = WebhookConfig::new(url)
        .queue_capacity(need(settings.webhook_queue, "webhook_queue")?)
        .batch_size(need(settings.webhook_batch_size, "webhook_batch_size")?)
        .batch_delay(need(settings.webhook_batch_delay, "webhook_batch_delay")?.0)
        .timeout(need(settings.webhook_timeout, "webhook_timeout")?.0)
        .max_attempts(need(settings.webhook_max_attempts, "webhook_max_attempts")?)
        .dead_letter(need(
            settings.webhook_dead_letter.clone(),
            "webhook_dead_letter",
        )?);
    webhooks.validate().map_err(|problem| {
        let field = problem
            .split(' ')
            .next()
            .unwrap_or("webhook_url")
            .to_owned();
        bad(field, problem)
    })?;
    config.webhooks = Some(webhooks);
    Ok(())
}

/// The broker, with the Redis settings checked by [`RedisConfig::validate`].
fn broker(settings: &Settings) -> Result<BrokerConfig, ConfigError> {
    let url = need(settings.broker.clone(), "broker")?;
    if matches!(url.as_str(), "" | "memory") {
        if settings.redis_ca_cert.is_some() {
            return Err(bad(
                "redis_ca_cert",
                "only used with --broker rediss://HOST:PORT",
            ));
        }
        return Ok(BrokerConfig::Memory);
    }
    let redis_schemes = [
        "redis://",
        "rediss://",
        "redis+cluster://",
        "rediss+cluster://",
        "redis+sentinel://",
        "rediss+sentinel://",
    ];
    if !redis_schemes.iter().any(|scheme| url.starts_with(scheme)) {
        return Err(bad(
            "broker",
            format!(
                "{url:?}: use memory, redis://HOST:PORT (rediss:// for TLS), \
                 redis+cluster://HOST:PORT,HOST:PORT… or redis+sentinel://HOST:PORT,HOST:PORT…/MASTER"
            ),
        ));
    }
    let ca_cert = match &settings.redis_ca_cert {
        Some(path) => Some(read_file("redis_ca_cert", path)?),
        None => None,
    };
    let redis = RedisConfig::new(url)
        .prefix(need(settings.redis_prefix.clone(), "redis_prefix")?)
        .ca_cert_pem(ca_cert)
        .timeout(need(settings.redis_timeout, "redis_timeout")?.0)
        .ping_interval(need(settings.redis_ping_interval, "redis_ping_interval")?.0)
        .canary_interval(need(settings.redis_canary_interval, "redis_canary_interval")?.0)
        .presence_lease(need(settings.redis_presence_lease, "redis_presence_lease")?.0);
    if let Err(wirehub_server::RedisError::InvalidSetting { field, problem }) = redis.validate() {
        let field = match field {
            "url" => "broker",
            "prefix" => "redis_prefix",
            "ca_cert_pem" => "redis_ca_cert",
            "timeout" => "redis_timeout",
            "ping_interval" => "redis_ping_interval",
            "canary_interval" => "redis_canary_interval",
            "presence_lease" => "redis_presence_lease",
            other => other,
        };
        return Err(bad(field, problem));
    }
    Ok(BrokerConfig::Redis(redis))
}

/// The `[[channels]]` tables, checked: `channels[N].FIELD` names a bad one.
fn channels(tables: Vec<ChannelTable>) -> Result<ChannelRules, ConfigError> {
    let mut rules = Vec::with_capacity(tables.len());
    for (index, table) in tables.into_iter().enumerate() {
        let field = |name: &str| format!("channels[{index}].{name}");
        let pattern = table.pattern.trim();
        let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
        if pattern.is_empty() || prefix.contains('*') {
            return Err(bad(
                field("pattern"),
                format!("{pattern:?}: a channel name, or a prefix followed by one trailing *"),
            ));
        }
        if !prefix.is_empty() && pattern == prefix {
            wirehub_protocol::validate_channel(prefix)
                .map_err(|err| bad(field("pattern"), format!("{pattern:?}: {err}")))?;
        }
        let mut rule = ChannelOptions::new(pattern);
        if let Some(on_slow) = table.on_slow {
            rule = rule.on_slow(
                on_slow
                    .parse::<OnSlow>()
                    .map_err(|problem| bad(field("on_slow"), problem))?,
            );
        }
        if let Some(size) = table.history_size {
            rule = rule.history_size(size);
        }
        if let Some(ttl) = table.history_ttl {
            rule = rule.history_ttl(ttl.0);
        }
        if let Some(presence) = table.presence {
            rule = rule.presence(presence);
        }
        rules.push(rule);
    }
    Ok(ChannelRules::new(rules))
}

/// Token authentication: an HS256 secret or a public key file, not both.
fn auth(
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
) -> Result<Option<AuthConfig>, ConfigError> {
    let jwt_secret = jwt_secret.filter(|secret| !secret.is_empty());
    let jwt_public_key = jwt_public_key.filter(|path| !path.as_os_str().is_empty());
    match (jwt_secret, jwt_public_key) {
        (Some(_), Some(_)) => Err(bad(
            "jwt_secret",
            "give either jwt_secret (HS256) or jwt_public_key (RS256/ES256), not both",
        )),
        (Some(secret), None) => {
            if secret.len() < 16 {
                return Err(bad("jwt_secret", "use at least 16 characters"));
            }
            Ok(Some(AuthConfig::Secret(secret)))
        }
        (None, Some(path)) => {
            let auth = AuthConfig::PublicKeyPem(read_file("jwt_public_key", &path)?);
            wirehub_server::Authenticator::new(&auth)
                .map_err(|err| bad("jwt_public_key", format!("{}: {err}", path.display())))?;
            Ok(Some(auth))
        }
        (None, None) => Ok(None),
    }
}

/// The admission settings.
fn admission(settings: &Settings) -> Result<AdmissionConfig, ConfigError> {
    let trusted_proxies = need(settings.trusted_proxies.clone(), "trusted_proxies")?
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse()
                .map_err(|err: String| bad("trusted_proxies", err))
        })
        .collect::<Result<Vec<IpNet>, ConfigError>>()?;
    let max_retry_after = need(
        settings.overload_max_retry_after,
        "overload_max_retry_after",
    )?
    .0;
    if max_retry_after < Duration::from_secs(1) {
        return Err(bad("overload_max_retry_after", "must be at least 1s"));
    }
    Ok(AdmissionConfig::new()
        .connect_rate(
            need(settings.connect_rate, "connect_rate")?,
            need(settings.connect_burst, "connect_burst")?,
        )
        .max_connections_per_ip(need(
            settings.max_connections_per_ip,
            "max_connections_per_ip",
        )?)
        .trusted_proxies(trusted_proxies)
        .retry_after(need(settings.overload_retry_after, "overload_retry_after")?.0)
        .max_retry_after(max_retry_after)
        .drain_retry(need(settings.drain_retry, "drain_retry")?.0)
        .close_refused_browsers(need(
            settings.close_refused_browsers,
            "close_refused_browsers",
        )?))
}

/// Reads the TLS certificate chain and key files (at start and on every SIGHUP).
fn read_tls_files(cert: &Path, key: &Path) -> Result<TlsConfig, ConfigError> {
    Ok(TlsConfig {
        cert_pem: read_file("tls_cert", cert)?,
        key_pem: read_file("tls_key", key)?,
    })
}

/// Runs the server until SIGINT or SIGTERM; SIGHUP reloads the TLS certificate and key.
///
/// # Errors
/// When the address cannot be bound or the server cannot start.
pub(crate) async fn run(resolved: Resolved) -> anyhow::Result<()> {
    let config = resolved.server;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        signal_token.cancel();
    });
    let state = wirehub_server::prepare(config, shutdown.clone()).await?;
    if let Some(files) = resolved.tls_files {
        tokio::spawn(reload_tls_on_sighup(state.clone(), files, shutdown));
    }
    wirehub_server::serve(listener, state).await;
    Ok(())
}

/// On every SIGHUP, reads the certificate and key files again and uses them for new TLS
/// handshakes (a renewed certificate without a restart). A pair that cannot be used is logged
/// and the current one kept.
async fn reload_tls_on_sighup(
    state: std::sync::Arc<wirehub_server::AppState>,
    (cert, key): (PathBuf, PathBuf),
    shutdown: CancellationToken,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGHUP: no TLS reloads");
                return;
            }
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = hangup.recv() => if received.is_none() { return },
            }
            let outcome = read_tls_files(&cert, &key)
                .map_err(anyhow::Error::from)
                .and_then(|tls| state.reload_tls(&tls).map_err(anyhow::Error::from));
            match outcome {
                Ok(()) => tracing::info!(cert = %cert.display(), "TLS certificate reloaded"),
                Err(err) => tracing::error!(
                    error = format!("{err:#}"),
                    "TLS reload failed; keeping the current certificate"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (state, cert, key, shutdown);
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// Settings read from a TOML text as a `--config` file.
    fn from_file(text: &str) -> Result<Resolved, ConfigError> {
        let defaults = parse_file(DEFAULT_CONFIG, "embedded defaults")?;
        convert(parse_file(text, "test")?.or(defaults))
    }

    #[test]
    fn the_embedded_defaults_are_server_config_new() {
        let resolved = resolve(&Settings::default()).expect("defaults resolve");
        // Every field, including those added later: the library's defaults are the file's.
        assert_eq!(
            format!("{:?}", resolved.server),
            format!("{:?}", ServerConfig::new())
        );
        assert_eq!(resolved.log_format, LogFormat::Text);
        assert_eq!(
            resolved.server.listen,
            "127.0.0.1:8080".parse().expect("addr")
        );
        assert_eq!(resolved.server.history_size, 100);
        assert_eq!(resolved.server.send_buffer, Some(131_072));
    }

    #[test]
    fn issue_11_the_embedded_webhook_defaults_are_webhook_config_new() {
        let url = "http://127.0.0.1:9/hooks";
        let settings = Settings {
            webhook_url: Some(url.to_owned()),
            webhook_secret: Some("s3cret".to_owned()),
            ..Settings::default()
        };
        let resolved = resolve(&settings).expect("resolves");
        assert_eq!(resolved.server.webhooks, Some(WebhookConfig::new(url)));
        assert_eq!(resolved.server.webhook_secret.as_deref(), Some("s3cret"));
        let bad_url = Settings {
            webhook_url: Some("ftp://x".to_owned()),
            ..Settings::default()
        };
        assert!(resolve(&bad_url).is_err());
    }

    #[test]
    fn the_pusher_webhook_url_reaches_the_app() {
        let file = |url: &str| {
            from_file(&format!(
                "pusher_app_id = \"1\"\npusher_app_key = \"k\"\npusher_app_secret = \"s\"\npusher_webhook_url = \"{url}\"\n"
            ))
        };
        let config = file("http://127.0.0.1:9/hook").expect("resolves").server;
        assert_eq!(
            config.pusher.apps[0].webhook_url.as_deref(),
            Some("http://127.0.0.1:9/hook")
        );
        let none = file("").expect("resolves").server;
        assert_eq!(none.pusher.apps[0].webhook_url, None);
        let err = file("ftp://x").expect_err("not http");
        assert!(err.to_string().contains("pusher_webhook_url"), "{err}");
    }

    #[test]
    fn the_embedded_redis_defaults_are_redis_config_new() {
        let url = "redis://127.0.0.1:6379";
        let settings = Settings {
            broker: Some(url.to_owned()),
            ..Settings::default()
        };
        let config = resolve(&settings).expect("resolves").server;
        assert_eq!(config.broker, BrokerConfig::Redis(RedisConfig::new(url)));
    }

    #[test]
    fn redis_settings_are_checked() {
        let args = |prefix: &str, broker: &str, ca: Option<&str>| Settings {
            redis_prefix: Some(prefix.to_owned()),
            broker: Some(broker.to_owned()),
            redis_ca_cert: ca.map(PathBuf::from),
            ..Settings::default()
        };
        let config = resolve(&args("app1:", "redis://127.0.0.1:6379", None))
            .expect("resolves")
            .server;
        assert_eq!(
            config.broker,
            BrokerConfig::Redis(RedisConfig::new("redis://127.0.0.1:6379").prefix("app1:"))
        );
        for prefix in ["", "a{b", "a b"] {
            let err = resolve(&args(prefix, "redis://127.0.0.1:6379", None)).expect_err(prefix);
            assert!(err.to_string().contains("redis_prefix"), "{err}");
        }
        let ca = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../wirehub-testkit/fixtures/tls-ca.pem"
        );
        let config = resolve(&args("wirehub:", "rediss://127.0.0.1:6380", Some(ca)))
            .expect("resolves")
            .server;
        assert!(matches!(config.broker, BrokerConfig::Redis(redis) if redis.ca_cert_pem.is_some()));
        for broker in ["redis://127.0.0.1:6379", "memory"] {
            let err = resolve(&args("wirehub:", broker, Some(ca))).expect_err("a CA without TLS");
            assert!(err.to_string().contains("redis_ca_cert"), "{err}");
        }
        let err = resolve(&args(
            "wirehub:",
            "rediss://127.0.0.1:6380",
            Some("/nonexistent"),
        ))
        .expect_err("a missing file");
        assert!(err.to_string().contains("redis_ca_cert"), "{err}");
        let err = resolve(&Settings {
            broker: Some("redis://127.0.0.1:6379".to_owned()),
            redis_canary_interval: Some(Dur(Duration::ZERO)),
            ..Settings::default()
        })
        .expect_err("no canary");
        assert!(err.to_string().contains("redis_canary_interval"), "{err}");
        for url in [
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/main",
        ] {
            let config = resolve(&args("wirehub:", url, None)).expect(url).server;
            assert_eq!(config.broker, BrokerConfig::Redis(RedisConfig::new(url)));
        }
        for url in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+cluster://a:1,,b:2",
        ] {
            let err = resolve(&args("wirehub:", url, None)).expect_err(url);
            assert!(err.to_string().contains("broker"), "{err}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("wirehub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("wirehub.toml");
        std::fs::write(&path, "heartbeat_interval = \"10s\"\nhistory_size = 7\n").expect("write");
        let args = Settings {
            config: Some(path.clone()),
            heartbeat_interval: Some(Dur(Duration::from_secs(3))),
            ..Settings::default()
        };
        let config = resolve(&args).expect("resolves").server;
        assert_eq!(
            config.heartbeat_interval,
            Duration::from_secs(3),
            "flag wins"
        );
        assert_eq!(config.history_size, 7, "file beats default");
        assert_eq!(config.shutdown_drain, Duration::from_secs(5), "default");
        std::fs::write(&path, "heartbeat_intervall = \"10s\"\n").expect("write");
        let err = resolve(&args).expect_err("unknown key");
        assert!(err.to_string().contains("heartbeat_intervall"), "{err}");
        std::fs::write(&path, "shutdown_drain = \"soon\"\n").expect("write");
        let err = resolve(&args).expect_err("bad duration");
        assert!(err.to_string().contains("shutdown_drain"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn issue_12_pusher_apps_from_the_flags_and_the_file() {
        let dir = std::env::temp_dir().join(format!("wirehub-pusher-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("wirehub.toml");
        std::fs::write(
            &path,
            "[[pusher_apps]]\nid = \"2\"\nkey = \"shop-key\"\nsecret = \"s2\"\n\
             channel_prefix = \"shop:\"\nclient_event_rate = 3\n\
             webhook_url = \"http://127.0.0.1:9/hooks\"\n",
        )
        .expect("write");
        let args = Settings {
            config: Some(path.clone()),
            pusher_app_id: Some("1".into()),
            pusher_app_key: Some("app-key".into()),
            pusher_app_secret: Some("s1".into()),
            ..Settings::default()
        };
        let apps = resolve(&args).expect("resolves").server.pusher.apps;
        assert_eq!(apps.len(), 2);
        assert_eq!(
            (apps[0].id.as_str(), apps[0].channel_prefix.as_str()),
            ("1", "")
        );
        assert_eq!(apps[1].key, "shop-key");
        assert_eq!(apps[1].channel_prefix, "shop:");
        assert_eq!(apps[1].client_event_rate, 3);
        assert_eq!(
            apps[1].webhook_url.as_deref(),
            Some("http://127.0.0.1:9/hooks")
        );
        // Two apps without a prefix share the server's channels: refused, naming the setting.
        std::fs::write(
            &path,
            "[[pusher_apps]]\nid = \"2\"\nkey = \"k2\"\nsecret = \"s2\"\n",
        )
        .expect("write");
        let err = resolve(&args).expect_err("two apps without a prefix");
        assert!(err.to_string().contains("pusher_apps"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_help_shows_the_embedded_defaults() {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            settings: Settings,
        }
        let mut serve = with_defaults(<Serve as clap::CommandFactory>::command());
        let help = serve.render_help().to_string();
        assert!(help.contains("[default: 30s]"), "{help}");
        assert!(help.contains("[default: 131072]"), "{help}");
        assert!(help.contains("[default: memory]"), "{help}");
    }

    #[test]
    fn send_buffer_zero_is_the_kernels_autotuning() {
        let config = from_file("send_buffer = 0\n").expect("resolves").server;
        assert_eq!(config.send_buffer, None);
        let config = from_file("send_buffer = 65536\n").expect("resolves").server;
        assert_eq!(config.send_buffer, Some(65_536));
        let err = from_file("send_buffer = 100\n").expect_err("too small");
        assert!(err.to_string().contains("send_buffer"), "{err}");
    }

    #[test]
    fn channel_tables_become_rules_in_order() {
        let config = from_file(
            r#"
            history_size = 50
            [[channels]]
            pattern = "ticker:*"
            on_slow = "latest"
            history_size = 0
            [[channels]]
            pattern = "chat"
            on_slow = "gap"
            history_ttl = "1h"
            "#,
        )
        .expect("resolves")
        .server;
        assert_eq!(config.history_size, 50);
        assert_eq!(
            config.channels,
            ChannelRules::new(vec![
                ChannelOptions::new("ticker:*")
                    .on_slow(OnSlow::Latest)
                    .history_size(0),
                ChannelOptions::new("chat")
                    .on_slow(OnSlow::Gap)
                    .history_ttl(Duration::from_secs(3600)),
            ])
        );
        assert_eq!(config.channels.on_slow("ticker:btc"), OnSlow::Latest);
        assert_eq!(config.channels.on_slow("news"), OnSlow::Disconnect);
    }

    #[test]
    fn a_bad_channel_table_is_named() {
        let cases = [
            (
                "[[channels]]\npattern = \"a\"\n[[channels]]\npattern = \"b\"\non_slow = \"drop\"\n",
                "channels[1].on_slow",
            ),
            ("[[channels]]\npattern = \"\"\n", "channels[0].pattern"),
            ("[[channels]]\npattern = \"a*b\"\n", "channels[0].pattern"),
            ("[[channels]]\npattern = \"a b\"\n", "channels[0].pattern"),
            (
                "[[channels]]\npattern = \"a\"\nhistory_ttl = \"soon\"\n",
                "history_ttl",
            ),
            ("[[channels]]\npattern = \"a\"\nspeed = 1\n", "speed"),
            ("[[channels]]\non_slow = \"gap\"\n", "pattern"),
        ];
        for (text, field) in cases {
            let err = from_file(text).expect_err(text);
            assert!(err.to_string().contains(field), "{text}: {err}");
        }
    }
}
