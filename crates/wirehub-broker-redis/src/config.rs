//! [`RedisConfig`]: where Redis is, what the keys are called, and how long things are kept.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::target::Target;

/// Settings of a [`crate::RedisBroker`].
///
/// Every node sharing a Redis must use the same `prefix` and should use the same history
/// settings: the node that publishes a message is the one that trims the history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// Where Redis is: `redis://[:PASSWORD@]HOST[:PORT][/DB]` (`rediss://…` for TLS) for one
    /// server; `redis+cluster://[:PASSWORD@]HOST:PORT,HOST:PORT…` (`rediss+cluster://`) for a
    /// Redis Cluster (Redis 7+: sharded pub/sub), the addresses being seeds;
    /// `redis+sentinel://[:PASSWORD@]HOST:PORT,HOST:PORT…/MASTER[/DB]`
    /// (`rediss+sentinel://`) for the master that these sentinels name `MASTER`, followed
    /// across failovers.
    pub url: String,
    /// For `rediss://` and `rediss+cluster://`: PEM certificates of the authorities that may sign Redis' certificate,
    /// used *instead of* the system's trust store. `None` (the default) trusts the system's.
    pub ca_cert_pem: Option<Vec<u8>>,
    /// Put in front of every key and pub/sub channel name (default `wirehub:`), so that one
    /// Redis can serve several deployments.
    pub prefix: String,
    /// Messages kept per channel for recovery (0 keeps none).
    pub history_size: usize,
    /// How long a message stays in the history (`None`: until pushed out by newer ones).
    pub history_ttl: Option<Duration>,
    /// How long a channel's epoch and offset are kept after its last publish or read (and
    /// while any node has a subscriber): 24 hours by default. A channel quiet for longer
    /// starts over in a new epoch.
    pub stream_ttl: Duration,
    /// How long one Redis request may take before the caller gets an error.
    pub timeout: Duration,
    /// How often the pub/sub connection is checked with a `PING` (a link that died silently is
    /// noticed within this plus `timeout`).
    pub ping_interval: Duration,
    /// How often the node publishes a canary on its own pub/sub channel (through the command
    /// connection). A canary that has not come back through the pub/sub connection within
    /// `timeout` means the subscription is connected but no longer delivering (seen after
    /// failovers): the pub/sub connection is made again and its channels caught up.
    pub canary_interval: Duration,
    /// How long a presence member's entry lives in Redis unless its node renews it (every
    /// third of the lease): the members of a node that died are removed, each with one
    /// `leave`, at most this long (plus about a second) after the node's last renewal.
    pub presence_lease: Duration,
}

impl RedisConfig {
    /// The defaults for Redis at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ca_cert_pem: None,
            prefix: "wirehub:".to_owned(),
            history_size: 100,
            history_ttl: Some(Duration::from_secs(300)),
            stream_ttl: Duration::from_secs(24 * 3600),
            timeout: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
            canary_interval: Duration::from_secs(5),
            presence_lease: Duration::from_secs(30),
        }
    }

    /// Sets [`RedisConfig::presence_lease`].
    pub fn presence_lease(mut self, value: Duration) -> Self {
        self.presence_lease = value;
        self
    }

    /// Checks the settings before connecting: the URL's scheme, the prefix's characters, CA
    /// certificates only with `rediss://`, and non-zero intervals.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] naming the field of this struct that cannot be used.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, problem: String| Error::InvalidSetting { field, problem };
        let tls = self.url.starts_with("rediss");
        let target = Target::parse(&self.url)
            .map_err(|problem| bad("url", format!("{:?}: {problem}", redact(&self.url))))?;
        let urls = match &target {
            Target::Single(url) => vec![url.clone()],
            Target::Cluster(seeds) => seeds.clone(),
            Target::Sentinel { sentinels, .. } => sentinels.clone(),
        };
        for url in &urls {
            if let Err(err) = redis::Client::open(url.as_str()) {
                return Err(bad("url", format!("{}: {err}", redact(&self.url))));
            }
        }
        if self.ca_cert_pem.is_some() && matches!(target, Target::Sentinel { .. }) {
            return Err(bad(
                "ca_cert_pem",
                "not supported with Sentinel: use the system's trust store".to_owned(),
            ));
        }
        if self.prefix.is_empty()
            || self
                .prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace() || c.is_control())
        {
            return Err(bad(
                "prefix",
                format!(
                    "{:?}: must be non-empty, without braces, spaces or control characters",
                    self.prefix
                ),
            ));
        }
        if self.ca_cert_pem.is_some() && !tls {
            return Err(bad(
                "ca_cert_pem",
                "only used with a rediss://HOST:PORT or rediss+cluster://… URL".to_owned(),
            ));
        }
        for (field, value) in [
            ("timeout", self.timeout),
            ("ping_interval", self.ping_interval),
            ("canary_interval", self.canary_interval),
            ("stream_ttl", self.stream_ttl),
            ("presence_lease", self.presence_lease),
        ] {
            if value.is_zero() {
                return Err(bad(field, "must be more than 0".to_owned()));
            }
        }
        Ok(())
    }

    /// Sets [`RedisConfig::ca_cert_pem`].
    pub fn ca_cert_pem(mut self, value: Option<Vec<u8>>) -> Self {
        self.ca_cert_pem = value;
        self
    }

    /// Sets [`RedisConfig::prefix`].
    pub fn prefix(mut self, value: impl Into<String>) -> Self {
        self.prefix = value.into();
        self
    }

    /// Sets [`RedisConfig::history_size`].
    pub fn history_size(mut self, value: usize) -> Self {
        self.history_size = value;
        self
    }

    /// Sets [`RedisConfig::history_ttl`].
    pub fn history_ttl(mut self, value: Option<Duration>) -> Self {
        self.history_ttl = value;
        self
    }

    /// Sets [`RedisConfig::stream_ttl`].
    pub fn stream_ttl(mut self, value: Duration) -> Self {
        self.stream_ttl = value;
        self
    }

    /// Sets [`RedisConfig::timeout`].
    pub fn timeout(mut self, value: Duration) -> Self {
        self.timeout = value;
        self
    }

    /// Sets [`RedisConfig::ping_interval`].
    pub fn ping_interval(mut self, value: Duration) -> Self {
        self.ping_interval = value;
        self
    }

    /// Sets [`RedisConfig::canary_interval`].
    pub fn canary_interval(mut self, value: Duration) -> Self {
        self.canary_interval = value;
        self
    }

    /// The expiry of the epoch and offset keys: the stream TTL, or the history TTL when that
    /// is longer (a stream never forgets its epoch while it still has history).
    pub(crate) fn keep_millis(&self) -> u64 {
        let keep = match self.history_ttl {
            Some(ttl) => self.stream_ttl.max(ttl),
            None => self.stream_ttl,
        };
        millis(keep).max(1)
    }

    /// The history TTL in milliseconds, 0 for none.
    pub(crate) fn history_ttl_millis(&self) -> u64 {
        self.history_ttl.map_or(0, |ttl| millis(ttl).max(1))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The URL with any password replaced by `***`, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => rest.split_at(index),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("redis://:secret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("redis://me:secret@h"), "redis://me:***@h");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn validate_names_the_field() {
        let field = |config: RedisConfig| match config.validate() {
            Err(Error::InvalidSetting { field, .. }) => field,
            other => panic!("expected an invalid setting, got {other:?}"),
        };
        assert!(
            RedisConfig::new("redis://127.0.0.1:6379")
                .validate()
                .is_ok()
        );
        assert!(
            RedisConfig::new("rediss://h:6380")
                .ca_cert_pem(Some(b"pem".to_vec()))
                .validate()
                .is_ok()
        );
        assert_eq!(field(RedisConfig::new("http://h")), "url");
        assert!(
            RedisConfig::new("redis+cluster://a:1,b:2")
                .validate()
                .is_ok()
        );
        assert!(
            RedisConfig::new("redis+sentinel://a:1,b:2/main")
                .validate()
                .is_ok()
        );
        assert_eq!(field(RedisConfig::new("redis+sentinel://a:1")), "url");
        assert_eq!(
            field(RedisConfig::new("rediss+sentinel://a:1/m").ca_cert_pem(Some(b"pem".to_vec()))),
            "ca_cert_pem"
        );
        assert_eq!(field(RedisConfig::new("redis://h:notaport")), "url");
        for prefix in ["", "a{b", "a b", "a}"] {
            assert_eq!(
                field(RedisConfig::new("redis://h").prefix(prefix)),
                "prefix"
            );
        }
        assert_eq!(
            field(RedisConfig::new("redis://h").ca_cert_pem(Some(b"pem".to_vec()))),
            "ca_cert_pem"
        );
        assert_eq!(
            field(RedisConfig::new("redis://h").timeout(Duration::ZERO)),
            "timeout"
        );
        assert_eq!(
            field(RedisConfig::new("redis://h").canary_interval(Duration::ZERO)),
            "canary_interval"
        );
    }

    #[test]
    fn the_epoch_outlives_the_history() {
        let config = RedisConfig::new("redis://h").history_ttl(Some(Duration::from_secs(1)));
        assert_eq!(config.keep_millis(), 24 * 3600 * 1000);
        assert_eq!(config.history_ttl_millis(), 1000);
        let config = config
            .stream_ttl(Duration::from_secs(1))
            .history_ttl(Some(Duration::from_secs(60)));
        assert_eq!(config.keep_millis(), 60_000);
        assert_eq!(config.history_ttl(None).history_ttl_millis(), 0);
    }
}
