//! `wirehub serve`: settings layered once (flag > `WIREHUB_*` env > `--config` file > the
//! embedded defaults), then the server library runs until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wirehub_server::{AllowedOrigins, AuthConfig, BrokerConfig, ServerConfig, TlsConfig};

use crate::duration::parse_duration;

/// The embedded default settings (also printed by `wirehub config`).
pub(crate) const DEFAULT_CONFIG: &str = include_str!("../wirehub.toml");

/// Flags of `wirehub serve`. Each is also read from `WIREHUB_<NAME>` and from the TOML file.
#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with settings (keys as in `wirehub config`, e.g. heartbeat_interval = "10s").
    #[arg(long, env = "WIREHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Address for HTTP and WebSocket, one port [default: 127.0.0.1:8080].
    #[arg(long, env = "WIREHUB_LISTEN")]
    listen: Option<SocketAddr>,
    /// WebSocket ping interval; no pong by the next tick closes the connection [default: 30s].
    #[arg(long, env = "WIREHUB_HEARTBEAT_INTERVAL", value_parser = parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// On SIGTERM/SIGINT, closes (1001) are spread over this window [default: 5s].
    #[arg(long, env = "WIREHUB_SHUTDOWN_DRAIN", value_parser = parse_duration)]
    shutdown_drain: Option<Duration>,
    /// Largest frame or message in bytes; larger ones close the connection with 1009 [default: 65536].
    #[arg(long, env = "WIREHUB_MAX_MESSAGE_SIZE")]
    max_message_size: Option<usize>,
    /// Messages kept per channel for recovery after a reconnect (0: none) [default: 100].
    #[arg(long, env = "WIREHUB_HISTORY_SIZE")]
    history_size: Option<usize>,
    /// How long history is kept; 0 keeps it until pushed out [default: 5m].
    #[arg(long, env = "WIREHUB_HISTORY_TTL", value_parser = parse_duration)]
    history_ttl: Option<Duration>,
    /// Bytes of history kept across all channels [default: 67108864].
    #[arg(long, env = "WIREHUB_HISTORY_MAX_BYTES")]
    history_max_bytes: Option<usize>,
    /// `memory`, or `redis://HOST:PORT` to run several nodes as one [default: memory].
    #[arg(long, env = "WIREHUB_BROKER")]
    broker: Option<String>,
    /// Prefix of every Redis key and pub/sub channel, so deployments can share a Redis [default: wirehub:].
    #[arg(long, env = "WIREHUB_REDIS_PREFIX")]
    redis_prefix: Option<String>,
    /// PEM CA certificates for a rediss:// broker, instead of the system's trust store.
    #[arg(long, env = "WIREHUB_REDIS_CA_CERT")]
    redis_ca_cert: Option<PathBuf>,
    /// Extra WebSocket route that echoes every frame (conformance testing only) [default: off].
    #[arg(long, env = "WIREHUB_ECHO_PATH")]
    echo_path: Option<String>,
    /// HS256 secret: every WebSocket connection then needs a valid token.
    #[arg(long, env = "WIREHUB_JWT_SECRET")]
    jwt_secret: Option<String>,
    /// PEM public key for RS256/ES256 tokens.
    #[arg(long, env = "WIREHUB_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// When set, POST /api/publish and GET /api/history need `Authorization: Bearer KEY`.
    #[arg(long, env = "WIREHUB_API_KEY")]
    api_key: Option<String>,
    /// Origins allowed at the upgrade: comma-separated, `*` for any [default: same host].
    #[arg(long, env = "WIREHUB_ALLOWED_ORIGINS")]
    allowed_origins: Option<String>,
    /// Publishes per second per connection before `rate_limited` errors; 0: no limit [default: 100].
    #[arg(long, env = "WIREHUB_PUBLISH_RATE")]
    publish_rate: Option<u32>,
    /// PEM certificate chain: serve HTTPS and wss:// on the same port.
    #[arg(long, env = "WIREHUB_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "WIREHUB_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Frames queued for one connection before it is closed as a slow consumer [default: 4096].
    #[arg(long, env = "WIREHUB_MAX_QUEUED_FRAMES")]
    max_queued_frames: Option<usize>,
    /// Bytes queued for one connection before it is closed as a slow consumer [default: 4194304].
    #[arg(long, env = "WIREHUB_MAX_QUEUED_BYTES")]
    max_queued_bytes: Option<usize>,
    /// Subscriptions one connection may hold [default: 1024].
    #[arg(long, env = "WIREHUB_MAX_SUBSCRIPTIONS")]
    max_subscriptions: Option<usize>,
    /// WebSocket connections held at most; beyond it upgrades get 503 (0: no limit) [default: 0].
    #[arg(long, env = "WIREHUB_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Log format on stderr: text or json (verbosity from RUST_LOG) [default: text].
    #[arg(long, env = "WIREHUB_LOG_FORMAT")]
    log_format: Option<String>,
}

/// The settings as they may appear in a TOML file (every key optional, unknown keys refused).
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    heartbeat_interval: Option<String>,
    shutdown_drain: Option<String>,
    max_message_size: Option<usize>,
    history_size: Option<usize>,
    history_ttl: Option<String>,
    history_max_bytes: Option<usize>,
    broker: Option<String>,
    redis_prefix: Option<String>,
    redis_ca_cert: Option<PathBuf>,
    echo_path: Option<String>,
    jwt_secret: Option<String>,
    jwt_public_key: Option<PathBuf>,
    api_key: Option<String>,
    allowed_origins: Option<String>,
    publish_rate: Option<u32>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_queued_frames: Option<usize>,
    max_queued_bytes: Option<usize>,
    max_subscriptions: Option<usize>,
    max_connections: Option<usize>,
    log_format: Option<String>,
}

/// A setting that could not be used: names the field (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{field}`: {problem}")]
pub(crate) struct ConfigError {
    field: &'static str,
    problem: String,
}

fn bad(field: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        problem: problem.into(),
    }
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

fn parse_file(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|err| {
        // The TOML error names the key and shows the line.
        bad("config", format!("{origin}: {err}"))
    })
}

fn duration_field(field: &'static str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).map_err(|problem| bad(field, problem))
}

/// Resolves flags/env over the file over the embedded defaults.
pub(crate) fn resolve(args: &ServeArgs) -> Result<Resolved, ConfigError> {
    let defaults = parse_file(DEFAULT_CONFIG, "embedded defaults")?;
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| bad("config", format!("cannot read {}: {err}", path.display())))?;
            parse_file(&text, &path.display().to_string())?
        }
        None => FileConfig::default(),
    };
    macro_rules! pick {
        ($field:ident) => {
            file.$field.clone().or_else(|| defaults.$field.clone())
        };
    }
    let mut config = ServerConfig::new();
    config.listen = match args.listen {
        Some(listen) => listen,
        None => pick!(listen)
            .unwrap_or_default()
            .parse()
            .map_err(|err| bad("listen", format!("{err}; write e.g. 127.0.0.1:8080")))?,
    };
    let duration = |flag: Option<Duration>, field: &'static str, text: Option<String>| match flag {
        Some(value) => Ok(value),
        None => duration_field(field, text.as_deref().unwrap_or("0")),
    };
    config.heartbeat_interval = duration(
        args.heartbeat_interval,
        "heartbeat_interval",
        pick!(heartbeat_interval),
    )?;
    if config.heartbeat_interval.is_zero() {
        return Err(bad("heartbeat_interval", "must be more than 0"));
    }
    config.shutdown_drain = duration(args.shutdown_drain, "shutdown_drain", pick!(shutdown_drain))?;
    config.max_message_size = args
        .max_message_size
        .or(pick!(max_message_size))
        .unwrap_or(65_536);
    if config.max_message_size < 128 {
        return Err(bad("max_message_size", "must be at least 128 bytes"));
    }
    config.history_size = args.history_size.or(pick!(history_size)).unwrap_or(0);
    let ttl = duration(args.history_ttl, "history_ttl", pick!(history_ttl))?;
    config.history_ttl = (!ttl.is_zero()).then_some(ttl);
    config.history_max_bytes = args
        .history_max_bytes
        .or(pick!(history_max_bytes))
        .unwrap_or(64 << 20);
    let broker = args.broker.clone().or(pick!(broker)).unwrap_or_default();
    config.broker = match broker.as_str() {
        "" | "memory" => BrokerConfig::Memory,
        url if url.starts_with("redis://") || url.starts_with("rediss://") => {
            BrokerConfig::Redis(url.to_owned())
        }
        other => {
            return Err(bad(
                "broker",
                format!("{other:?}: use memory, redis://HOST:PORT or rediss://HOST:PORT"),
            ));
        }
    };
    let redis_prefix = args
        .redis_prefix
        .clone()
        .or(pick!(redis_prefix))
        .unwrap_or_else(|| "wirehub:".to_owned());
    if redis_prefix.is_empty()
        || redis_prefix
            .chars()
            .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
    {
        return Err(bad(
            "redis_prefix",
            format!(
                "{redis_prefix:?}: must be non-empty, without braces, spaces or control characters"
            ),
        ));
    }
    config.redis_prefix = redis_prefix;
    config.redis_ca_cert = match args.redis_ca_cert.clone().or(file.redis_ca_cert.clone()) {
        None => None,
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|err| {
                bad(
                    "redis_ca_cert",
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            if !matches!(config.broker, BrokerConfig::Redis(ref url) if url.starts_with("rediss://"))
            {
                return Err(bad(
                    "redis_ca_cert",
                    "only used with --broker rediss://HOST:PORT",
                ));
            }
            Some(pem)
        }
    };
    let echo_path = args
        .echo_path
        .clone()
        .or(pick!(echo_path))
        .unwrap_or_default();
    config.echo_path = match echo_path.as_str() {
        "" => None,
        path if path.starts_with('/') && !matches!(path, "/ws" | "/" | "/healthz" | "/metrics") => {
            Some(path.to_owned())
        }
        path => {
            return Err(bad(
                "echo_path",
                format!("{path:?}: must start with / and not clash with another route"),
            ));
        }
    };
    config.api_key = args
        .api_key
        .clone()
        .or(pick!(api_key))
        .filter(|key| !key.is_empty());
    let origins = args
        .allowed_origins
        .clone()
        .or(pick!(allowed_origins))
        .unwrap_or_default();
    config.allowed_origins = match origins.trim() {
        "" => AllowedOrigins::SameHost,
        "*" => AllowedOrigins::Any,
        list => AllowedOrigins::List(
            list.split(',')
                .map(|origin| origin.trim().to_owned())
                .filter(|origin| !origin.is_empty())
                .collect(),
        ),
    };
    config.publish_rate = args.publish_rate.or(pick!(publish_rate)).unwrap_or(100);
    config.max_queued_frames = args
        .max_queued_frames
        .or(pick!(max_queued_frames))
        .unwrap_or(4096);
    config.max_queued_bytes = args
        .max_queued_bytes
        .or(pick!(max_queued_bytes))
        .unwrap_or(4 << 20);
    if config.max_queued_frames == 0 {
        return Err(bad("max_queued_frames", "must be at least 1"));
    }
    config.max_connections = args.max_connections.or(pick!(max_connections)).unwrap_or(0);
    config.max_subscriptions = args
        .max_subscriptions
        .or(pick!(max_subscriptions))
        .unwrap_or(1024);
    let jwt_secret = args
        .jwt_secret
        .clone()
        .or(file.jwt_secret.clone())
        .filter(|secret| !secret.is_empty());
    let jwt_public_key = args
        .jwt_public_key
        .clone()
        .or(file.jwt_public_key.clone())
        .filter(|path| !path.as_os_str().is_empty());
    config.auth = match (jwt_secret, jwt_public_key) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "jwt_secret",
                "give either jwt_secret (HS256) or jwt_public_key (RS256/ES256), not both",
            ));
        }
        (Some(secret), None) => {
            if secret.len() < 16 {
                return Err(bad("jwt_secret", "use at least 16 characters"));
            }
            Some(AuthConfig::Secret(secret))
        }
        (None, Some(path)) => {
            let pem = std::fs::read(&path).map_err(|err| {
                bad(
                    "jwt_public_key",
                    format!("cannot read {}: {err}", path.display()),
                )
            })?;
            let auth = AuthConfig::PublicKeyPem(pem);
            wirehub_server::Authenticator::new(&auth)
                .map_err(|err| bad("jwt_public_key", format!("{}: {err}", path.display())))?;
            Some(auth)
        }
        (None, None) => None,
    };
    let tls_cert = args.tls_cert.clone().or(file.tls_cert.clone());
    let tls_key = args.tls_key.clone().or(file.tls_key.clone());
    let mut tls_files = None;
    config.tls = match (tls_cert, tls_key) {
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
    let log_format = match args
        .log_format
        .clone()
        .or(pick!(log_format))
        .unwrap_or_default()
        .as_str()
    {
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

/// Reads the TLS certificate chain and key files (at start and on every SIGHUP).
fn read_tls_files(cert: &Path, key: &Path) -> Result<TlsConfig, ConfigError> {
    let read = |field: &'static str, path: &Path| {
        std::fs::read(path)
            .map_err(|err| bad(field, format!("cannot read {}: {err}", path.display())))
    };
    Ok(TlsConfig {
        cert_pem: read("tls_cert", cert)?,
        key_pem: read("tls_key", key)?,
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

    #[test]
    fn embedded_defaults_match_the_contract() {
        let resolved = resolve(&ServeArgs::default()).expect("defaults resolve");
        let config = resolved.server;
        assert_eq!(config.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(config.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(config.shutdown_drain, Duration::from_secs(5));
        assert_eq!(config.max_message_size, 65_536);
        assert_eq!(config.broker, BrokerConfig::Memory);
        assert_eq!(config.echo_path, None);
        assert_eq!(config.api_key, None);
        assert_eq!(config.allowed_origins, AllowedOrigins::SameHost);
        assert_eq!(resolved.log_format, LogFormat::Text);
        assert_eq!(config.redis_prefix, "wirehub:");
        assert_eq!(config.redis_ca_cert, None);
    }

    #[test]
    fn redis_settings_are_checked() {
        let args = |prefix: &str, broker: &str, ca: Option<&str>| ServeArgs {
            redis_prefix: Some(prefix.to_owned()),
            broker: Some(broker.to_owned()),
            redis_ca_cert: ca.map(PathBuf::from),
            ..ServeArgs::default()
        };
        let config = resolve(&args("app1:", "redis://127.0.0.1:6379", None))
            .expect("resolves")
            .server;
        assert_eq!(config.redis_prefix, "app1:");
        assert_eq!(
            config.broker,
            BrokerConfig::Redis("redis://127.0.0.1:6379".into())
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
        assert!(config.redis_ca_cert.is_some());
        let err = resolve(&args("wirehub:", "redis://127.0.0.1:6379", Some(ca)))
            .expect_err("a CA without TLS");
        assert!(err.to_string().contains("redis_ca_cert"), "{err}");
        let err = resolve(&args(
            "wirehub:",
            "rediss://127.0.0.1:6380",
            Some("/nonexistent"),
        ))
        .expect_err("a missing file");
        assert!(err.to_string().contains("redis_ca_cert"), "{err}");
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("wirehub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("wirehub.toml");
        std::fs::write(&path, "heartbeat_interval = \"10s\"\nhistory_size = 7\n").expect("write");
        let args = ServeArgs {
            config: Some(path.clone()),
            heartbeat_interval: Some(Duration::from_secs(3)),
            ..ServeArgs::default()
        };
        let config = resolve(&args).expect("resolves").server;
        assert_eq!(
            config.heartbeat_interval,
            Duration::from_secs(3),
            "flag wins"
        );
        assert_eq!(config.history_size, 7, "file beats default");
        std::fs::write(&path, "heartbeat_intervall = \"10s\"\n").expect("write");
        let err = resolve(&args).expect_err("unknown key");
        assert!(err.to_string().contains("heartbeat_intervall"), "{err}");
        std::fs::write(&path, "shutdown_drain = \"soon\"\n").expect("write");
        let err = resolve(&args).expect_err("bad duration");
        assert!(err.to_string().contains("shutdown_drain"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
