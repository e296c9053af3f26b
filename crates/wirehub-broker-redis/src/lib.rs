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
//! # Presence
//! Members are leases in Redis that their node renews (see `presence`): a node that dies
//! has its members removed after [`RedisConfig::presence_lease`], each with one `leave` sent
//! by whichever node's reaping script removed it; `join`/`leave` travel on the channel's
//! pub/sub channel and take no offset. Keys `wirehub:{news}:members`, `:member`, `:graced`
//! and the index `wirehub:presence:due`.
//!
//! # Failures
//! - A request while Redis is unreachable fails within [`RedisConfig::timeout`] with
//!   [`BrokerError::Unavailable`] (a session answers `error` code `internal`).
//! - When the pub/sub connection breaks, the listener reconnects, resubscribes and delivers
//!   from the history what was published meanwhile, skipping what it had delivered. When the
//!   history does not cover the gap (trimmed, expired, or a new epoch because Redis lost its
//!   data) it calls [`Deliver::lost`]: the channel's subscribers get a `gap` and stay
//!   connected; their clients recover with `subscribe` + `since`.
//! - A pub/sub connection that answers `PING` but no longer delivers (seen after failovers)
//!   is found by a canary: every [`RedisConfig::canary_interval`] the node publishes a token
//!   on its own channel through the command connection; when it does not come back through
//!   the pub/sub connection within [`RedisConfig::timeout`], the pub/sub connection is made
//!   again (counted in [`BrokerHealth::resubscribes`]).
//! - [`Broker::health`] says `reachable: false` while the pub/sub connection is down or the
//!   last canary could not be published (the server's `/readyz` answers 503).
//!
//! Channel occupancy across nodes and orders to every node: [`RedisBroker::cluster`]
//! (`occupancy.rs`).
//!
//! Start with [`RedisBroker::connect`] (which fails when Redis cannot be reached), then
//! [`RedisLink::start_on`] with the hub's fan-out and the server's task tracker.

mod commands;
mod config;
mod error;
mod keys;
mod listener;
mod occupancy;
mod presence;
mod pubsub;
mod scripts;
mod shared;
mod target;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wirehub_core::{
    BoxFuture, Broker, BrokerError, BrokerHealth, Deliver, HistoryPage, HistoryQuery, Published,
};

pub use config::RedisConfig;
pub use error::{Error, Result};
pub use occupancy::{RedisCluster, RedisControl, RedisOccupancy};

use crate::commands::{Commands, Endpoint};
use crate::config::redact;
use crate::listener::Health;
use crate::pubsub::PubSubLink;
use crate::shared::Shared;

/// The Redis [`Broker`]. Dropping it stops its listener task.
pub struct RedisBroker {
    shared: Arc<Shared>,
    presence: presence::Presence,
    health: Arc<Health>,
    stop: CancellationToken,
}

/// Connections to Redis made before the hub exists; [`RedisLink::start`] turns them into a
/// running [`RedisBroker`].
pub struct RedisLink {
    config: RedisConfig,
    endpoint: Arc<Endpoint>,
    commands: Commands,
    pubsub: PubSubLink,
}

impl RedisBroker {
    /// Connects to Redis (a command connection and a pub/sub connection), each attempt bounded
    /// by [`RedisConfig::timeout`].
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] ([`RedisConfig::validate`]), [`Error::InvalidUrl`], or
    /// [`Error::Connect`] when Redis cannot be reached.
    pub async fn connect(config: RedisConfig) -> Result<RedisLink> {
        config.validate()?;
        let url = redact(&config.url);
        let endpoint = Arc::new(Endpoint::new(&config)?);
        let unreachable = |reason| Error::Connect {
            url: url.clone(),
            reason: Box::new(reason),
        };
        let commands = Commands::connect(endpoint.clone(), config.timeout)
            .await
            .map_err(unreachable)?;
        let pubsub = listener::connect_pubsub(&endpoint, config.timeout)
            .await
            .map_err(unreachable)?;
        Ok(RedisLink {
            config,
            endpoint,
            commands,
            pubsub,
        })
    }
}

impl RedisLink {
    /// Starts the listener task on a tracker of its own and returns the broker, which
    /// delivers to `sink`; the listener stops when the broker is dropped. A server uses
    /// [`RedisLink::start_on`].
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start(self, sink: Arc<dyn Deliver>) -> RedisBroker {
        self.start_on(sink, &TaskTracker::new(), CancellationToken::new())
    }

    /// Starts the listener task (and its housekeeping tasks) on `tasks` and returns the
    /// broker, which delivers to `sink`. After `shutdown` is cancelled the listener keeps
    /// delivering until the node watches no channel any more (its sessions are gone), then
    /// ends, so that a shutdown waiting for `tasks` waits for it; dropping the broker stops
    /// it at once.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    pub fn start_on(
        self,
        sink: Arc<dyn Deliver>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> RedisBroker {
        let presence = presence::Presence::new(self.config.presence_lease);
        let shared = Arc::new(Shared::new(self.config, self.endpoint, self.commands, sink));
        let health = Arc::new(Health::default());
        let stop = CancellationToken::new();
        tasks.spawn(listener::run(
            listener::Context {
                shared: shared.clone(),
                health: health.clone(),
                tasks: tasks.clone(),
                shutdown,
                dropped: stop.clone(),
            },
            self.pubsub,
        ));
        RedisBroker {
            shared,
            presence,
            health,
            stop,
        }
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

    fn health(&self) -> BrokerHealth {
        BrokerHealth::new(
            *self.shared.link.borrow() && self.health.canary_ok.load(Ordering::Relaxed),
            self.health.resubscribes.load(Ordering::Relaxed),
        )
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn presence_join<'a>(
        &'a self,
        channel: &'a str,
        member: wirehub_protocol::Member,
    ) -> BoxFuture<'a, Result<wirehub_core::Joined, BrokerError>> {
        Box::pin(async move { Ok(self.presence.join(&self.shared, channel, member).await?) })
    }

    fn presence_leave<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
        departure: wirehub_core::Departure,
    ) -> BoxFuture<'a, Result<Option<wirehub_protocol::Member>, BrokerError>> {
        Box::pin(async move {
            Ok(self
                .presence
                .leave(&self.shared, channel, client, departure)
                .await?)
        })
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<wirehub_core::PresencePage, BrokerError>> {
        Box::pin(async move { Ok(self.presence.read(&self.shared, channel, max).await?) })
    }

    fn presence_sweep(&self) -> BoxFuture<'_, Result<Vec<wirehub_core::Left>, BrokerError>> {
        Box::pin(async move { Ok(self.presence.sweep(&self.shared).await?) })
    }
}
