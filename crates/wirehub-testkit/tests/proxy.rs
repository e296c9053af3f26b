//! `TcpProxy` in front of the real server: a cut is an outage (open connections end, new ones
//! are refused until `restore`), a reset is a blip (open connections end, new ones go through).

use std::time::Duration;

use wirehub_server::ServerConfig;
use wirehub_testkit::{TcpProxy, TestServer, WsClient};

fn config() -> ServerConfig {
    ServerConfig::new().heartbeat_interval(Duration::from_secs(60))
}

/// Whether a WebSocket upgrade through `url` succeeds.
async fn can_connect(url: &str) -> bool {
    tokio::time::timeout(
        wirehub_testkit::TIMEOUT,
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("the attempt ends in time")
    .is_ok()
}

#[tokio::test]
async fn a_cut_refuses_until_restored_and_a_reset_does_not() {
    let server = TestServer::start(config()).await;
    let proxy = TcpProxy::start(server.addr()).await;

    let (mut client, welcome) = WsClient::connect(&proxy.ws_url()).await;
    assert_eq!(welcome["type"], "welcome");
    proxy.cut();
    assert!(
        client.expect_close().await.is_none(),
        "cut: no close handshake"
    );
    assert!(!can_connect(&proxy.ws_url()).await, "cut: refused");
    proxy.restore();

    let (mut client, _) = WsClient::connect(&proxy.ws_url()).await;
    proxy.reset();
    assert!(
        client.expect_close().await.is_none(),
        "reset: no close handshake"
    );
    let (mut client, _) = WsClient::connect(&proxy.ws_url()).await;
    client.subscribe("still-up").await;
    assert_eq!(proxy.connections(), 3, "the refused attempt is not counted");
}
