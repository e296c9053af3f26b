//! `wirehub bench`: the project's load generator, for a server running on this machine.
//!
//! Scenarios (one file each): `conns` (many idle subscribed connections: connect rate and the
//! server's memory per connection), `fanout` (one channel, many subscribers: deliveries per
//! second, latency, server CPU per delivery), `rooms` (many small channels, chat-like rates),
//! `ping` (app-level round trip beside idle connections), `churn` (connect, subscribe,
//! disconnect in a loop), `connect-storm` (every client connecting at once: setup time
//! p50/p99/max, the kernel's listen drops, and the spread of arrivals under admission limits)
//! and `presence` (members joining one presence channel: joins/s, the cost of one join at
//! small and large sizes, `presence` read latency, Redis traffic per join).
//!
//! Every run is bounded in count and in time (`--max-time`), targets loopback addresses
//! only, prints a progress bar and a human summary on stderr and exactly one JSON line on
//! stdout, and exits 1 when it saw a fault (a missing, duplicated or reordered delivery, a
//! failed connection). Given `--server-pid`, it reads the server's memory (VmRSS) and CPU
//! time (utime + stime) from `/proc` before and after the measured phase.
//!
//! The generator runs on one thread (a current-thread runtime) with a small WebSocket client
//! of its own (`client`), so that one core receives well over a million messages per second
//! and the figures measure the server, not the generator.
//!
//! Open files: a process here may hold at most 20 000 files (the hard limit), and every
//! connection is one on each side, so a single generator process and a single server both
//! stop just below 20 000 connections. The generator checks its limit before it starts.

mod churn;
mod client;
mod conns;
mod fanout;
mod ping;
mod presence;
mod pubsub;
mod redis_stats;
mod rooms;
mod stats;
mod storm;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::duration::parse_duration;
use stats::{ProcSample, Report};

/// Arguments of `wirehub bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// N connections, each subscribed to one of K channels, held open: connect rate, failures
    /// and (with --server-pid) the server's memory per connection.
    Conns(conns::ConnsArgs),
    /// N subscribers on one channel, one publisher sending M messages at a rate or as fast as
    /// accepted: deliveries/s, latency, server CPU per delivery, delivery checks.
    Fanout(fanout::FanoutArgs),
    /// C channels × K subscribers with chat-like publish rates: latency and delivery checks.
    Rooms(rooms::RoomsArgs),
    /// App-level ping/pong round trips beside N idle subscribed connections.
    Ping(ping::PingArgs),
    /// Connect, subscribe, disconnect in a loop: cycles/s, failures, server memory growth.
    Churn(churn::ChurnArgs),
    /// N clients connecting at once, C at a time (a restart or a load-balancer flip):
    /// connect-and-subscribe p50/p99/max, rate, listen drops, retries of refused upgrades.
    ConnectStorm(storm::StormArgs),
    /// N members joining one presence channel (one connection each): joins/s, the cost of a
    /// join (time, server CPU, Redis traffic) at small and large sizes, `presence` latency.
    Presence(presence::PresenceArgs),
}

/// Options every scenario has.
#[derive(Args, Debug, Clone)]
pub(crate) struct Common {
    /// WebSocket URL of the server, or several separated by commas (nodes of one cluster:
    /// connection i goes to URL i mod n; publishers to the first); loopback addresses only.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// Process id of the server: report its memory (VmRSS) and CPU time from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Name of the server under test, copied into the JSON line (e.g. wirehub, node-ws).
    #[arg(long)]
    label: Option<String>,
    /// Connection handshakes in progress at once during setup.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Spread connections over this many source addresses (127.0.0.1, 127.0.0.2, …); 0: one
    /// more address per 25 000 connections (one address has about 28 000 ephemeral ports).
    #[arg(long, default_value_t = 0)]
    sources: usize,
    /// How long to wait for a handshake or a reply before counting a failure.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    reply_timeout: Duration,
    /// Upper bound on the whole run; it is cut off (and fails) after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    max_time: Duration,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// Connections per source address before the next one is used (with `--sources 0`).
const PER_SOURCE: usize = 25_000;

impl Common {
    /// Number of source addresses for `connections` connections.
    fn sources(&self, connections: usize) -> usize {
        if self.sources > 0 {
            self.sources.min(254)
        } else {
            connections.div_ceil(PER_SOURCE).clamp(1, 254)
        }
    }

    /// The server's memory and CPU now, when its pid was given.
    fn server_sample(&self) -> anyhow::Result<Option<ProcSample>> {
        self.server_pid
            .map(|pid| ProcSample::read(Some(pid)))
            .transpose()
    }
}

/// Refuses a run that needs more open files than this process may hold.
fn check_open_files(common: &Common, connections: usize) -> anyhow::Result<()> {
    let needed = connections as u64 + 32;
    if let Some(limit) = stats::open_files_limit(None)
        && needed > limit
    {
        bail!(
            "{connections} connections need about {needed} open files but this process may \
             hold {limit} (ulimit -n); run several `wirehub bench` processes side by side, \
             each with a share of the connections"
        );
    }
    if let Some(limit) = common
        .server_pid
        .and_then(|pid| stats::open_files_limit(Some(pid)))
        && needed > limit
    {
        eprintln!(
            "warning: the server may hold {limit} open files: expect refused connections \
             beyond about {}",
            limit.saturating_sub(32)
        );
    }
    Ok(())
}

/// The progress bar on stderr (drawn only on a terminal).
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{msg:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        };
        Progress { bar }
    }

    /// Starts a phase of `len` steps.
    pub(crate) fn phase(&self, name: &'static str, len: u64) {
        self.bar.reset();
        self.bar.set_length(len);
        self.bar.set_message(name);
    }

    pub(crate) fn set(&self, position: u64) {
        self.bar.set_position(position);
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Runs `wirehub bench`: exit 0 for a clean run, 1 for a run that saw faults or failed.
pub(crate) fn run(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wirehub bench: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let outcome = local.block_on(&runtime, run_scenario(args.scenario));
    match outcome {
        Ok(report) => {
            if report.print() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("wirehub bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_scenario(scenario: Scenario) -> anyhow::Result<Report> {
    let common = match &scenario {
        Scenario::Conns(args) => args.common.clone(),
        Scenario::Fanout(args) => args.common.clone(),
        Scenario::Rooms(args) => args.common.clone(),
        Scenario::Ping(args) => args.common.clone(),
        Scenario::Churn(args) => args.common.clone(),
        Scenario::ConnectStorm(args) => args.common.clone(),
        Scenario::Presence(args) => args.common.clone(),
    };
    let progress = Progress::new(common.quiet);
    let work = async {
        match scenario {
            Scenario::Conns(args) => conns::run(&args, &progress).await,
            Scenario::Fanout(args) => fanout::run(&args, &progress).await,
            Scenario::Rooms(args) => rooms::run(&args, &progress).await,
            Scenario::Ping(args) => ping::run(&args, &progress).await,
            Scenario::Churn(args) => churn::run(&args, &progress).await,
            Scenario::ConnectStorm(args) => storm::run(&args, &progress).await,
            Scenario::Presence(args) => presence::run(&args, &progress).await,
        }
    };
    let result = tokio::time::timeout(common.max_time, work).await;
    progress.finish();
    match result {
        Ok(report) => report,
        Err(_) => bail!(
            "the run did not finish within --max-time {:?}; it was cut off",
            common.max_time
        ),
    }
}
