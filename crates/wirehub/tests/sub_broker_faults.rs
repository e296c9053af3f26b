//! `wirehub sub` started while the server's Redis is paused (SIGSTOP): the server refuses
//! the subscription with `internal`; the command says so on stderr, one line per refusal,
//! asks again with a backoff instead of exiting, and prints what is published once Redis
//! answers again (issue 9).

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use wirehub_server::{BrokerConfig, RedisConfig, ServerConfig};
use wirehub_testkit::{ChildProcess, RedisServer, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_sub_started_while_redis_is_paused_retries_and_prints_after_it_resumes() {
    let redis = RedisServer::start();
    let server = TestServer::start(
        ServerConfig::new()
            .heartbeat_interval(Duration::from_secs(60))
            .history_size(100)
            .shutdown_drain(Duration::from_millis(50))
            .broker(BrokerConfig::Redis(
                RedisConfig::new(redis.url())
                    .timeout(Duration::from_millis(300))
                    .ping_interval(Duration::from_millis(200))
                    .canary_interval(Duration::from_millis(200)),
            )),
    )
    .await;

    // The node is on Redis before it stops answering.
    server.publish_http("warmup", json!(0)).await;
    let paused = redis.pause();
    let sub = ChildProcess::spawn(Command::new(BIN).args([
        "sub",
        &server.ws_url(),
        "feed",
        "--backoff-initial",
        "50ms",
        "--backoff-max",
        "200ms",
    ]));
    let sub = tokio::task::spawn_blocking(move || {
        for _ in 0..2 {
            let line = sub.wait_stderr("refused for now");
            assert!(
                line.contains("\"feed\"") && line.contains("retrying in"),
                "{line}"
            );
        }
        sub
    })
    .await
    .expect("the stderr reader");
    paused.resume();

    // Once Redis answers again, the retried subscribe succeeds and deliveries flow. The
    // subscriptions gauge also counts a subscribe still waiting on the broker (one that may
    // yet be refused), so it cannot say when the retried one took effect: the test publishes
    // 1, 2, 3, ... until the command prints one, and then the rest in order.
    let publisher = {
        let url = server.http_url("/api/publish");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 1u64;
            loop {
                let sent = http
                    .post(&url)
                    .json(&json!({"channel": "feed", "data": {"n": n}, "idempotency_key": n.to_string()}))
                    .send()
                    .await;
                if sent.is_ok_and(|reply| reply.status().is_success()) {
                    n += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let (lines, mut sub) = tokio::task::spawn_blocking(move || {
        let first = sub.next_stdout("a message published after the pause");
        let second = sub.next_stdout("the next message");
        (vec![first, second], sub)
    })
    .await
    .expect("the stdout reader");
    publisher.abort();
    let numbers: Vec<u64> = lines
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("JSON on stdout");
            value["n"].as_u64().expect("a published number")
        })
        .collect();
    assert_eq!(numbers[1], numbers[0] + 1, "{lines:?}");
    sub.kill();
}
