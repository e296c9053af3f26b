//! Presence on a Redis Cluster (three masters, three replicas): two nodes list the same
//! members of a channel, whose presence keys live on the channel's shard, and every `leave`
//! (an unsubscribe at once, a lost link after the grace, reaped by both nodes' sweeps) reaches
//! a watcher on each node exactly once, through sharded pub/sub.

use std::time::Duration;

use serde_json::{Value, json};
use wirehub_server::{BrokerConfig, ChannelOptions, ChannelRules, RedisConfig, ServerConfig};
use wirehub_testkit::{RedisCluster, TcpProxy, TestServer, WsClient};

const GRACE: Duration = Duration::from_millis(300);
const CHANNEL: &str = "room:c";

fn config(url: &str) -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .channels(ChannelRules::new(vec![
            ChannelOptions::new("room:*").presence(true),
        ]))
        .presence_grace(GRACE)
        .broker(BrokerConfig::Redis(
            RedisConfig::new(url)
                .timeout(Duration::from_secs(2))
                .presence_lease(Duration::from_secs(2)),
        ))
}

/// Connects through `url`, subscribes and reads the client's own `join`; returns the client
/// and its member's `client`.
async fn member(url: &str) -> (WsClient, String) {
    let (mut client, welcome) = WsClient::connect(url).await;
    client.subscribe(CHANNEL).await;
    let join = client.expect("join").await;
    assert_eq!(join["member"]["client"], welcome["session"], "{join}");
    let session = welcome["session"].as_str().expect("session").to_owned();
    (client, session)
}

/// The next frame must be a `kind` (`join`/`leave`) of `client`.
async fn expect_member(watcher: &mut WsClient, kind: &str, client: &str) {
    let event = watcher.expect(kind).await;
    assert_eq!(event["member"]["client"], client, "{event}");
}

/// The listed members' clients, sorted, and the count.
fn listed(reply: &Value) -> (u64, Vec<String>) {
    let mut clients: Vec<String> = reply["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["client"].as_str().expect("client").to_owned())
        .collect();
    clients.sort();
    (reply["count"].as_u64().expect("count"), clients)
}

async fn presence(watcher: &mut WsClient) -> (u64, Vec<String>) {
    watcher
        .send(&json!({"type": "presence", "channel": CHANNEL, "id": 5}))
        .await;
    listed(&watcher.expect("presence").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_two_nodes_on_a_redis_cluster_list_the_same_members_and_each_leave_arrives_once() {
    let cluster = RedisCluster::start();
    let nodes = [
        TestServer::start(config(&cluster.url())).await,
        TestServer::start(config(&cluster.url())).await,
    ];
    let (mut watch_a, id_a) = member(&nodes[0].ws_url()).await;
    let (mut watch_b, id_b) = member(&nodes[1].ws_url()).await;
    expect_member(&mut watch_a, "join", &id_b).await;
    // One member on node A that will unsubscribe, one on node B behind a link that breaks.
    let (mut quitter, id_quit) = member(&nodes[0].ws_url()).await;
    let proxy = TcpProxy::start(nodes[1].addr()).await;
    let (lost, id_lost) = member(&proxy.ws_url()).await;
    expect_member(&mut quitter, "join", &id_lost).await;
    for watcher in [&mut watch_a, &mut watch_b] {
        expect_member(watcher, "join", &id_quit).await;
        expect_member(watcher, "join", &id_lost).await;
    }

    // Both nodes, by request and over HTTP, list the same four members.
    let mut all = vec![id_a.clone(), id_b.clone(), id_quit.clone(), id_lost.clone()];
    all.sort();
    let expected = (4, all);
    assert_eq!(presence(&mut watch_a).await, expected);
    assert_eq!(presence(&mut watch_b).await, expected);
    for node in &nodes {
        let body: Value = reqwest::get(node.http_url(&format!("/api/presence?channel={CHANNEL}")))
            .await
            .expect("GET /api/presence")
            .json()
            .await
            .expect("JSON");
        assert_eq!(listed(&body), expected, "{body}");
    }
    // The members are kept on the channel's shard, and announced by sharded pub/sub only.
    let members_key = format!("wirehub:{{{CHANNEL}}}:members");
    let owner = cluster.master_of(&members_key);
    assert_eq!(cluster.command(owner, &["ZCARD", &members_key]), "4");
    for master in cluster.masters() {
        let broadcast = cluster.command(master, &["PUBSUB", "CHANNELS", "wirehub:{room*"]);
        assert_eq!(broadcast, "", "no presence channel on classic pub/sub");
    }

    // An unsubscribe: one leave at once, on both nodes.
    quitter
        .send(&json!({"type": "unsubscribe", "channel": CHANNEL}))
        .await;
    quitter.expect("unsubscribed").await;
    for watcher in [&mut watch_a, &mut watch_b] {
        expect_member(watcher, "leave", &id_quit).await;
    }
    // A lost link: the member stays for the grace, then both nodes' sweeps try to reap it
    // and exactly one does: one leave on each node.
    proxy.reset();
    drop(lost);
    for watcher in [&mut watch_a, &mut watch_b] {
        expect_member(watcher, "leave", &id_lost).await;
    }
    // Waiting for something not to happen: several sweeps of both nodes (every grace / 4),
    // then a marker must be the next frame on each watcher, not a second leave.
    tokio::time::sleep(GRACE * 4).await;
    let response = reqwest::Client::new()
        .post(nodes[0].http_url("/api/publish"))
        .json(&json!({"channel": CHANNEL, "data": "marker"}))
        .send()
        .await
        .expect("publish");
    assert!(response.status().is_success(), "{response:?}");
    for watcher in [&mut watch_a, &mut watch_b] {
        let next = watcher.recv().await;
        assert_eq!(
            (next["type"].as_str(), next["data"].as_str()),
            (Some("message"), Some("marker")),
            "no second leave: {next}"
        );
    }
    let mut left = vec![id_a, id_b];
    left.sort();
    assert_eq!(presence(&mut watch_a).await, (2, left.clone()));
    assert_eq!(presence(&mut watch_b).await, (2, left));
    assert_eq!(cluster.command(owner, &["ZCARD", &members_key]), "2");
}
