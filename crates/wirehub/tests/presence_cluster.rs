//! Issue 11: three `wirehub serve` processes on one real `redis-server`; one is killed with
//! SIGKILL while it holds members of a presence channel. Within the presence lease each of
//! its members is reaped and announced with exactly one `leave`, seen once by a subscriber on
//! each surviving node (two nodes reap, one `leave` each), and the members are no longer
//! listed.

use std::time::Duration;

use serde_json::{Value, json};
use wirehub_testkit::{RedisServer, ServerProcess, TIMEOUT, WsClient};

const BIN: &str = env!("CARGO_BIN_EXE_wirehub");
const LEASE: Duration = Duration::from_secs(1);

fn node(redis: &RedisServer, config: &std::path::Path) -> ServerProcess {
    ServerProcess::serve(
        BIN,
        &[
            "--broker",
            &redis.url(),
            "--config",
            config.to_str().expect("UTF-8 path"),
            "--redis-presence-lease",
            "1s",
            "--presence-grace",
            "300ms",
            "--heartbeat-interval",
            "60s",
        ],
    )
}

/// Subscribes and returns the client's session, after its own `join`.
async fn member(url: &str, channel: &str) -> (WsClient, String) {
    let (mut client, welcome) = WsClient::connect(url).await;
    client.subscribe(channel).await;
    let join = client.expect("join").await;
    assert_eq!(join["member"]["client"], welcome["session"], "{join}");
    (
        client,
        join["member"]["client"]
            .as_str()
            .expect("client")
            .to_owned(),
    )
}

async fn count(client: &mut WsClient, channel: &str) -> u64 {
    client
        .send(&json!({"type": "presence", "channel": channel}))
        .await;
    let reply = client.expect("presence").await;
    reply["count"].as_u64().expect("count")
}

#[tokio::test]
async fn issue_11_a_killed_nodes_members_leave_once_each_within_the_lease() {
    let redis = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("wirehub-presence-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("wirehub.toml");
    std::fs::write(
        &config,
        "[[channels]]\npattern = \"room:*\"\npresence = true\n",
    )
    .expect("write the config");
    let mut doomed = node(&redis, &config);
    let survivors = [node(&redis, &config), node(&redis, &config)];

    let channel = "room:k";
    let mut watchers = Vec::new();
    for survivor in &survivors {
        watchers.push(member(&survivor.ws_url(), channel).await.0);
    }
    // The second watcher's join reached the first.
    assert_eq!(watchers[0].expect("join").await["type"], "join");
    let mut doomed_members = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let (client, session) = member(&doomed.ws_url(), channel).await;
        doomed_members.push(session);
        held.push(client);
    }
    for watcher in &mut watchers {
        for session in &doomed_members {
            let join = watcher.expect("join").await;
            assert_eq!(&join["member"]["client"], session, "{join}");
        }
    }
    assert_eq!(count(&mut watchers[1], channel).await, 5);

    let killed_at = tokio::time::Instant::now();
    doomed.kill();
    for watcher in &mut watchers {
        let mut left: Vec<String> = Vec::new();
        while left.len() < doomed_members.len() {
            let leave = watcher.expect("leave").await;
            left.push(
                leave["member"]["client"]
                    .as_str()
                    .expect("client")
                    .to_owned(),
            );
        }
        left.sort();
        let mut expected = doomed_members.clone();
        expected.sort();
        assert_eq!(
            left, expected,
            "one leave for each member of the killed node"
        );
    }
    let took = killed_at.elapsed();
    assert!(
        took < LEASE + Duration::from_secs(3) && took < TIMEOUT,
        "reaped {took:?} after the kill; the lease is {LEASE:?}"
    );
    assert_eq!(count(&mut watchers[0], channel).await, 2);
    // Both survivors reap every second: after another lease, no second leave has come. This
    // waits for something not to happen, so it waits a bounded time.
    tokio::time::sleep(LEASE + Duration::from_millis(500)).await;
    let publisher = &survivors[0];
    let response = reqwest::Client::new()
        .post(publisher.http_url("/api/publish"))
        .json(&json!({"channel": channel, "data": "marker"}))
        .send()
        .await
        .expect("publish");
    assert!(response.status().is_success());
    for watcher in &mut watchers {
        let next: Value = watcher.recv().await;
        assert_eq!(
            next["type"], "message",
            "no duplicate leave came first: {next}"
        );
        assert_eq!(next["data"], "marker");
    }
    drop(held);
    let _ = std::fs::remove_dir_all(&dir);
}
