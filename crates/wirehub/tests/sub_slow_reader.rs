//! `wirehub sub` piped into a reader that stops reading while thousands of messages are
//! published (issue 9): it prints every message once, in order, after the reader resumes;
//! and when the server's history no longer covers what it fell behind by, it says so on
//! stderr, at the place of the loss, and goes on.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use wirehub_server::ServerConfig;
use wirehub_testkit::{TIMEOUT, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");

/// Makes each line about 220 bytes, so that a few hundred fill the pipe and `sub` blocks.
fn padding() -> String {
    "x".repeat(200)
}

async fn publish(server: &TestServer, http: &reqwest::Client, n: u64) {
    let reply = http
        .post(server.http_url("/api/publish"))
        .json(&json!({"channel": "feed", "data": {"n": n, "pad": padding()}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(reply.status(), 200);
}

/// A `wirehub sub` whose stdout is read only after `resume` is sent; lines come out of
/// `stdout`, stderr lines out of `stderr`.
struct PausedSub {
    child: Child,
    resume: mpsc::Sender<()>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl PausedSub {
    fn start(url: &str) -> PausedSub {
        let mut child = Command::new(BIN)
            .args(["sub", url, "feed"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wirehub sub");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (resume, paused) = mpsc::channel::<()>();
        let (stdout_tx, stdout) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            // The pause: nothing is read until the test says so.
            if paused.recv().is_err() {
                return;
            }
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if stdout_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (stderr_tx, stderr) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if stderr_tx.send(line).is_err() {
                    break;
                }
            }
        });
        PausedSub {
            child,
            resume,
            stdout,
            stderr,
        }
    }

    /// The number in the next stdout line (checking the line is the published data).
    fn next_number(&self) -> u64 {
        let line = self
            .stdout
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("no line on stdout within {TIMEOUT:?}"));
        let value: Value = serde_json::from_str(&line).expect("one JSON value per line");
        assert_eq!(value["pad"], json!(padding()), "{line}");
        value["n"].as_u64().expect("a number")
    }

    /// Stderr lines received so far.
    fn stderr_so_far(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for PausedSub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn issue_9_sub_into_a_paused_reader_prints_all_5000_messages_in_order() {
    let server = TestServer::start(
        ServerConfig::new()
            .heartbeat_interval(Duration::from_secs(60))
            .history_size(20_000),
    )
    .await;
    let sub = PausedSub::start(&server.ws_url());
    server.wait_for_metric("wirehub_subscriptions", 1).await;

    // The reader is paused the whole time: the pipe fills, `sub` blocks on stdout, and its
    // subscription queue (1 024) fills far before the 5 000th message.
    let http = reqwest::Client::new();
    for n in 1..=5000 {
        publish(&server, &http, n).await;
    }
    sub.resume.send(()).expect("resume the reader");
    let numbers = tokio::task::spawn_blocking(move || {
        let numbers: Vec<u64> = (0..5000).map(|_| sub.next_number()).collect();
        (numbers, sub)
    })
    .await
    .expect("reader");
    let (numbers, sub) = numbers;
    assert_eq!(
        numbers,
        (1..=5000).collect::<Vec<_>>(),
        "every message once, in order"
    );
    let stderr = sub.stderr_so_far();
    assert!(
        !stderr.iter().any(|line| line.contains("lost")),
        "no gap reported: {stderr:?}"
    );
    let replayed = server.metric("wirehub_messages_replayed_total").await;
    assert!(replayed > 0, "it caught up from history");
}

#[tokio::test]
async fn issue_9_sub_reports_an_unrecoverable_gap_on_stderr_at_its_place_and_goes_on() {
    // History keeps 100 messages; the reader falls 3 000 behind.
    let server = TestServer::start(
        ServerConfig::new()
            .heartbeat_interval(Duration::from_secs(60))
            .history_size(100),
    )
    .await;
    let sub = PausedSub::start(&server.ws_url());
    server.wait_for_metric("wirehub_subscriptions", 1).await;
    let http = reqwest::Client::new();
    for n in 1..=3000 {
        publish(&server, &http, n).await;
    }
    sub.resume.send(()).expect("resume the reader");

    // The gap is reported once everything handed over before it was printed ...
    let (gap, sub) = tokio::task::spawn_blocking(move || {
        loop {
            match sub.stderr.recv_timeout(TIMEOUT) {
                Ok(line) if line.contains("lost") => return (line, sub),
                Ok(_) => {}
                Err(_) => panic!("no gap line on stderr within {TIMEOUT:?}"),
            }
        }
    })
    .await
    .expect("stderr reader");
    // ... and the stream goes on after it.
    publish(&server, &http, 3001).await;
    let numbers = tokio::task::spawn_blocking(move || {
        let mut numbers = Vec::new();
        while numbers.last() != Some(&3001) {
            numbers.push(sub.next_number());
        }
        numbers
    })
    .await
    .expect("stdout reader");
    let k = numbers.len() as u64 - 1;
    assert_eq!(
        numbers[..numbers.len() - 1],
        (1..=k).collect::<Vec<_>>()[..]
    );
    assert!(k >= 1024, "the queue's content was printed first: {k}");
    assert!(
        gap.contains(&format!("messages {}..3000", k + 1)),
        "names what was lost: {gap}"
    );
}
