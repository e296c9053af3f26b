//! `wirehub sub` through a flaky link: the link is cut while 1 000 messages are published;
//! the subscriber reconnects by itself, recovers from history, and prints every message
//! exactly once, in order.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};
use wirehub_server::ServerConfig;
use wirehub_testkit::{TIMEOUT, TcpProxy, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");

async fn publish(server: &TestServer, http: &reqwest::Client, n: u64) {
    let reply = http
        .post(server.http_url("/api/publish"))
        .json(&json!({"channel": "feed", "data": {"n": n}}))
        .send()
        .await
        .expect("publish");
    assert_eq!(reply.status(), 200);
}

#[tokio::test]
async fn sub_through_a_cut_link_prints_all_1000_messages_once_in_order() {
    let server = TestServer::start(
        ServerConfig::new()
            .heartbeat_interval(Duration::from_secs(60))
            .history_size(2000),
    )
    .await;
    let proxy = TcpProxy::start(server.addr()).await;
    let mut child = Command::new(BIN)
        .args([
            "sub",
            &proxy.ws_url(),
            "feed",
            "--backoff-initial",
            "50ms",
            "--backoff-max",
            "200ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wirehub sub");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    server.wait_for_metric("wirehub_subscriptions", 1).await;

    let http = reqwest::Client::new();
    for n in 1..=300 {
        publish(&server, &http, n).await;
    }
    proxy.cut();
    server.wait_for_metric("wirehub_subscriptions", 0).await;
    for n in 301..=1000 {
        publish(&server, &http, n).await;
    }
    proxy.restore();

    let received = tokio::task::spawn_blocking(move || {
        let mut received = Vec::new();
        while received.len() < 1000 {
            match lines.recv_timeout(TIMEOUT) {
                Ok(line) => received.push(line),
                Err(_) => break,
            }
        }
        received
    })
    .await
    .expect("reader");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(received.len(), 1000, "every message arrived");
    for (index, line) in received.iter().enumerate() {
        let value: Value = serde_json::from_str(line).expect("one JSON value per line");
        assert_eq!(value, json!({"n": index + 1}), "line {index}: {line}");
        assert!(
            !line.contains(' ') && !line.contains('\n'),
            "compact: {line}"
        );
    }
    assert!(proxy.connections() >= 2, "it reconnected through the proxy");
}
