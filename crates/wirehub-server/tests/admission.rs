//! Admission control at the upgrade against the real server: `--max-connections` under a
//! concurrent burst, the per-address cap (429), the connection rate (503), the browsers'
//! refusal (close 4103 with a retry hint) and the drain's 1001 with a hint.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use wirehub_protocol::{RetryWindow, parse_retry_hint};
use wirehub_server::{AdmissionConfig, ServerConfig};
use wirehub_testkit::{TestServer, WsClient, send_upgrade_request};

const WAIT: Duration = Duration::from_secs(10);

/// What a refused (or accepted) upgrade answered, read off a raw socket.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<u64>,
    body: Value,
    /// The stream after a 101, held so that the connection stays open until dropped.
    _stream: Option<TcpStream>,
}

/// Sends an upgrade request for `/ws` with `extra` header lines and reads the answer (for a
/// refusal, its whole body by `Content-Length`).
async fn upgrade(addr: SocketAddr, extra: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    send_upgrade_request(&mut stream, extra).await;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert_ne!(read, 0, "the server closed before answering");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).expect("an ASCII head");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    if status == 101 {
        return Reply {
            status,
            retry_after: None,
            body: Value::Null,
            _stream: Some(stream),
        };
    }
    let length: usize = header("content-length")
        .and_then(|value| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(WAIT, stream.read_exact(&mut body))
        .await
        .expect("the body in time")
        .expect("read the body");
    Reply {
        status,
        retry_after: header("retry-after").and_then(|value| value.parse().ok()),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        _stream: None,
    }
}

/// Checks a refusal: status, `Retry-After` in `retry_after` (seconds), and the JSON body
/// naming the limit and a window that starts at most `Retry-After` after now and lasts a
/// second.
#[track_caller]
fn assert_refused(
    reply: &Reply,
    status: u16,
    limit: &str,
    retry_after: std::ops::RangeInclusive<u64>,
) {
    assert_eq!(reply.status, status, "{reply:?}");
    let seconds = reply.retry_after.expect("a Retry-After header");
    assert!(retry_after.contains(&seconds), "Retry-After {seconds}");
    let error = &reply.body["error"];
    assert_eq!(error["code"], "overloaded", "{reply:?}");
    assert_eq!(error["reason"], limit, "{reply:?}");
    assert_eq!(error["retry_after"], seconds, "{reply:?}");
    assert!(error["message"].is_string(), "{reply:?}");
    let min = error["retry_ms"][0].as_u64().expect("retry_ms[0]");
    let max = error["retry_ms"][1].as_u64().expect("retry_ms[1]");
    assert_eq!(max, min + 1000, "{reply:?}");
    assert!(
        min <= seconds * 1000 && min + 1000 > (seconds - 1) * 1000,
        "{reply:?}"
    );
}

#[tokio::test]
async fn issue_14_a_concurrent_burst_against_max_connections_admits_exactly_the_limit() {
    const MAX: usize = 20;
    const BURST: usize = 300;
    let server = TestServer::start(ServerConfig::new().max_connections(MAX)).await;
    let addr = server.addr();
    let replies = join_all((0..BURST).map(|_| upgrade(addr, ""))).await;
    let accepted = replies.iter().filter(|reply| reply.status == 101).count();
    assert_eq!(accepted, MAX, "upgrades accepted out of {BURST}");
    for reply in replies.iter().filter(|reply| reply.status != 101) {
        // retry_after 5 s: a random point of [5 s, 10 s).
        assert_refused(reply, 503, "max_connections", 5..=10);
    }
    assert_eq!(server.metric("wirehub_connections").await, MAX as u64);
    assert_eq!(
        server
            .metric("wirehub_admission_refused_total{reason=\"max_connections\"}")
            .await,
        (BURST - MAX) as u64
    );
    assert_eq!(
        server.metric("wirehub_upgrades_refused_total").await,
        (BURST - MAX) as u64
    );
    drop(replies);
    server.wait_for_metric("wirehub_connections", 0).await;
}

#[tokio::test]
async fn issue_14_the_per_address_cap_answers_429_with_retry_after() {
    let server = TestServer::start(
        ServerConfig::new().admission(
            AdmissionConfig::new()
                .max_connections_per_ip(2)
                .retry_after(Duration::from_secs(1)),
        ),
    )
    .await;
    let addr = server.addr();
    let first = upgrade(addr, "").await;
    let second = upgrade(addr, "").await;
    assert_eq!((first.status, second.status), (101, 101));
    let third = upgrade(addr, "").await;
    // retry_after 1 s: a random point of [1 s, 2 s), rounded up.
    assert_refused(&third, 429, "per_ip", 1..=2);
    assert_eq!(
        server
            .metric("wirehub_admission_refused_total{reason=\"per_ip\"}")
            .await,
        1
    );
    // A place is given back when its connection ends.
    drop(first);
    server.wait_for_metric("wirehub_connections", 1).await;
    assert_eq!(upgrade(addr, "").await.status, 101);
}

#[tokio::test]
async fn issue_14_behind_a_trusted_proxy_the_forwarded_address_is_counted() {
    let server = TestServer::start(
        ServerConfig::new().admission(
            AdmissionConfig::new()
                .max_connections_per_ip(1)
                .trusted_proxies(vec!["127.0.0.0/8".parse().expect("a block")]),
        ),
    )
    .await;
    let addr = server.addr();
    let a = upgrade(addr, "X-Forwarded-For: 203.0.113.1\r\n").await;
    let b = upgrade(addr, "X-Forwarded-For: 203.0.113.2\r\n").await;
    assert_eq!(
        (a.status, b.status),
        (101, 101),
        "two clients behind one proxy"
    );
    let again = upgrade(addr, "X-Forwarded-For: 198.51.100.9, 203.0.113.1\r\n").await;
    assert_refused(&again, 429, "per_ip", 5..=10);
}

#[tokio::test]
async fn issue_14_the_connection_rate_answers_503_with_the_next_appointment() {
    let server =
        TestServer::start(ServerConfig::new().admission(AdmissionConfig::new().connect_rate(5, 2)))
            .await;
    let addr = server.addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let reply = upgrade(addr, "").await;
        assert_eq!(reply.status, 101);
        held.push(reply);
    }
    // The burst is spent: each refusal gets the next appointment, 200 ms apart.
    let mut mins = Vec::new();
    for _ in 0..4 {
        let reply = upgrade(addr, "").await;
        assert_refused(&reply, 503, "connect_rate", 1..=2);
        mins.push(
            reply.body["error"]["retry_ms"][0]
                .as_u64()
                .expect("retry_ms"),
        );
    }
    for pair in mins.windows(2) {
        let step = pair[1].saturating_sub(pair[0]);
        assert!((150..=250).contains(&step), "appointments {mins:?}");
    }
    assert_eq!(
        server
            .metric("wirehub_admission_refused_total{reason=\"connect_rate\"}")
            .await,
        4
    );
    // Coming back at the time told: admitted.
    tokio::time::sleep(Duration::from_millis(mins[0])).await;
    assert_eq!(upgrade(addr, "").await.status, 101);
}

#[tokio::test]
async fn issue_14_a_refused_browser_gets_the_upgrade_and_close_4103_with_a_retry_hint() {
    let server = TestServer::start(
        ServerConfig::new().admission(
            AdmissionConfig::new()
                .max_connections_per_ip(1)
                .retry_after(Duration::from_secs(1)),
        ),
    )
    .await;
    let (_holder, _) = WsClient::connect(&server.ws_url()).await;
    let mut request = server.ws_url().into_client_request().expect("request");
    let origin = format!("http://{}", server.addr());
    request
        .headers_mut()
        .insert("origin", origin.parse().expect("header"));
    let (stream, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the upgrade completes");
    assert_eq!(response.status(), 101);
    let mut browser = WsClient { stream };
    let frame = browser.expect_close().await.expect("a close frame");
    assert_eq!(frame.code, WsCloseCode::from(4103));
    assert!(frame.reason.starts_with("overloaded; retry="), "{frame:?}");
    let window = parse_retry_hint(&frame.reason).expect("a retry hint");
    assert!(
        window.min >= Duration::from_secs(1) && window.min < Duration::from_secs(2),
        "{window:?}"
    );
    assert_eq!(window.max, window.min + Duration::from_secs(1));
    assert_eq!(
        server
            .metric("wirehub_admission_refused_total{reason=\"per_ip\"}")
            .await,
        1
    );
    // Without an Origin (not a browser) the same refusal is a plain 429.
    let reply = upgrade(server.addr(), "").await;
    assert_refused(&reply, 429, "per_ip", 1..=2);
}

#[tokio::test]
async fn issue_14_with_close_refused_browsers_off_a_browser_gets_the_http_refusal() {
    let server = TestServer::start(
        ServerConfig::new().admission(
            AdmissionConfig::new()
                .max_connections_per_ip(1)
                .close_refused_browsers(false),
        ),
    )
    .await;
    let (_holder, _) = WsClient::connect(&server.ws_url()).await;
    let origin = format!("Origin: http://{}\r\n", server.addr());
    let reply = upgrade(server.addr(), &origin).await;
    assert_refused(&reply, 429, "per_ip", 5..=10);
}

#[tokio::test]
async fn issue_14_the_drain_closes_with_1001_and_retry_hints_spread_over_the_window() {
    const CLIENTS: usize = 30;
    let server = TestServer::start(
        ServerConfig::new()
            .shutdown_drain(Duration::from_millis(50))
            .admission(AdmissionConfig::new().drain_retry(Duration::from_secs(4))),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(WsClient::connect(&server.ws_url()).await.0);
    }
    server.shutdown_token().cancel();
    let mut windows: Vec<RetryWindow> = Vec::new();
    for client in &mut clients {
        let frame = client.expect_close().await.expect("a close frame");
        assert_eq!(frame.code, WsCloseCode::Away);
        assert!(
            frame.reason.starts_with("server shutting down; retry="),
            "{frame:?}"
        );
        windows.push(parse_retry_hint(&frame.reason).expect("a retry hint"));
    }
    // Each window: a start in the first half of the 4 s, lasting half of it.
    for window in &windows {
        assert!(window.min < Duration::from_secs(2), "{window:?}");
        assert_eq!(
            window.max - window.min,
            Duration::from_secs(2),
            "{window:?}"
        );
    }
    // The starts are spread, not one moment for everyone.
    let earliest = windows.iter().map(|w| w.min).min().expect("windows");
    let latest = windows.iter().map(|w| w.min).max().expect("windows");
    assert!(
        latest - earliest >= Duration::from_millis(500),
        "starts within {:?}",
        latest - earliest
    );
}

#[tokio::test]
async fn issue_14_without_drain_retry_the_drain_closes_without_a_hint() {
    let server = TestServer::start(
        ServerConfig::new()
            .shutdown_drain(Duration::from_millis(50))
            .admission(AdmissionConfig::new().drain_retry(Duration::ZERO)),
    )
    .await;
    let (mut client, _) = WsClient::connect(&server.ws_url()).await;
    server.shutdown_token().cancel();
    let frame = client.expect_close().await.expect("a close frame");
    assert_eq!(frame.code, WsCloseCode::Away);
    assert_eq!(frame.reason.as_str(), "server shutting down");
}
