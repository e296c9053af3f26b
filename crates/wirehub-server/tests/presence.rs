//! Issue 11, presence over real sockets: members of `presence = true` channels listed by the
//! `presence` request and `GET /api/presence`, `join`/`leave` to subscribers, permissions,
//! the bounded list, the leave after an abrupt disconnect (a TCP reset) once the grace ends,
//! and no leave/join when the same user comes back within the grace. Each scenario runs on
//! one memory-broker node and on two nodes sharing a real `redis-server` (clients spread over
//! both nodes).

use std::time::Duration;

use serde_json::{Value, json};
use wirehub_server::{
    AuthConfig, BrokerConfig, ChannelOptions, ChannelRules, RedisConfig, ServerConfig,
};
use wirehub_testkit::{RedisServer, TcpProxy, TestServer, WsClient, hs256_token, unix_now};

const SECRET: &str = "a-test-secret-of-some-length";
const GRACE: Duration = Duration::from_millis(400);

fn config(broker: BrokerConfig) -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .auth(Some(AuthConfig::Secret(SECRET.into())))
        .channels(ChannelRules::new(vec![
            ChannelOptions::new("room:*").presence(true),
        ]))
        .presence_grace(GRACE)
        .presence_max_members(3)
        .broker(broker)
}

fn redis_broker(redis: &RedisServer) -> BrokerConfig {
    BrokerConfig::Redis(
        RedisConfig::new(redis.url())
            .timeout(Duration::from_secs(2))
            .presence_lease(Duration::from_secs(2)),
    )
}

/// One memory node, or two nodes on one Redis.
struct Cluster {
    nodes: Vec<TestServer>,
    _redis: Option<RedisServer>,
}

impl Cluster {
    async fn memory() -> Cluster {
        Cluster {
            nodes: vec![TestServer::start(config(BrokerConfig::Memory)).await],
            _redis: None,
        }
    }

    async fn redis() -> Cluster {
        let redis = RedisServer::start();
        let mut nodes = Vec::new();
        for _ in 0..2 {
            nodes.push(TestServer::start(config(redis_broker(&redis))).await);
        }
        Cluster {
            nodes,
            _redis: Some(redis),
        }
    }

    /// The node for the `n`th client: clients alternate between nodes.
    fn node(&self, n: usize) -> &TestServer {
        &self.nodes[n % self.nodes.len()]
    }
}

fn token(user: &str, subscribe: &[&str], info: Option<Value>) -> String {
    let mut claims = json!({"sub": user, "exp": unix_now() + 3600, "subscribe": subscribe});
    if let Some(info) = info {
        claims["info"] = info;
    }
    hs256_token(SECRET, &claims)
}

/// Connects as `user` (allowed `room:*`) through `url`; returns the client and its session.
async fn connect(url: &str, user: &str) -> (WsClient, String) {
    let info = json!({"name": user.to_uppercase()});
    let url = format!("{url}?token={}", token(user, &["room:*"], Some(info)));
    let (client, welcome) = WsClient::connect(&url).await;
    let session = welcome["session"].as_str().expect("session").to_owned();
    (client, session)
}

/// Subscribes and reads the `subscribed` reply and the client's own `join`.
async fn join(client: &mut WsClient, channel: &str, session: &str) {
    client.subscribe(channel).await;
    let join = client.expect("join").await;
    assert_eq!(join["member"]["client"], session, "{join}");
}

async fn presence(client: &mut WsClient, channel: &str) -> Value {
    client
        .send(&json!({"type": "presence", "channel": channel, "id": 9}))
        .await;
    // Joins of others may come first.
    loop {
        let reply = client.recv().await;
        if reply["type"] != "join" {
            assert_eq!(reply["id"], 9, "{reply}");
            return reply;
        }
    }
}

/// The users listed in a presence reply, sorted.
fn users(reply: &Value) -> Vec<String> {
    let mut users: Vec<String> = reply["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| m["user"].as_str().expect("user").to_owned())
        .collect();
    users.sort();
    users
}

async fn members_listed_join_and_leave(cluster: &Cluster) {
    let (mut ann, ann_id) = connect(&cluster.node(0).ws_url(), "ann").await;
    join(&mut ann, "room:1", &ann_id).await;
    let (mut bob, bob_id) = connect(&cluster.node(1).ws_url(), "bob").await;
    join(&mut bob, "room:1", &bob_id).await;
    let joined = ann.expect("join").await;
    assert_eq!(
        joined,
        json!({"type": "join", "channel": "room:1",
               "member": {"client": bob_id, "user": "bob", "info": {"name": "BOB"}}})
    );
    // Listed from either node, by the request and by the HTTP API.
    for client in [&mut ann, &mut bob] {
        let reply = presence(client, "room:1").await;
        assert_eq!(reply["type"], "presence", "{reply}");
        assert_eq!(reply["count"], 2);
        assert_eq!(users(&reply), ["ann", "bob"]);
        assert!(reply.get("truncated").is_none(), "{reply}");
    }
    for node in &cluster.nodes {
        let body: Value = reqwest::get(node.http_url("/api/presence?channel=room:1"))
            .await
            .expect("GET /api/presence")
            .json()
            .await
            .expect("JSON");
        assert_eq!(
            (body["count"].clone(), users(&body)),
            (json!(2), vec!["ann".to_owned(), "bob".to_owned()])
        );
    }
    // An unsubscribe is a leave at once, seen on the other node.
    bob.send(&json!({"type": "unsubscribe", "channel": "room:1"}))
        .await;
    bob.expect("unsubscribed").await;
    let left = ann.expect("leave").await;
    assert_eq!(left["member"]["client"], bob_id, "{left}");
    assert_eq!(presence(&mut ann, "room:1").await["count"], 1);
    // A client's close frame is a leave at once too.
    join(&mut bob, "room:1", &bob_id).await;
    ann.expect("join").await;
    bob.stream.close(None).await.expect("close");
    let left = ann.expect("leave").await;
    assert_eq!(left["member"]["user"], "bob", "{left}");
}

#[tokio::test]
async fn issue_11_members_are_listed_and_join_and_leave_on_memory() {
    members_listed_join_and_leave(&Cluster::memory().await).await;
}

#[tokio::test]
async fn issue_11_members_are_listed_from_either_node_and_join_and_leave_on_redis() {
    members_listed_join_and_leave(&Cluster::redis().await).await;
}

async fn limits_and_permissions(cluster: &Cluster) {
    let mut clients = Vec::new();
    for n in 0..5 {
        let (mut client, session) = connect(&cluster.node(n).ws_url(), &format!("u{n}")).await;
        join(&mut client, "room:big", &session).await;
        clients.push(client);
    }
    let reply = presence(&mut clients[0], "room:big").await;
    assert_eq!(reply["count"], 5, "{reply}");
    assert_eq!(reply["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(reply["truncated"], true);
    // A channel without presence.
    let reply = presence(&mut clients[0], "chat").await;
    assert_eq!(reply["code"], "presence_disabled", "{reply}");
    let response = reqwest::get(cluster.node(0).http_url("/api/presence?channel=chat"))
        .await
        .expect("GET");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "presence_disabled");
    // A token that may not subscribe may not read the members either.
    let url = format!(
        "{}?token={}",
        cluster.node(1).ws_url(),
        token("eve", &["chat"], None)
    );
    let (mut eve, _) = WsClient::connect(&url).await;
    let reply = presence(&mut eve, "room:big").await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
}

#[tokio::test]
async fn issue_11_the_list_is_bounded_and_needs_the_subscribe_permission_on_memory() {
    limits_and_permissions(&Cluster::memory().await).await;
}

#[tokio::test]
async fn issue_11_the_list_is_bounded_and_needs_the_subscribe_permission_on_redis() {
    limits_and_permissions(&Cluster::redis().await).await;
}

async fn grace(cluster: &Cluster) {
    let (mut ann, ann_id) = connect(&cluster.node(0).ws_url(), "ann").await;
    join(&mut ann, "room:g", &ann_id).await;
    // Bob and Carol connect through proxies whose connections the test resets.
    let bob_proxy = TcpProxy::start(cluster.node(1).addr()).await;
    let (mut bob, bob_id) = connect(&bob_proxy.ws_url(), "bob").await;
    join(&mut bob, "room:g", &bob_id).await;
    assert_eq!(ann.expect("join").await["member"]["user"], "bob");
    let carol_proxy = TcpProxy::start(cluster.node(1).addr()).await;
    let (mut carol, carol_id) = connect(&carol_proxy.ws_url(), "carol").await;
    join(&mut carol, "room:g", &carol_id).await;
    assert_eq!(ann.expect("join").await["member"]["user"], "carol");

    // Both links reset (no close frame): they stay listed during the grace.
    bob_proxy.reset();
    carol_proxy.reset();
    drop((bob, carol));
    // Once their node has seen both links go (a member is taken over only in its grace; a
    // reconnect faster than the server can notice the loss is a second connection), Bob
    // comes back at once, to the other node: he continues his member, no leave/join.
    let left_on_node = if cluster.nodes.len() == 1 { 1 } else { 0 }; // Ann's, on one node
    cluster
        .node(1)
        .wait_for_metric("wirehub_connections", left_on_node)
        .await;
    let (mut bob, bob_again) = connect(&cluster.node(0).ws_url(), "bob").await;
    bob.subscribe("room:g").await;
    let reply = presence(&mut bob, "room:g").await;
    assert_eq!(reply["count"], 3, "{reply}");
    // Carol does not come back: her leave comes once her grace has passed (bob's too, which
    // began first), and it is the only presence message Ann gets.
    let left = ann.expect("leave").await;
    assert_eq!(left["member"]["client"], carol_id, "{left}");
    let reply = presence(&mut ann, "room:g").await;
    assert_eq!(users(&reply), ["ann", "bob"], "{reply}");
    let listed_bob = reply["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["user"] == "bob"))
        .expect("bob listed");
    assert_eq!(
        listed_bob["client"], bob_id,
        "bob continues his first member"
    );
    assert_ne!(bob_again, bob_id);
    // When the continued member leaves for good, its leave names the member as listed.
    bob.stream.close(None).await.expect("close");
    let left = ann.expect("leave").await;
    assert_eq!(left["member"]["client"], bob_id, "{left}");
}

#[tokio::test]
async fn issue_11_an_abrupt_disconnect_leaves_after_the_grace_and_a_quick_reconnect_does_not_on_memory()
 {
    grace(&Cluster::memory().await).await;
}

#[tokio::test]
async fn issue_11_an_abrupt_disconnect_leaves_after_the_grace_and_a_quick_reconnect_does_not_on_redis()
 {
    grace(&Cluster::redis().await).await;
}
