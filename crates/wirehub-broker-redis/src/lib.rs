//! [`RedisBroker`]: several wirehub nodes act as one through Redis.
//!
//! Every node that uses the same Redis (and the same key prefix) shares each channel's
//! stream: one epoch, one sequence of offsets, one history. A message published on any node
//! reaches the subscribers of every node, exactly once and in offset order, and a client that
//! reconnects to another node recovers with `since` as if it had never left.
//!
//! # How
//! - **Publish** is one Lua script, atomic in Redis: get or create the channel's epoch,
//!   `INCR` its offset, append the message to a bounded history list, refresh expiries and
//!   `PUBLISH` `EPOCH OFFSET DATA` on the channel's pub/sub channel. Redis' order of
//!   `PUBLISH`es is therefore the order of offsets.
//! - **History** is one Lua script too: a consistent snapshot of epoch, latest offset and
//!   kept entries. `complete` means what it means for [`wirehub_core::MemoryBroker`]. A
//!   channel with no keys gets a fresh epoch, created by the script so that all nodes agree.
//! - **Watch** subscribes the channel on the node's pub/sub connection (once per channel,
//!   counted) and returns once Redis confirmed it. One listener task reads that connection,
//!   builds each frame once ([`wirehub_core::encode_publication`]) and hands it to the node's
//!   fan-out.
//! - A read of a watched channel waits for a *fence* (a token published by the same script on
//!   the node's private channel) so that the subscription it sets up starts exactly where the
//!   listener's deliveries are: no gap and no duplicate at the seam.
//!
//! # Keys (default prefix `wirehub:`, channel `news`)
//! `wirehub:{news}:epoch`, `wirehub:{news}:offset` (expire [`RedisConfig::stream_ttl`], 24 h,
//! after the last publish or read, and are refreshed while any node has a subscriber),
//! `wirehub:{news}:history` (a list of `OFFSET MILLIS DATA`, trimmed to the history size;
//! entries older than the history TTL are not returned; the list expires one history TTL after
//! the last publish), and the pub/sub channel `wirehub:{news}:messages`. The `{news}` hash
//! tag keeps a channel's keys in one cluster slot.
//!
//! # Failures
//! - A request while Redis is unreachable fails within [`RedisConfig::timeout`] with
//!   [`BrokerError::Unavailable`] (a session answers `error` code `internal`).
//! - When the pub/sub connection breaks, the listener reconnects, resubscribes and delivers
//!   from the history what was published meanwhile, skipping what it had delivered. When the
//!   history does not cover the gap (trimmed, expired, or a new epoch because Redis lost its
//!   data) it calls [`Deliver::lost`]: the hub closes those subscribers with 4200 and their
//!   clients resubscribe with `since` (and get `recovered: false`).
//!
//! Start with [`RedisBroker::connect`] (which fails when Redis cannot be reached), then
//! [`RedisLink::start`] with the hub's fan-out.

mod commands;
mod config;
mod error;
mod keys;
mod listener;
mod scripts;
mod shared;

use std::fmt;
use std::sync::Arc;

use redis::Client;
use redis::aio::PubSub;
use tokio_util::sync::CancellationToken;
use wirehub_core::{BoxFuture, Broker, BrokerError, Deliver, HistoryPage, HistoryQuery, Published};

pub use config::RedisConfig;
pub use error::{Error, Result};

use crate::commands::Commands;
use crate::config::redact;
use crate::shared::Shared;

/// The Redis [`Broker`]. Dropping it stops its listener task.
pub struct RedisBroker {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

/// Connections to Redis made before the hub exists; [`RedisLink::start`] turns them into a
/// running [`RedisBroker`].
pub struct RedisLink {
    config: RedisConfig,
    client: Client,
    commands: Commands,
    pubsub: PubSub,
}

impl RedisBroker {
    /// Connects to Redis (a command connection and a pub/sub connection), each attempt bounded
    /// by [`RedisConfig::timeout`].
    ///
    /// # Errors
    /// [`Error::InvalidUrl`], or [`Error::Connect`] when Redis cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<RedisLink> {
        let url = redact(&config.url);
        let client = match &config.ca_cert_pem {
            Some(pem) => Client::build_with_tls(
                config.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(config.url.as_str()),
        }
        .map_err(|reason| Error::InvalidUrl {
            url: url.clone(),
            reason,
        })?;
        let unreachable = |reason| Error::Connect {
            url: url.clone(),
            reason: Box::new(reason),
        };
        let commands = Commands::connect(client.clone(), config.timeout)
            .await
            .map_err(unreachable)?;
        let pubsub = listener::connect_pubsub(&client, config.timeout)
            .await
            .map_err(unreachable)?;
        Ok(RedisLink {
            config,
            client,
            commands,
            pubsub,
        })
    }
}

impl RedisLink {
    /// Starts the listener task and returns the broker, which delivers to `sink`.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start(self, sink: Arc<dyn Deliver>) -> RedisBroker {
        let shared = Arc::new(Shared::new(self.config, self.client, self.commands, sink));
        let stop = CancellationToken::new();
        tokio::spawn(listener::run(shared.clone(), self.pubsub, stop.clone()));
        RedisBroker { shared, stop }
    }
}

impl fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLink")
            .field("url", &redact(&self.config.url))
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &redact(&self.shared.config.url))
            .field("prefix", &self.shared.config.prefix)
            .field("connected", &*self.shared.link.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: &'a [u8],
        key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>> {
        Box::pin(async move { Ok(self.shared.publish(channel, data, key).await?) })
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>> {
        Box::pin(async move { Ok(self.shared.history(channel, query).await?) })
    }

    fn watch<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        // Counted now, before the future runs: a read of this channel from here on waits for
        // its subscription.
        let ready = self.shared.register(channel);
        Box::pin(async move { Ok(self.shared.watch(channel, ready).await?) })
    }

    fn unwatch<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.shared.unregister(channel);
        Box::pin(async move { Ok(self.shared.reconcile(channel).await?) })
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}
