//! `wirehub bench conns`: N connections, each subscribed to one of K channels, held open.
//!
//! Measures how fast the server accepts and subscribes connections, how many fail, and (with
//! `--server-pid`) how much memory each idle subscribed connection costs the server: its RSS
//! after the connections settled minus its RSS before the first one, divided by their number.
//! The connections answer the server's pings while held, then close with a close handshake
//! (so that the server, which closes the TCP connection first, keeps the TIME_WAIT entries
//! and the generator's ports are free for the next run).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::client::{Targets, WsConn};
use super::pubsub::subscribe;
use super::stats::{Latency, ProcSample, Report, ServerUsage, round3};
use super::{Common, Progress};
use crate::duration::parse_duration;

/// Arguments of `wirehub bench conns`.
#[derive(Args, Debug)]
pub(crate) struct ConnsArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// Connections to open and hold.
    #[arg(long, short = 'n', default_value_t = 1000)]
    connections: usize,
    /// Channels the connections subscribe to (connection i takes channel i mod K).
    #[arg(long, short = 'k', default_value_t = 10)]
    channels: usize,
    /// How long to wait after the last connection before reading the server's memory.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    settle: Duration,
    /// How long to hold the connections in all (at least the settle time).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    hold: Duration,
}

pub(crate) async fn run(args: &ConnsArgs, progress: &Progress) -> anyhow::Result<Report> {
    let common = &args.common;
    let mut report = Report::new("conns", common.label.as_deref(), &common.url);
    let target = Targets::resolve(&common.url).await?;
    super::check_open_files(common, args.connections)?;
    let server_before = common.server_sample()?;
    let self_before = ProcSample::read(None)?;
    let started = Instant::now();
    let idle = IdleSet::open(
        common,
        &target,
        args.connections,
        args.channels,
        "bench-conns",
        progress,
    )
    .await;
    let setup_time = started.elapsed();
    let established = idle.established();
    if established == 0 {
        bail!(
            "no connection could be opened: {}",
            idle.failures.borrow().first().cloned().unwrap_or_default()
        );
    }
    let rate = established as f64 / setup_time.as_secs_f64().max(1e-9);
    report.set("connections", established);
    report.set("connect_failures", idle.failures.borrow().len() as u64);
    report.set("connect_per_s", rate.round());
    report.set("setup_s", round3(setup_time.as_secs_f64()));
    report.line(format!(
        "{established} of {} connections subscribed in {:.2} s ({rate:.0}/s)",
        args.connections,
        setup_time.as_secs_f64()
    ));
    report.latency("connect + subscribe", &idle.setup.borrow());
    idle.report_failures(&mut report);

    tokio::time::sleep(args.settle).await;
    let server_after = common.server_sample()?;
    let self_after = ProcSample::read(None)?;
    let held = started.elapsed().saturating_sub(setup_time);
    if args.hold > held {
        tokio::time::sleep(args.hold - held).await;
    }
    let lost = idle.closed_early.get();
    report.set("closed_by_server", lost);
    if lost > 0 {
        report.problem(format!(
            "the server closed {lost} idle connection(s) while they were held"
        ));
    }
    if let (Some(before), Some(after)) = (server_before, server_after) {
        let per_conn = (after.rss_kib as f64 - before.rss_kib as f64) / established as f64;
        report.set("server_rss_before_kib", before.rss_kib);
        report.set("server_rss_per_conn_kib", round3(per_conn));
        report.line(format!(
            "server memory: {} KiB → {} KiB: {per_conn:.2} KiB per idle subscribed connection",
            before.rss_kib, after.rss_kib
        ));
        report.server_cpu(&ServerUsage { before, after }, None);
    }
    let generator_per_conn =
        (self_after.rss_kib as f64 - self_before.rss_kib as f64) / established as f64;
    report.set("generator_rss_per_conn_kib", round3(generator_per_conn));
    idle.close().await;
    report.generator_cpu(&self_before, started.elapsed());
    Ok(report)
}

/// Idle subscribed connections, each held by a task until [`IdleSet::close`].
pub(super) struct IdleSet {
    handles: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    /// Connections the server closed while held.
    pub(super) closed_early: Rc<Cell<u64>>,
    established: Rc<Cell<u64>>,
    pub(super) failures: Rc<RefCell<Vec<String>>>,
    /// Connect → subscribed, per connection.
    pub(super) setup: Rc<RefCell<Latency>>,
}

impl IdleSet {
    /// Opens `count` connections (at most `--connect-concurrency` handshakes at once), each
    /// subscribed to `{prefix}-{i mod channels}`; returns once every one is set up or failed.
    pub(super) async fn open(
        common: &Common,
        target: &Targets,
        count: usize,
        channels: usize,
        prefix: &str,
        progress: &Progress,
    ) -> IdleSet {
        let set = IdleSet {
            handles: Vec::with_capacity(count),
            stop: CancellationToken::new(),
            closed_early: Rc::default(),
            established: Rc::default(),
            failures: Rc::default(),
            setup: Rc::new(RefCell::new(Latency::new())),
        };
        let mut set = set;
        progress.phase("connecting", count as u64);
        let gate = Rc::new(Semaphore::new(common.connect_concurrency.max(1)));
        let done = Rc::new(Cell::new(0u64));
        let sources = common.sources(count);
        for index in 0..count {
            let channel = format!("{prefix}-{}", index % channels.max(1));
            let target = target.get(index).clone();
            let source = target.source(index, sources);
            let gate = gate.clone();
            let done = done.clone();
            let stop = set.stop.clone();
            let closed_early = set.closed_early.clone();
            let established = set.established.clone();
            let failures = set.failures.clone();
            let setup = set.setup.clone();
            let timeout = common.reply_timeout;
            set.handles.push(tokio::task::spawn_local(async move {
                let permit = gate.acquire().await.ok();
                let started = Instant::now();
                let result = async {
                    let mut conn = WsConn::connect(&target, source, timeout).await?;
                    subscribe(&mut conn, &channel, timeout).await?;
                    anyhow::Ok(conn)
                }
                .await;
                drop(permit);
                done.set(done.get() + 1);
                let mut conn = match result {
                    Ok(conn) => conn,
                    Err(err) => {
                        failures.borrow_mut().push(format!("{err:#}"));
                        return;
                    }
                };
                setup
                    .borrow_mut()
                    .record_ns(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
                established.set(established.get() + 1);
                let cancelled = stop.cancelled();
                tokio::pin!(cancelled);
                loop {
                    match conn.drain(|_| {}) {
                        Ok(drained) if !drained.closed => {}
                        _ => {
                            if !stop.is_cancelled() {
                                closed_early.set(closed_early.get() + 1);
                            }
                            return;
                        }
                    }
                    tokio::select! {
                        biased;
                        () = &mut cancelled => break,
                        ready = conn.readable() => if ready.is_err() {
                            closed_early.set(closed_early.get() + 1);
                            return;
                        },
                    }
                }
                conn.close(Duration::from_secs(3)).await;
            }));
        }
        while done.get() < count as u64 {
            progress.set(done.get());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        progress.finish();
        set
    }

    /// Connections set up.
    pub(super) fn established(&self) -> u64 {
        self.established.get()
    }

    /// Adds the failure count (and the first failure) to the report as a problem.
    pub(super) fn report_failures(&self, report: &mut Report) {
        let failures = self.failures.borrow();
        if let Some(first) = failures.first() {
            report.problem(format!(
                "{} connection(s) failed; the first: {first}",
                failures.len()
            ));
        }
    }

    /// Closes every connection (close handshake) and waits for them.
    pub(super) async fn close(self) {
        self.stop.cancel();
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}
