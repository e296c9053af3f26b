//! `wirehub-audit`: the audit run. It starts real `wirehub serve` nodes (two or three on a
//! real `redis-server`, one on the memory broker), subscribes to them with the Rust SDK,
//! `wirehub sub` and the TypeScript SDK (some directly, some through proxies that cut
//! links), publishes over HTTP and WebSocket with idempotency keys and retries, injects
//! faults drawn from a seed, and checks every subscriber's stream against every
//! acknowledged publish (`oracle`). It prints a table and exits non-zero on any violation.
//!
//! Run it with `scripts/audit.sh` (which builds what it needs); `docs/audit.md` says what it
//! checks and how to read the table.
//!
//! # Layout
//! - `oracle`: the checks, pure and unit-tested.
//! - `record`: what the run observed, shared by the tasks.
//! - `cluster`: the server processes and Redis.
//! - `subscribers`, `publishers`: the clients.
//! - `faults`: the seeded fault plan.
//! - `report`: the table.

mod cluster;
mod faults;
mod oracle;
mod publishers;
mod record;
mod report;
mod subscribers;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wirehub_testkit::TcpProxy;

use crate::cluster::{Node, Redis};
use crate::faults::{Fault, Planned, Targets};
use crate::publishers::{Publisher, Via};
use crate::record::{ClientKind, FaultCount, Recorder};
use crate::subscribers::{Subscriber, SubscriberSpec};

/// Exit status when a promise was broken.
const EXIT_VIOLATION: u8 = 1;
/// Exit status when the run itself could not be carried out.
const EXIT_HARNESS: u8 = 2;
/// How long the run may take beyond its workload (setup, drain, teardown) before it gives up.
const OVERHEAD: Duration = Duration::from_secs(240);

/// A harness failure (not a broken promise of the server).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    /// Something needed for the run could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// The harness's result type.
pub(crate) type Result<T, E = AuditError> = std::result::Result<T, E>;

/// The audit run: real nodes, real clients, random faults, delivery oracles.
#[derive(Parser, Debug)]
#[command(name = "wirehub-audit", version)]
struct Args {
    /// The seed of the fault plan (default: from the clock); printed first.
    #[arg(long)]
    seed: Option<u64>,
    /// How long the workload with faults runs (e.g. 60s, 10m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Nodes on Redis (2 or 3), besides the memory-broker node.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
    redis_nodes: u8,
    /// The wirehub binary.
    #[arg(long, default_value = "target/release/wirehub")]
    bin: PathBuf,
    /// The TypeScript SDK's build (`npm ci && npm run build` in clients/typescript).
    #[arg(long, default_value = "clients/typescript/dist/index.js")]
    typescript_sdk: PathBuf,
    /// Run without the TypeScript subscribers (when Node or the SDK build is missing).
    #[arg(long)]
    no_typescript: bool,
    /// The pause between two messages of one publisher (bursts come on top).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    interval: Duration,
    /// Bytes of padding in each message.
    #[arg(long, default_value_t = 100)]
    pad: usize,
    /// Messages each node keeps per channel for recovery (`--history-size`).
    #[arg(long, default_value_t = 50_000)]
    history_size: usize,
    /// The final burst: after the workload every subscriber's application stops reading
    /// while each publisher sends this many messages; publishing then stops before the
    /// applications read again, so nothing follows the burst (0: no final burst).
    #[arg(long, default_value_t = 1500)]
    final_burst: u64,
    /// Where the nodes' logs and config go (default: a new temporary directory, removed when
    /// the run passes).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(number)),
        "s" | "" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        "h" => Ok(Duration::from_secs(number * 3600)),
        _ => Err(format!("unknown unit in {text:?}: use ms, s, m or h")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64 % 1_000_000)
    });
    println!("wirehub-audit: seed {seed} (rerun with --seed {seed})");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("audit: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_HARNESS);
        }
    };
    let limit = args.duration + OVERHEAD;
    let code = runtime.block_on(async {
        tokio::select! {
            outcome = tokio::time::timeout(limit, run(args, seed)) => match outcome {
                Ok(Ok(0)) => ExitCode::SUCCESS,
                Ok(Ok(_)) => ExitCode::from(EXIT_VIOLATION),
                Ok(Err(error)) => {
                    eprintln!("audit: the run could not be carried out: {error}");
                    ExitCode::from(EXIT_HARNESS)
                }
                Err(_) => {
                    eprintln!("audit: the run did not finish within {limit:?}; stopped");
                    ExitCode::from(EXIT_HARNESS)
                }
            },
            () = interrupted() => {
                eprintln!("audit: interrupted; stopping every process");
                ExitCode::from(130)
            }
        }
    });
    // Dropping the runtime drops every task, and with them every child process
    // (`kill_on_drop`), the proxies and Redis.
    runtime.shutdown_timeout(Duration::from_secs(5));
    code
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match &mut term {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// Everything the fault tasks act on.
struct World {
    nodes: Vec<Mutex<Node>>,
    redis: Redis,
    proxies: Vec<TcpProxy>,
    subscribers: Vec<Mutex<Subscriber>>,
    publishers: Vec<Publisher>,
    recorder: Arc<Recorder>,
    start: Instant,
}

impl World {
    fn log(&self, what: &str) {
        println!("[{:>6.1}s] {what}", self.start.elapsed().as_secs_f64());
    }
}

/// One cluster of nodes sharing channels: the Redis nodes, or the memory node.
struct Cluster {
    /// Indexes into `World::nodes`.
    nodes: Vec<usize>,
    /// `disc:X`, `gap:X`, `latest:X`.
    channels: Vec<String>,
}

async fn run(args: Args, seed: u64) -> Result<usize> {
    if !args.bin.exists() {
        return Err(AuditError::Setup(format!(
            "{} not found: build it with `cargo build --release -p wirehub`",
            args.bin.display()
        )));
    }
    let typescript = !args.no_typescript;
    if typescript && !args.typescript_sdk.exists() {
        return Err(AuditError::Setup(format!(
            "{} not found: run `npm ci && npm run build` in clients/typescript, or pass --no-typescript",
            args.typescript_sdk.display()
        )));
    }
    let temporary = args.work_dir.is_none();
    let dir = args.work_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("wirehub-audit.{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)
        .map_err(|error| AuditError::Setup(format!("cannot create {}: {error}", dir.display())))?;
    let config = dir.join("wirehub.toml");
    std::fs::write(&config, cluster::config_toml()).map_err(|error| {
        AuditError::Setup(format!("cannot write {}: {error}", config.display()))
    })?;

    // The system: Redis, the nodes.
    let redis = Redis::start().await?;
    let common = vec![
        "--heartbeat-interval".to_owned(),
        "1s".to_owned(),
        "--shutdown-drain".to_owned(),
        "1s".to_owned(),
        "--history-size".to_owned(),
        args.history_size.to_string(),
        "--publish-rate".to_owned(),
        "0".to_owned(),
    ];
    let mut nodes = Vec::new();
    for i in 0..args.redis_nodes {
        let mut node_args = common.clone();
        node_args.extend(["--broker".to_owned(), redis.url().to_owned()]);
        let name = format!("redis-{}", (b'a' + i) as char);
        nodes.push(Node::new(&name, &args.bin, node_args, &config, &dir));
    }
    nodes.push(Node::new("memory", &args.bin, common, &config, &dir));
    let mut policies_refused = None;
    for node in &mut nodes {
        if let Some(refusal) = node.start().await? {
            println!(
                "audit: node {} refused the [[channels]] tables: {refusal}; running without --config",
                node.name
            );
            policies_refused = Some(refusal);
        }
        println!(
            "audit: node {} on {}",
            node.name,
            node.addr().map(|a| a.to_string()).unwrap_or_default()
        );
    }
    let addr = |i: usize| {
        nodes[i]
            .addr()
            .ok_or_else(|| AuditError::Setup("a node has no address".into()))
    };
    let memory = nodes.len() - 1;
    let clusters = [
        Cluster {
            nodes: (0..memory).collect(),
            channels: ["disc:r", "gap:r", "latest:r"].map(str::to_owned).to_vec(),
        },
        Cluster {
            nodes: vec![memory],
            channels: ["disc:m", "gap:m", "latest:m"].map(str::to_owned).to_vec(),
        },
    ];

    // The subscribers: (kind, node, through a proxy, TypeScript mode).
    let mut layout: Vec<(ClientKind, usize, bool, &'static str)> = vec![
        (ClientKind::RustSdk, 0, false, ""),
        (ClientKind::RustSdk, 1, true, ""),
        (ClientKind::RustSdk, memory, false, ""),
        (ClientKind::RustSdk, memory, true, ""),
        (ClientKind::Sub, 0, true, ""),
        (ClientKind::Sub, 1, false, ""),
        (ClientKind::Sub, memory, true, ""),
    ];
    if typescript {
        layout.push((ClientKind::TypeScript, 0, true, "iterator"));
        layout.push((ClientKind::TypeScript, memory, false, "callback"));
        layout.push((ClientKind::TypeScript, memory, true, "iterator"));
    }
    let mut proxies = Vec::new();
    let mut specs = Vec::new();
    let mut counts: BTreeMap<ClientKind, usize> = BTreeMap::new();
    for (index, (kind, node, proxied, mode)) in layout.into_iter().enumerate() {
        let target = addr(node)?;
        let (url, proxy) = if proxied {
            let proxy = TcpProxy::start(target).await;
            let url = proxy.ws_url();
            proxies.push(proxy);
            (url, Some(proxies.len() - 1))
        } else {
            (format!("ws://{target}/ws"), None)
        };
        let number = counts.entry(kind).or_default();
        let name = format!(
            "{}-{number}",
            match kind {
                ClientKind::RustSdk => "rust",
                ClientKind::Sub => "sub",
                ClientKind::TypeScript => "ts",
            }
        );
        *number += 1;
        let cluster = clusters
            .iter()
            .find(|c| c.nodes.contains(&node))
            .map_or(&clusters[1], |c| c);
        specs.push(SubscriberSpec {
            index,
            name,
            kind,
            node: nodes[node].name.clone(),
            proxy,
            url,
            channels: cluster.channels.clone(),
            mode,
        });
    }

    let recorder = Arc::new(Recorder::new());
    let node_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("node/subscriber.mjs");
    let sdk =
        std::fs::canonicalize(&args.typescript_sdk).unwrap_or_else(|_| args.typescript_sdk.clone());
    let mut subscribers = Vec::new();
    for spec in &specs {
        println!(
            "audit: subscriber {} ({}{}) on {} {}",
            spec.name,
            spec.kind.as_str(),
            if spec.mode.is_empty() {
                String::new()
            } else {
                format!(", {}", spec.mode)
            },
            spec.node,
            spec.proxy
                .map_or_else(|| "directly".to_owned(), |p| format!("through proxy {p}")),
        );
        subscribers.push(Subscriber::start(
            spec.clone(),
            recorder.clone(),
            &args.bin,
            &node_script,
            &sdk,
        ));
    }

    // The probes: until every subscriber has a delivery on each of its channels. The
    // workload starts after, so a stream's first delivery is its start.
    probe(&clusters, &nodes, &specs, &recorder).await?;

    // The publishers: over HTTP (rotating over the cluster's nodes) and over WebSocket (the
    // Redis cluster's through a proxy of its own, which the faults cut too).
    let stop = CancellationToken::new();
    let mut publishers = Vec::new();
    for (c, cluster) in clusters.iter().enumerate() {
        let http: Vec<_> = cluster
            .nodes
            .iter()
            .map(|&n| addr(n))
            .collect::<Result<_>>()?;
        let ws_target = addr(*cluster.nodes.last().unwrap_or(&memory))?;
        let ws_url = if c == 0 {
            let proxy = TcpProxy::start(ws_target).await;
            let url = proxy.ws_url();
            proxies.push(proxy);
            url
        } else {
            format!("ws://{ws_target}/ws")
        };
        for (i, channel) in cluster.channels.iter().enumerate() {
            let n = c * cluster.channels.len() + i;
            for (prefix, via) in [
                ('h', Via::Http(http.clone())),
                ('w', Via::WebSocket(ws_url.clone())),
            ] {
                publishers.push(Publisher::start(
                    format!("{prefix}{n}"),
                    channel.clone(),
                    via,
                    args.interval,
                    args.pad,
                    recorder.clone(),
                    stop.clone(),
                ));
            }
        }
    }

    let targets = Targets {
        proxies: proxies.len(),
        nodes: nodes.len(),
        redis: true,
        subscribers: specs.len(),
        processes: specs
            .iter()
            .filter(|spec| spec.kind != ClientKind::RustSdk)
            .map(|spec| spec.index)
            .collect(),
        publishers: publishers.len(),
    };
    let plan = faults::plan(seed, args.duration, &targets);
    println!(
        "audit: {} faults planned over {:?}:",
        plan.len(),
        args.duration
    );
    for planned in &plan {
        let who = match planned.fault {
            Fault::Stall { subscriber, .. } | Fault::Freeze { subscriber, .. } => {
                format!(" ({})", specs[subscriber].name)
            }
            Fault::Cut { proxy, .. } => format!(
                " ({})",
                specs
                    .iter()
                    .find(|spec| spec.proxy == Some(proxy))
                    .map_or("a publisher", |spec| spec.name.as_str())
            ),
            Fault::Kill { node, .. } => format!(" ({})", nodes[node].name),
            Fault::Burst { publisher, .. } => format!(" ({})", publishers[publisher].channel),
            Fault::RedisRestart { .. } | Fault::RedisPause { .. } => String::new(),
        };
        println!(
            "  at {:>6.1}s: {}{who}",
            planned.at.as_secs_f64(),
            planned.fault
        );
    }

    let world = Arc::new(World {
        nodes: nodes.into_iter().map(Mutex::new).collect(),
        redis,
        proxies,
        subscribers: subscribers.into_iter().map(Mutex::new).collect(),
        publishers,
        recorder: recorder.clone(),
        start: Instant::now(),
    });
    world.log("workload started");
    let mut running = Vec::new();
    for planned in plan {
        let world = world.clone();
        let specs = specs.clone();
        running.push(tokio::spawn(async move {
            tokio::time::sleep_until(world.start + planned.at).await;
            inject(&world, &specs, planned).await;
        }));
    }
    tokio::time::sleep_until(world.start + args.duration).await;
    for task in running {
        let _ = task.await;
    }
    heal(&world).await;
    if args.final_burst > 0 {
        final_burst(&world, args.final_burst).await;
    }
    world.log("workload ends: publishers finish their last message");
    stop.cancel();
    let Ok(world) = Arc::try_unwrap(world) else {
        return Err(AuditError::Setup("a fault task is still running".into()));
    };
    let World {
        nodes,
        redis,
        proxies,
        subscribers,
        mut publishers,
        recorder,
        start,
    } = world;
    for publisher in &mut publishers {
        publisher.join().await;
    }
    for subscriber in &subscribers {
        subscriber.lock().await.stall(Duration::ZERO).await;
    }
    drain(&specs, &recorder, start).await;

    let mut server_counters = Vec::new();
    for node in &nodes {
        let node = node.lock().await;
        if let Some(addr) = node.addr() {
            server_counters.push((node.name.clone(), metrics(addr).await));
        }
    }
    for subscriber in &subscribers {
        subscriber.lock().await.stop().await;
    }
    let refused_later = {
        let mut any = false;
        for node in &nodes {
            any |= node.lock().await.config_refused();
        }
        any
    };
    if refused_later && policies_refused.is_none() {
        policies_refused = Some("after a restart".into());
    }
    for node in &nodes {
        node.lock().await.kill().await;
    }
    drop(proxies);
    drop(redis);

    let header = report::Header {
        seed,
        duration: args.duration,
        policies_refused,
        server_counters,
    };
    let outcome = report::report(&header, &specs, &recorder.snapshot());
    println!("{}", outcome.text);
    if outcome.violations == 0 && temporary {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("node logs: {}", dir.display());
    }
    println!("wirehub-audit: seed {seed}");
    Ok(outcome.violations)
}

/// Publishes probes on every channel until each subscriber has a delivery on each of its
/// channels (at most 30 s; a subscriber still without one is reported by the oracles).
async fn probe(
    clusters: &[Cluster],
    nodes: &[Node],
    specs: &[SubscriberSpec],
    recorder: &Recorder,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|error| AuditError::Setup(error.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 0;
    loop {
        let ready = specs
            .iter()
            .all(|spec| recorder.has_delivery_on_all(spec.index, &spec.channels));
        if ready {
            println!("audit: every subscriber receives ({seq} probes per channel)");
            return Ok(());
        }
        if Instant::now() >= deadline {
            println!("audit: some subscribers received no probe within 30 s; going on");
            return Ok(());
        }
        seq += 1;
        for cluster in clusters {
            let Some(node) = cluster.nodes.first().and_then(|&n| nodes[n].addr()) else {
                continue;
            };
            for channel in &cluster.channels {
                let body = serde_json::json!({
                    "channel": channel,
                    "data": {"p": oracle::PROBE, "seq": seq, "ch": channel},
                    "idempotency_key": format!("probe-{seq}"),
                });
                let answer = http
                    .post(format!("http://{node}/api/publish"))
                    .json(&body)
                    .send()
                    .await;
                if let Ok(response) = answer
                    && let Ok(body) = response.json::<serde_json::Value>().await
                    && let Some(offset) = body["offset"].as_u64()
                {
                    recorder.ack(
                        channel,
                        oracle::MessageId {
                            publisher: oracle::PROBE.into(),
                            seq,
                        },
                        offset,
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Plays one fault to its end (the target restored).
async fn inject(world: &World, specs: &[SubscriberSpec], planned: Planned) {
    let recorder = &world.recorder;
    match planned.fault {
        Fault::Cut { proxy, hold } => {
            let Some(link) = world.proxies.get(proxy) else {
                return;
            };
            let who = specs
                .iter()
                .find(|spec| spec.proxy == Some(proxy))
                .map_or_else(|| "a publisher".to_owned(), |spec| spec.name.clone());
            world.log(&format!("cut proxy {proxy} ({who}) for {hold:.1?}"));
            recorder.fault(FaultCount::Cut);
            link.cut();
            tokio::time::sleep(hold).await;
            link.restore();
        }
        Fault::Kill { node, down } => {
            let Some(node) = world.nodes.get(node) else {
                return;
            };
            let mut node = node.lock().await;
            world.log(&format!(
                "SIGKILL node {} (restart in {down:.1?})",
                node.name
            ));
            recorder.fault(FaultCount::Kill);
            node.kill().await;
            tokio::time::sleep(down).await;
            match node.start().await {
                Ok(_) => world.log(&format!("node {} back", node.name)),
                Err(error) => world.log(&format!("node {} did not come back: {error}", node.name)),
            }
        }
        Fault::RedisRestart { down } => {
            world.log(&format!("Redis killed (back empty in {down:.1?})"));
            recorder.fault(FaultCount::RedisRestart);
            if let Err(error) = world.redis.restart(down).await {
                world.log(&format!("Redis did not come back: {error}"));
            }
        }
        Fault::RedisPause { hold } => {
            world.log(&format!("Redis SIGSTOP for {hold:.1?}"));
            recorder.fault(FaultCount::RedisPause);
            world.redis.pause(true).await;
            tokio::time::sleep(hold).await;
            world.redis.pause(false).await;
        }
        Fault::Stall {
            subscriber,
            hold,
            burst,
        } => {
            let Some(target) = world.subscribers.get(subscriber) else {
                return;
            };
            let spec = &specs[subscriber];
            world.log(&format!(
                "stall {} for {hold:.1?}, burst {burst} per publisher of its channels",
                spec.name
            ));
            recorder.fault(FaultCount::Stall);
            target.lock().await.stall(hold).await;
            for publisher in &world.publishers {
                if spec.channels.contains(&publisher.channel) {
                    publisher.burst(burst);
                }
            }
            tokio::time::sleep(hold).await;
        }
        Fault::Freeze {
            subscriber,
            hold,
            burst,
        } => {
            let Some(target) = world.subscribers.get(subscriber) else {
                return;
            };
            let spec = &specs[subscriber];
            world.log(&format!(
                "SIGSTOP {} for {hold:.1?}, burst {burst} per publisher of its channels",
                spec.name
            ));
            recorder.fault(FaultCount::Freeze);
            target.lock().await.freeze(true).await;
            for publisher in &world.publishers {
                if spec.channels.contains(&publisher.channel) {
                    publisher.burst(burst);
                }
            }
            tokio::time::sleep(hold).await;
            target.lock().await.freeze(false).await;
        }
        Fault::Burst { publisher, count } => {
            let Some(target) = world.publishers.get(publisher) else {
                return;
            };
            world.log(&format!(
                "burst of {count} from {} on {}",
                target.name, target.channel
            ));
            recorder.fault(FaultCount::Burst);
            target.burst(count);
        }
    }
}

/// Every subscriber's application stops reading while each publisher sends `count`
/// messages as fast as they are acknowledged; returns once the bursts are sent (the caller
/// stops the publishers, then lets the applications read again). This is the case of a
/// reader that pauses during a burst after which the channel goes quiet: a client that
/// drops what it cannot queue and says so only with a later delivery never says so.
async fn final_burst(world: &World, count: u64) {
    world.log(&format!(
        "final burst: every subscriber stalled while each publisher sends {count}, then publishing stops"
    ));
    for subscriber in &world.subscribers {
        subscriber
            .lock()
            .await
            .stall(Duration::from_secs(120))
            .await;
    }
    world.recorder.fault(FaultCount::Stall);
    for publisher in &world.publishers {
        publisher.burst(count);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while world.publishers.iter().any(Publisher::bursting) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let the last deliveries reach the clients' queues before the applications read again.
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// After the workload: every link up, every process running and thawed.
async fn heal(world: &World) {
    for proxy in &world.proxies {
        proxy.restore();
    }
    world.redis.pause(false).await;
    for subscriber in &world.subscribers {
        subscriber.lock().await.freeze(false).await;
    }
    for node in &world.nodes {
        let mut node = node.lock().await;
        if !node.running() {
            world.log(&format!("node {} is not running: restarting it", node.name));
            if let Err(error) = node.start().await {
                world.log(&format!("node {} did not come back: {error}", node.name));
            }
        }
    }
}

/// Waits until every subscriber has every acknowledged message of its `disconnect`/`gap`
/// channels, or nothing was delivered for 10 s, or 60 s passed.
async fn drain(specs: &[SubscriberSpec], recorder: &Recorder, start: Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: usize = specs
            .iter()
            .flat_map(|spec| {
                spec.channels
                    .iter()
                    .map(move |channel| (spec.index, channel))
            })
            .filter(|(_, channel)| cluster::policy_of(channel) != oracle::Policy::Latest)
            .map(|(index, channel)| recorder.missing(index, channel))
            .sum();
        let quiet = recorder.last_delivery().elapsed() > Duration::from_secs(10);
        if missing == 0 || quiet || Instant::now() >= deadline {
            println!(
                "[{:>6.1}s] drained: {missing} acknowledged deliveries still missing{}",
                start.elapsed().as_secs_f64(),
                if missing > 0 && quiet {
                    " after 10 s without a delivery"
                } else {
                    ""
                }
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A few counters from a node's `/metrics`.
async fn metrics(addr: std::net::SocketAddr) -> BTreeMap<String, u64> {
    let wanted = [
        "wirehub_slow_consumers_total",
        "wirehub_heartbeat_terminations_total",
        "wirehub_messages_replayed_total",
        "wirehub_publish_duplicates_total",
    ];
    let mut counters = BTreeMap::new();
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    else {
        return counters;
    };
    let Ok(response) = client.get(format!("http://{addr}/metrics")).send().await else {
        return counters;
    };
    let Ok(text) = response.text().await else {
        return counters;
    };
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some(name), Some(value)) = (parts.next(), parts.next())
            && let Some(short) = wanted.iter().find(|w| **w == name)
            && let Ok(value) = value.parse::<f64>()
        {
            counters.insert(
                short
                    .trim_start_matches("wirehub_")
                    .trim_end_matches("_total")
                    .to_owned(),
                value as u64,
            );
        }
    }
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_like_the_server_reads_them() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1x").is_err());
    }
}
