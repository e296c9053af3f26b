//! The system under audit: `wirehub serve` processes (the release binary) on a real
//! `redis-server`, plus one node on the memory broker; started, killed and restarted on
//! their ports, and always killed when the run ends (the children are `kill_on_drop`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use wirehub_testkit::RedisServer;

use crate::oracle::Policy;
use crate::{AuditError, Result};

/// How long a node may take to log its address.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a restart keeps trying (the port may still be held, Redis may be paused).
const RESTART_TIMEOUT: Duration = Duration::from_secs(30);

/// The `[[channels]]` tables of the nodes' `--config` file, as `../shared/CONTRACT.md`
/// describes them: one pattern per `on_slow` policy.
pub(crate) const CHANNEL_PATTERNS: [(&str, Policy); 3] = [
    ("disc:*", Policy::Disconnect),
    ("gap:*", Policy::Gap),
    ("latest:*", Policy::Latest),
];

/// The `on_slow` policy the config gives `channel`.
pub(crate) fn policy_of(channel: &str) -> Policy {
    CHANNEL_PATTERNS
        .iter()
        .find(|(pattern, _)| channel.starts_with(pattern.trim_end_matches('*')))
        .map_or(Policy::Disconnect, |(_, policy)| *policy)
}

/// The TOML file given to every node with `--config`.
pub(crate) fn config_toml() -> String {
    let mut text =
        String::from("# Written by wirehub-audit: one channel pattern per on_slow policy.\n");
    for (pattern, policy) in CHANNEL_PATTERNS {
        text.push_str(&format!(
            "\n[[channels]]\npattern = \"{pattern}\"\non_slow = \"{}\"\n",
            policy.as_str()
        ));
    }
    text
}

/// One `wirehub serve` process, restartable on the port it got first.
#[derive(Debug)]
pub(crate) struct Node {
    /// `redis-a`, `memory`, ...
    pub(crate) name: String,
    bin: PathBuf,
    /// Everything after `serve` except `--listen`.
    args: Vec<String>,
    /// Also passed, unless the binary refused it (see [`Node::start`]).
    config: Option<PathBuf>,
    /// Where the node's stderr goes (appended across restarts).
    log: PathBuf,
    addr: Option<SocketAddr>,
    child: Option<Child>,
}

impl Node {
    /// A node not started yet.
    pub(crate) fn new(
        name: &str,
        bin: &Path,
        args: Vec<String>,
        config: &Path,
        dir: &Path,
    ) -> Node {
        Node {
            name: name.to_owned(),
            bin: bin.to_owned(),
            args,
            config: Some(config.to_owned()),
            log: dir.join(format!("{name}.log")),
            addr: None,
            child: None,
        }
    }

    /// The address it listens on (fixed after the first start).
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// Whether the node refused its `--config` file and runs without it.
    pub(crate) fn config_refused(&self) -> bool {
        self.config.is_none()
    }

    /// Starts the node (on `127.0.0.1:0` the first time, then on the same port) and waits
    /// for its "listening" line. When the binary refuses the `[[channels]]` tables of the
    /// config file, it starts again without the file and returns the refusal.
    ///
    /// # Errors
    /// When it does not start within the timeouts.
    pub(crate) async fn start(&mut self) -> Result<Option<String>> {
        let deadline = Instant::now() + RESTART_TIMEOUT;
        let mut refused = None;
        loop {
            match self.spawn_once().await {
                Ok(()) => return Ok(refused),
                Err(Spawn::Exited(output))
                    if self.config.is_some() && output.contains("channels") =>
                {
                    self.config = None;
                    // "unknown field `channels`, expected one of ...": the first clause says it.
                    let line = last_line(&output);
                    refused = Some(line.split(", expected").next().unwrap_or(&line).to_owned());
                }
                Err(failure) if Instant::now() < deadline && self.addr.is_some() => {
                    // A restart: the port may still be in use for a moment, or the broker is
                    // unreachable; try again.
                    let _ = failure;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(Spawn::Exited(output)) => {
                    return Err(AuditError::Setup(format!(
                        "node {} exited at start: {}",
                        self.name,
                        last_line(&output)
                    )));
                }
                Err(Spawn::Failed(why)) => {
                    return Err(AuditError::Setup(format!("node {}: {why}", self.name)));
                }
            }
        }
    }

    async fn spawn_once(&mut self) -> std::result::Result<(), Spawn> {
        let listen = self
            .addr
            .map_or_else(|| "127.0.0.1:0".to_owned(), |addr| addr.to_string());
        let mut command = Command::new(&self.bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg(&listen)
            .args(&self.args);
        if let Some(config) = &self.config {
            command.arg("--config").arg(config);
        }
        command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|error| {
            Spawn::Failed(format!("cannot run {}: {error}", self.bin.display()))
        })?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| Spawn::Failed("no stderr".into()))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .await
            .map_err(|error| {
                Spawn::Failed(format!("cannot open {}: {error}", self.log.display()))
            })?;
        let mut seen = String::new();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = log.write_all(format!("{line}\n").as_bytes()).await;
                seen.push_str(&line);
                seen.push('\n');
                if let Some(addr) = parse_addr(&line) {
                    return Some(addr);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(addr)) => {
                self.addr = Some(addr);
                // Keep copying the log until the process ends.
                tokio::spawn(async move {
                    while let Ok(Some(line)) = lines.next_line().await {
                        if log.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
                self.child = Some(child);
                Ok(())
            }
            Ok(None) => {
                let _ = child.wait().await;
                Err(Spawn::Exited(seen))
            }
            Err(_) => {
                let _ = child.kill().await;
                Err(Spawn::Exited(format!(
                    "{seen}(no address logged within {START_TIMEOUT:?})"
                )))
            }
        }
    }

    /// SIGKILLs the node and reaps it.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Whether the process is running.
    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }
}

enum Spawn {
    /// The process ended (or logged no address in time); its output so far.
    Exited(String),
    /// It could not be run at all.
    Failed(String),
}

fn last_line(output: &str) -> String {
    output
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_owned()
}

/// The address in a "listening" log line: `addr=127.0.0.1:PORT` (text) or
/// `"addr":"127.0.0.1:PORT"` (JSON).
fn parse_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let rest = line
        .split("addr=")
        .nth(1)
        .or_else(|| line.split("\"addr\":\"").nth(1))?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The Redis server, shared between the fault tasks; every operation on it runs on a
/// blocking thread (the testkit's `RedisServer` is synchronous).
#[derive(Debug, Clone)]
pub(crate) struct Redis {
    server: Arc<Mutex<RedisServer>>,
    /// The process id, for SIGSTOP/SIGCONT.
    pid: Arc<Mutex<Option<u32>>>,
    url: String,
}

impl Redis {
    /// Starts `redis-server` on a free port.
    ///
    /// # Errors
    /// When it cannot start (not installed).
    pub(crate) async fn start() -> Result<Redis> {
        let server = blocking(RedisServer::start).await?;
        let url = server.url();
        let redis = Redis {
            server: Arc::new(Mutex::new(server)),
            pid: Arc::new(Mutex::new(None)),
            url,
        };
        redis.read_pid().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    async fn read_pid(&self) -> Result<()> {
        let server = self.server.clone();
        let info = blocking(move || lock(&server).command(&["INFO", "server"])).await?;
        let pid = info
            .lines()
            .find_map(|line| line.trim().strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok());
        *lock(&self.pid) = pid;
        Ok(())
    }

    /// Kills Redis (every key is lost), waits `down`, starts it again on the same port.
    ///
    /// # Errors
    /// When it does not come back.
    pub(crate) async fn restart(&self, down: Duration) -> Result<()> {
        let server = self.server.clone();
        blocking(move || lock(&server).stop()).await?;
        tokio::time::sleep(down).await;
        let server = self.server.clone();
        blocking(move || lock(&server).restart()).await?;
        self.read_pid().await
    }

    /// Sends SIGSTOP (`true`) or SIGCONT (`false`).
    pub(crate) async fn pause(&self, stop: bool) {
        let pid = *lock(&self.pid);
        if let Some(pid) = pid {
            signal(pid, if stop { "STOP" } else { "CONT" }).await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a synchronous (and possibly panicking) testkit call on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|error| AuditError::Setup(format!("redis-server: {error}")))
}

/// Sends a signal by name (`STOP`, `CONT`, `KILL`) with the system's `kill` command.
pub(crate) async fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_text_and_json_logs() {
        assert_eq!(
            parse_addr(
                "2026-01-01T00:00:00Z  INFO wirehub_server: listening (HTTP and WebSocket) addr=127.0.0.1:4321 broker=memory"
            ),
            Some("127.0.0.1:4321".parse().expect("addr"))
        );
        assert_eq!(
            parse_addr(
                r#"{"fields":{"message":"listening (HTTP and WebSocket)","addr":"127.0.0.1:99","broker":"redis"}}"#
            ),
            Some("127.0.0.1:99".parse().expect("addr"))
        );
        assert_eq!(parse_addr("connecting to redis addr=127.0.0.1:6379"), None);
    }

    #[test]
    fn channels_get_their_pattern_policy() {
        assert_eq!(policy_of("disc:r"), Policy::Disconnect);
        assert_eq!(policy_of("gap:m"), Policy::Gap);
        assert_eq!(policy_of("latest:r"), Policy::Latest);
        let toml = config_toml();
        assert!(
            toml.contains("pattern = \"gap:*\"\non_slow = \"gap\""),
            "{toml}"
        );
    }
}
