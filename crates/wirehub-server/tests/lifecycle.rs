//! Connection lifecycle over real sockets: heartbeat termination and survival, graceful
//! shutdown with 1001 spread over the drain window, and clients that send garbage or stop
//! half-way through a handshake.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use wirehub_server::ServerConfig;
use wirehub_testkit::{TIMEOUT, TestServer, WsClient};

/// Opens a WebSocket by hand on a raw TCP stream and returns the stream after the 101.
async fn raw_upgrade(server: &TestServer) -> TcpStream {
    wirehub_testkit::raw_upgrade(server.addr())
        .await
        .expect("upgrade")
}

/// Reads until EOF or reset; returns how long it took.
async fn read_until_closed(stream: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout(TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the server did not close the connection within {TIMEOUT:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_terminated_and_one_that_does_survives() {
    let interval = Duration::from_millis(250);
    let server = TestServer::start(ServerConfig::new().heartbeat_interval(interval)).await;

    // A well-behaved client: tungstenite answers pings while it reads, so it keeps reading
    // in its own task until it has seen several heartbeats.
    let (mut alive, _) = WsClient::connect(&server.ws_url()).await;
    alive.subscribe("still-here").await;
    let alive = tokio::spawn(async move {
        let mut pings = 0;
        while pings < 6 {
            match alive.next_frame().await {
                Some(Message::Ping(_)) => pings += 1,
                Some(other) => panic!("unexpected frame {other:?}"),
                None => panic!("the answering client was disconnected"),
            }
        }
        alive
    });

    // A raw client that reads (so the socket never stalls) but never answers a ping.
    let mut silent = raw_upgrade(&server).await;
    let took = read_until_closed(&mut silent).await;
    assert!(
        took >= interval,
        "terminated after the first unanswered ping, not before ({took:?})"
    );

    let mut alive = alive.await.expect("the answering client saw 6 heartbeats");
    alive.send(&json!({"type": "ping", "id": 1})).await;
    alive.expect("pong").await;
    assert_eq!(
        server.metric("wirehub_heartbeat_terminations_total").await,
        1
    );
    assert_eq!(server.metric("wirehub_connections").await, 1);
}

#[tokio::test]
async fn app_level_ping_is_answered_without_waiting_for_the_heartbeat() {
    let server = TestServer::start(ServerConfig::new()).await;
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    for id in 0..3 {
        client.send(&json!({"type": "ping", "id": id})).await;
        assert_eq!(client.expect("pong").await["id"], id);
    }
}

#[tokio::test]
async fn shutdown_closes_every_client_with_1001_spread_over_the_drain_window() {
    let drain = Duration::from_millis(600);
    let server = TestServer::start(
        ServerConfig::new()
            .heartbeat_interval(Duration::from_secs(60))
            .shutdown_drain(drain),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..12 {
        let (mut client, _) = WsClient::connect(&server.ws_url()).await;
        client.subscribe("news").await;
        clients.push(client);
    }
    let started = Instant::now();
    let token = server.shutdown_token();
    token.cancel();
    let mut waits = Vec::new();
    for mut client in clients {
        waits.push(tokio::spawn(async move {
            let frame = client.expect_close().await.expect("a close frame");
            (u16::from(frame.code), Instant::now())
        }));
    }
    let mut times = Vec::new();
    for wait in waits {
        let (code, at) = wait.await.expect("client task");
        assert_eq!(code, 1001);
        times.push(at.duration_since(started));
    }
    let first = times.iter().min().copied().unwrap_or_default();
    let last = times.iter().max().copied().unwrap_or_default();
    assert!(
        last < drain + Duration::from_millis(500),
        "all closed within the window ({last:?})"
    );
    assert!(
        last - first > drain / 10,
        "closes were spread out, not sent at once ({first:?}..{last:?})"
    );
    tokio::time::timeout(TIMEOUT, server.stop())
        .await
        .expect("server stopped");
}

#[tokio::test]
async fn new_connections_are_refused_after_shutdown() {
    let server = TestServer::start(ServerConfig::new().shutdown_drain(Duration::ZERO)).await;
    let addr = server.addr();
    tokio::time::timeout(TIMEOUT, server.stop())
        .await
        .expect("stopped");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn garbage_bytes_do_not_hurt_the_server() {
    let server = TestServer::start(ServerConfig::new()).await;
    for garbage in [
        &b"\x00\x01\x02\xff\xfe garbage \r\n\r\n"[..],
        b"NOT-HTTP / WHAT/9.9\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
        stream.write_all(garbage).await.expect("write");
        // The server answers (an HTTP error) or hangs up; either way it does not stall.
        let mut reply = vec![0u8; 1024];
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut reply))
            .await
            .expect("an answer in time");
        if let Ok(read) = read {
            let text = String::from_utf8_lossy(&reply[..read]);
            assert!(read == 0 || text.starts_with("HTTP/1.1 4"), "{text}");
        }
    }
    // After the upgrade, bytes that are not WebSocket frames: a protocol error (close 1002).
    let mut upgraded = raw_upgrade(&server).await;
    upgraded.write_all(b"\x0f\x0fgarbage").await.expect("write");
    read_until_closed(&mut upgraded).await;

    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    client.send(&json!({"type": "ping"})).await;
    client.expect("pong").await;
    assert_eq!(server.metric("wirehub_connections").await, 1);
}

#[tokio::test]
async fn a_half_open_handshake_is_dropped_and_does_not_block_others() {
    let server =
        TestServer::start(ServerConfig::new().header_read_timeout(Duration::from_millis(300)))
            .await;
    let mut stalled = TcpStream::connect(server.addr()).await.expect("connect");
    stalled
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websock")
        .await
        .expect("write");
    // Others are served meanwhile.
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    client.send(&json!({"type": "ping"})).await;
    client.expect("pong").await;
    // And the stalled one is dropped once its header time is up.
    read_until_closed(&mut stalled).await;
}

#[tokio::test]
async fn a_frame_cut_in_half_does_not_block_others() {
    let server = TestServer::start(ServerConfig::new()).await;
    let mut upgraded = raw_upgrade(&server).await;
    // A masked text frame header announcing 100 bytes, then only 3 of them.
    upgraded
        .write_all(&[0x81, 0x80 | 100, 1, 2, 3, 4, b'a', b'b', b'c'])
        .await
        .expect("write");
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    client.send(&json!({"type": "ping"})).await;
    client.expect("pong").await;
    drop(upgraded);
    let mut stream = client.stream;
    stream.close(None).await.expect("close");
    while let Some(Ok(_)) = stream.next().await {}
}
