//! Redis Sentinel (issue 15): nodes find the master through the sentinels and follow it
//! across a failover, keeping every WebSocket connection; each subscription recovers from
//! the history or gets a `gap`, and a failover that lost publications the nodes had
//! delivered (asynchronous replication) moves the stream to a new epoch instead of handing
//! those offsets out again.

mod common;

use serde_json::json;
use wirehub_testkit::{RedisSentinels, TestServer, WsClient};

use common::failover::{Publisher, Subscriber, check_no_silent_loss, fast, position};

const CHANNELS: usize = 4;

fn channel(n: usize) -> String {
    format!("sentinel:{n}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_sentinel_master_killed_under_traffic_nodes_follow_the_new_master() {
    let mut redis = RedisSentinels::start();
    let a = TestServer::start(fast(&redis.url(), 1000)).await;
    let b = TestServer::start(fast(&redis.url(), 1000)).await;
    let names: Vec<String> = (0..CHANNELS).map(channel).collect();
    let mut subscribers = Vec::new();
    for name in &names {
        for node in [&a, &b] {
            subscribers.push(Subscriber::new(node, name).await);
        }
    }
    let publisher = Publisher::start(&b, names.clone());
    publisher.wait_acked(100).await;

    let old = redis.kill_master();
    let new = redis.wait_failover(old);
    publisher.wait_acked(200).await;
    publisher.stop().await;
    // The nodes write to the new master.
    let top = redis.command(new, &["GET", &format!("wirehub:{{{}}}:offset", names[0])]);
    assert_ne!(top, "(nil)");

    check_no_silent_loss(&a, &mut subscribers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_sentinel_failover_that_lost_publications_moves_to_a_new_epoch() {
    let mut redis = RedisSentinels::start();
    let a = TestServer::start(fast(&redis.url(), 1000)).await;
    let b = TestServer::start(fast(&redis.url(), 1000)).await;
    let name = channel(0);
    let mut subscribers = vec![
        Subscriber::new(&a, &name).await,
        Subscriber::new(&b, &name).await,
    ];
    let (mut publisher, _) = WsClient::connect(&b.ws_url()).await;
    for n in 0..3 {
        publisher.publish(&name, json!({"before": n})).await;
    }
    let old_epoch = subscribers[0].epoch.clone();
    for subscriber in &mut subscribers {
        subscriber.read_until(&old_epoch, 3).await;
    }

    // Publications that reach the subscribers but never the replica: the replica is paused,
    // and a large write ahead of them fills the sockets between master and replica, so they
    // wait in the master's memory when it dies.
    let master = redis.master();
    let paused = redis.pause_replica();
    let junk = "x".repeat(64 << 20);
    assert_eq!(redis.command(master, &["SET", "junk", &junk]), "OK");
    for n in 0..2 {
        publisher.publish(&name, json!({"lost": n})).await;
    }
    for subscriber in &mut subscribers {
        subscriber.read_until(&old_epoch, 5).await;
    }
    let old = redis.kill_master();
    paused.resume();
    let new = redis.wait_failover(old);
    let kept = redis.command(new, &["GET", &format!("wirehub:{{{name}}}:offset")]);
    assert_eq!(
        kept, "3",
        "the promoted replica lacks the last two publications"
    );

    // The stream moves to a new epoch; each subscription gets a gap and goes on there.
    let (epoch, top) = {
        let deadline = tokio::time::Instant::now() + wirehub_testkit::TIMEOUT;
        loop {
            let (epoch, top) = position(&a, &name).await;
            if epoch != old_epoch {
                break (epoch, top);
            }
            assert!(tokio::time::Instant::now() < deadline, "no new epoch");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert_eq!(top, 3);
    for subscriber in &mut subscribers {
        subscriber.read_until(&epoch, 3).await;
        assert_eq!(subscriber.gaps, 1, "one gap");
    }
    let mut after = 0;
    for n in 0..3 {
        after = publisher.publish(&name, json!({"after": n})).await;
    }
    assert_eq!(after, 6);
    check_no_silent_loss(&a, &mut subscribers).await;

    // A client that had the lost publications cannot recover as if nothing happened.
    let (mut late, _) = WsClient::connect(&a.ws_url()).await;
    let subscribed = late.subscribe_since(&name, &old_epoch, 5).await;
    assert_eq!(subscribed["recovered"], false, "{subscribed}");
    assert_eq!(subscribed["epoch"], epoch.as_str());
}
