//! WebSocket upgrades written by hand on a raw TCP stream, for tests that need the socket
//! itself afterwards: a client that stops reading, an upgrade held open, a reset seen by the
//! peer.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// Writes a WebSocket upgrade request for `/ws`, with `extra` header lines (each ending in
/// CRLF).
///
/// # Panics
/// When the stream cannot be written.
pub async fn send_upgrade_request(stream: &mut TcpStream, extra: &str) {
    let addr = stream.peer_addr().expect("peer address");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write handshake");
}

/// Reads the reply to an upgrade request: the stream after a 101 (whose accept key is checked),
/// or the status line of a refusal.
///
/// # Panics
/// When no reply comes within [`TIMEOUT`], or a 101 carries the wrong accept key.
pub async fn upgrade_reply(mut stream: TcpStream) -> Result<TcpStream, String> {
    let mut response = Vec::new();
    let mut byte = [0u8; 1];
    while !response.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
            .await
            .expect("handshake reply in time")
            .expect("read");
        if read == 0 {
            break;
        }
        response.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&response).into_owned();
    if response.starts_with("HTTP/1.1 101") {
        assert!(
            response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{response}"
        );
        Ok(stream)
    } else {
        Err(response.lines().next().unwrap_or_default().to_owned())
    }
}

/// Opens a WebSocket by hand and returns the stream after the 101, or the status line of a
/// refusal.
///
/// # Panics
/// When the server cannot be reached.
pub async fn raw_upgrade(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    send_upgrade_request(&mut stream, "").await;
    upgrade_reply(stream).await
}
