//! Cluster-wide channel occupancy in Redis ([`RedisOccupancy`], an
//! [`OccupancyStore`]) and orders to every node over pub/sub ([`RedisControl`], a
//! [`ControlBus`]).
//!
//! # Keys (default prefix `wirehub:`, channel `C`, node id `N`)
//! - `wirehub:{C}:occupancy`: hash, node → its subscriber count of `C` (nodes with some);
//! - `wirehub:{C}:occupancy:state`: hash, `announced` = 1 from `channel_occupied` until
//!   `channel_vacated`, `vacate_at` = when a pending vacate is due (ms, Redis' clock);
//! - `wirehub:occupancy:nodes`: sorted set, node → lease expiry (ms);
//! - `wirehub:occupancy:node:N`: set of the channels node `N` counts subscribers of;
//! - `wirehub:occupancy:reap:N`: the one node releasing dead node `N`'s channels (`SET NX`);
//! - `wirehub:occupancy:vacating`: sorted set, channel → `vacate_at` (any node settles due
//!   ones, so a vacate outlives the node that started it);
//! - `wirehub:occupancy:channels`: sorted set (score 0) of occupied channels, in name order;
//! - pub/sub channel `wirehub:control`: `NODE PAYLOAD`, orders to every node.
//!
//! Every script touches the keys of one hash slot only (a channel's two keys share `{C}`),
//! as Redis Cluster requires. The transition of a channel is decided inside one script on its
//! keys, so exactly one node is told `Occupied`, and `settle` answers `Vacated` once.
//!
//! A node that dies stops refreshing its lease; after it expires, one surviving node (the
//! one whose `SET NX` on the reap key succeeds) removes the dead node's counts channel by
//! channel and settles the channels left empty. A node whose lease expired while it was
//! alive (cut off from Redis) is told so ([`Maintained::lease_lost`]) and sets its counts
//! again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::Script;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use wirehub_core::{
    BoxFuture, BrokerError, ChannelCount, ControlBus, ControlHandler, Maintained, OccupancyStore,
    Settled, Transition,
};

use crate::RedisBroker;
use crate::error::Result;
use crate::shared::Shared;

const NOW: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
";

/// KEYS: counts, state. ARGV: node, count, debounce (ms). Returns {0} unchanged,
/// {1} occupied, {2, vacate_at} vacating.
const SET_COUNT: &str = r"
local count = tonumber(ARGV[2])
if count > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], count)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local announced = redis.call('HGET', KEYS[2], 'announced') == '1'
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('HDEL', KEYS[2], 'vacate_at')
  if not announced then
    redis.call('HSET', KEYS[2], 'announced', '1')
    return {1}
  end
  return {0}
end
if not announced then
  redis.call('DEL', KEYS[2])
  return {0}
end
local at = redis.call('HGET', KEYS[2], 'vacate_at')
if not at then
  at = now_ms() + tonumber(ARGV[3])
  redis.call('HSET', KEYS[2], 'vacate_at', at)
end
return {2, tonumber(at)}
";

/// KEYS: counts, state. Returns {0} cancelled (or settled already), {1} vacated,
/// {2, ms} wait.
const SETTLE: &str = r"
if redis.call('HGET', KEYS[2], 'announced') ~= '1' then
  return {0}
end
if redis.call('HLEN', KEYS[1]) > 0 then
  redis.call('HDEL', KEYS[2], 'vacate_at')
  return {0}
end
local at = tonumber(redis.call('HGET', KEYS[2], 'vacate_at') or '0')
local now = now_ms()
if at > now then
  return {2, at - now}
end
redis.call('DEL', KEYS[2])
return {1}
";

/// KEYS: counts, state. ARGV: dead node. Returns {1, vacate_at} when the channel is left
/// empty (its vacate due now), else {0}.
const DROP_NODE: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) > 0 or redis.call('HGET', KEYS[2], 'announced') ~= '1' then
  return {0}
end
local at = redis.call('HGET', KEYS[2], 'vacate_at')
if not at then
  at = now_ms()
  redis.call('HSET', KEYS[2], 'vacate_at', at)
end
return {1, tonumber(at)}
";

/// KEYS: nodes. ARGV: node, lease (ms). Refreshes the node's lease; returns {1 when it
/// still had one else 0, dead node...} (at most 10 dead nodes).
const LEASE: &str = r"
local now = now_ms()
local had = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 10)
local reply = {0}
if had then reply[1] = 1 end
for _, node in ipairs(dead) do
  if node ~= ARGV[1] then reply[#reply + 1] = node end
end
return reply
";

/// KEYS: reap key. ARGV: node, ms. 1 when this node may reap.
const CLAIM: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// KEYS: a set. Its members.
const MEMBERS: &str = r"return redis.call('SMEMBERS', KEYS[1])";

/// KEYS: vacating. Channels whose vacate is due (at most 100).
const DUE: &str = r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, 100)
";

/// KEYS: channels index. ARGV: min, max, limit. Names in order.
const RANGE: &str = r"
return redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
";

/// KEYS: counts. The sum of the nodes' counts.
const TOTAL: &str = r"
local total = 0
for _, count in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(count) end
return total
";

#[derive(Debug)]
struct Scripts {
    set_count: Script,
    settle: Script,
    drop_node: Script,
    lease: Script,
    claim: Script,
    members: Script,
    due: Script,
    range: Script,
    total: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_now = |body: &str| Script::new(&format!("{NOW}{body}"));
        Scripts {
            set_count: with_now(SET_COUNT),
            settle: with_now(SETTLE),
            drop_node: with_now(DROP_NODE),
            lease: with_now(LEASE),
            claim: Script::new(CLAIM),
            members: Script::new(MEMBERS),
            due: with_now(DUE),
            range: Script::new(RANGE),
            total: Script::new(TOTAL),
        }
    }
}

/// Names of the occupancy keys for one prefix.
#[derive(Debug, Clone)]
struct OccupancyKeys {
    prefix: String,
}

impl OccupancyKeys {
    fn counts(&self, channel: &str) -> String {
        format!("{}{{{channel}}}:occupancy", self.prefix)
    }
    fn state(&self, channel: &str) -> String {
        format!("{}{{{channel}}}:occupancy:state", self.prefix)
    }
    fn nodes(&self) -> String {
        format!("{}occupancy:nodes", self.prefix)
    }
    fn node(&self, node: &str) -> String {
        format!("{}occupancy:node:{node}", self.prefix)
    }
    fn reap(&self, node: &str) -> String {
        format!("{}occupancy:reap:{node}", self.prefix)
    }
    fn vacating(&self) -> String {
        format!("{}occupancy:vacating", self.prefix)
    }
    fn index(&self) -> String {
        format!("{}occupancy:channels", self.prefix)
    }
    fn control(&self) -> String {
        format!("{}control", self.prefix)
    }
}

/// The cluster-wide parts of a Redis broker: occupancy and the control bus.
#[derive(Clone)]
pub struct RedisCluster {
    shared: Arc<Shared>,
    node: Arc<str>,
    keys: OccupancyKeys,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("node", &self.node)
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBroker {
    /// The broker's cluster-wide occupancy and control bus (one node id per call).
    pub fn cluster(&self) -> RedisCluster {
        RedisCluster {
            shared: self.shared.clone(),
            node: format!("{:016x}", rand::random::<u64>()).into(),
            keys: OccupancyKeys {
                prefix: self.shared.config.prefix.clone(),
            },
        }
    }
}

impl RedisCluster {
    /// The occupancy store: vacates wait `debounce`; the node's lease lasts `lease`.
    pub fn occupancy(&self, debounce: Duration, lease: Duration) -> Arc<RedisOccupancy> {
        Arc::new(RedisOccupancy {
            cluster: self.clone(),
            scripts: Scripts::new(),
            debounce_ms: millis(debounce),
            lease_ms: millis(lease).max(1),
            started: AtomicBool::new(false),
        })
    }

    /// Starts the control bus on `tasks`: every order another node broadcasts goes to
    /// `handler`, until `shutdown` is cancelled.
    pub fn control(
        &self,
        handler: ControlHandler,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<RedisControl> {
        tasks.spawn(listen(self.clone(), handler, shutdown));
        Arc::new(RedisControl {
            cluster: self.clone(),
        })
    }

    async fn pipe(&self, pipeline: &redis::Pipeline) -> Result<()> {
        self.shared.commands.pipeline(pipeline).await
    }
}

/// [`OccupancyStore`] in Redis (see the module's documentation).
#[derive(Debug)]
pub struct RedisOccupancy {
    cluster: RedisCluster,
    scripts: Scripts,
    debounce_ms: u64,
    lease_ms: u64,
    started: AtomicBool,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisOccupancy {
    async fn set(&self, channel: &str, count: u64) -> Result<Transition> {
        let cluster = &self.cluster;
        let keys = &cluster.keys;
        let node = &*cluster.node;
        if count > 0 {
            // Before the script: a node that dies in between leaves an entry its reaper
            // ignores, never a count nobody will release.
            let mut pipe = redis::pipe();
            pipe.sadd(keys.node(node), channel)
                .zadd(keys.index(), channel, 0);
            cluster.pipe(&pipe).await?;
        }
        let mut invocation = self.scripts.set_count.prepare_invoke();
        invocation
            .key(keys.counts(channel))
            .key(keys.state(channel))
            .arg(node)
            .arg(count)
            .arg(self.debounce_ms);
        let reply: Vec<u64> = cluster.shared.commands.invoke(&invocation).await?;
        let transition = match reply.as_slice() {
            [1] => Transition::Occupied,
            [2, at] => {
                let mut pipe = redis::pipe();
                pipe.zadd(keys.vacating(), channel, *at);
                cluster.pipe(&pipe).await?;
                Transition::Vacating
            }
            _ => Transition::Unchanged,
        };
        if transition == Transition::Occupied {
            let mut pipe = redis::pipe();
            pipe.zadd(keys.index(), channel, 0);
            cluster.pipe(&pipe).await?;
        }
        if count == 0 {
            let mut pipe = redis::pipe();
            pipe.srem(keys.node(node), channel);
            cluster.pipe(&pipe).await?;
        }
        Ok(transition)
    }

    async fn settle_channel(&self, channel: &str) -> Result<Settled> {
        let cluster = &self.cluster;
        let keys = &cluster.keys;
        let mut invocation = self.scripts.settle.prepare_invoke();
        invocation
            .key(keys.counts(channel))
            .key(keys.state(channel));
        let reply: Vec<u64> = cluster.shared.commands.invoke(&invocation).await?;
        let settled = match reply.as_slice() {
            [1] => Settled::Vacated,
            [2, wait] => return Ok(Settled::Wait(Duration::from_millis(*wait))),
            _ => Settled::Cancelled,
        };
        let mut pipe = redis::pipe();
        pipe.zrem(keys.vacating(), channel);
        if settled == Settled::Vacated {
            pipe.zrem(keys.index(), channel);
        }
        cluster.pipe(&pipe).await?;
        Ok(settled)
    }

    async fn maintain_node(&self) -> Result<Maintained> {
        let cluster = &self.cluster;
        let keys = &cluster.keys;
        let mut invocation = self.scripts.lease.prepare_invoke();
        invocation
            .key(keys.nodes())
            .arg(&*cluster.node)
            .arg(self.lease_ms);
        let reply: Vec<String> = cluster.shared.commands.invoke(&invocation).await?;
        let first = !self.started.swap(true, Ordering::AcqRel);
        let lease_lost = !first && reply.first().is_some_and(|had| had == "0");
        let mut due = Vec::new();
        for dead in reply.iter().skip(1) {
            self.reap(dead, &mut due).await?;
        }
        let mut invocation = self.scripts.due.prepare_invoke();
        invocation.key(keys.vacating());
        let pending: Vec<String> = cluster.shared.commands.invoke(&invocation).await?;
        due.extend(pending.into_iter().map(Arc::from));
        due.sort();
        due.dedup();
        Ok(Maintained { lease_lost, due })
    }

    /// Releases a dead node's channels, when this node wins the claim to.
    async fn reap(&self, dead: &str, due: &mut Vec<Arc<str>>) -> Result<()> {
        let cluster = &self.cluster;
        let keys = &cluster.keys;
        let mut claim = self.scripts.claim.prepare_invoke();
        claim
            .key(keys.reap(dead))
            .arg(&*cluster.node)
            .arg(self.lease_ms.saturating_mul(2));
        let claimed: u64 = cluster.shared.commands.invoke(&claim).await?;
        if claimed != 1 {
            return Ok(());
        }
        let mut members = self.scripts.members.prepare_invoke();
        members.key(keys.node(dead));
        let channels: Vec<String> = cluster.shared.commands.invoke(&members).await?;
        debug!(
            node = dead,
            channels = channels.len(),
            "releasing a dead node's channels"
        );
        for channel in channels {
            let mut drop_node = self.scripts.drop_node.prepare_invoke();
            drop_node
                .key(keys.counts(&channel))
                .key(keys.state(&channel))
                .arg(dead);
            let reply: Vec<u64> = cluster.shared.commands.invoke(&drop_node).await?;
            if let [1, at] = reply.as_slice() {
                let mut pipe = redis::pipe();
                pipe.zadd(keys.vacating(), &channel, *at);
                cluster.pipe(&pipe).await?;
                due.push(channel.into());
            }
        }
        let mut pipe = redis::pipe();
        pipe.del(keys.node(dead)).zrem(keys.nodes(), dead);
        cluster.pipe(&pipe).await
    }

    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ChannelCount>> {
        let cluster = &self.cluster;
        let keys = &cluster.keys;
        let min = match after {
            Some(after) if after >= prefix => format!("({after}"),
            _ => format!("[{prefix}"),
        };
        // Channel names are printable ASCII: every name with the prefix sorts before this.
        let max = format!("[{prefix}\u{7f}");
        let mut range = self.scripts.range.prepare_invoke();
        range.key(keys.index()).arg(min).arg(max).arg(limit);
        let names: Vec<String> = cluster.shared.commands.invoke(&range).await?;
        let mut page = Vec::with_capacity(names.len());
        for channel in names {
            let mut total = self.scripts.total.prepare_invoke();
            total.key(keys.counts(&channel));
            let subscribers: u64 = cluster.shared.commands.invoke(&total).await?;
            if subscribers > 0 {
                page.push(ChannelCount {
                    channel,
                    subscribers,
                });
            }
        }
        Ok(page)
    }
}

impl OccupancyStore for RedisOccupancy {
    fn set_count<'a>(
        &'a self,
        channel: &'a str,
        count: u64,
    ) -> BoxFuture<'a, Result<Transition, BrokerError>> {
        Box::pin(async move { Ok(self.set(channel, count).await?) })
    }

    fn settle<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<Settled, BrokerError>> {
        Box::pin(async move { Ok(self.settle_channel(channel).await?) })
    }

    fn maintain(&self) -> BoxFuture<'_, Result<Maintained, BrokerError>> {
        Box::pin(async move { Ok(self.maintain_node().await?) })
    }

    fn channels<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ChannelCount>, BrokerError>> {
        Box::pin(async move { Ok(self.list(prefix, after, limit).await?) })
    }

    fn cluster_wide(&self) -> bool {
        true
    }
}

/// [`ControlBus`] over Redis pub/sub: `PUBLISH wirehub:control "NODE PAYLOAD"`.
#[derive(Debug)]
pub struct RedisControl {
    cluster: RedisCluster,
}

impl ControlBus for RedisControl {
    fn broadcast(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            let mut message = Vec::with_capacity(self.cluster.node.len() + 1 + payload.len());
            message.extend_from_slice(self.cluster.node.as_bytes());
            message.push(b' ');
            message.extend_from_slice(&payload);
            let mut pipe = redis::pipe();
            pipe.publish(self.cluster.keys.control(), message);
            Ok(self.cluster.pipe(&pipe).await?)
        })
    }
}

/// A classic pub/sub connection for the control channel: on a cluster, classic `PUBLISH`
/// reaches every node, so any one node serves it.
async fn connect_control(shared: &Shared, timeout: Duration) -> Result<redis::aio::PubSub> {
    let connect = async {
        let client = shared.endpoint.broadcast_client().await?;
        Ok::<_, crate::error::Error>(client.get_async_pubsub().await?)
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| crate::error::Error::Timeout(timeout))?
}

/// Reads the control channel (reconnecting with backoff) until `shutdown`.
async fn listen(cluster: RedisCluster, handler: ControlHandler, shutdown: CancellationToken) {
    let channel = cluster.keys.control();
    let timeout = cluster.shared.config.timeout;
    let mut delay = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            connected = connect_control(&cluster.shared, timeout) => connected,
        };
        let mut pubsub = match connected {
            Ok(pubsub) => pubsub,
            Err(err) => {
                debug!(error = %err, "control channel: connect failed");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(err) = pubsub.subscribe(&channel).await {
            warn!(error = %err, "control channel: subscribe failed");
            continue;
        }
        delay = Duration::from_millis(100);
        let mut messages = pubsub.on_message();
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => return,
                message = messages.next() => message,
            };
            let Some(message) = message else {
                debug!("control channel: connection lost; reconnecting");
                break;
            };
            let payload = message.get_payload_bytes();
            let Some(space) = payload.iter().position(|b| *b == b' ') else {
                continue;
            };
            if &payload[..space] == cluster.node.as_bytes() {
                continue;
            }
            handler(&payload[space + 1..]);
        }
    }
}
