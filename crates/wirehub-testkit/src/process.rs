//! [`ServerProcess`]: the built `wirehub` binary run as a child process, for end-to-end tests
//! of the command line (signals, exit codes, flags and environment).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::TIMEOUT;

/// A `wirehub serve` child process listening on a port it chose (`--listen 127.0.0.1:0`).
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    log: mpsc::Receiver<String>,
}

impl ServerProcess {
    /// Runs `BIN serve --listen 127.0.0.1:0 ARGS...` and waits for its "listening" log line.
    ///
    /// # Panics
    /// When the process does not start or does not log its address in time.
    pub fn serve(bin: &str, args: &[&str]) -> ServerProcess {
        let mut command = Command::new(bin);
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args);
        Self::spawn(command)
    }

    /// Runs a prepared command (which must start a server that logs `addr=IP:PORT`).
    ///
    /// # Panics
    /// As [`ServerProcess::serve`].
    pub fn spawn(mut command: Command) -> ServerProcess {
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start the wirehub binary");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left.max(Duration::from_millis(1)))
                .expect("the server logs its address");
            if let Some(rest) = line.split("addr=").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                break addr.parse().expect("an address after addr=");
            }
        };
        ServerProcess {
            child,
            addr,
            log: rx,
        }
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

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with the system's `kill` command.
    ///
    /// # Panics
    /// When `kill` cannot be run.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    ///
    /// # Panics
    /// When it does not exit in time.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a log line containing `needle` (skipping the others) and returns it.
    ///
    /// # Panics
    /// When none comes in time.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?} within {TIMEOUT:?}"),
            }
        }
    }

    /// Log lines printed so far (stderr).
    pub fn log_lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
