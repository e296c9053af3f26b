//! Redis Cluster (issue 15): nodes on a real local cluster (three masters, three replicas)
//! share channels through sharded pub/sub, a channel's keys and publications stay on its
//! shard, and a master killed under traffic loses no message silently.

mod common;

use serde_json::json;
use wirehub_testkit::{RedisCluster, TestServer, WsClient};

use common::failover::{Publisher, Subscriber, check_no_silent_loss, fast};

/// Enough channels to land on every shard.
const CHANNELS: usize = 12;

fn channel(n: usize) -> String {
    format!("shard:{n}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_cluster_nodes_share_channels_through_sharded_pubsub() {
    let cluster = RedisCluster::start();
    let a = TestServer::start(fast(&cluster.url(), 100)).await;
    let b = TestServer::start(fast(&cluster.url(), 100)).await;
    let mut subscribers = Vec::new();
    for n in 0..CHANNELS {
        subscribers.push(Subscriber::new(&a, &channel(n)).await);
    }
    let (mut publisher, _) = WsClient::connect(&b.ws_url()).await;
    for round in 0..3 {
        for n in 0..CHANNELS {
            let offset = publisher
                .publish(&channel(n), json!({"round": round}))
                .await;
            assert_eq!(offset, round + 1);
        }
    }
    for subscriber in &mut subscribers {
        let epoch = subscriber.epoch.clone();
        subscriber.read_until(&epoch, 3).await;
        assert_eq!(subscriber.gaps, 0);
    }

    // Each channel's keys and its sharded subscription live on the master of its slot, and
    // nothing uses the cluster-wide (broadcast) pub/sub.
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let mut shards_used = std::collections::HashSet::new();
    for n in 0..CHANNELS {
        let name = channel(n);
        let owner = cluster.master_of(&format!("wirehub:{{{name}}}:epoch"));
        shards_used.insert(owner);
        let messages = format!("wirehub:{{{name}}}:messages");
        for master in &masters {
            let here = cluster.command(*master, &["PUBSUB", "SHARDCHANNELS", &messages]);
            let history =
                cluster.command(*master, &["EXISTS", &format!("wirehub:{{{name}}}:history")]);
            if *master == owner {
                assert_eq!(here, messages, "{name}: subscribed on its shard");
                assert_eq!(history, "1", "{name}: history on its shard");
            } else {
                assert_eq!(here, "", "{name}: not subscribed on {master}");
                assert!(history.starts_with("MOVED"), "{name}: {history}");
            }
        }
    }
    assert_eq!(shards_used.len(), 3, "the channels spread over every shard");
    for master in &masters {
        let broadcast = cluster.command(*master, &["PUBSUB", "CHANNELS", "wirehub:*"]);
        assert!(
            !broadcast.contains("messages"),
            "no channel on classic pub/sub: {broadcast}"
        );
    }

    // A client that reconnects to the other node recovers from the channel's shard.
    let (mut late, _) = WsClient::connect(&b.ws_url()).await;
    let epoch = subscribers[0].epoch.clone();
    let recovered = late.subscribe_since(&channel(0), &epoch, 1).await;
    assert_eq!(recovered["recovered"], true, "{recovered}");
    for offset in [2, 3] {
        assert_eq!(late.expect("message").await["offset"], offset);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_cluster_master_killed_under_traffic_recovers_or_sends_gaps() {
    let mut cluster = RedisCluster::start();
    let a = TestServer::start(fast(&cluster.url(), 1000)).await;
    let b = TestServer::start(fast(&cluster.url(), 1000)).await;
    let names: Vec<String> = (0..CHANNELS).map(channel).collect();
    let mut subscribers = Vec::new();
    for name in &names {
        for node in [&a, &b] {
            subscribers.push(Subscriber::new(node, name).await);
        }
    }
    let publisher = Publisher::start(&b, names.clone());
    publisher.wait_acked(100).await;

    let victim = cluster.master_of(&format!("wirehub:{{{}}}:epoch", names[0]));
    cluster.kill(victim);
    cluster.wait_ok();
    assert!(!cluster.masters().contains(&victim));
    // Traffic reaches every shard again, including the one that failed over.
    publisher.wait_acked(200).await;
    publisher.stop().await;

    let gaps = check_no_silent_loss(&a, &mut subscribers).await;
    println!("gaps after the failover: {gaps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_cluster_slot_moved_to_another_shard_keeps_delivering() {
    let cluster = RedisCluster::start();
    let a = TestServer::start(fast(&cluster.url(), 100)).await;
    let b = TestServer::start(fast(&cluster.url(), 100)).await;
    let name = channel(0);
    let mut subscribers = vec![
        Subscriber::new(&a, &name).await,
        Subscriber::new(&b, &name).await,
    ];
    let (mut publisher, _) = WsClient::connect(&b.ws_url()).await;
    for n in 0..3 {
        publisher.publish(&name, json!({"before": n})).await;
    }
    let epoch = subscribers[0].epoch.clone();
    for subscriber in &mut subscribers {
        subscriber.read_until(&epoch, 3).await;
    }

    let key = format!("wirehub:{{{name}}}:epoch");
    let from = cluster.master_of(&key);
    let to = cluster
        .masters()
        .into_iter()
        .find(|master| *master != from)
        .expect("another master");
    cluster.move_slot(&key, to);
    assert_eq!(cluster.master_of(&key), to);
    // The nodes follow: publishes go to the new owner, subscriptions move there.
    let messages = format!("wirehub:{{{name}}}:messages");
    let deadline = tokio::time::Instant::now() + wirehub_testkit::TIMEOUT;
    while cluster.command(to, &["PUBSUB", "SHARDNUMSUB", &messages]) != format!("{messages}\n2") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not subscribed on the new shard"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for n in 0..3 {
        publisher.publish(&name, json!({"after": n})).await;
    }
    for subscriber in &mut subscribers {
        subscriber.read_until(&epoch, 6).await;
        assert_eq!(
            subscriber.gaps, 0,
            "the history on the new shard covers the move"
        );
    }
    check_no_silent_loss(&a, &mut subscribers).await;
}
