//! The listener: the one task that reads the pub/sub connection and hands publications to the
//! node's fan-out, in the order Redis published them (which is offset order per channel).
//!
//! It owns the connection's life: when the connection breaks (or a `PING` goes unanswered)
//! it reconnects with capped, jittered backoff, subscribes the node channel and every watched
//! channel again, and then, before reading anything new, reads each channel's history after
//! the last offset it delivered and delivers what was missed. Where the history no longer
//! covers the gap (trimmed, expired, or the epoch changed: Redis lost its data), the channel's
//! local subscribers are told through [`wirehub_core::Deliver::lost`] (they get a `gap` and
//! their clients recover with `subscribe` + `since`). Nothing is skipped silently.
//!
//! It also sends the canary: every `canary_interval` a token is published on the node's own
//! channel through the command connection, and when it has not come back through the pub/sub
//! connection within `timeout`, that connection is taken for dead (connected, answering
//! `PING`, but no longer delivering) and made again. On a Redis Cluster there is one canary
//! channel per shard (a channel whose slot that shard serves, found again at every canary
//! from `CLUSTER SLOTS`), and the canary is lost when any of them does not come back.
//!
//! **Failover.** Redis replicates asynchronously: a master that dies can take with it the
//! last publications it acknowledged (and published) before its replica had them. The
//! promoted replica then hands out those offsets again, for other messages. After every
//! reconnect the listener reads each channel's history from the offset it delivered last;
//! when the stream is now behind that offset, or holds another message there (compared by a
//! hash of the data), the stream was rewound: the node moves it to a new epoch (`rewind`
//! script, once for all nodes) and the channel's subscribers get a `gap`. So a client never
//! takes a new message for one it had, and a `since` from before the failover does not
//! recover.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Msg;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::commands::Endpoint;
use crate::error::{Error, Result};
use crate::keys::parse_payload;
use crate::pubsub::{Incoming, PubSubLink, SubSink, SubStream};
use crate::scripts::Snapshot;
use crate::shared::{Position, Shared, Step, covers, data_hash};

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// History reads in flight at once while catching up after a reconnect.
const CATCH_UP_READS: usize = 16;
/// How often a stopping listener checks whether the node still watches a channel.
const STOPPING_CHECK: Duration = Duration::from_millis(100);
/// Subscriptions sent at once when a connection is made again.
const RESUBSCRIBE_IN_FLIGHT: usize = 256;
/// Canary tokens start with this, which no fence token (a number) does.
const CANARY: &[u8] = b"canary ";

/// What the broker handle reads of the listener's view of the link.
#[derive(Debug)]
pub(crate) struct Health {
    /// The last canary was published (false from a failed publish until one succeeds).
    pub(crate) canary_ok: AtomicBool,
    /// Pub/sub connections made again because a canary did not come back.
    pub(crate) resubscribes: AtomicU64,
    /// The last canary token seen on the pub/sub connection, and on how many canary
    /// channels (one per shard on a cluster).
    seen: watch::Sender<(u64, usize)>,
    next: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            canary_ok: AtomicBool::new(true),
            resubscribes: AtomicU64::new(0),
            seen: watch::Sender::new((0, 0)),
            next: AtomicU64::new(1),
        }
    }
}

/// What the listener runs with.
pub(crate) struct Context {
    pub(crate) shared: Arc<Shared>,
    pub(crate) health: Arc<Health>,
    /// The server's tracker: the listener and its housekeeping tasks run on it.
    pub(crate) tasks: TaskTracker,
    /// The server's shutdown: once cancelled, the listener ends when no channel is watched.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when the broker is dropped: the listener ends at once.
    pub(crate) dropped: CancellationToken,
}

impl Context {
    /// Completes when the listener should end.
    async fn stopped(&self) {
        let drained = async {
            self.shutdown.cancelled().await;
            loop {
                let watched = self
                    .shared
                    .channels()
                    .values()
                    .any(|state| state.watchers > 0);
                if !watched {
                    return;
                }
                tokio::time::sleep(STOPPING_CHECK).await;
            }
        };
        tokio::select! {
            () = self.dropped.cancelled() => {}
            () = drained => {}
        }
    }
}

/// Opens a pub/sub connection.
pub(crate) async fn connect(shared: &Shared) -> Result<PubSubLink> {
    connect_pubsub(&shared.endpoint, shared.config.timeout).await
}

pub(crate) async fn connect_pubsub(endpoint: &Endpoint, timeout: Duration) -> Result<PubSubLink> {
    // Boxed, as in `Commands`: the cluster client's connect future is deep.
    let connect: futures_util::future::BoxFuture<'_, Result<PubSubLink>> =
        Box::pin(PubSubLink::connect(endpoint));
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

/// Runs until [`Context::stopped`]. `first` is the connection made at start.
pub(crate) async fn run(context: Context, first: PubSubLink) {
    let shared = &context.shared;
    let mut next = Some(first);
    let mut delay = FIRST_DELAY;
    loop {
        let pubsub = match next.take() {
            Some(pubsub) => pubsub,
            None => {
                let connected = tokio::select! {
                    () = context.stopped() => return,
                    connected = connect(shared) => connected,
                };
                match connected {
                    Ok(pubsub) => pubsub,
                    Err(err) => {
                        debug!(error = %err, "Redis pub/sub: reconnect failed");
                        let pause = jitter(delay);
                        delay = (delay * 2).min(MAX_DELAY);
                        tokio::select! {
                            () = context.stopped() => return,
                            () = tokio::time::sleep(pause) => continue,
                        }
                    }
                }
            }
        };
        let (sink, mut stream) = pubsub.split();
        let mut live = false;
        let ended = tokio::select! {
            () = context.stopped() => return,
            ended = listen(&context, sink, &mut stream, &mut live) => ended,
        };
        // Dropping the stream ends the connection's driver: the sink fails from now on.
        drop(stream);
        disconnected(shared).await;
        if live {
            delay = FIRST_DELAY;
        }
        let pause = if let Error::CanaryLost(_) = ended {
            context.health.resubscribes.fetch_add(1, Ordering::Relaxed);
            warn!(error = %ended, "Redis pub/sub stopped delivering; subscribing again");
            Duration::ZERO
        } else {
            warn!(error = %ended, "Redis pub/sub connection lost; reconnecting");
            let pause = jitter(delay);
            delay = (delay * 2).min(MAX_DELAY);
            pause
        };
        tokio::select! {
            () = context.stopped() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// One connection's life: resubscribe, catch up, then deliver until it breaks.
async fn listen(
    context: &Context,
    sink: SubSink,
    stream: &mut SubStream,
    live: &mut bool,
) -> Error {
    let shared = &context.shared;
    if let Err(err) = resume(shared, sink).await {
        return err;
    }
    if let Err(err) = catch_up(shared).await {
        return err;
    }
    *live = true;
    info!("Redis pub/sub connected");
    let mut ping = tokio::time::interval(shared.config.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.reset();
    let mut canary_tick = tokio::time::interval(shared.config.canary_interval);
    canary_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    canary_tick.reset();
    let mut canary: Option<tokio::task::JoinHandle<Result<()>>> = None;
    let keep_every = (shared.config.stream_ttl / 4).max(Duration::from_secs(1));
    let mut keep = tokio::time::interval(keep_every);
    keep.reset();
    let ended = loop {
        tokio::select! {
            message = stream.next() => {
                let message = match message {
                    None => break Error::Disconnected,
                    Some(Incoming::Moved(redis_channel)) => {
                        if let Err(err) = moved(shared, &redis_channel).await {
                            break err;
                        }
                        continue;
                    }
                    Some(Incoming::Message(message)) => message,
                };
                if let Some(token) = canary_token(shared, &message) {
                    context.health.seen.send_if_modified(|seen| match token.cmp(&seen.0) {
                        std::cmp::Ordering::Greater => {
                            *seen = (token, 1);
                            true
                        }
                        std::cmp::Ordering::Equal => {
                            seen.1 += 1;
                            true
                        }
                        std::cmp::Ordering::Less => false,
                    });
                    continue;
                }
                if let Err(err) = handle(shared, &message).await {
                    break err;
                }
            }
            _ = ping.tick() => {
                if let Err(err) = check(shared).await {
                    break err;
                }
            }
            _ = canary_tick.tick(), if canary.is_none() => {
                canary = Some(context.tasks.spawn(send_canary(
                    shared.clone(),
                    context.health.clone(),
                )));
            }
            Some(outcome) = async {
                match canary.as_mut() {
                    Some(task) => Some(task.await),
                    None => None,
                }
            }, if canary.is_some() => {
                canary = None;
                match outcome {
                    Ok(Ok(())) => {}
                    Ok(Err(err @ Error::CanaryLost(_))) => break err,
                    Ok(Err(err)) => debug!(error = %err, "publishing the canary failed"),
                    Err(err) => debug!(error = %err, "the canary task failed"),
                }
            }
            _ = keep.tick() => {
                context.tasks.spawn(keep_alive(shared.clone()));
            }
        }
    };
    if let Some(canary) = canary {
        canary.abort();
    }
    ended
}

/// The token of a canary message on the node channel.
fn canary_token(shared: &Shared, message: &Msg) -> Option<u64> {
    let channel = message.get_channel_name();
    if channel != shared.keys.node_channel() && !shared.keys.is_canary_channel(channel) {
        return None;
    }
    let token = message.get_payload_bytes().strip_prefix(CANARY)?;
    std::str::from_utf8(token).ok()?.parse().ok()
}

/// Publishes a canary through the command connection and waits for it to come back through
/// the pub/sub connection. A publish that fails leaves the broker unreachable until one
/// succeeds; a canary that does not come back is [`Error::CanaryLost`].
async fn send_canary(shared: Arc<Shared>, health: Arc<Health>) -> Result<()> {
    let token = health.next.fetch_add(1, Ordering::Relaxed);
    let mut seen = health.seen.subscribe();
    let mut payload = CANARY.to_vec();
    payload.extend_from_slice(token.to_string().as_bytes());
    let channels = match canary_channels(&shared).await {
        Ok(channels) => channels,
        Err(err) => {
            health.canary_ok.store(false, Ordering::Relaxed);
            return Err(err);
        }
    };
    let mut pipeline = redis::pipe();
    for channel in &channels {
        pipeline
            .cmd(shared.publish_command())
            .arg(channel)
            .arg(&payload)
            .ignore();
    }
    if let Err(err) = shared.commands.pipeline(&pipeline).await {
        health.canary_ok.store(false, Ordering::Relaxed);
        return Err(err);
    }
    health.canary_ok.store(true, Ordering::Relaxed);
    let timeout = shared.config.timeout;
    let wanted = channels.len();
    let back = seen.wait_for(|(seen, count)| *seen > token || (*seen == token && *count >= wanted));
    match tokio::time::timeout(timeout, back).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(Error::CanaryLost(timeout)),
    }
}

/// The channels a canary goes out on: the node channel, or on a cluster one channel per
/// shard (in the first slot the shard serves), subscribed here when new.
async fn canary_channels(shared: &Shared) -> Result<Vec<String>> {
    if !shared.endpoint.is_cluster() {
        return Ok(vec![shared.keys.node_channel().to_owned()]);
    }
    let slots: redis::Value = shared
        .commands
        .query(redis::cmd("CLUSTER").arg("SLOTS"))
        .await?;
    let channels: Vec<String> = first_slots(&slots)
        .into_iter()
        .map(|slot| shared.keys.canary_channel(slot))
        .collect();
    let missing: Vec<&String> = {
        let subscribed = crate::shared::lock(&shared.canaries);
        channels
            .iter()
            .filter(|c| !subscribed.contains(*c))
            .collect()
    };
    if !missing.is_empty() {
        let mut current = shared.pubsub.lock().await;
        let sink = current.as_mut().ok_or(Error::Disconnected)?;
        for channel in missing {
            sink.subscribe(channel).await?;
            crate::shared::lock(&shared.canaries).insert(channel.clone());
        }
    }
    Ok(channels)
}

/// The first slot of each master in a `CLUSTER SLOTS` reply (one per shard).
fn first_slots(reply: &redis::Value) -> Vec<u16> {
    let redis::Value::Array(ranges) = reply else {
        return Vec::new();
    };
    let mut firsts: std::collections::HashMap<Vec<u8>, u16> = std::collections::HashMap::new();
    for range in ranges {
        let redis::Value::Array(fields) = range else {
            continue;
        };
        let (Some(start), Some(redis::Value::Array(master))) = (fields.first(), fields.get(2))
        else {
            continue;
        };
        let Ok(start) = redis::from_redis_value::<u16>(start) else {
            continue;
        };
        let key = format!("{:?}", master.iter().take(2).collect::<Vec<_>>()).into_bytes();
        firsts
            .entry(key)
            .and_modify(|first| *first = (*first).min(start))
            .or_insert(start);
    }
    let mut slots: Vec<u16> = firsts.into_values().collect();
    slots.sort_unstable();
    slots
}

/// Subscribes the node channel and every watched channel on a new connection, then makes the
/// connection the current one.
async fn resume(shared: &Shared, sink: SubSink) -> Result<()> {
    let mut current = shared.pubsub.lock().await;
    let names: Vec<Arc<str>> = {
        let mut channels = shared.channels();
        channels.retain(|_, state| state.watchers > 0);
        channels.keys().cloned().collect()
    };
    let timeout = shared.config.timeout;
    crate::shared::lock(&shared.canaries).clear();
    if !shared.endpoint.is_cluster() {
        // Fences and the canary (on a cluster they travel per shard).
        let mut node_sink = sink.clone();
        tokio::time::timeout(timeout, node_sink.subscribe(shared.keys.node_channel()))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
    }
    let redis_channels: Vec<String> = names
        .iter()
        .map(|name| shared.keys.messages(name))
        .collect();
    let subscriptions =
        futures_util::stream::iter(redis_channels.into_iter().map(|redis_channel| {
            let mut sink = sink.clone();
            async move { sink.subscribe(&redis_channel).await }
        }))
        .buffer_unordered(RESUBSCRIBE_IN_FLIGHT)
        .collect::<Vec<Result<()>>>();
    // Subscriptions are pipelined; allow more time for many of them.
    let timeout =
        timeout.max(Duration::from_micros(100) * u32::try_from(names.len()).unwrap_or(u32::MAX));
    tokio::time::timeout(timeout, subscriptions)
        .await
        .map_err(|_| Error::Timeout(timeout))?
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    {
        let mut channels = shared.channels();
        for name in &names {
            if let Some(state) = channels.get_mut(name) {
                state.subscribed = true;
                state.ready.send_replace(true);
            }
        }
    }
    *current = Some(sink);
    shared.link.send_replace(true);
    Ok(())
}

/// Marks everything disconnected; channels that were live must catch up on reconnect.
async fn disconnected(shared: &Shared) {
    shared.link.send_replace(false);
    shared.commands.forget();
    *shared.pubsub.lock().await = None;
    crate::shared::lock(&shared.canaries).clear();
    shared.drop_fences();
    for state in shared.channels().values_mut() {
        if state.subscribed && state.watchers > 0 {
            state.recover = true;
        }
        state.subscribed = false;
        state.ready.send_replace(false);
    }
}

/// Reads the history of every channel that was live when the connection broke and delivers
/// what was missed (or reports the loss).
async fn catch_up(shared: &Shared) -> Result<()> {
    let targets: Vec<Arc<str>> = shared
        .channels()
        .values()
        .filter(|state| state.recover)
        .map(|state| state.name.clone())
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    info!(channels = targets.len(), "Redis pub/sub: catching up");
    let mut reads = futures_util::stream::iter(targets)
        .map(|name| async move {
            let result = recover(shared, &name).await;
            (name, result)
        })
        .buffer_unordered(CATCH_UP_READS);
    while let Some((name, result)) = reads.next().await {
        result?;
        if let Some(state) = shared.channels().get_mut(&name) {
            state.recover = false;
        }
    }
    Ok(())
}

/// Catches one channel up from the history after its subscription was made again: delivers
/// what it missed, or reports the loss; a rewound stream (see the module docs) moves to a new
/// epoch first.
async fn recover(shared: &Shared, channel: &str) -> Result<()> {
    let (last, hash) = match shared.channels().get(channel) {
        Some(state) => (state.last.clone(), state.last_hash),
        None => return Ok(()),
    };
    let Some((epoch, offset)) = last else {
        // Nothing delivered yet: a subscription started from a read waits for its fence.
        return Ok(());
    };
    // From one before the last delivered offset, to compare the message there.
    let check_from = if hash.is_some() {
        offset.saturating_sub(1)
    } else {
        offset
    };
    let mut snapshot = shared
        .read(channel, Some((&epoch, check_from)), None, None)
        .await?;
    let rewound = *snapshot.epoch == *epoch
        && (snapshot.top < offset
            || hash.is_some_and(|hash| {
                snapshot
                    .entries
                    .iter()
                    .find(|(at, _)| *at == offset)
                    .is_some_and(|(_, data)| data_hash(data) != hash)
            }));
    if rewound {
        let (new_epoch, top) = shared.rewind(channel, &epoch).await?;
        warn!(
            %channel,
            old_epoch = %epoch,
            delivered = offset,
            top = snapshot.top,
            epoch = %new_epoch,
            "the stream lost publications this node had delivered (a failover); it moves to a new epoch and the channel's subscribers get a gap"
        );
        shared.sink.lost(channel, &new_epoch, top);
        shared.retire(channel, &epoch, &new_epoch, top);
        return Ok(());
    }
    snapshot.entries.retain(|(at, _)| *at > offset);
    fill(shared, channel, Some((epoch, offset)), snapshot);
    Ok(())
}

/// The server dropped the subscription of `redis_channel` (its slot moved to another shard):
/// subscribe again (the client library follows `MOVED` to the new owner) and catch up.
async fn moved(shared: &Shared, redis_channel: &str) -> Result<()> {
    if shared.keys.is_canary_channel(redis_channel) {
        // Subscribed again (on its new shard, or another channel) by the next canary.
        crate::shared::lock(&shared.canaries).remove(redis_channel);
        return Ok(());
    }
    let Some(channel) = shared.keys.channel_of(redis_channel) else {
        return Ok(());
    };
    let wanted = shared
        .channels()
        .get(channel)
        .is_some_and(|state| state.watchers > 0 && state.subscribed);
    if !wanted {
        // Our own unsubscribe.
        return Ok(());
    }
    info!(%channel, "Redis Cluster moved the channel's slot; subscribing on its new shard");
    let timeout = shared.config.timeout;
    {
        let mut current = shared.pubsub.lock().await;
        let sink = current.as_mut().ok_or(Error::Disconnected)?;
        tokio::time::timeout(timeout, sink.subscribe(redis_channel))
            .await
            .map_err(|_| Error::Timeout(timeout))??;
    }
    recover(shared, channel).await
}

/// Delivers the publications of `snapshot` after `last`, or reports that they are lost.
fn fill(shared: &Shared, channel: &str, last: Option<Position>, snapshot: Snapshot) {
    let covered = last
        .as_ref()
        .is_some_and(|(epoch, offset)| **epoch == *snapshot.epoch && covers(*offset, &snapshot));
    if covered {
        for (offset, data) in &snapshot.entries {
            if let Step::Deliver(publication) = shared.step(channel, &snapshot.epoch, *offset, data)
            {
                shared.sink.deliver(&publication);
            }
        }
    } else {
        warn!(
            %channel,
            epoch = %snapshot.epoch,
            offset = snapshot.top,
            "publications missed while disconnected are not in the history; sending the channel's subscribers a gap"
        );
        shared.sink.lost(channel, &snapshot.epoch, snapshot.top);
        shared.jump(channel, &snapshot.epoch, snapshot.top);
    }
}

/// Handles one pub/sub message.
async fn handle(shared: &Shared, message: &Msg) -> Result<()> {
    let redis_channel = message.get_channel_name();
    if redis_channel == shared.keys.node_channel() {
        if let Some(token) = std::str::from_utf8(message.get_payload_bytes())
            .ok()
            .and_then(|token| token.parse().ok())
        {
            shared.fence_passed(token);
        }
        return Ok(());
    }
    let Some(channel) = shared.keys.channel_of(redis_channel) else {
        return Ok(());
    };
    let payload = message.get_payload_bytes();
    if payload.starts_with(crate::keys::FENCE_MARK) {
        // A fence on the channel's shard (cluster): ours, or another node's.
        if let Some(token) = shared.keys.own_fence(payload) {
            shared.fence_passed(token);
        }
        return Ok(());
    }
    if let Some((event, member)) = crate::presence::parse_announcement(payload) {
        shared.sink.member(channel, event, member);
        return Ok(());
    }
    let Some((epoch, offset, data)) = parse_payload(payload) else {
        warn!(%redis_channel, "ignoring a malformed publication");
        return Ok(());
    };
    loop {
        match shared.step(channel, epoch, offset, data) {
            Step::Skip => return Ok(()),
            Step::Deliver(publication) => {
                shared.sink.deliver(&publication);
                return Ok(());
            }
            Step::NewEpoch(publication) => {
                warn!(%channel, %epoch, "the stream started a new epoch; sending the channel's subscribers a gap");
                shared.sink.lost(channel, epoch, offset.saturating_sub(1));
                shared.sink.deliver(&publication);
                return Ok(());
            }
            Step::Gap(last_epoch, last) => {
                debug!(%channel, last, offset, "gap in the pub/sub stream; reading the history");
                let snapshot = shared
                    .read(channel, Some((&last_epoch, last)), None, None)
                    .await?;
                fill(shared, channel, Some((last_epoch, last)), snapshot);
            }
        }
    }
}

/// Checks that the connection still answers.
async fn check(shared: &Shared) -> Result<()> {
    let sink = {
        let Ok(current) = shared.pubsub.try_lock() else {
            // Someone is subscribing: the connection is in use anyway.
            return Ok(());
        };
        current.clone().ok_or(Error::Disconnected)?
    };
    let mut sink = sink;
    let timeout = shared.config.timeout;
    tokio::time::timeout(timeout, sink.ping())
        .await
        .map_err(|_| Error::Timeout(timeout))??;
    Ok(())
}

/// Refreshes the expiry of the epoch and offset keys of every watched channel, so that a
/// channel with subscribers keeps its epoch however quiet it is.
async fn keep_alive(shared: Arc<Shared>) {
    let names: Vec<Arc<str>> = shared.channels().keys().cloned().collect();
    let keep = i64::try_from(shared.config.keep_millis()).unwrap_or(i64::MAX);
    for chunk in names.chunks(500) {
        let mut pipeline = redis::pipe();
        for name in chunk {
            let [epoch, offset, _] = shared.keys.stream(name);
            pipeline.pexpire(epoch, keep).ignore();
            pipeline.pexpire(offset, keep).ignore();
        }
        if let Err(err) = shared.commands.pipeline(&pipeline).await {
            debug!(error = %err, "refreshing stream expiries failed");
            return;
        }
    }
}

/// A random pause between half of `delay` and `delay`.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(rand::random_range(0.5..=1.0))
}
