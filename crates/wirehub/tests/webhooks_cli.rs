//! Issue 11 with the built binary: two `wirehub serve` processes on a real Redis, webhooks to
//! a real receiver; one process is killed with SIGKILL and its channel is vacated once, by
//! the survivor, after the occupancy lease.

use std::time::Duration;

use serde_json::json;
use wirehub_testkit::{RedisServer, ServerProcess, WebhookReceiver, WsClient};

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");
const SECRET: &str = "cli-webhook-secret";

fn serve(redis: &RedisServer, receiver: &WebhookReceiver, dead: &str) -> ServerProcess {
    ServerProcess::serve(
        BIN,
        &[
            "--broker",
            &redis.url(),
            "--webhook-url",
            receiver.url(),
            "--webhook-secret",
            SECRET,
            "--webhook-batch-delay",
            "20ms",
            "--webhook-dead-letter",
            dead,
            "--vacate-delay",
            "300ms",
            "--occupancy-lease",
            "600ms",
            "--shutdown-drain",
            "100ms",
        ],
    )
}

#[tokio::test]
async fn issue_11_a_sigkilled_node_has_its_channels_vacated_once() {
    let redis = RedisServer::start();
    let receiver = WebhookReceiver::start(SECRET, 1).await;
    let dead = std::env::temp_dir()
        .join(format!("wirehub-issue-11-cli-{}.jsonl", std::process::id()))
        .display()
        .to_string();
    let mut survivor = serve(&redis, &receiver, &dead);
    let mut doomed = serve(&redis, &receiver, &dead);
    let (mut a, _) = WsClient::connect(&doomed.ws_url()).await;
    let (mut b, _) = WsClient::connect(&survivor.ws_url()).await;
    a.subscribe("game:1").await;
    a.subscribe("game:2").await;
    b.subscribe("game:2").await;
    receiver
        .wait("both channels occupied", |events| {
            events
                .iter()
                .filter(|e| e["type"] == "channel_occupied")
                .count()
                == 2
        })
        .await;
    doomed.kill();
    receiver
        .wait("game:1 vacated by the survivor", |events| {
            events
                .iter()
                .any(|e| e["type"] == "channel_vacated" && e["channel"] == "game:1")
        })
        .await;
    // Well past another lease and debounce: once, and game:2 (b is still there) not at all.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(receiver.count("channel_vacated", "game:1"), 1);
    assert_eq!(receiver.count("channel_occupied", "game:1"), 1);
    assert_eq!(receiver.count("channel_vacated", "game:2"), 0);
    assert_eq!(receiver.count("channel_occupied", "game:2"), 1);
    let listed: serde_json::Value = reqwest::get(survivor.http_url("/api/channels?prefix=game:"))
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        listed["channels"],
        json!([{"channel": "game:2", "subscribers": 1}])
    );
    assert_eq!(receiver.seen().bad_signatures, 0);
    drop(b);
    survivor.signal("TERM");
    survivor.wait();
    let _ = std::fs::remove_file(&dead);
}
