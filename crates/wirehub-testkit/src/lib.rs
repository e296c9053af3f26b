//! Test support for wirehub: real servers on `127.0.0.1:0` (in the test's process or as the
//! built binary), WebSocket test clients whose every wait has a timeout, a cuttable TCP
//! proxy, real `redis-server`s, a webhook receiver that checks signatures and fails on
//! purpose, tokens, the fixtures (`fixtures/` beside this crate), and
//! scripted fake servers that misbehave on purpose. Every crate's tests use these, so that
//! each helper exists once.
//!
//! Nothing here stands in for the real server: [`TestServer`] runs `wirehub_server::run` on a
//! real socket. No fixed ports anywhere.

mod events;
pub mod fake;
mod fixtures;
mod process;
mod proxy;
mod raw;
mod redis;
mod redis_topology;
mod schema;
mod server;
mod tls;
mod token;
mod webhooks;
mod ws;

pub use events::{client_config, wait_for};
pub use fixtures::{fixture, read_fixture};
pub use process::{ChildProcess, ServerProcess};
pub use proxy::TcpProxy;
pub use raw::{raw_upgrade, send_upgrade_request, upgrade_reply};
pub use redis::{Paused, RedisServer};
pub use redis_topology::{FAILOVER_TIMEOUT, RedisCluster, RedisSentinels, SENTINEL_MASTER};
pub use schema::{assert_schema, matches_schema};
pub use server::TestServer;
pub use tls::tls_connect;
pub use token::{Algorithm, Claims, hs256_token, signed_token, unix_now};
pub use webhooks::{Seen, WebhookReceiver, expected_signature};
pub use ws::{TIMEOUT, WsClient};
