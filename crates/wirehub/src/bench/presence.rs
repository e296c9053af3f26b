//! `wirehub bench presence`: members joining one presence channel, one connection each.
//!
//! A join is what a member costs: a connection that subscribes to a channel with presence
//! (`[[channels]] presence = true` on the server). The server then adds the member (with the
//! Redis broker, one script on the channel's keys) and sends one `join` frame to every
//! subscriber of the channel, the joiner included. Filling a channel to N members one after
//! the other therefore delivers N(N+1)/2 `join` frames; what must not grow with N is the
//! work of one join besides its one frame per subscriber.
//!
//! The run fills the channel to `--members` (default 10 000), `--connect-concurrency` joins
//! at a time, within a window that keeps every member's queue on the server short. At each
//! `--probe-at` size, and at N − B, it joins B (`--probe-joins`) more members one at a time
//! and measures each join: from `subscribe` to the joiner's own `join` (the join itself),
//! from `subscribe` until every member has the `join` (the fan-out), the server's CPU (with
//! `--server-pid`) and, with `--redis`, what Redis received and sent and the commands it ran
//! (`INFO stats`, `INFO commandstats`) per join. After each probe it times `--reads`
//! `presence` requests, one at a time, from a connection that is not a member.
//!
//! Checks: during a probe every join reaches every member exactly once, counted between two
//! barriers (a message published on the channel: it follows every `join` announced before
//! it in each member's stream); no member gets a `leave` or is closed; `presence` answers the
//! exact count. At the end the members' connections are dropped without a close frame, so
//! they leave after the server's grace rather than each sending one more `leave` to all the
//! others.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::client::{OP_TEXT, Target, Targets, WsConn, find, number_after};
use super::pubsub::expect_type;
use super::redis_stats::{RedisSample, RedisStats};
use super::stats::{Latency, ProcSample, Report, ServerUsage, round3};
use super::{Common, Progress};
use crate::duration::parse_duration;

/// Arguments of `wirehub bench presence`.
#[derive(Args, Debug)]
pub(crate) struct PresenceArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Members to join into the channel, one connection each.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    members: usize,
    /// The channel; a `[[channels]]` table with `presence = true` must match it on the
    /// server (default: `bench-presence:PID`, a new channel for each run).
    #[arg(long)]
    channel: Option<String>,
    /// Channel sizes at which --probe-joins joins are measured one at a time (comma-
    /// separated); a probe at N minus --probe-joins is always added.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    probe_at: Vec<usize>,
    /// Joins per probe.
    #[arg(long, short = 'b', default_value_t = 100)]
    probe_joins: usize,
    /// `presence` requests timed after each probe.
    #[arg(long, default_value_t = 200)]
    reads: usize,
    /// While filling: joins a member may lag behind at most before the next join waits.
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// The Redis of the nodes (redis://HOST:PORT): report its traffic per join.
    #[arg(long)]
    redis: Option<String>,
    /// At the end, with every member joined: measure the server's and Redis' background
    /// work (lease renewals, housekeeping) for this long.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    idle: Duration,
}

const JOIN: &[u8] = br#"{"type":"join""#;
const LEAVE: &[u8] = br#"{"type":"leave""#;
const MESSAGE: &[u8] = br#"{"type":"message""#;

/// What every member task and the driver share (one thread: plain cells).
#[derive(Default)]
struct Tally {
    /// `join` frames received by all members.
    joins_seen: Cell<u64>,
    leaves_seen: Cell<u64>,
    other_frames: Cell<u64>,
    /// Members closed by the server.
    closed: Cell<u64>,
    /// Members whose own `join` arrived.
    members: Cell<u64>,
    /// A lower bound of the `join` frames owed for the joins so far (the members present
    /// when each joiner got its own `join`), for the fill's window.
    owed: Cell<u64>,
    /// Setups that ended (joined or failed).
    settled: Cell<u64>,
    /// The barrier in progress and how many members saw it.
    barrier: Cell<u64>,
    at_barrier: Cell<u64>,
    waiting: Cell<bool>,
    progress: Notify,
    failures: RefCell<Vec<String>>,
}

impl Tally {
    fn wake(&self) {
        if self.waiting.get() {
            self.progress.notify_waiters();
        }
    }

    /// Waits until `done` holds; fails when it does not within `timeout` of the last
    /// progress.
    async fn until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Tally) -> bool,
    ) -> anyhow::Result<()> {
        self.waiting.set(true);
        let result = async {
            while !done(self) {
                let notified = self.progress.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if done(self) {
                    break;
                }
                if self.closed.get() > 0 {
                    bail!(
                        "{what}: the server closed {} member connection(s)",
                        self.closed.get()
                    );
                }
                if tokio::time::timeout(timeout, notified).await.is_err() {
                    bail!(
                        "{what}: nothing happened for {timeout:?} ({} members joined, {} \
                         setups ended, {} join frames, barrier {} seen by {})",
                        self.members.get(),
                        self.settled.get(),
                        self.joins_seen.get(),
                        self.barrier.get(),
                        self.at_barrier.get()
                    );
                }
            }
            Ok(())
        }
        .await;
        self.waiting.set(false);
        result
    }
}

/// One join, timed.
struct Joined {
    conn: WsConn,
    /// `subscribe` sent → `subscribed`.
    subscribed: Duration,
    /// `subscribe` sent → the joiner's own `join`.
    joined: Duration,
    sent_at: Instant,
}

/// What one probe measured.
struct Probe {
    members_before: u64,
    joins: u64,
    subscribed: Latency,
    joined: Latency,
    fanout: Latency,
    seconds: f64,
    deliveries: u64,
    expected: u64,
    server: Option<ServerUsage>,
    redis: Option<RedisSample>,
}

pub(crate) async fn run(args: &PresenceArgs, progress: &Progress) -> anyhow::Result<Report> {
    let common = &args.common;
    let mut report = Report::new("presence", common.label.as_deref(), &common.url);
    let targets = Targets::resolve(&common.url).await?;
    let members = args.members.max(1);
    super::check_open_files(common, members + 1)?;
    let sources = common.sources(members + 1);
    let channel = args
        .channel
        .clone()
        .unwrap_or_else(|| format!("bench-presence:{}", std::process::id()));
    let timeout = common.reply_timeout;
    let mut redis = match &args.redis {
        Some(url) => Some(RedisStats::connect(url).await?),
        None => None,
    };

    // The reader: not a member; it publishes the barriers and times `presence`.
    let mut reader = WsConn::connect(targets.get(0), targets.get(0).source(0, sources), timeout)
        .await
        .context("reader connection")?;
    expect_type(&reader.next_text(timeout).await?, "welcome")?;
    let before = read_presence(&mut reader, &channel, 1, timeout).await?;
    if before.count != 0 {
        bail!(
            "{channel:?} has {} members already: name a new channel with --channel",
            before.count
        );
    }

    let probe_joins = args.probe_joins.clamp(1, members);
    let mut probe_points: Vec<usize> = args
        .probe_at
        .iter()
        .copied()
        .filter(|at| at + probe_joins < members)
        .collect();
    probe_points.push(members - probe_joins);
    probe_points.sort_unstable();
    probe_points.dedup();

    let tally = Rc::new(Tally::default());
    let stop = CancellationToken::new();
    let gate = std::sync::Arc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let mut handles = Vec::with_capacity(members);
    let mut started: usize = 0;
    let mut barriers = 0u64;
    let mut fills = Vec::new();
    let mut probes = Vec::new();
    let mut reads = Vec::new();
    let self_before = ProcSample::read(None)?;
    let run_started = Instant::now();
    progress.phase("joining", members as u64);
    let ticker = {
        let (tally, bar) = (tally.clone(), progress.clone());
        tokio::task::spawn_local(async move {
            loop {
                bar.set(tally.members.get());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let outcome: anyhow::Result<()> = async {
        for &at in &probe_points {
            if started > at {
                continue;
            }
            // Fill to `at`, many joins at a time.
            let from = started;
            let fill_started = Instant::now();
            while started < at {
                if started.is_multiple_of(64) {
                    keep_alive(&mut reader)?;
                }
                tally
                    .until("the join window", timeout, |t| {
                        t.owed.get().saturating_sub(t.joins_seen.get())
                            <= args.window * t.members.get().max(1)
                    })
                    .await?;
                let permit = gate.clone().acquire_owned().await?;
                let target = targets.get(started + 1).clone();
                let source = target.source(started + 1, sources);
                let (tally, stop, channel) = (tally.clone(), stop.clone(), channel.clone());
                handles.push(tokio::task::spawn_local(async move {
                    let setup = join(&target, source, &channel, timeout, &tally).await;
                    drop(permit);
                    tally.settled.set(tally.settled.get() + 1);
                    match setup {
                        Ok(joined) => {
                            tally.members.set(tally.members.get() + 1);
                            tally.owed.set(tally.owed.get() + tally.members.get());
                            tally.wake();
                            receive(joined.conn, &tally, &stop).await;
                        }
                        Err(err) => {
                            tally.failures.borrow_mut().push(format!("{err:#}"));
                            tally.wake();
                        }
                    }
                }));
                started += 1;
            }
            let settle = started as u64;
            tally
                .until("the joins", timeout, |t| t.settled.get() >= settle)
                .await?;
            if let Some(first) = tally.failures.borrow().first() {
                bail!(
                    "{} join(s) failed; the first: {first}",
                    tally.failures.borrow().len()
                );
            }
            let seconds = fill_started.elapsed().as_secs_f64();
            if at > from {
                fills.push((from, at, seconds));
            }
            barriers += 1;
            barrier(&mut reader, &channel, barriers, &tally, timeout).await?;

            // The probe: joins one at a time, each until every member has it.
            let probe = probe(
                &mut reader,
                &targets,
                sources,
                &channel,
                probe_joins,
                &mut started,
                &tally,
                &stop,
                &mut handles,
                common,
                redis.as_mut(),
            )
            .await?;
            barriers += 1;
            barrier(&mut reader, &channel, barriers, &tally, timeout).await?;
            let deliveries = tally.joins_seen.get() - probe.deliveries;
            let probe = Probe {
                deliveries,
                ..probe
            };
            let members_now = tally.members.get();
            let read = read_presence(&mut reader, &channel, args.reads.max(1), timeout).await?;
            if read.count != members_now {
                bail!(
                    "presence counted {} members, {members_now} joined",
                    read.count
                );
            }
            probes.push(probe);
            reads.push(read);
        }
        Ok(())
    }
    .await;
    ticker.abort();
    progress.finish();
    let elapsed = run_started.elapsed();
    outcome?;

    let joined = tally.members.get();
    let minimum = joined * (joined + 1) / 2;
    report.set("members", joined);
    report.set("channel", channel.as_str());
    report.set("connect_concurrency", common.connect_concurrency as u64);
    report.set("join_frames", tally.joins_seen.get());
    report.set("join_frames_min", minimum);
    report.set(
        "joins_per_s",
        (joined as f64 / elapsed.as_secs_f64()).round(),
    );
    report.line(format!(
        "{joined} members joined {channel:?} in {:.2} s ({:.0} joins/s overall, probes \
         included); {} join frames delivered (N(N+1)/2 = {minimum}: each member gets the \
         joins after its own; joiners at the same moment may also see each other's)",
        elapsed.as_secs_f64(),
        joined as f64 / elapsed.as_secs_f64(),
        tally.joins_seen.get()
    ));
    if tally.joins_seen.get() < minimum {
        report.problem(format!(
            "{} join frames delivered, fewer than {minimum}",
            tally.joins_seen.get()
        ));
    }
    let mut fill_json = Vec::new();
    for (from, to, seconds) in &fills {
        let rate = (to - from) as f64 / seconds.max(1e-9);
        fill_json.push(json!({"from": from, "to": to, "seconds": round3(*seconds),
                              "joins_per_s": rate.round()}));
        report.line(format!(
            "filling {from} → {to} members, {} at a time: {rate:.0} joins/s",
            common.connect_concurrency
        ));
    }
    report.set("fill", fill_json);
    let mut probe_json = Vec::new();
    for (probe, read) in probes.iter().zip(&reads) {
        probe_json.push(describe_probe(probe, &mut report));
        report.line(format!(
            "  presence at {} members ({} listed{}): {}",
            read.count,
            read.listed,
            if read.truncated { ", truncated" } else { "" },
            read.latency.summary()
        ));
    }
    report.set("probes", probe_json);
    report.set(
        "reads",
        reads
            .iter()
            .map(|read| {
                json!({"members": read.count, "listed": read.listed,
                       "truncated": read.truncated, "latency_us": read.latency.to_json()})
            })
            .collect::<Vec<Value>>(),
    );

    if !args.idle.is_zero() {
        let server_before = common.server_sample()?;
        let redis_before = match redis.as_mut() {
            Some(redis) => Some(redis.sample().await?),
            None => None,
        };
        tokio::time::sleep(args.idle).await;
        let seconds = args.idle.as_secs_f64();
        let mut idle = serde_json::Map::new();
        idle.insert("seconds".into(), json!(round3(seconds)));
        let mut text = format!("idle {seconds:.0} s with {joined} members:");
        if let (Some(before), Some(after)) = (server_before, common.server_sample()?) {
            let usage = ServerUsage { before, after };
            idle.insert("server_cpu_share".into(), json!(round3(usage.cpu_share())));
            text.push_str(&format!(
                " server CPU {:.1} % of one core;",
                usage.cpu_share() * 100.0
            ));
        }
        if let (Some(redis), Some(before)) = (redis.as_mut(), redis_before) {
            let after = redis.sample().await?;
            let delta = redis.since(&before, &after);
            let per_second = (seconds.round() as u64).max(1);
            idle.insert("redis_per_s".into(), delta.per(per_second));
            text.push_str(&format!(
                " Redis per second: {}",
                delta.per_summary(per_second)
            ));
        }
        report.set("idle", Value::Object(idle));
        report.line(text);
    }

    report.set("leaves", tally.leaves_seen.get());
    if tally.leaves_seen.get() > 0 {
        report.problem(format!(
            "members got {} leave(s) while nobody left",
            tally.leaves_seen.get()
        ));
    }
    if tally.other_frames.get() > 0 {
        report.set("unexpected_frames", tally.other_frames.get());
        report.problem(format!(
            "members got {} frame(s) that were neither join nor barrier (errors?)",
            tally.other_frames.get()
        ));
    }
    report.set("closed_by_server", tally.closed.get());
    if tally.closed.get() > 0 {
        report.problem(format!(
            "the server closed {} member connection(s)",
            tally.closed.get()
        ));
    }
    stop.cancel();
    for handle in handles {
        let _ = handle.await;
    }
    report.generator_cpu(&self_before, run_started.elapsed());
    Ok(report)
}

/// Joins `joins` members one at a time, each awaited until every member has its `join`.
/// `deliveries` of the result holds the join frames counted before the probe (the caller
/// subtracts it after the closing barrier).
#[allow(clippy::too_many_arguments)]
async fn probe(
    reader: &mut WsConn,
    targets: &Targets,
    sources: usize,
    channel: &str,
    joins: usize,
    started: &mut usize,
    tally: &Rc<Tally>,
    stop: &CancellationToken,
    handles: &mut Vec<tokio::task::JoinHandle<()>>,
    common: &Common,
    mut redis: Option<&mut RedisStats>,
) -> anyhow::Result<Probe> {
    let timeout = common.reply_timeout;
    let members_before = tally.members.get();
    let base = tally.joins_seen.get();
    let mut subscribed = Latency::new();
    let mut joined_latency = Latency::new();
    let mut fanout = Latency::new();
    let server_before = common.server_sample()?;
    let redis_before = match redis.as_deref_mut() {
        Some(redis) => Some(redis.sample().await?),
        None => None,
    };
    let probe_started = Instant::now();
    let mut owed = base;
    for _ in 0..joins {
        keep_alive(reader)?;
        let index = *started + 1;
        let target = targets.get(index);
        let joined = join(
            target,
            target.source(index, sources),
            channel,
            timeout,
            tally,
        )
        .await?;
        *started += 1;
        tally.settled.set(tally.settled.get() + 1);
        tally.members.set(tally.members.get() + 1);
        // Every member, the joiner included, gets this join once.
        owed += tally.members.get();
        subscribed.record_ns(nanos(joined.subscribed));
        joined_latency.record_ns(nanos(joined.joined));
        let sent_at = joined.sent_at;
        let (member_tally, stop) = (tally.clone(), stop.clone());
        handles.push(tokio::task::spawn_local(async move {
            receive(joined.conn, &member_tally, &stop).await;
        }));
        tally
            .until("a probe join's fan-out", timeout, |t| {
                t.joins_seen.get() >= owed
            })
            .await?;
        fanout.record_ns(nanos(sent_at.elapsed()));
    }
    let seconds = probe_started.elapsed().as_secs_f64();
    let server = match (server_before, common.server_sample()?) {
        (Some(before), Some(after)) => Some(ServerUsage { before, after }),
        _ => None,
    };
    let redis = match (redis, redis_before) {
        (Some(redis), Some(before)) => {
            let after = redis.sample().await?;
            Some(redis.since(&before, &after))
        }
        _ => None,
    };
    Ok(Probe {
        members_before,
        joins: joins as u64,
        subscribed,
        joined: joined_latency,
        fanout,
        seconds,
        deliveries: base,
        expected: owed - base,
        server,
        redis,
    })
}

/// The summary lines and the JSON of a probe; a miscount is a problem.
fn describe_probe(probe: &Probe, report: &mut Report) -> Value {
    let joins = probe.joins.max(1);
    let mut json = json!({
        "members_before": probe.members_before,
        "joins": probe.joins,
        "joins_per_s": (probe.joins as f64 / probe.seconds.max(1e-9)).round(),
        "subscribed_us": probe.subscribed.to_json(),
        "join_us": probe.joined.to_json(),
        "fanout_us": probe.fanout.to_json(),
        "deliveries": probe.deliveries,
        "deliveries_expected": probe.expected,
        "deliveries_per_join": round3(probe.deliveries as f64 / joins as f64),
    });
    report.line(format!(
        "probe at {} members, {} joins one at a time ({:.0} joins/s, each awaited until \
         every member had it):",
        probe.members_before,
        probe.joins,
        probe.joins as f64 / probe.seconds.max(1e-9)
    ));
    report.line(format!(
        "  subscribe → subscribed: {}",
        probe.subscribed.summary()
    ));
    report.line(format!(
        "  subscribe → own join: {}",
        probe.joined.summary()
    ));
    report.line(format!(
        "  subscribe → every member has the join: {}",
        probe.fanout.summary()
    ));
    report.line(format!(
        "  join frames: {} ({:.1} per join; {} expected: one per member present)",
        probe.deliveries,
        probe.deliveries as f64 / joins as f64,
        probe.expected
    ));
    if probe.deliveries != probe.expected {
        report.problem(format!(
            "the probe at {} members delivered {} join frames, {} expected (one per member \
             and join)",
            probe.members_before, probe.deliveries, probe.expected
        ));
    }
    if let Some(usage) = &probe.server {
        let cpu_us = usage.cpu().as_secs_f64() * 1e6;
        json["server_cpu_us_per_join"] = json!(round3(cpu_us / joins as f64));
        json["server_cpu_us_per_delivery"] = json!(round3(cpu_us / probe.deliveries.max(1) as f64));
        report.line(format!(
            "  server CPU: {:.0} µs per join, {:.3} µs per join frame delivered",
            cpu_us / joins as f64,
            cpu_us / probe.deliveries.max(1) as f64
        ));
    }
    if let Some(redis) = &probe.redis {
        json["redis_per_join"] = redis.per(joins);
        report.line(format!("  Redis per join: {}", redis.per_summary(joins)));
    }
    json
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Connects, subscribes to `channel` and waits for the connection's own `join`, counting
/// every `join` frame it gets meanwhile.
async fn join(
    target: &Target,
    source: Option<std::net::IpAddr>,
    channel: &str,
    timeout: Duration,
    tally: &Tally,
) -> anyhow::Result<Joined> {
    let mut conn = WsConn::connect(target, source, timeout).await?;
    let welcome = conn.next_text(timeout).await?;
    let session = string_after(&welcome, b"\"session\":\"").context("a welcome without session")?;
    let own = format!("\"client\":\"{session}\"");
    let request = format!(r#"{{"type":"subscribe","channel":"{channel}","id":1}}"#);
    conn.queue_text(request.as_bytes());
    let sent_at = Instant::now();
    conn.flush().await?;
    let mut subscribed = None;
    loop {
        let text = conn.next_text(timeout).await?;
        if text.starts_with(JOIN) {
            tally.joins_seen.set(tally.joins_seen.get() + 1);
            tally.wake();
            if find(&text, own.as_bytes()).is_some() {
                let joined = sent_at.elapsed();
                return Ok(Joined {
                    conn,
                    subscribed: subscribed.unwrap_or(joined),
                    joined,
                    sent_at,
                });
            }
        } else if text.starts_with(br#"{"type":"subscribed""#) {
            subscribed = Some(sent_at.elapsed());
        } else if text.starts_with(LEAVE) {
            tally.leaves_seen.set(tally.leaves_seen.get() + 1);
        } else if text.starts_with(br#"{"type":"error""#) {
            bail!(
                "subscribe to {channel:?} refused: {}",
                String::from_utf8_lossy(&text)
            );
        } else {
            tally.other_frames.set(tally.other_frames.get() + 1);
        }
    }
}

/// Receives a member's frames until the run stops: counts `join`s, `leave`s and barriers.
async fn receive(mut conn: WsConn, tally: &Tally, stop: &CancellationToken) {
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let mut seen_barrier = 0;
    loop {
        let (mut joins, mut leaves, mut other, mut barrier) = (0u64, 0u64, 0u64, None);
        let drained = conn.drain(|frame| {
            if frame.opcode != OP_TEXT {
                return;
            }
            let text = frame.payload;
            if text.starts_with(JOIN) {
                joins += 1;
            } else if text.starts_with(LEAVE) {
                leaves += 1;
            } else if text.starts_with(MESSAGE) {
                barrier = number_after(text, b"\"data\":");
            } else {
                other += 1;
            }
        });
        if joins > 0 {
            tally.joins_seen.set(tally.joins_seen.get() + joins);
        }
        if leaves > 0 {
            tally.leaves_seen.set(tally.leaves_seen.get() + leaves);
        }
        if other > 0 {
            tally.other_frames.set(tally.other_frames.get() + other);
        }
        if let Some(number) = barrier
            && number == tally.barrier.get()
            && number > seen_barrier
        {
            seen_barrier = number;
            tally.at_barrier.set(tally.at_barrier.get() + 1);
        }
        if joins > 0 || barrier.is_some() {
            tally.wake();
        }
        let open = matches!(drained, Ok(drained) if !drained.closed);
        if !open {
            if !stop.is_cancelled() {
                tally.closed.set(tally.closed.get() + 1);
                tally.wake();
            }
            return;
        }
        tokio::select! {
            biased;
            () = &mut cancelled => return,
            ready = conn.readable() => if ready.is_err() {
                tally.closed.set(tally.closed.get() + 1);
                tally.wake();
                return;
            },
        }
    }
}

/// Publishes barrier `number` on the channel and waits until every member received it: every
/// `join` announced before is then counted.
async fn barrier(
    reader: &mut WsConn,
    channel: &str,
    number: u64,
    tally: &Tally,
    timeout: Duration,
) -> anyhow::Result<()> {
    tally.barrier.set(number);
    tally.at_barrier.set(0);
    let request =
        format!(r#"{{"type":"publish","channel":"{channel}","data":{number},"id":{number}}}"#);
    reader.queue_text(request.as_bytes());
    reader.flush().await?;
    expect_type(&reader.next_text(timeout).await?, "ack").context("the barrier's publish")?;
    let members = tally.members.get();
    tally
        .until("a barrier", timeout, |t| t.at_barrier.get() >= members)
        .await
}

/// Answers the pings the reader got while it had nothing to read (it is not subscribed).
fn keep_alive(reader: &mut WsConn) -> anyhow::Result<()> {
    let drained = reader.drain(|_| {})?;
    if drained.closed {
        bail!("the server closed the reader's connection");
    }
    Ok(())
}

/// `presence` requests, one at a time.
struct Read {
    count: u64,
    listed: u64,
    truncated: bool,
    latency: Latency,
}

async fn read_presence(
    reader: &mut WsConn,
    channel: &str,
    reads: usize,
    timeout: Duration,
) -> anyhow::Result<Read> {
    let mut latency = Latency::new();
    let mut last = Vec::new();
    for id in 0..reads {
        let request = format!(r#"{{"type":"presence","channel":"{channel}","id":{id}}}"#);
        reader.queue_text(request.as_bytes());
        let sent = Instant::now();
        reader.flush().await?;
        last = reader.next_text(timeout).await?;
        latency.record_ns(nanos(sent.elapsed()));
        if !last.starts_with(br#"{"type":"presence""#) {
            let text = String::from_utf8_lossy(&last);
            if text.contains("presence_disabled") {
                bail!(
                    "{channel:?} has no presence on the server: start it with a --config file \
                     holding [[channels]] pattern = \"bench-presence:*\" presence = true"
                );
            }
            bail!("presence refused: {text}");
        }
    }
    let count = number_after(&last, b"\"count\":").context("a presence reply without count")?;
    let listed = last
        .windows(b"\"client\":".len())
        .filter(|window| *window == b"\"client\":")
        .count() as u64;
    Ok(Read {
        count,
        listed,
        truncated: find(&last, b"\"truncated\":true").is_some(),
        latency,
    })
}

/// The JSON string value right after `key` (which ends with the opening quote).
fn string_after(text: &[u8], key: &[u8]) -> Option<String> {
    let start = find(text, key)? + key.len();
    let len = text[start..].iter().position(|b| *b == b'"')?;
    String::from_utf8(text[start..start + len].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_is_read_from_the_welcome() {
        let welcome = br#"{"type":"welcome","version":1,"session":"a1b2","heartbeat":30}"#;
        assert_eq!(
            string_after(welcome, b"\"session\":\"").as_deref(),
            Some("a1b2")
        );
        assert_eq!(string_after(welcome, b"\"other\":\""), None);
    }
}
