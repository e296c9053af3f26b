//! [`RedisServer`]: a real `redis-server` child process on a free loopback port, for tests of
//! the Redis broker. It keeps nothing on disk (`--save '' --appendonly no`), so a restart
//! loses every key, as a crashed Redis without persistence does.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::TIMEOUT;

/// A running `redis-server`, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    /// The TLS port and the arguments that enable it, when started with TLS.
    tls: Option<(u16, Vec<String>)>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port of 127.0.0.1 and waits until it answers `PING`.
    ///
    /// # Panics
    /// When `redis-server` is not installed (run `./scripts/test.sh`, which installs it), or
    /// when it does not start.
    pub fn start() -> RedisServer {
        Self::start_with(|| None)
    }

    /// Like [`RedisServer::start`], and also serving TLS on a second port with the given PEM
    /// certificate chain and key (clients are not asked for certificates): see
    /// [`RedisServer::tls_url`].
    ///
    /// # Panics
    /// As [`RedisServer::start`]; also when this `redis-server` was built without TLS.
    pub fn start_with_tls(cert: &Path, key: &Path) -> RedisServer {
        Self::start_with(|| {
            let tls_port = free_port();
            let args = [
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                &cert.display().to_string(),
                "--tls-key-file",
                &key.display().to_string(),
                "--tls-auth-clients",
                "no",
            ]
            .map(str::to_owned)
            .to_vec();
            Some((tls_port, args))
        })
    }

    fn start_with(tls: impl Fn() -> Option<(u16, Vec<String>)>) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            let tls = tls();
            let extra = tls
                .as_ref()
                .map(|(_, args)| args.as_slice())
                .unwrap_or_default();
            if let Some(child) = spawn(port, extra) {
                return RedisServer {
                    port,
                    tls,
                    child: Some(child),
                };
            }
            // Another process took a port between our probe and redis-server's bind.
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// `rediss://127.0.0.1:TLS_PORT` for a server started with
    /// [`RedisServer::start_with_tls`].
    ///
    /// # Panics
    /// When it was started without TLS.
    pub fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("started with start_with_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The address it listens on (also while stopped: [`RedisServer::restart`] reuses it).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (every connection drops, every key is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts a new one on the same port, empty.
    ///
    /// # Panics
    /// When it does not come back.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let extra = self
                .tls
                .as_ref()
                .map(|(_, args)| args.as_slice())
                .unwrap_or_default();
            if let Some(child) = spawn(self.port, extra) {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Pauses the server with SIGSTOP: connections stay open and nothing is answered, as with
    /// a Redis that hangs. It runs again with SIGCONT on [`Paused::resume`], or when the guard is
    /// dropped, so that a failing test does not leave it stopped.
    ///
    /// # Panics
    /// When the server is not running or the signal cannot be sent.
    pub fn pause(&self) -> Paused {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        assert!(signal(pid, "STOP"), "kill -STOP {pid}");
        Paused { pid: Some(pid) }
    }

    /// Deletes every key (`FLUSHALL`); connections and subscriptions stay.
    ///
    /// # Panics
    /// When the server does not answer `OK`.
    pub fn flush(&self) {
        assert_eq!(self.command(&["FLUSHALL"]), "OK");
    }

    /// Runs one command and returns its reply as text: a status or bulk string as is, an
    /// integer in decimal, an error as `ERR…`, nil as `(nil)`, an array as its elements
    /// separated by newlines.
    ///
    /// # Panics
    /// When the server cannot be reached.
    pub fn command(&self, args: &[&str]) -> String {
        command_at(self.addr(), args)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs one command on the Redis at `addr` (see [`RedisServer::command`]).
///
/// # Panics
/// When the server cannot be reached or does not answer.
pub(crate) fn command_at(addr: SocketAddr, args: &[&str]) -> String {
    try_command_at(addr, args).expect("a reply from redis-server")
}

/// [`command_at`], `None` when the server cannot be reached or does not answer in time.
pub(crate) fn try_command_at(addr: SocketAddr, args: &[&str]) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    stream.write_all(&encode(args)).ok()?;
    read_reply(&mut BufReader::new(stream))
}

pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Starts redis-server on `port`; `None` when it exits (the port is taken) or never answers.
pub(crate) fn spawn(port: u16, extra: &[String]) -> Option<Child> {
    let mut child = match Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(extra)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
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
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub(crate) fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(&encode(&["PING"])).is_err() {
        return false;
    }
    read_reply(&mut BufReader::new(stream)).is_some_and(|reply| reply == "PONG")
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_reply(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at_checked(1)?;
    match kind {
        "+" | ":" => Some(rest.to_owned()),
        "-" => Some(rest.to_owned()),
        "$" => {
            let len: i64 = rest.parse().ok()?;
            let Ok(len) = usize::try_from(len) else {
                return Some("(nil)".to_owned());
            };
            let mut data = vec![0; len + 2];
            reader.read_exact(&mut data).ok()?;
            data.truncate(len);
            String::from_utf8(data).ok()
        }
        "*" => {
            let len: i64 = rest.parse().ok()?;
            let items = (0..len.max(0))
                .map(|_| read_reply(reader))
                .collect::<Option<Vec<_>>>()?;
            Some(items.join("\n"))
        }
        _ => None,
    }
}

/// A `redis-server` paused by [`RedisServer::pause`]; dropping it resumes the server.
#[derive(Debug)]
#[must_use = "dropping the guard resumes the server at once"]
pub struct Paused {
    pid: Option<u32>,
}

impl Paused {
    /// Sends SIGSTOP to `pid`; the guard sends SIGCONT.
    pub(crate) fn stop(pid: u32) -> Paused {
        assert!(signal(pid, "STOP"), "kill -STOP {pid}");
        Paused { pid: Some(pid) }
    }

    /// Resumes the server (SIGCONT).
    ///
    /// # Panics
    /// When the signal cannot be sent.
    pub fn resume(mut self) {
        if let Some(pid) = self.pid.take() {
            assert!(signal(pid, "CONT"), "kill -CONT {pid}");
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // Best effort: a drop during a failing test must not panic again.
        if let Some(pid) = self.pid.take() {
            signal(pid, "CONT");
        }
    }
}

/// Sends the signal `name` (`STOP`, `CONT`) to process `pid`; whether it was sent.
pub(crate) fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|status| status.success())
}
