//! `wirehub bench ping`: app-level round trips (`ping` → `pong`) beside N idle connections.
//!
//! The idle connections are subscribed, answer the server's heartbeat and stay quiet; one more
//! connection sends M pings one after another (each waits for its pong), so the figures are
//! the server's request latency while it holds that many connections. A pong that does not
//! come within the reply timeout is missing; one with an unexpected id is out of order.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;

use super::client::{Targets, WsConn, number_after};
use super::conns::IdleSet;
use super::pubsub::expect_type;
use super::stats::{Integrity, Latency, ProcSample, Report, ServerUsage, round3};
use super::{Common, Progress};
use crate::duration::parse_duration;

/// Arguments of `wirehub bench ping`.
#[derive(Args, Debug)]
pub(crate) struct PingArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Idle subscribed connections held meanwhile.
    #[arg(long, short = 'n', default_value_t = 1000)]
    idle: usize,
    /// Round trips to measure.
    #[arg(long, short = 'm', default_value_t = 2000)]
    pings: u64,
    /// Pause between a pong and the next ping.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    interval: Duration,
}

pub(crate) async fn run(args: &PingArgs, progress: &Progress) -> anyhow::Result<Report> {
    let common = &args.common;
    let mut report = Report::new("ping", common.label.as_deref(), &common.url);
    let targets = Targets::resolve(&common.url).await?;
    let target = targets.get(0).clone();
    super::check_open_files(common, args.idle + 1)?;
    let idle = IdleSet::open(common, &targets, args.idle, 10, "bench-idle", progress).await;
    report.set("connections", idle.established());
    idle.report_failures(&mut report);
    let mut conn = WsConn::connect(
        &target,
        target.source(args.idle, common.sources(args.idle + 1)),
        common.reply_timeout,
    )
    .await
    .context("probe connection")?;
    expect_type(&conn.next_text(common.reply_timeout).await?, "welcome")?;

    let server_before = common.server_sample()?;
    let self_before = ProcSample::read(None)?;
    let started = Instant::now();
    let mut latency = Latency::new();
    let mut integrity = Integrity::default();
    progress.phase("pinging", args.pings);
    for id in 1..=args.pings {
        let sent = Instant::now();
        conn.queue_text(format!(r#"{{"type":"ping","id":{id}}}"#).as_bytes());
        conn.flush().await?;
        loop {
            let reply = match conn.next_text(common.reply_timeout).await {
                Ok(reply) => reply,
                Err(err) => {
                    integrity.missing += 1;
                    report.problem(format!("ping {id}: {err:#}"));
                    break;
                }
            };
            if !reply.starts_with(br#"{"type":"pong""#) {
                continue;
            }
            match number_after(&reply, b"\"id\":") {
                Some(got) if got == id => {
                    latency.record_ns(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    integrity.received += 1;
                    break;
                }
                Some(got) if got < id => integrity.duplicates += 1,
                _ => integrity.reordered += 1,
            }
        }
        if report_broken(&integrity) {
            break;
        }
        progress.set(id);
        if !args.interval.is_zero() {
            tokio::time::sleep(args.interval).await;
        }
    }
    let elapsed = started.elapsed();
    let server_after = common.server_sample()?;
    progress.finish();
    report.set("pings", integrity.received);
    report.set("duration_s", round3(elapsed.as_secs_f64()));
    report.line(format!(
        "{} round trips beside {} idle connections in {:.2} s",
        integrity.received,
        idle.established(),
        elapsed.as_secs_f64()
    ));
    report.latency("round trip", &latency);
    report.integrity(&integrity);
    let lost = idle.closed_early.get();
    if lost > 0 {
        report.problem(format!("the server closed {lost} idle connection(s)"));
    }
    if let (Some(before), Some(after)) = (server_before, server_after) {
        report.server_cpu(&ServerUsage { before, after }, None);
    }
    report.generator_cpu(&self_before, elapsed);
    conn.close(Duration::from_secs(1)).await;
    idle.close().await;
    Ok(report)
}

/// Too many faults to go on (e.g. the server stopped answering).
fn report_broken(integrity: &Integrity) -> bool {
    integrity.missing >= 10
}
