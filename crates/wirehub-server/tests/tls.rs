//! TLS on the one port: `wss://` and HTTPS with a PEM certificate, including large messages
//! that pass through rustls's bounded buffers in pieces.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use wirehub_server::{ServerConfig, TlsConfig};
use wirehub_testkit::{TIMEOUT, TestServer, read_fixture};

fn tls_config() -> TlsConfig {
    TlsConfig {
        cert_pem: read_fixture("tls-cert.pem"),
        key_pem: read_fixture("tls-key.pem"),
    }
}

async fn tls_connect(server: &TestServer) -> TlsStream<TcpStream> {
    wirehub_testkit::tls_connect(server.addr(), &read_fixture("tls-ca.pem")).await
}

#[tokio::test]
async fn https_and_wss_share_the_port() {
    let server = TestServer::start(
        ServerConfig::new()
            .heartbeat_interval(Duration::from_secs(60))
            .publish_rate(0)
            // 6 MB are published below before the subscriber reads any: with the kernel's
            // send buffer bounded (`send_buffer`), the outbox must hold them.
            .max_queued_bytes(8 << 20)
            .tls(Some(tls_config())),
    )
    .await;

    let mut https = tls_connect(&server).await;
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut reply = Vec::new();
    tokio::time::timeout(TIMEOUT, https.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&reply)
    );

    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) =
        tokio_tungstenite::client_async("wss://localhost/ws", tls_connect(&server).await)
            .await
            .expect("upgrade over TLS");
    let next = |frame: Option<Result<Message, _>>| -> serde_json::Value {
        match frame {
            Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("json"),
            other => panic!("unexpected {other:?}"),
        }
    };
    let welcome = next(
        tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("welcome"),
    );
    assert_eq!(welcome["type"], "welcome");
    ws.send(Message::text(
        json!({"type": "subscribe", "channel": "big"}).to_string(),
    ))
    .await
    .expect("send");
    assert_eq!(next(ws.next().await)["type"], "subscribed");

    // Large messages: each is cut into several TLS records and rustls buffer refills.
    let payload = "z".repeat(30_000);
    let (mut publisher, _) =
        tokio_tungstenite::client_async("wss://localhost/ws", tls_connect(&server).await)
            .await
            .expect("upgrade over TLS");
    let _ = publisher.next().await;
    for i in 0..200 {
        publisher
            .send(Message::text(
                json!({"type": "publish", "channel": "big", "data": {"i": i, "p": payload}})
                    .to_string(),
            ))
            .await
            .expect("publish");
    }
    for i in 0..200 {
        let message = loop {
            let value = next(
                tokio::time::timeout(TIMEOUT, ws.next())
                    .await
                    .expect("message in time"),
            );
            if value["type"] == "message" {
                break value;
            }
        };
        assert_eq!(message["data"]["i"], i);
        assert_eq!(message["data"]["p"].as_str().map(str::len), Some(30_000));
    }

    // Plain HTTP on the TLS port gets nowhere, and does not hurt the server.
    let mut plain = TcpStream::connect(server.addr()).await.expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut buf))
        .await
        .expect("closed");
    assert!(!buf.starts_with(b"HTTP/1.1 200"));
    ws.send(Message::text(json!({"type": "ping", "id": 1}).to_string()))
        .await
        .expect("ping");
    assert_eq!(next(ws.next().await)["type"], "pong");
}
