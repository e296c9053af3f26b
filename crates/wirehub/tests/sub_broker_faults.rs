//! `wirehub sub` started while the server's Redis is paused (SIGSTOP): the server refuses
//! the subscription with `internal`; the command says so on stderr, one line per refusal,
//! asks again with a backoff instead of exiting, and prints what is published once Redis
//! answers again (issue 9).

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use wirehub_server::{BrokerConfig, RedisConfig, ServerConfig};
use wirehub_testkit::{ChildProcess, RedisServer, TIMEOUT, TestServer};

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

    // Once Redis answers again, the retried subscribe succeeds and deliveries flow.
    server.wait_for_metric("wirehub_subscriptions", 1).await;
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let sent = http
            .post(server.http_url("/api/publish"))
            .json(&json!({"channel": "feed", "data": {"n": 1}, "idempotency_key": "after"}))
            .send()
            .await
            .expect("an answer");
        if sent.status().is_success() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", sent.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = tokio::task::spawn_blocking(move || {
        let line = sub.next_stdout("the message published after the pause");
        (line, sub)
    })
    .await
    .expect("the stdout reader");
    let (line, mut sub) = line;
    assert_eq!(line, r#"{"n":1}"#);
    sub.kill();
}
