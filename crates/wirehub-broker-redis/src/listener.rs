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
//! `PING`, but no longer delivering) and made again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use redis::Msg;
use redis::aio::{PubSub, PubSubSink, PubSubStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::keys::parse_payload;
use crate::scripts::Snapshot;
use crate::shared::{Position, Shared, Step, covers};

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// History reads in flight at once while catching up after a reconnect.
const CATCH_UP_READS: usize = 16;
/// How often a stopping listener checks whether the node still watches a channel.
const STOPPING_CHECK: Duration = Duration::from_millis(100);
/// Canary tokens start with this, which no fence token (a number) does.
const CANARY: &[u8] = b"canary ";

/// What the broker handle reads of the listener's view of the link.
#[derive(Debug)]
pub(crate) struct Health {
    /// The last canary was published (false from a failed publish until one succeeds).
    pub(crate) canary_ok: AtomicBool,
    /// Pub/sub connections made again because a canary did not come back.
    pub(crate) resubscribes: AtomicU64,
    /// The last canary token seen on the pub/sub connection.
    seen: watch::Sender<u64>,
    next: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            canary_ok: AtomicBool::new(true),
            resubscribes: AtomicU64::new(0),
            seen: watch::Sender::new(0),
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
pub(crate) async fn connect(shared: &Shared) -> Result<PubSub> {
    connect_pubsub(&shared.client, shared.config.timeout).await
}

pub(crate) async fn connect_pubsub(client: &redis::Client, timeout: Duration) -> Result<PubSub> {
    tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| Error::Timeout(timeout))?
        .map_err(Error::from)
}

/// Runs until [`Context::stopped`]. `first` is the connection made at start.
pub(crate) async fn run(context: Context, first: PubSub) {
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
    sink: PubSubSink,
    stream: &mut PubSubStream,
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
                let Some(message) = message else {
                    break Error::Disconnected;
                };
                if let Some(token) = canary_token(shared, &message) {
                    context.health.seen.send_if_modified(|seen| {
                        let newer = token > *seen;
                        if newer {
                            *seen = token;
                        }
                        newer
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
    if message.get_channel_name() != shared.keys.node_channel() {
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
    let mut pipeline = redis::pipe();
    pipeline
        .cmd("PUBLISH")
        .arg(shared.keys.node_channel())
        .arg(payload)
        .ignore();
    if let Err(err) = shared.commands.pipeline(&pipeline).await {
        health.canary_ok.store(false, Ordering::Relaxed);
        return Err(err);
    }
    health.canary_ok.store(true, Ordering::Relaxed);
    let timeout = shared.config.timeout;
    match tokio::time::timeout(timeout, seen.wait_for(|seen| *seen >= token)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(Error::CanaryLost(timeout)),
    }
}

/// Subscribes the node channel and every watched channel on a new connection, then makes the
/// connection the current one.
async fn resume(shared: &Shared, sink: PubSubSink) -> Result<()> {
    let mut current = shared.pubsub.lock().await;
    let names: Vec<Arc<str>> = {
        let mut channels = shared.channels();
        channels.retain(|_, state| state.watchers > 0);
        channels.keys().cloned().collect()
    };
    let mut node_sink = sink.clone();
    let timeout = shared.config.timeout;
    tokio::time::timeout(timeout, node_sink.subscribe(shared.keys.node_channel()))
        .await
        .map_err(|_| Error::Timeout(timeout))??;
    let subscriptions = futures_util::future::try_join_all(names.iter().map(|name| {
        let mut sink = sink.clone();
        let redis_channel = shared.keys.messages(name);
        async move { sink.subscribe(redis_channel).await }
    }));
    // Subscriptions are pipelined; allow more time for many of them.
    let timeout =
        timeout.max(Duration::from_micros(100) * u32::try_from(names.len()).unwrap_or(u32::MAX));
    tokio::time::timeout(timeout, subscriptions)
        .await
        .map_err(|_| Error::Timeout(timeout))??;
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
    let targets: Vec<(Arc<str>, Option<Position>)> = shared
        .channels()
        .values()
        .filter(|state| state.recover)
        .map(|state| (state.name.clone(), state.last.clone()))
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    info!(channels = targets.len(), "Redis pub/sub: catching up");
    let mut reads = futures_util::stream::iter(targets)
        .map(|(name, last)| async move {
            let since = last.as_ref().map(|(epoch, offset)| (&**epoch, *offset));
            let snapshot = shared.read(&name, since, None, None).await;
            (name, last, snapshot)
        })
        .buffer_unordered(CATCH_UP_READS);
    while let Some((name, last, snapshot)) = reads.next().await {
        fill(shared, &name, last, snapshot?);
        if let Some(state) = shared.channels().get_mut(&name) {
            state.recover = false;
        }
    }
    Ok(())
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
    if let Some((event, member)) = crate::presence::parse_announcement(message.get_payload_bytes())
    {
        shared.sink.member(channel, event, member);
        return Ok(());
    }
    let Some((epoch, offset, data)) = parse_payload(message.get_payload_bytes()) else {
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
    tokio::time::timeout(timeout, sink.ping::<redis::Value>())
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
