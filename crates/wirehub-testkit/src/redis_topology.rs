//! [`RedisCluster`] and [`RedisSentinels`]: real local Redis topologies for the broker's
//! cluster and failover tests, made of `redis-server` children on free loopback ports and
//! killed on drop.
//!
//! - [`RedisCluster::start`]: three masters and three replicas (`--cluster-enabled yes`,
//!   joined with `redis-cli --cluster create … --cluster-replicas 1`), a short
//!   `cluster-node-timeout` so that a replica takes over a killed master within seconds.
//! - [`RedisSentinels::start`]: one master, one replica and three sentinels (quorum 2) with a
//!   short `down-after-milliseconds`.
//!
//! Nothing is kept on disk but each node's config file, in a directory removed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::TIMEOUT;
use crate::redis::{Paused, command_at, free_port, ping, try_command_at};

/// How long a failover may take in these topologies.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// One `redis-server` child.
#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A scratch directory removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new(kind: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wirehub-{kind}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `redis-server` with `args` (a config file first, when there is one) and waits until
/// it answers `PING` on `port`; `None` when it exits (a port was taken) or never answers.
fn start_node(port: u16, args: &[String]) -> Option<Node> {
    let mut child = match Command::new("redis-server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            panic!("redis-server is not installed: run ./scripts/test.sh, which installs it")
        }
        Err(err) => panic!("cannot run redis-server: {err}"),
    };
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if ping(port) {
            return Some(Node {
                port,
                child: Some(child),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Starts a node on a free port, retrying when another process took it meanwhile.
fn start_on_free_port(args: impl Fn(u16) -> Vec<String>) -> Node {
    for _ in 0..5 {
        let port = free_port();
        if let Some(node) = start_node(port, &args(port)) {
            return node;
        }
    }
    panic!("redis-server did not start on any of 5 free ports");
}

fn common_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
fn poll<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A local Redis Cluster: three masters with one replica each. Killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: Scratch,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct ClusterNode {
    addr: SocketAddr,
    master: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes and joins them into a cluster (three masters, three replicas); returns
    /// once every node sees the cluster as `ok`.
    ///
    /// # Panics
    /// When `redis-server`/`redis-cli` are not installed or the cluster does not form.
    pub fn start() -> RedisCluster {
        let dir = Scratch::new("cluster");
        let nodes: Vec<Node> = (0..6)
            .map(|_| {
                start_on_free_port(|port| {
                    let mut args = common_args(port, &dir.0);
                    args.extend(
                        [
                            "--cluster-enabled",
                            "yes",
                            "--cluster-port",
                            &free_port().to_string(),
                            "--cluster-config-file",
                            &format!("nodes-{port}.conf"),
                            "--cluster-node-timeout",
                            "1000",
                            // A replica takes over however long it was out of touch.
                            "--cluster-replica-validity-factor",
                            "0",
                        ]
                        .map(str::to_owned),
                    );
                    args
                })
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(node.addr().to_string());
        }
        let output = match create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) => output,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-cli is not installed: run ./scripts/test.sh, which installs it")
            }
            Err(err) => panic!("cannot run redis-cli: {err}"),
        };
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_ok();
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…`: every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// The addresses of the running nodes.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .filter(|node| node.child.is_some())
            .map(Node::addr)
            .collect()
    }

    /// The addresses of the masters that serve slots, as a running node sees them.
    pub fn masters(&self) -> Vec<SocketAddr> {
        self.topology()
            .into_iter()
            .filter(|node| node.master && !node.failed && !node.slots.is_empty())
            .map(|node| node.addr)
            .collect()
    }

    /// Runs one command on the node at `addr` (see [`crate::RedisServer::command`]).
    ///
    /// # Panics
    /// When that node cannot be reached.
    pub fn command(&self, addr: SocketAddr, args: &[&str]) -> String {
        command_at(addr, args)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        let reply = command_at(self.any(), &["CLUSTER", "KEYSLOT", key]);
        reply.parse().expect("CLUSTER KEYSLOT answers a number")
    }

    /// The master that serves `key`'s slot.
    ///
    /// # Panics
    /// When no running master serves it.
    pub fn master_of(&self, key: &str) -> SocketAddr {
        let slot = self.slot(key);
        self.topology()
            .into_iter()
            .find(|node| {
                node.master
                    && !node.failed
                    && node.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|node| node.addr)
            .expect("a master serves the slot")
    }

    /// Moves the slot of `key` (with its keys) from its master to the master at `to`, as a
    /// resharding does (`SETSLOT IMPORTING/MIGRATING`, `MIGRATE`, `SETSLOT NODE`).
    ///
    /// # Panics
    /// When a step fails.
    pub fn move_slot(&self, key: &str, to: SocketAddr) {
        let slot = self.slot(key).to_string();
        let from = self.master_of(key);
        assert_ne!(from, to, "the slot is there already");
        let from_id = command_at(from, &["CLUSTER", "MYID"]);
        let to_id = command_at(to, &["CLUSTER", "MYID"]);
        let ok = |reply: String| assert_eq!(reply, "OK", "resharding");
        ok(command_at(
            to,
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        ));
        ok(command_at(
            from,
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
        ));
        loop {
            let keys = command_at(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            if keys.is_empty() {
                break;
            }
            let port = to.port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.lines());
            ok(command_at(from, &args));
        }
        for master in self.masters() {
            ok(command_at(
                master,
                &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id],
            ));
        }
    }

    /// Kills the node at `addr` (its connections drop; a replica takes over its slots after
    /// the node timeout).
    ///
    /// # Panics
    /// When no node of this cluster listens there.
    pub fn kill(&mut self, addr: SocketAddr) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.addr() == addr)
            .expect("a node of this cluster");
        node.kill();
    }

    /// Waits until every running node sees the cluster `ok`, every slot is served by a
    /// running master, and every replica of a running master is in sync with it.
    ///
    /// # Panics
    /// After [`FAILOVER_TIMEOUT`].
    pub fn wait_ok(&self) {
        poll(FAILOVER_TIMEOUT, "the cluster to be ok", || {
            let running = self.addrs();
            let ok = running.iter().all(|addr| {
                try_command_at(*addr, &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
            let covered: u32 = self
                .topology()
                .iter()
                .filter(|node| node.master && !node.failed && running.contains(&node.addr))
                .flat_map(|node| node.slots.iter())
                .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
                .sum();
            // Replicas of running masters are in sync, so that a failover has the data.
            let synced = running.iter().all(|addr| {
                try_command_at(*addr, &["INFO", "replication"]).is_some_and(|info| {
                    !info.contains("role:slave")
                        || info.contains("master_link_status:up")
                        || info
                            .lines()
                            .find_map(|line| line.strip_prefix("master_port:"))
                            .and_then(|port| port.trim().parse::<u16>().ok())
                            .is_some_and(|port| !running.iter().any(|a| a.port() == port))
                })
            });
            (ok && synced && covered == 16384).then_some(())
        });
    }

    fn any(&self) -> SocketAddr {
        self.addrs().into_iter().next().expect("a running node")
    }

    fn topology(&self) -> Vec<ClusterNode> {
        let reply = self
            .addrs()
            .into_iter()
            .find_map(|addr| try_command_at(addr, &["CLUSTER", "NODES"]))
            .expect("a node answers CLUSTER NODES");
        reply
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let addr = fields.get(1)?.split(['@', ',']).next()?.parse().ok()?;
                let flags = fields.get(2)?;
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter(|slot| !slot.starts_with('['))
                    .filter_map(|slot| match slot.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => {
                            let one = slot.parse().ok()?;
                            Some((one, one))
                        }
                    })
                    .collect();
                Some(ClusterNode {
                    addr,
                    master: flags.contains("master"),
                    failed: flags.contains("fail"),
                    slots,
                })
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// The master's name in [`RedisSentinels`].
pub const SENTINEL_MASTER: &str = "wirehub";

/// One Redis master, one replica and three sentinels watching them. Killed on drop.
#[derive(Debug)]
pub struct RedisSentinels {
    data: Vec<Node>,
    sentinels: Vec<Node>,
    dir: Scratch,
}

impl RedisSentinels {
    /// Starts the master, its replica (synchronised before this returns) and three sentinels
    /// (quorum 2, `down-after-milliseconds` 500), and waits until every sentinel knows the
    /// replica and the other sentinels.
    ///
    /// # Panics
    /// When `redis-server` is not installed or the setup does not come up.
    pub fn start() -> RedisSentinels {
        let dir = Scratch::new("sentinel");
        let master = start_on_free_port(|port| common_args(port, &dir.0));
        let master_port = master.port.to_string();
        let replica = start_on_free_port(|port| {
            let mut args = common_args(port, &dir.0);
            args.extend(["--replicaof", "127.0.0.1", &master_port].map(str::to_owned));
            args
        });
        poll(TIMEOUT, "the replica to synchronise", || {
            try_command_at(replica.addr(), &["INFO", "replication"])
                .filter(|info| info.contains("master_link_status:up"))
        });
        let sentinels = (0..3)
            .map(|index| {
                start_on_free_port(|port| {
                    let file = dir.0.join(format!("sentinel-{index}-{port}.conf"));
                    let conf = format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {SENTINEL_MASTER} 500\n\
                         sentinel failover-timeout {SENTINEL_MASTER} 5000\n\
                         sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                        dir = dir.0.display()
                    );
                    std::fs::write(&file, conf).expect("write a sentinel config");
                    vec![file.display().to_string(), "--sentinel".to_owned()]
                })
            })
            .collect::<Vec<_>>();
        let setup = RedisSentinels {
            data: vec![master, replica],
            sentinels,
            dir,
        };
        poll(TIMEOUT, "the sentinels to know each other", || {
            setup
                .sentinels
                .iter()
                .all(|sentinel| {
                    try_command_at(sentinel.addr(), &["SENTINEL", "MASTER", SENTINEL_MASTER])
                        .is_some_and(|reply| {
                            let fields: Vec<&str> = reply.lines().collect();
                            let value = |name: &str| {
                                fields
                                    .iter()
                                    .position(|field| *field == name)
                                    .and_then(|i| fields.get(i + 1))
                                    .and_then(|v| v.parse::<u32>().ok())
                                    .unwrap_or(0)
                            };
                            value("num-slaves") >= 1 && value("num-other-sentinels") >= 2
                        })
                })
                .then_some(())
        });
        setup
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/wirehub`.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .sentinels
            .iter()
            .map(|n| n.addr().to_string())
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_MASTER}", seeds.join(","))
    }

    /// The master as the sentinels name it now (`SENTINEL GET-MASTER-ADDR-BY-NAME`).
    ///
    /// # Panics
    /// When no sentinel answers.
    pub fn master(&self) -> SocketAddr {
        self.sentinels
            .iter()
            .filter(|sentinel| sentinel.child.is_some())
            .find_map(|sentinel| {
                let reply = try_command_at(
                    sentinel.addr(),
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER],
                )?;
                let (host, port) = reply.split_once('\n')?;
                format!("{host}:{port}").parse().ok()
            })
            .expect("a sentinel names the master")
    }

    /// Runs one command on the data node at `addr`.
    ///
    /// # Panics
    /// When it cannot be reached.
    pub fn command(&self, addr: SocketAddr, args: &[&str]) -> String {
        command_at(addr, args)
    }

    /// The replica (the data node that is not the master now).
    ///
    /// # Panics
    /// When there is none running.
    pub fn replica(&self) -> SocketAddr {
        let master = self.master();
        self.data
            .iter()
            .filter(|node| node.child.is_some())
            .map(Node::addr)
            .find(|addr| *addr != master)
            .expect("a running replica")
    }

    /// Pauses the replica with SIGSTOP (see [`crate::RedisServer::pause`]).
    ///
    /// # Panics
    /// When there is no running replica.
    pub fn pause_replica(&self) -> Paused {
        let replica = self.replica();
        let node = self
            .data
            .iter()
            .find(|node| node.addr() == replica)
            .and_then(|node| node.child.as_ref())
            .expect("a running replica");
        Paused::stop(node.id())
    }

    /// Kills the current master and returns its address; the sentinels promote the replica.
    ///
    /// # Panics
    /// When the master is not one of this setup's nodes.
    pub fn kill_master(&mut self) -> SocketAddr {
        let master = self.master();
        let node = self
            .data
            .iter_mut()
            .find(|node| node.addr() == master)
            .expect("the master is one of the data nodes");
        node.kill();
        master
    }

    /// Waits until the sentinels name a master other than `old` and it answers as a master.
    ///
    /// # Panics
    /// After [`FAILOVER_TIMEOUT`].
    pub fn wait_failover(&self, old: SocketAddr) -> SocketAddr {
        poll(
            FAILOVER_TIMEOUT,
            "the sentinels to promote the replica",
            || {
                let master = self.master();
                (master != old
                    && try_command_at(master, &["ROLE"])
                        .is_some_and(|role| role.starts_with("master")))
                .then_some(master)
            },
        )
    }

    /// Starts the killed node again, as a replica of the current master.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart_as_replica(&mut self, old: SocketAddr) {
        let master = self.master();
        let mut args = common_args(old.port(), &self.dir.0);
        args.extend(
            [
                "--replicaof",
                &master.ip().to_string(),
                &master.port().to_string(),
            ]
            .map(str::to_owned),
        );
        let node = poll(TIMEOUT, "the old master to restart", || {
            start_node(old.port(), &args)
        });
        if let Some(slot) = self.data.iter_mut().find(|node| node.addr() == old) {
            *slot = node;
        }
    }
}

impl Drop for RedisSentinels {
    fn drop(&mut self) {
        for node in self.sentinels.iter_mut().chain(self.data.iter_mut()) {
            node.kill();
        }
    }
}
