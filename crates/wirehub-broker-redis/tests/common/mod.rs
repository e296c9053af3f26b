//! Helpers shared by the Redis broker's integration tests.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use serde_json::Value;
use wirehub_protocol::HistoryQuery;
use wirehub_server::{BrokerConfig, RedisConfig, ServerConfig};
use wirehub_testkit::{TestServer, WsClient};

/// A node using Redis at `url`, keeping `history` messages per channel.
pub fn config(url: &str, history: usize) -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .publish_rate(0)
        .history_size(history)
        .broker(BrokerConfig::Redis(RedisConfig::new(url)))
}

/// `GET /api/history?channel=C&since=N&limit=10000`.
pub async fn history_http(server: &TestServer, channel: &str, since: u64) -> Value {
    server
        .history_http(&HistoryQuery {
            channel: channel.to_owned(),
            since: Some(since),
            epoch: None,
            limit: Some(HistoryQuery::MAX_LIMIT),
        })
        .await
}

/// Reads messages until offset `last`, checking that each follows the previous one; returns
/// their `data`.
pub async fn read_through(client: &mut WsClient, mut previous: u64, last: u64) -> Vec<Value> {
    let mut data = Vec::new();
    while previous < last {
        let message = client.expect("message").await;
        let offset = message["offset"].as_u64().expect("offset");
        assert_eq!(offset, previous + 1, "gap or duplicate after {previous}");
        data.push(message["data"].clone());
        previous = offset;
    }
    data
}

/// The epoch of a `subscribed` reply.
pub fn epoch(subscribed: &Value) -> String {
    subscribed["epoch"].as_str().expect("epoch").to_owned()
}

pub mod failover;
