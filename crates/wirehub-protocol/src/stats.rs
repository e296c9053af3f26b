//! The body of `GET /api/stats`: what the dashboard at `/dashboard` draws.
//!
//! The server's figures now ([`StatsReply::now`], closes by code, the broker's state) and the
//! samples it took once a second over the last minutes ([`StatsReply::samples`]), so that a
//! page opened now draws the recent past at once. Counters (`*_total`) only grow while the
//! process runs; a rate is the difference of two samples over their time difference.

use serde::{Deserialize, Serialize};

/// The query of `GET /api/stats[?since=T]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "StatsQuery")
)]
pub struct StatsQuery {
    /// Only the samples taken after this time (`time_ms` of the last sample already seen);
    /// default: every sample kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// The reply to `GET /api/stats` (HTTP 200).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(
    feature = "schema",
    derive(schemars::JsonSchema),
    schemars(title = "StatsReply")
)]
pub struct StatsReply {
    /// How long the server has been running, in milliseconds.
    pub uptime_ms: u64,
    /// Whether the node serves fully: what `GET /readyz` answers with 200.
    pub ready: bool,
    /// The broker.
    pub broker: BrokerStats,
    /// The figures at the time of this reply.
    pub now: StatsSample,
    /// Connections closed, by close code (every code the server uses, also those at 0).
    pub closes: Vec<CloseCount>,
    /// Milliseconds between two samples.
    pub interval_ms: u64,
    /// The samples taken every `interval_ms` (after `since`, when given), oldest first: at
    /// most [`StatsReply::MAX_SAMPLES`], the last minutes.
    pub samples: Vec<StatsSample>,
}

impl StatsReply {
    /// The samples the server keeps: five minutes, one a second.
    pub const MAX_SAMPLES: usize = 300;
}

/// The broker's state, as on `/readyz` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BrokerStats {
    /// `memory` or `redis`.
    pub kind: String,
    /// Whether the broker is reachable.
    pub reachable: bool,
    /// Broker subscriptions found silent and made again (`wirehub_broker_resubscribes_total`).
    pub resubscribes_total: u64,
}

/// The server's figures at one moment (the same as the `/metrics` lines of the same names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StatsSample {
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Subscriptions held on this node.
    pub subscriptions: u64,
    /// Channels with local subscribers.
    pub channels: u64,
    /// WebSocket connections accepted since start.
    pub connections_total: u64,
    /// Client messages received.
    pub messages_in_total: u64,
    /// Messages published (WebSocket and HTTP).
    pub published_total: u64,
    /// Message deliveries queued for subscribers.
    pub delivered_total: u64,
    /// Bytes written to clients.
    pub bytes_out_total: u64,
    /// Connections cut off as slow consumers (close 4100).
    pub slow_consumers_total: u64,
    /// Connections ended because a pong did not arrive.
    pub heartbeat_terminations_total: u64,
}

/// How many connections were closed with one close code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CloseCount {
    /// The close code.
    pub code: u16,
    /// Its documented meaning, one snake_case word.
    pub reason: String,
    /// Connections closed with it since start.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_round_trips_and_an_empty_query_asks_for_everything() {
        let reply = StatsReply {
            uptime_ms: 1500,
            ready: true,
            broker: BrokerStats {
                kind: "memory".to_owned(),
                reachable: true,
                resubscribes_total: 0,
            },
            now: StatsSample {
                time_ms: 10,
                connections: 2,
                ..StatsSample::default()
            },
            closes: vec![CloseCount {
                code: 1000,
                reason: "normal".to_owned(),
                count: 3,
            }],
            interval_ms: 1000,
            samples: vec![StatsSample::default()],
        };
        let json = serde_json::to_string(&reply).expect("serializes");
        let back: StatsReply = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, reply);
        let query: StatsQuery = serde_json::from_str("{}").expect("an empty query");
        assert_eq!(query.since, None);
    }
}
