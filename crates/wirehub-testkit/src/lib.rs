//! Test support for wirehub: real servers on `127.0.0.1:0`, WebSocket test clients whose
//! every wait has a timeout, and scripted fake servers that misbehave on purpose.
//!
//! Nothing here stands in for the real server: [`TestServer`] runs `wirehub_server::run` on a
//! real socket. No fixed ports anywhere.

pub mod fake;
mod process;
mod proxy;
mod redis;
mod server;
mod tls;
mod ws;

pub use process::ServerProcess;
pub use proxy::TcpProxy;
pub use redis::RedisServer;
pub use server::TestServer;
pub use tls::tls_connect;
pub use ws::{TIMEOUT, WsClient};
