//! `wirehub bench churn`: connect, subscribe, disconnect, over and over.
//!
//! W workers each loop: open a connection, wait for the welcome, subscribe to a channel, wait
//! for `subscribed`, close with a close handshake. The run stops after M cycles or after the
//! duration. Reported: cycles per second, the cycle latency, failures and (with
//! `--server-pid`) the server's memory before and after, so that a leak per connection shows.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Args;

use super::client::{Targets, WsConn};
use super::pubsub::subscribe;
use super::stats::{Latency, ProcSample, Report, ServerUsage, round3};
use super::{Common, Progress};
use crate::duration::parse_duration;

/// Arguments of `wirehub bench churn`.
#[derive(Args, Debug)]
pub(crate) struct ChurnArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Connect/subscribe/disconnect cycles in all.
    #[arg(long, short = 'm', default_value_t = 5000)]
    cycles: u64,
    /// Cycles running at once.
    #[arg(long, short = 'w', default_value_t = 16)]
    workers: usize,
    /// Stop after this long even if fewer cycles ran.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
}

pub(crate) async fn run(args: &ChurnArgs, progress: &Progress) -> anyhow::Result<Report> {
    let common = &args.common;
    let mut report = Report::new("churn", common.label.as_deref(), &common.url);
    let targets = Targets::resolve(&common.url).await?;
    super::check_open_files(common, args.workers)?;
    // Cycles leave TIME_WAIT entries behind; spreading them over a few source addresses
    // keeps ephemeral ports available for long runs.
    let sources = common
        .sources(args.workers)
        .max(if common.sources == 0 { 8 } else { 1 });
    let server_before = common.server_sample()?;
    let self_before = ProcSample::read(None)?;
    let started = Instant::now();
    let deadline = started + args.duration;
    let issued = Rc::new(Cell::new(0u64));
    let completed = Rc::new(Cell::new(0u64));
    let failures: Rc<RefCell<Vec<String>>> = Rc::default();
    let latency = Rc::new(RefCell::new(Latency::new()));
    progress.phase("churning", args.cycles);
    let mut handles = Vec::new();
    for worker in 0..args.workers.max(1) {
        let (issued, completed, failures, latency) = (
            issued.clone(),
            completed.clone(),
            failures.clone(),
            latency.clone(),
        );
        let targets = targets.clone();
        let cycles = args.cycles;
        let timeout = common.reply_timeout;
        handles.push(tokio::task::spawn_local(async move {
            let channel = format!("bench-churn-{worker}");
            while issued.get() < cycles && Instant::now() < deadline {
                let index = issued.get();
                issued.set(index + 1);
                let target = targets.get(index as usize);
                let source = target.source(index as usize, sources);
                let begun = Instant::now();
                let result = async {
                    let mut conn = WsConn::connect(target, source, timeout).await?;
                    subscribe(&mut conn, &channel, timeout).await?;
                    anyhow::Ok(conn)
                }
                .await;
                match result {
                    Ok(conn) => {
                        conn.close(timeout).await;
                        latency.borrow_mut().record_ns(
                            u64::try_from(begun.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        );
                        completed.set(completed.get() + 1);
                    }
                    Err(err) => failures.borrow_mut().push(format!("{err:#}")),
                }
            }
        }));
    }
    let bar = progress.clone();
    let ticker = {
        let completed = completed.clone();
        tokio::task::spawn_local(async move {
            loop {
                bar.set(completed.get());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for handle in handles {
        let _ = handle.await;
    }
    ticker.abort();
    progress.finish();
    let elapsed = started.elapsed();
    // Let the server finish releasing the last sessions before reading its memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_after = common.server_sample()?;
    let cycles = completed.get();
    let per_second = cycles as f64 / elapsed.as_secs_f64().max(1e-9);
    let failed = failures.borrow().len() as u64;
    report.set("cycles", cycles);
    report.set("cycles_per_s", per_second.round());
    report.set("connect_failures", failed);
    report.set("duration_s", round3(elapsed.as_secs_f64()));
    report.line(format!(
        "{cycles} connect/subscribe/close cycles in {:.2} s: {per_second:.0}/s with {} workers",
        elapsed.as_secs_f64(),
        args.workers
    ));
    report.latency("cycle", &latency.borrow());
    if let Some(first) = failures.borrow().first() {
        report.problem(format!("{failed} cycle(s) failed; the first: {first}"));
    }
    if let (Some(before), Some(after)) = (server_before, server_after) {
        let growth = after.rss_kib as i64 - before.rss_kib as i64;
        report.set("server_rss_growth_kib", growth);
        report.line(format!(
            "server memory: {} KiB → {} KiB ({growth:+} KiB after {cycles} cycles)",
            before.rss_kib, after.rss_kib
        ));
        report.server_cpu(&ServerUsage { before, after }, None);
    }
    report.generator_cpu(&self_before, elapsed);
    Ok(report)
}
