//! permessage-deflate (issue 14) against the real server over real sockets: the test plays a
//! client that offers the extension and compresses and inflates with flate2, independently of
//! the server's codec. The offer is answered, deliveries above the threshold come compressed
//! (one compression per publication, the same bytes for every deflate subscriber, plain
//! frames for the others), compressed publishes are inflated, and a deflate bomb is refused
//! with `too_large` and close 1009.

use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wirehub_server::{DeflateSettings, ServerConfig};
use wirehub_testkit::{TIMEOUT, TestServer};

const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
const RSV1: u8 = 0x40;

fn config() -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .publish_rate(0)
}

/// A WebSocket client written for this test: masked frames out, RSV1 frames inflated in.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The `Sec-WebSocket-Extensions` the server answered with, if any.
    extensions: Option<String>,
}

/// A frame as received: first byte and payload (as sent, compressed or not).
struct Frame {
    b0: u8,
    payload: Vec<u8>,
    /// The frame's bytes on the wire.
    wire: Vec<u8>,
}

impl Client {
    async fn connect(server: &TestServer, offer: Option<&str>) -> Client {
        let mut stream = TcpStream::connect(server.addr()).await.expect("connect");
        let extra = offer.map_or(String::new(), |offer| {
            format!("Sec-WebSocket-Extensions: {offer}\r\n")
        });
        wirehub_testkit::send_upgrade_request(&mut stream, &extra).await;
        let mut response = Vec::new();
        let mut byte = [0u8; 1];
        while !response.ends_with(b"\r\n\r\n") {
            let read = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
                .await
                .expect("handshake reply in time")
                .expect("read");
            assert_ne!(read, 0, "EOF during the handshake");
            response.push(byte[0]);
        }
        let response = String::from_utf8(response).expect("ASCII headers");
        assert!(response.starts_with("HTTP/1.1 101"), "{response}");
        let extensions = response.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        });
        let mut client = Client {
            stream,
            buf: Vec::new(),
            extensions,
        };
        let welcome = client.next_json().await;
        assert_eq!(welcome["type"], "welcome");
        client
    }

    async fn send_frame(&mut self, b0: u8, payload: &[u8]) {
        let key = [0x5a, 0x01, 0xc3, 0x7e];
        let mut out = vec![b0];
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&out).await.expect("write frame");
    }

    /// Sends a text message compressed on its own, as a client with no context takeover.
    async fn send_compressed(&mut self, text: &[u8]) {
        let payload = compress(text);
        self.send_frame(0x80 | RSV1 | 0x1, &payload).await;
    }

    async fn next_frame(&mut self) -> Frame {
        loop {
            if let Some(frame) = self.parse() {
                return frame;
            }
            let mut chunk = [0u8; 16 * 1024];
            let read = tokio::time::timeout(TIMEOUT, self.stream.read(&mut chunk))
                .await
                .expect("a frame in time")
                .expect("read");
            assert_ne!(read, 0, "EOF while waiting for a frame");
            self.buf.extend_from_slice(&chunk[..read]);
        }
    }

    fn parse(&mut self) -> Option<Frame> {
        let b1 = *self.buf.get(1)?;
        assert_eq!(b1 & 0x80, 0, "server frames are not masked");
        let (start, len) = match b1 & 0x7f {
            126 => (
                4,
                usize::from(u16::from_be_bytes([*self.buf.get(2)?, self.buf[3]])),
            ),
            127 => {
                let bytes: [u8; 8] = self.buf.get(2..10)?.try_into().expect("8 bytes");
                (
                    10,
                    usize::try_from(u64::from_be_bytes(bytes)).expect("length"),
                )
            }
            n => (2, usize::from(n)),
        };
        if self.buf.len() < start + len {
            return None;
        }
        let wire: Vec<u8> = self.buf.drain(..start + len).collect();
        Some(Frame {
            b0: wire[0],
            payload: wire[start..].to_vec(),
            wire,
        })
    }

    /// The next text message as JSON, inflated if compressed, with whether it was.
    async fn next_message(&mut self) -> (Value, bool) {
        let frame = self.next_frame().await;
        assert_eq!(frame.b0 & 0x80, 0x80, "the server does not fragment");
        assert_eq!(frame.b0 & 0x0f, 0x1, "a text frame");
        let compressed = frame.b0 & RSV1 != 0;
        let text = if compressed {
            inflate(&frame.payload)
        } else {
            frame.payload
        };
        (serde_json::from_slice(&text).expect("JSON"), compressed)
    }

    async fn next_json(&mut self) -> Value {
        self.next_message().await.0
    }
}

fn compress(data: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    compress
        .compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("compress");
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - TAIL.len());
    out
}

fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(1 << 20);
    Decompress::new(false)
        .decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("inflate");
    out
}

/// A message whose JSON text is well above the 256-byte threshold and compresses well.
fn large_data() -> Value {
    json!({
        "items": (0..20).map(|i| json!({"symbol": format!("SYM{i}"), "bid": 100 + i, "ask": 101 + i, "venue": "primary"})).collect::<Vec<_>>()
    })
}

/// Subscribes and returns the stream's epoch.
async fn subscribe(client: &mut Client, channel: &str) -> Value {
    let request = json!({"type": "subscribe", "id": 1, "channel": channel}).to_string();
    client.send_frame(0x81, request.as_bytes()).await;
    let reply = client.next_json().await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    reply["epoch"].clone()
}

#[tokio::test]
async fn issue_14_deflate_is_negotiated_and_each_publication_is_compressed_once_for_all() {
    let server = TestServer::start(config()).await;
    let offer = "permessage-deflate; client_max_window_bits";
    let mut deflating = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&server, Some(offer)).await;
        assert_eq!(
            client.extensions.as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        subscribe(&mut client, "news").await;
        deflating.push(client);
    }
    let mut plain = Client::connect(&server, None).await;
    assert_eq!(plain.extensions, None);
    let epoch = subscribe(&mut plain, "news").await;
    assert_eq!(server.metric("wirehub_deflate_connections_total").await, 3);

    let data = large_data();
    server.publish_http("news", data.clone()).await;
    let mut wires = Vec::new();
    for client in &mut deflating {
        let frame = client.next_frame().await;
        assert_eq!(frame.b0, 0x80 | RSV1 | 0x1, "FIN, RSV1, text");
        let json: Value = serde_json::from_slice(&inflate(&frame.payload)).expect("JSON");
        assert_eq!(json["type"], "message");
        assert_eq!(json["data"], data);
        wires.push(frame.wire);
    }
    // Byte for byte the same frame for every deflate subscriber, built once.
    assert!(wires.iter().all(|wire| *wire == wires[0]));
    assert_eq!(server.metric("wirehub_deflate_compressions_total").await, 1);
    let (json, compressed) = plain.next_message().await;
    assert!(!compressed);
    assert_eq!(json["data"], data);
    let plain_len = serde_json::to_vec(&json).expect("JSON").len();
    assert!(
        wires[0].len() * 2 < plain_len,
        "compressed {} bytes, plain {plain_len}",
        wires[0].len()
    );

    // Below the threshold: the plain frame for everyone, nothing compressed.
    server.publish_http("news", json!({"n": 1})).await;
    for client in &mut deflating {
        let (json, compressed) = client.next_message().await;
        assert!(!compressed);
        assert_eq!(json["data"], json!({"n": 1}));
    }
    assert_eq!(server.metric("wirehub_deflate_compressions_total").await, 1);
    assert_eq!(plain.next_json().await["data"], json!({"n": 1}));

    // A compressed publish is inflated; a large reply (history) comes compressed.
    let request = json!({"type": "publish", "id": 7, "channel": "news", "data": data}).to_string();
    deflating[0].send_compressed(request.as_bytes()).await;
    let mut acked = false;
    let mut delivered = false;
    while !(acked && delivered) {
        let (json, _) = deflating[0].next_message().await;
        match json["type"].as_str() {
            Some("ack") => acked = json["id"] == 7,
            Some("message") => delivered = json["data"] == data,
            other => panic!("unexpected {other:?}: {json}"),
        }
    }
    let (json, compressed) = plain.next_message().await;
    assert!(!compressed);
    assert_eq!(json["data"], data);
    assert_eq!(server.metric("wirehub_deflate_compressions_total").await, 2);
    // A recovery replays the kept frames: compressed, and not compressed again.
    let mut late = Client::connect(&server, Some(offer)).await;
    let since = json!({"epoch": epoch, "offset": 0});
    let request = json!({"type": "subscribe", "id": 9, "channel": "news", "since": since});
    late.send_frame(0x81, request.to_string().as_bytes()).await;
    let (reply, _) = late.next_message().await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    for (offset, want_compressed) in [(1, true), (2, false), (3, true)] {
        let (json, compressed) = late.next_message().await;
        assert_eq!(json["offset"], offset, "{json}");
        assert_eq!(compressed, want_compressed, "{json}");
    }
    assert_eq!(server.metric("wirehub_deflate_compressions_total").await, 2);
}

#[tokio::test]
async fn issue_14_a_deflate_bomb_is_refused_with_too_large_and_1009() {
    let server = TestServer::start(config().max_message_size(64 * 1024)).await;
    let mut client = Client::connect(&server, Some("permessage-deflate")).await;
    // 16 MiB of spaces inside a JSON string: about 16 KiB compressed, under the limit on the
    // wire, 256 times the limit once inflated.
    let mut bomb = br#"{"type":"publish","id":1,"channel":"c","data":""#.to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 16 << 20));
    bomb.extend_from_slice(br#""}"#);
    let compressed = compress(&bomb);
    assert!(compressed.len() < 64 * 1024, "{}", compressed.len());
    client.send_frame(0x80 | RSV1 | 0x1, &compressed).await;
    let (error, _) = client.next_message().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], "too_large", "{error}");
    let close = client.next_frame().await;
    assert_eq!(close.b0, 0x88);
    assert_eq!(close.payload[..2], 1009u16.to_be_bytes());
}

#[tokio::test]
async fn issue_14_without_deflate_no_extension_is_answered_and_rsv1_is_a_protocol_error() {
    let server = TestServer::start(config().deflate(None)).await;
    let mut client = Client::connect(&server, Some("permessage-deflate")).await;
    assert_eq!(client.extensions, None);
    client.send_compressed(b"{\"type\":\"ping\"}").await;
    let close = client.next_frame().await;
    assert_eq!(close.b0, 0x88);
    assert_eq!(close.payload[..2], 1002u16.to_be_bytes());
}

#[tokio::test]
async fn issue_14_a_limited_server_window_gets_plain_frames_and_may_still_compress() {
    let server = TestServer::start(config().deflate(Some(DeflateSettings {
        threshold: 0,
        client_context_takeover: true,
    })))
    .await;
    let mut client = Client::connect(
        &server,
        Some("permessage-deflate; server_max_window_bits=10"),
    )
    .await;
    assert_eq!(
        client.extensions.as_deref(),
        Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=10")
    );
    subscribe(&mut client, "news").await;
    let request = json!({"type": "publish", "id": 3, "channel": "news", "data": large_data()});
    client.send_compressed(request.to_string().as_bytes()).await;
    for _ in 0..2 {
        let (json, compressed) = client.next_message().await;
        assert!(!compressed, "{json}");
        assert!(matches!(json["type"].as_str(), Some("ack" | "message")));
    }
}
