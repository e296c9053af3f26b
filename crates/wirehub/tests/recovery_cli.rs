//! `wirehub sub` through a flaky link: the link is cut while 1 000 messages are published;
//! the subscriber reconnects by itself, recovers from history, and prints every message
//! exactly once, in order.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wirehub_server::ServerConfig;
use wirehub_testkit::{ChildProcess, TcpProxy, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");

#[tokio::test]
async fn sub_through_a_cut_link_prints_all_1000_messages_once_in_order() {
    let server = TestServer::start(
        ServerConfig::new()
            .heartbeat_interval(Duration::from_secs(60))
            .history_size(2000),
    )
    .await;
    let proxy = TcpProxy::start(server.addr()).await;
    let sub = ChildProcess::spawn(Command::new(BIN).args([
        "sub",
        &proxy.ws_url(),
        "feed",
        "--backoff-initial",
        "50ms",
        "--backoff-max",
        "200ms",
    ]));
    server.wait_for_metric("wirehub_subscriptions", 1).await;

    for n in 1..=300 {
        server.publish_http("feed", json!({"n": n})).await;
    }
    proxy.cut();
    server.wait_for_metric("wirehub_subscriptions", 0).await;
    for n in 301..=1000 {
        server.publish_http("feed", json!({"n": n})).await;
    }
    proxy.restore();

    let (received, mut sub) = tokio::task::spawn_blocking(move || {
        let received: Vec<String> = (1..=1000)
            .map(|n| sub.next_stdout(&format!("message {n}")))
            .collect();
        (received, sub)
    })
    .await
    .expect("reader");
    sub.kill();
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
