//! Child processes for end-to-end tests of the command line: [`ChildProcess`] runs any
//! command and reads its output lines, [`ServerProcess`] is a `wirehub serve` on a port it
//! chose (signals, exit codes, flags and environment).
//!
//! Every wait has a timeout ([`TIMEOUT`]), and a process is killed when its guard is dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::TIMEOUT;

/// A child process whose stdout and stderr lines are read by background threads.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl ChildProcess {
    /// Runs `command` with stdin closed and stdout and stderr piped.
    ///
    /// # Panics
    /// When the process cannot be started.
    pub fn spawn(command: &mut Command) -> ChildProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
        let stdout = lines(child.stdout.take().expect("stdout piped"));
        let stderr = lines(child.stderr.take().expect("stderr piped"));
        ChildProcess {
            child,
            stdout,
            stderr,
        }
    }

    /// The next stdout line.
    ///
    /// # Panics
    /// When none comes within [`TIMEOUT`]; `what` names it in the message.
    pub fn next_stdout(&self, what: &str) -> String {
        self.stdout
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("no {what} on stdout within {TIMEOUT:?}"))
    }

    /// Skips stderr lines until one contains `needle`, and returns it.
    ///
    /// # Panics
    /// When none comes within [`TIMEOUT`].
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no stderr line containing {needle:?} within {TIMEOUT:?}"),
            }
        }
    }

    /// The stderr lines printed since the last read.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`, `KILL`) with the system's `kill` command.
    ///
    /// # Panics
    /// When `kill` cannot be run or fails.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Kills the process at once and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    /// When it does not exit within [`TIMEOUT`].
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the process did not exit within {TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// A `wirehub serve` child process and the address it logged.
#[derive(Debug)]
pub struct ServerProcess {
    process: ChildProcess,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Runs `BIN serve --listen 127.0.0.1:0 ARGS...` and waits for its "listening" log line.
    ///
    /// # Panics
    /// When the process does not start or does not log its address in time.
    pub fn serve(bin: &str, args: &[&str]) -> ServerProcess {
        Self::serve_on(bin, "127.0.0.1:0", args)
    }

    /// Like [`ServerProcess::serve`] on a given address (e.g. the one of a server that was
    /// killed, to restart it in place). The test's own `WIREHUB_*` environment is not passed
    /// on, so that only `args` configure the server.
    ///
    /// # Panics
    /// As [`ServerProcess::serve`].
    pub fn serve_on(bin: &str, listen: &str, args: &[&str]) -> ServerProcess {
        let mut command = Command::new(bin);
        command.arg("serve").arg("--listen").arg(listen).args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WIREHUB_") {
                command.env_remove(name);
            }
        }
        Self::spawn(command)
    }

    /// Runs a prepared command (which must start a server that logs `addr=IP:PORT`) with
    /// `RUST_LOG=info`.
    ///
    /// # Panics
    /// As [`ServerProcess::serve`].
    pub fn spawn(mut command: Command) -> ServerProcess {
        command.env("RUST_LOG", "info");
        let process = ChildProcess::spawn(&mut command);
        let line = process.wait_stderr("addr=");
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address after addr= in {line:?}"));
        ServerProcess { process, addr }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://ADDR` followed by `path`.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a signal by name, as [`ChildProcess::signal`].
    pub fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    /// Kills the server at once (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    /// When it does not exit in time.
    pub fn wait(&mut self) -> ExitStatus {
        self.process.wait()
    }

    /// Waits for a log line containing `needle` (skipping the others) and returns it.
    ///
    /// # Panics
    /// When none comes in time.
    pub fn wait_log(&self, needle: &str) -> String {
        self.process.wait_stderr(needle)
    }

    /// Log lines printed since the last read (stderr).
    pub fn log_lines(&self) -> Vec<String> {
        self.process.stderr_lines()
    }
}
