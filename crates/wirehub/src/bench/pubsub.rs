//! The publish → deliver engine behind `fanout` and `rooms`: subscribers on C channels, P
//! publisher connections, messages carrying a send timestamp and a per-channel sequence.
//!
//! Everything runs on one thread (a `LocalSet`), so the shared counters are plain `Cell`s.
//! Publishers keep a bounded window: at most `window` unacknowledged publishes each, and at
//! most `window` messages per subscriber published but not yet received, so that the server's
//! outbound queues stay far below its slow-consumer limit even when the generator is the
//! slower side. Subscribers check every delivery's offset (missing, duplicated, out of order)
//! and its payload sequence, and record the latency from the payload's timestamp.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::client::{OP_TEXT, Targets, WsConn, number_after, number_after_last};
use super::stats::{Integrity, Latency, ProcSample, Report, ServerUsage, Track, now_ns, round3};
use super::{Common, Progress};

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Channel names.
    pub(crate) channels: Vec<String>,
    /// Subscribers per channel.
    pub(crate) subscribers_per_channel: usize,
    /// Publisher connections; channel `c` is published by publisher `c % publishers`.
    pub(crate) publishers: usize,
    /// Messages to publish in total (over all channels), at most.
    pub(crate) messages: u64,
    /// Publishes per second in total; 0: as fast as the window allows.
    pub(crate) rate: f64,
    /// Messages in flight per publisher (see the module docs).
    pub(crate) window: usize,
    /// Stop publishing after this long even if fewer messages were sent.
    pub(crate) duration: Duration,
    /// Padding added to each payload, in bytes.
    pub(crate) payload_bytes: usize,
    /// How long to wait for the last deliveries once publishing is over.
    pub(crate) drain_timeout: Duration,
}

/// Counters every task of the run updates.
struct Shared {
    delivered: Cell<u64>,
    /// Deliveries owed: subscribers of the channel for every accepted or pending publish.
    expected: Cell<u64>,
    sent: Cell<u64>,
    first_send: Cell<Option<Instant>>,
    last_delivery: Cell<Option<Instant>>,
    latency: RefCell<Latency>,
    /// Woken when deliveries progress and some publisher waits for them.
    progress: Notify,
    waiting: Cell<usize>,
    stop: CancellationToken,
    other_frames: Cell<u64>,
}

/// What one publisher did.
#[derive(Debug, Default)]
struct Published {
    /// Highest acknowledged offset per channel index.
    tops: HashMap<usize, u64>,
    acked: u64,
    errors: u64,
    first_error: Option<String>,
    unacked_at_end: u64,
}

/// A subscriber's result.
struct Subscribed {
    channel: usize,
    track: Track,
}

/// Runs the plan against the server and fills the report.
pub(crate) async fn run(
    common: &Common,
    plan: &Plan,
    report: &mut Report,
    progress: &Progress,
) -> anyhow::Result<()> {
    let targets = Targets::resolve(&common.url).await?;
    let target = targets.get(0).clone();
    let subscribers = plan.channels.len() * plan.subscribers_per_channel;
    super::check_open_files(common, subscribers + plan.publishers)?;
    let sources = common.sources(subscribers + plan.publishers);
    let shared = Rc::new(Shared {
        delivered: Cell::new(0),
        expected: Cell::new(0),
        sent: Cell::new(0),
        first_send: Cell::new(None),
        last_delivery: Cell::new(None),
        latency: RefCell::new(Latency::new()),
        progress: Notify::new(),
        waiting: Cell::new(0),
        stop: CancellationToken::new(),
        other_frames: Cell::new(0),
    });

    // Subscribers: connect, subscribe, then receive until stopped.
    progress.phase("subscribing", subscribers as u64);
    let setup_started = Instant::now();
    let gate = Rc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let ready = Rc::new(Cell::new(0u64));
    let failures: Rc<RefCell<Vec<String>>> = Rc::default();
    let mut handles = Vec::with_capacity(subscribers);
    for index in 0..subscribers {
        let channel = index % plan.channels.len();
        let name = plan.channels[channel].clone();
        let target = targets.get(index).clone();
        let source = target.source(index, sources);
        let (gate, ready, failures, shared) = (
            gate.clone(),
            ready.clone(),
            failures.clone(),
            shared.clone(),
        );
        let timeout = common.reply_timeout;
        handles.push(tokio::task::spawn_local(async move {
            let permit = gate.acquire().await.ok();
            let setup = async {
                let mut conn = WsConn::connect(&target, source, timeout).await?;
                let start = subscribe(&mut conn, &name, timeout).await?;
                anyhow::Ok((conn, start))
            }
            .await;
            drop(permit);
            ready.set(ready.get() + 1);
            match setup {
                Ok((conn, start)) => Some(Subscribed {
                    channel,
                    track: receive(conn, &name, start, &shared).await,
                }),
                Err(err) => {
                    failures.borrow_mut().push(format!("{err:#}"));
                    None
                }
            }
        }));
    }
    while ready.get() < subscribers as u64 {
        progress.set(ready.get());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let setup_time = setup_started.elapsed();
    let setup_failures = failures.borrow().len();
    if setup_failures == subscribers {
        bail!(
            "no subscriber could connect: {}",
            failures.borrow().first().cloned().unwrap_or_default()
        );
    }
    report.set("subscribers", (subscribers - setup_failures) as u64);
    report.set("channels", plan.channels.len() as u64);
    report.set("connect_failures", setup_failures as u64);
    report.line(format!(
        "{} subscribers on {} channel(s) ready in {:.2} s{}",
        subscribers - setup_failures,
        plan.channels.len(),
        setup_time.as_secs_f64(),
        if setup_failures > 0 {
            format!(" ({setup_failures} failed: {})", failures.borrow()[0])
        } else {
            String::new()
        }
    ));
    if setup_failures > 0 {
        report.problem(format!(
            "{setup_failures} subscriber(s) could not connect or subscribe"
        ));
    }

    // Publishers.
    let mut publishers = Vec::with_capacity(plan.publishers);
    for index in 0..plan.publishers {
        let source = target.source(subscribers + index, sources);
        let mut conn = WsConn::connect(&target, source, common.reply_timeout)
            .await
            .context("publisher connection")?;
        expect_type(&conn.next_text(common.reply_timeout).await?, "welcome")?;
        publishers.push(conn);
    }

    let server_before = common.server_sample()?;
    let self_before = ProcSample::read(None)?;
    let started = Instant::now();
    let total = plan
        .messages
        .saturating_mul(plan.subscribers_per_channel as u64);
    progress.phase("delivering", total);
    let ticker = {
        let shared = shared.clone();
        let bar = progress.clone();
        tokio::task::spawn_local(async move {
            loop {
                bar.set(shared.delivered.get());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let publish_deadline = started + plan.duration;
    let mut publish_handles = Vec::new();
    for (index, conn) in publishers.into_iter().enumerate() {
        let channels: Vec<(usize, String)> = plan
            .channels
            .iter()
            .enumerate()
            .filter(|(c, _)| c % plan.publishers == index)
            .map(|(c, name)| (c, name.clone()))
            .collect();
        let shared = shared.clone();
        let plan = plan.clone();
        let timeout = common.reply_timeout;
        publish_handles.push(tokio::task::spawn_local(async move {
            publish(conn, channels, &plan, &shared, publish_deadline, timeout).await
        }));
    }
    let mut published = Published::default();
    for handle in publish_handles {
        let part = handle.await.context("publisher task")??;
        published.acked += part.acked;
        published.errors += part.errors;
        published.unacked_at_end += part.unacked_at_end;
        if published.first_error.is_none() {
            published.first_error = part.first_error;
        }
        published.tops.extend(part.tops);
    }
    let publish_time = started.elapsed();

    // Drain: wait for the owed deliveries, giving up after a quiet drain timeout.
    let mut last_seen = shared.delivered.get();
    let mut quiet_since = Instant::now();
    while shared.delivered.get() < shared.expected.get() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = shared.delivered.get();
        if now != last_seen {
            last_seen = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > plan.drain_timeout {
            break;
        }
    }
    let server_after = common.server_sample()?;
    let end = shared.last_delivery.get().unwrap_or_else(Instant::now);
    let first = shared.first_send.get().unwrap_or(started);
    let active = end.saturating_duration_since(first);
    shared.stop.cancel();
    ticker.abort();
    progress.finish();

    let mut integrity = Integrity::default();
    for handle in handles {
        if let Some(sub) = handle.await.context("subscriber task")? {
            let top = published.tops.get(&sub.channel).copied().unwrap_or(0);
            sub.track.finish(top, &mut integrity);
        }
    }

    let delivered = shared.delivered.get();
    let per_second = if active.is_zero() {
        0.0
    } else {
        delivered as f64 / active.as_secs_f64()
    };
    report.set("messages", published.acked);
    report.set("deliveries", delivered);
    report.set("duration_s", round3(active.as_secs_f64()));
    report.set("deliveries_per_s", per_second.round());
    report.set(
        "messages_per_s",
        (published.acked as f64 / publish_time.as_secs_f64().max(1e-9)).round(),
    );
    report.set("publish_errors", published.errors);
    report.line(format!(
        "{} messages published ({} acknowledged) → {} deliveries in {:.2} s: {:.0} deliveries/s",
        shared.sent.get(),
        published.acked,
        delivered,
        active.as_secs_f64(),
        per_second
    ));
    report.latency("latency (publish → delivery)", &shared.latency.borrow());
    report.integrity(&integrity);
    if published.errors > 0 || published.unacked_at_end > 0 {
        let hint = match published.first_error.as_deref() {
            Some(err) if err.contains("rate_limited") => {
                " (start the server with --publish-rate 0 for load tests)".to_owned()
            }
            Some(err) => format!(": {err}"),
            None => String::new(),
        };
        report.problem(format!(
            "{} publish(es) refused and {} unacknowledged{hint}",
            published.errors, published.unacked_at_end
        ));
    }
    if shared.other_frames.get() > 0 {
        report.set("unexpected_frames", shared.other_frames.get());
        report.problem(format!(
            "subscribers received {} frame(s) that were not messages (errors?)",
            shared.other_frames.get()
        ));
    }
    if let (Some(before), Some(after)) = (server_before, server_after) {
        report.server_cpu(&ServerUsage { before, after }, Some(delivered));
    }
    report.generator_cpu(&self_before, started.elapsed());
    Ok(())
}

/// Sends `subscribe` after the welcome and returns the offset the subscription starts at.
pub(crate) async fn subscribe(
    conn: &mut WsConn,
    channel: &str,
    timeout: Duration,
) -> anyhow::Result<u64> {
    expect_type(&conn.next_text(timeout).await?, "welcome")?;
    let request = format!(r#"{{"type":"subscribe","channel":"{channel}","id":1}}"#);
    conn.queue_text(request.as_bytes());
    conn.flush().await?;
    let reply = conn.next_text(timeout).await?;
    let reply: Reply = serde_json::from_slice(&reply).context("reply to subscribe")?;
    match reply.kind.as_str() {
        "subscribed" => Ok(reply.offset.unwrap_or(0)),
        _ => bail!(
            "subscribe refused: {} {}",
            reply.code.unwrap_or_default(),
            reply.message.unwrap_or_default()
        ),
    }
}

/// The fields of server replies the generator reads (setup path and acks only).
#[derive(Deserialize)]
pub(crate) struct Reply {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) offset: Option<u64>,
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
}

/// Checks a message's `type`.
pub(crate) fn expect_type(text: &[u8], kind: &str) -> anyhow::Result<()> {
    let reply: Reply = serde_json::from_slice(text).context("server message")?;
    if reply.kind != kind {
        bail!(
            "expected {kind}, got {} {}",
            reply.kind,
            reply.message.unwrap_or_default()
        );
    }
    Ok(())
}

/// Receives deliveries until the run stops: the hot loop of the generator.
async fn receive(mut conn: WsConn, channel: &str, start: u64, shared: &Shared) -> Track {
    let mut track = Track::new(start);
    // Both servers write `message` as {"type":"message","channel":C,"data":DATA,"offset":N}
    // and DATA as published, so the timestamp sits right after a known prefix.
    let prefix = format!(r#"{{"type":"message","channel":"{channel}","data":{{"t":"#).into_bytes();
    let cancelled = shared.stop.cancelled();
    tokio::pin!(cancelled);
    loop {
        let now = now_ns();
        let mut count = 0u64;
        let mut other = 0u64;
        let drained = {
            let mut latency = shared.latency.borrow_mut();
            conn.drain(|frame| {
                if frame.opcode != OP_TEXT {
                    return;
                }
                let text = frame.payload;
                let Some(offset) = number_after_last(text, b"\"offset\":") else {
                    other += 1;
                    return;
                };
                let (sent, seq) = match text.strip_prefix(prefix.as_slice()) {
                    Some(rest) => fast_t_s(rest),
                    None if text.starts_with(br#"{"type":"message""#) => {
                        (number_after(text, b"\"t\":"), number_after(text, b"\"s\":"))
                    }
                    None => {
                        other += 1;
                        return;
                    }
                };
                track.see(offset, seq);
                if let Some(sent) = sent {
                    latency.record_ns(now.saturating_sub(sent));
                }
                count += 1;
            })
        };
        if count > 0 {
            shared.delivered.set(shared.delivered.get() + count);
            shared.last_delivery.set(Some(Instant::now()));
            if shared.waiting.get() > 0 {
                shared.progress.notify_waiters();
            }
        }
        if other > 0 {
            shared.other_frames.set(shared.other_frames.get() + other);
        }
        match drained {
            Ok(drained) if !drained.closed => {}
            _ => break,
        }
        tokio::select! {
            biased;
            () = &mut cancelled => break,
            ready = conn.readable() => if ready.is_err() { break },
        }
    }
    track
}

/// Parses `T,"s":S` at the front of `rest` (the payload right after `{"t":`).
#[inline]
fn fast_t_s(rest: &[u8]) -> (Option<u64>, Option<u64>) {
    let mut t: u64 = 0;
    let mut at = 0;
    while let Some(&b) = rest.get(at) {
        if !b.is_ascii_digit() {
            break;
        }
        t = t.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
        at += 1;
    }
    let Some(after) = rest.get(at..).and_then(|r| r.strip_prefix(b",\"s\":")) else {
        return (Some(t), None);
    };
    let mut s: u64 = 0;
    let mut digits = 0;
    for &b in after {
        if !b.is_ascii_digit() {
            break;
        }
        s = s.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
        digits += 1;
    }
    (Some(t), (digits > 0).then_some(s))
}

/// One publisher connection: publishes to its channels in turn until the plan's count or
/// deadline, within its window, then waits for the last acks.
async fn publish(
    mut conn: WsConn,
    channels: Vec<(usize, String)>,
    plan: &Plan,
    shared: &Shared,
    deadline: Instant,
    timeout: Duration,
) -> anyhow::Result<Published> {
    let mut result = Published::default();
    if channels.is_empty() {
        return Ok(result);
    }
    let per_message = plan.subscribers_per_channel as u64;
    let owed_limit = (plan.window as u64).saturating_mul(per_message);
    let interval =
        (plan.rate > 0.0).then(|| Duration::from_secs_f64(plan.publishers as f64 / plan.rate));
    let padding = "x".repeat(plan.payload_bytes);
    let mut seq = vec![0u64; channels.len()];
    let mut in_flight: HashMap<u64, usize> = HashMap::new();
    let mut next_id = 0u64;
    let mut turn = 0usize;
    let mut next_due = tokio::time::Instant::now();
    let deadline = tokio::time::Instant::from_std(deadline);
    let mut done = false;
    let mut text = String::with_capacity(128 + plan.payload_bytes);
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        if !done && (shared.sent.get() >= plan.messages || now >= deadline) {
            done = true;
        }
        let mut blocked_on_deliveries = false;
        while !done && in_flight.len() < plan.window && conn.unsent() < 256 * 1024 {
            if interval.is_some() && next_due > now {
                break;
            }
            let owed = shared.expected.get().saturating_sub(shared.delivered.get());
            if owed >= owed_limit.saturating_mul(plan.publishers as u64) {
                blocked_on_deliveries = true;
                break;
            }
            if shared.sent.get() >= plan.messages {
                done = true;
                break;
            }
            let name = &channels[turn].1;
            seq[turn] += 1;
            next_id += 1;
            text.clear();
            let _ = write!(
                text,
                r#"{{"type":"publish","channel":"{name}","id":{next_id},"data":{{"t":{},"s":{}"#,
                now_ns(),
                seq[turn]
            );
            if !padding.is_empty() {
                let _ = write!(text, r#","p":"{padding}""#);
            }
            text.push_str("}}");
            conn.queue_text(text.as_bytes());
            in_flight.insert(next_id, turn);
            turn = (turn + 1) % channels.len();
            shared.sent.set(shared.sent.get() + 1);
            shared.expected.set(shared.expected.get() + per_message);
            if shared.first_send.get().is_none() {
                shared.first_send.set(Some(Instant::now()));
            }
            if let Some(interval) = interval {
                next_due += interval;
                // A publisher that fell behind does not burst to catch up.
                if next_due + interval * 4 < now {
                    next_due = now;
                }
            }
        }
        conn.try_flush().context("publisher write")?;
        if done && in_flight.is_empty() && conn.unsent() == 0 {
            break;
        }
        if in_flight.is_empty() {
            last_progress = now;
        } else if now.duration_since(last_progress) > timeout {
            result.unacked_at_end = in_flight.len() as u64;
            break;
        }
        let rate_wait = interval.is_some() && !done && in_flight.len() < plan.window;
        if blocked_on_deliveries {
            shared.waiting.set(shared.waiting.get() + 1);
        }
        let drained = tokio::select! {
            biased;
            ready = conn.readable() => {
                ready.context("publisher read")?;
                let mut acks = Vec::new();
                let drained = conn.drain(|frame| {
                    if frame.opcode == OP_TEXT {
                        acks.push(frame.payload.to_vec());
                    }
                })?;
                for ack in acks {
                    last_progress = tokio::time::Instant::now();
                    on_reply(&ack, &channels, &mut in_flight, &mut result, shared, per_message);
                }
                drained.closed
            }
            ready = conn.writable(), if conn.unsent() > 0 => {
                ready.context("publisher write")?;
                false
            }
            () = shared.progress.notified(), if blocked_on_deliveries => false,
            () = tokio::time::sleep_until(next_due), if rate_wait => false,
            () = tokio::time::sleep_until(deadline), if !done => false,
            () = tokio::time::sleep_until(last_progress + timeout), if !in_flight.is_empty() => false,
        };
        if blocked_on_deliveries {
            shared.waiting.set(shared.waiting.get() - 1);
        }
        if drained {
            result.unacked_at_end = in_flight.len() as u64;
            if !done || !in_flight.is_empty() {
                bail!("the server closed the publisher's connection");
            }
            break;
        }
    }
    conn.close(Duration::from_secs(1)).await;
    Ok(result)
}

fn on_reply(
    text: &[u8],
    channels: &[(usize, String)],
    in_flight: &mut HashMap<u64, usize>,
    result: &mut Published,
    shared: &Shared,
    per_message: u64,
) {
    let is_ack = text.starts_with(br#"{"type":"ack""#);
    let id = number_after(text, b"\"id\":");
    let Some(turn) = id.and_then(|id| in_flight.remove(&id)) else {
        return;
    };
    let channel = channels[turn].0;
    if is_ack {
        if let Some(offset) = number_after_last(text, b"\"offset\":") {
            let top = result.tops.entry(channel).or_insert(0);
            *top = (*top).max(offset);
        }
        result.acked += 1;
    } else {
        result.errors += 1;
        shared
            .expected
            .set(shared.expected.get().saturating_sub(per_message));
        if result.first_error.is_none() {
            result.first_error = Some(String::from_utf8_lossy(text).into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_path_reads_timestamp_and_sequence() {
        assert_eq!(
            fast_t_s(br#"123,"s":45},"offset":9}"#),
            (Some(123), Some(45))
        );
        assert_eq!(fast_t_s(br#"123,"p":"x"}"#), (Some(123), None));
    }
}
