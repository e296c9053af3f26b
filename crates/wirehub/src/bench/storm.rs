//! `wirehub bench connect-storm`: N clients connecting at once, C handshakes at a time.
//!
//! Models a server restart or a load-balancer flip: every client comes back together. Each
//! client connects, waits for the welcome and subscribes; the time from the start of its
//! successful attempt to `subscribed` is its connect-and-subscribe time (p50/p99/max), and
//! the number of clients set up per second of the run is the rate. A refused upgrade
//! (`503`/`429`) that carries `Retry-After` is retried after that many seconds plus a random
//! part of a second, as the SDKs do, so that a storm against an admission limit ends with
//! every client connected; the report then shows how the arrivals spread over time.
//!
//! Setups slower than one second are counted on their own: a SYN the kernel dropped is
//! sent again after 1 s (the initial retransmission timeout), so they are the connections
//! the kernel refused at first. The run also reports the changes of the kernel's listen
//! counters (`ListenOverflows`, `ListenDrops`, `TCPReqQFullDrop` in `/proc/net/netstat`),
//! which count exactly those drops on this machine.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::client::{Refused, Target, WsConn};
use super::pubsub::subscribe;
use super::stats::{Latency, ProcSample, Report, ServerUsage, round3};
use super::{Common, Progress};
use crate::duration::parse_duration;

/// Arguments of `wirehub bench connect-storm`.
#[derive(Args, Debug)]
pub(crate) struct StormArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Clients in the storm.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    connections: usize,
    /// Channels the clients subscribe to (client i takes channel i mod K).
    #[arg(long, short = 'k', default_value_t = 10)]
    channels: usize,
    /// Do not retry refused upgrades: count them as failures.
    #[arg(long)]
    no_retry: bool,
    /// Attempts per client at most (with retries).
    #[arg(long, default_value_t = 50)]
    max_attempts: u32,
    /// How long to hold the connections once all are set up.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    hold: Duration,
}

/// The kernel's counters of connections a listener dropped (machine-wide: on loopback, the
/// server under test is the one listening).
#[derive(Debug, Default, Clone, Copy)]
struct ListenCounters {
    overflows: u64,
    drops: u64,
    request_queue_full: u64,
    syncookies_sent: u64,
}

impl ListenCounters {
    fn read() -> Option<ListenCounters> {
        let text = std::fs::read_to_string("/proc/net/netstat").ok()?;
        let mut lines = text.lines();
        while let Some(names) = lines.next() {
            let values = lines.next()?;
            if !names.starts_with("TcpExt:") {
                continue;
            }
            let pairs: Vec<(&str, u64)> = names
                .split_whitespace()
                .zip(values.split_whitespace())
                .skip(1)
                .map(|(name, value)| (name, value.parse().unwrap_or(0)))
                .collect();
            let get = |wanted: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == wanted)
                    .map_or(0, |(_, value)| *value)
            };
            return Some(ListenCounters {
                overflows: get("ListenOverflows"),
                drops: get("ListenDrops"),
                request_queue_full: get("TCPReqQFullDrop"),
                syncookies_sent: get("SyncookiesSent"),
            });
        }
        None
    }

    fn since(self, before: ListenCounters) -> ListenCounters {
        ListenCounters {
            overflows: self.overflows.saturating_sub(before.overflows),
            drops: self.drops.saturating_sub(before.drops),
            request_queue_full: self
                .request_queue_full
                .saturating_sub(before.request_queue_full),
            syncookies_sent: self.syncookies_sent.saturating_sub(before.syncookies_sent),
        }
    }
}

/// What every client task shares.
#[derive(Default)]
struct Tally {
    established: Cell<u64>,
    refusals: Cell<u64>,
    slow: Cell<u64>,
    done: Cell<u64>,
    closed_early: Cell<u64>,
    failures: RefCell<Vec<String>>,
    /// Milliseconds since the start at which each client was set up.
    arrivals_ms: RefCell<Vec<u64>>,
    /// Refusal status codes seen, with their count.
    refused_by_status: RefCell<std::collections::BTreeMap<u16, u64>>,
}

pub(crate) async fn run(args: &StormArgs, progress: &Progress) -> anyhow::Result<Report> {
    let common = &args.common;
    let mut report = Report::new("connect-storm", common.label.as_deref(), &common.url);
    let target = Target::resolve(&common.url).await?;
    super::check_open_files(common, args.connections)?;
    let server_before = common.server_sample()?;
    let self_before = ProcSample::read(None)?;
    let kernel_before = ListenCounters::read();
    let tally = Rc::new(Tally::default());
    let setup = Rc::new(RefCell::new(Latency::new()));
    let gate = Rc::new(Semaphore::new(common.connect_concurrency.max(1)));
    let stop = CancellationToken::new();
    let sources = common.sources(args.connections);
    progress.phase("connecting", args.connections as u64);
    let started = Instant::now();
    let mut handles = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let channel = format!("bench-storm-{}", index % args.channels.max(1));
        let source = target.source(index, sources);
        let (target, gate, stop, tally, setup) = (
            target.clone(),
            gate.clone(),
            stop.clone(),
            tally.clone(),
            setup.clone(),
        );
        let timeout = common.reply_timeout;
        let retry = !args.no_retry;
        let max_attempts = args.max_attempts.max(1);
        let mut jitter = Jitter::new(index as u64);
        handles.push(tokio::task::spawn_local(async move {
            let mut attempts = 0;
            let conn = loop {
                attempts += 1;
                let permit = gate.acquire().await.ok();
                let attempt_started = Instant::now();
                let result = async {
                    let mut conn = WsConn::connect(&target, source, timeout).await?;
                    subscribe(&mut conn, &channel, timeout).await?;
                    anyhow::Ok(conn)
                }
                .await;
                drop(permit);
                match result {
                    Ok(conn) => {
                        let took = attempt_started.elapsed();
                        setup
                            .borrow_mut()
                            .record_ns(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
                        if took >= Duration::from_secs(1) {
                            tally.slow.set(tally.slow.get() + 1);
                        }
                        tally.established.set(tally.established.get() + 1);
                        tally
                            .arrivals_ms
                            .borrow_mut()
                            .push(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                        break Some(conn);
                    }
                    Err(err) => {
                        let refused = err.downcast_ref::<Refused>().cloned();
                        if let Some(refused) = &refused {
                            *tally
                                .refused_by_status
                                .borrow_mut()
                                .entry(refused.status)
                                .or_default() += 1;
                        }
                        match refused.and_then(|r| r.retry_after) {
                            Some(wait) if retry && attempts < max_attempts => {
                                tally.refusals.set(tally.refusals.get() + 1);
                                let wait = wait + Duration::from_secs(1).mul_f64(jitter.next());
                                tokio::time::sleep(wait).await;
                            }
                            _ => {
                                tally.failures.borrow_mut().push(format!("{err:#}"));
                                break None;
                            }
                        }
                    }
                }
            };
            tally.done.set(tally.done.get() + 1);
            let Some(mut conn) = conn else { return };
            let cancelled = stop.cancelled();
            tokio::pin!(cancelled);
            loop {
                match conn.drain(|_| {}) {
                    Ok(drained) if !drained.closed => {}
                    _ => {
                        if !stop.is_cancelled() {
                            tally.closed_early.set(tally.closed_early.get() + 1);
                        }
                        return;
                    }
                }
                tokio::select! {
                    biased;
                    () = &mut cancelled => break,
                    ready = conn.readable() => if ready.is_err() {
                        tally.closed_early.set(tally.closed_early.get() + 1);
                        return;
                    },
                }
            }
            conn.close(Duration::from_secs(3)).await;
        }));
    }
    while tally.done.get() < args.connections as u64 {
        progress.set(tally.done.get());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish();
    let setup_time = started.elapsed();
    let kernel = kernel_before
        .zip(ListenCounters::read())
        .map(|(before, after)| after.since(before));
    let server_after = common.server_sample()?;
    let established = tally.established.get();
    if established == 0 {
        bail!(
            "no connection could be opened: {}",
            tally.failures.borrow().first().cloned().unwrap_or_default()
        );
    }
    let rate = established as f64 / setup_time.as_secs_f64().max(1e-9);
    report.set("connections", established);
    report.set("connect_concurrency", common.connect_concurrency as u64);
    report.set("connect_failures", tally.failures.borrow().len() as u64);
    report.set("connect_per_s", rate.round());
    report.set("setup_s", round3(setup_time.as_secs_f64()));
    report.set("slow_setups", tally.slow.get());
    report.set("refusals", tally.refusals.get());
    report.line(format!(
        "{established} of {} clients subscribed in {:.2} s ({rate:.0}/s), {} at a time",
        args.connections,
        setup_time.as_secs_f64(),
        common.connect_concurrency
    ));
    report.latency("connect + subscribe", &setup.borrow());
    report.line(format!(
        "setups of 1 s or more (a dropped SYN is resent after 1 s): {}",
        tally.slow.get()
    ));
    if let Some(kernel) = kernel {
        report.set(
            "kernel",
            json!({
                "listen_overflows": kernel.overflows,
                "listen_drops": kernel.drops,
                "req_queue_full_drops": kernel.request_queue_full,
                "syncookies_sent": kernel.syncookies_sent,
            }),
        );
        report.line(format!(
            "kernel: {} listen overflows, {} listen drops, {} SYN-queue drops, {} SYN cookies",
            kernel.overflows, kernel.drops, kernel.request_queue_full, kernel.syncookies_sent
        ));
    }
    let refused = tally.refused_by_status.borrow().clone();
    if !refused.is_empty() {
        let by_status: serde_json::Map<String, serde_json::Value> = refused
            .iter()
            .map(|(status, count)| (status.to_string(), json!(count)))
            .collect();
        report.set("refused_by_status", by_status);
        report.line(format!(
            "refused upgrades retried after Retry-After: {} ({})",
            tally.refusals.get(),
            refused
                .iter()
                .map(|(status, count)| format!("{count} × {status}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let per_second = arrivals_per_second(&tally.arrivals_ms.borrow());
    if per_second.len() > 1 {
        let busiest = per_second.iter().copied().max().unwrap_or(0);
        report.line(format!(
            "arrivals per second of the run: {} (busiest second {busiest})",
            per_second
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    report.set("arrivals_per_s", per_second);
    if let Some(first) = tally.failures.borrow().first() {
        report.problem(format!(
            "{} client(s) failed; the first: {first}",
            tally.failures.borrow().len()
        ));
    }
    if let (Some(before), Some(after)) = (server_before, server_after) {
        report.server_cpu(&ServerUsage { before, after }, None);
    }
    tokio::time::sleep(args.hold).await;
    let lost = tally.closed_early.get();
    report.set("closed_by_server", lost);
    if lost > 0 {
        report.problem(format!(
            "the server closed {lost} connection(s) while they were held"
        ));
    }
    stop.cancel();
    for handle in handles {
        let _ = handle.await;
    }
    report.generator_cpu(&self_before, started.elapsed());
    Ok(report)
}

/// How many clients were set up in each second of the run.
fn arrivals_per_second(arrivals_ms: &[u64]) -> Vec<u64> {
    let last = arrivals_ms.iter().copied().max().unwrap_or(0);
    let mut buckets = vec![0u64; usize::try_from(last / 1000).unwrap_or(0) + 1];
    for at in arrivals_ms {
        if let Some(bucket) = buckets.get_mut(usize::try_from(at / 1000).unwrap_or(usize::MAX)) {
            *bucket += 1;
        }
    }
    buckets
}

/// A small xorshift generator for the retry jitter (no cryptographic needs; one per client,
/// seeded with its index, so runs are repeatable).
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Jitter {
        Jitter(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `[0, 1)`.
    fn next(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrivals_are_bucketed_by_second() {
        assert_eq!(arrivals_per_second(&[0, 999, 1000, 3500]), [2, 1, 0, 1]);
        assert_eq!(arrivals_per_second(&[]), [0]);
    }

    #[test]
    fn jitter_stays_in_the_unit_interval() {
        let mut jitter = Jitter::new(7);
        for _ in 0..1000 {
            let x = jitter.next();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }
}
