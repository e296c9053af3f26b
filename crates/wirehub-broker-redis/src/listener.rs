//! The listener: the one task that reads the pub/sub connection and hands publications to the
//! node's fan-out, in the order Redis published them (which is offset order per channel).
//!
//! It owns the connection's life: when the connection breaks (or a `PING` goes unanswered)
//! it reconnects with capped, jittered backoff, subscribes the node channel and every watched
//! channel again, and then, before reading anything new, reads each channel's history after
//! the last offset it delivered and delivers what was missed. Where the history no longer
//! covers the gap (trimmed, expired, or the epoch changed: Redis lost its data), the channel's
//! local subscribers are told through [`wirehub_core::Deliver::lost`] (their connections are
//! closed with 4200 and their clients resubscribe with `since`). Nothing is skipped silently.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Msg;
use redis::aio::{PubSub, PubSubSink, PubSubStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::keys::parse_payload;
use crate::scripts::Snapshot;
use crate::shared::{Position, Shared, Step, covers};

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);
/// History reads in flight at once while catching up after a reconnect.
const CATCH_UP_READS: usize = 16;

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

/// Runs until `stop` is cancelled. `first` is the connection made at start.
pub(crate) async fn run(shared: Arc<Shared>, first: PubSub, stop: CancellationToken) {
    let mut next = Some(first);
    let mut delay = FIRST_DELAY;
    loop {
        let pubsub = match next.take() {
            Some(pubsub) => pubsub,
            None => {
                let connected = tokio::select! {
                    () = stop.cancelled() => return,
                    connected = connect(&shared) => connected,
                };
                match connected {
                    Ok(pubsub) => pubsub,
                    Err(err) => {
                        debug!(error = %err, "Redis pub/sub: reconnect failed");
                        let pause = jitter(delay);
                        delay = (delay * 2).min(MAX_DELAY);
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(pause) => continue,
                        }
                    }
                }
            }
        };
        let (sink, mut stream) = pubsub.split();
        let mut live = false;
        let ended = tokio::select! {
            () = stop.cancelled() => return,
            ended = listen(&shared, sink, &mut stream, &mut live) => ended,
        };
        // Dropping the stream ends the connection's driver: the sink fails from now on.
        drop(stream);
        disconnected(&shared).await;
        if live {
            delay = FIRST_DELAY;
        }
        let pause = jitter(delay);
        delay = (delay * 2).min(MAX_DELAY);
        warn!(error = %ended, "Redis pub/sub connection lost; reconnecting");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// One connection's life: resubscribe, catch up, then deliver until it breaks.
async fn listen(
    shared: &Arc<Shared>,
    sink: PubSubSink,
    stream: &mut PubSubStream,
    live: &mut bool,
) -> Error {
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
    let keep_every = (shared.config.stream_ttl / 4).max(Duration::from_secs(1));
    let mut keep = tokio::time::interval(keep_every);
    keep.reset();
    loop {
        tokio::select! {
            message = stream.next() => {
                let Some(message) = message else {
                    return Error::Disconnected;
                };
                if let Err(err) = handle(shared, &message).await {
                    return err;
                }
            }
            _ = ping.tick() => {
                if let Err(err) = check(shared).await {
                    return err;
                }
            }
            _ = keep.tick() => {
                tokio::spawn(keep_alive(shared.clone()));
            }
        }
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
