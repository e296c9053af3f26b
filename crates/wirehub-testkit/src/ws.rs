//! [`WsClient`]: a raw protocol client for tests, on tokio-tungstenite, with a timeout on
//! every wait so a failing test fails instead of hanging.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for any single event.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A WebSocket connection to a server under test.
#[derive(Debug)]
pub struct WsClient {
    /// The underlying stream, for tests that need raw frames.
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl WsClient {
    /// Connects, without reading anything.
    ///
    /// # Panics
    /// When the connection fails or times out.
    pub async fn connect_raw(url: &str) -> WsClient {
        let (stream, _) = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect timed out")
            .expect("connect");
        WsClient { stream }
    }

    /// Connects and reads the `welcome`, which it returns too.
    ///
    /// # Panics
    /// When the connection fails or the first message is not a `welcome`.
    pub async fn connect(url: &str) -> (WsClient, Value) {
        let mut client = Self::connect_raw(url).await;
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], "welcome", "first message: {welcome}");
        (client, welcome)
    }

    /// Sends a JSON value as a text frame.
    ///
    /// # Panics
    /// When sending fails.
    pub async fn send(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a text frame.
    ///
    /// # Panics
    /// When sending fails.
    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text))
            .await
            .expect("send text frame");
    }

    /// Receives the next text frame as JSON (pings are answered and skipped).
    ///
    /// # Panics
    /// On timeout, a closed connection, or a frame that is not JSON text.
    pub async fn recv(&mut self) -> Value {
        loop {
            match self.next_frame().await {
                Some(Message::Text(text)) => {
                    return serde_json::from_str(&text).expect("server sent JSON");
                }
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Receives the next message of the given `type`, skipping none: panics if another comes.
    ///
    /// # Panics
    /// As [`WsClient::recv`], or when the type differs.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let value = self.recv().await;
        assert_eq!(value["type"], kind, "unexpected message: {value}");
        value
    }

    /// The next frame of any kind (`None` once the stream ended).
    ///
    /// # Panics
    /// On timeout.
    pub async fn next_frame(&mut self) -> Option<Message> {
        match tokio::time::timeout(TIMEOUT, self.stream.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("no frame within {TIMEOUT:?}"),
        }
    }

    /// Reads until the server's close frame and returns it (`None` if the connection ended
    /// without one).
    ///
    /// # Panics
    /// On timeout.
    pub async fn expect_close(&mut self) -> Option<CloseFrame> {
        loop {
            match self.next_frame().await {
                Some(Message::Close(frame)) => return frame,
                Some(_) => {}
                None => return None,
            }
        }
    }

    /// Subscribes and returns the `subscribed` reply.
    ///
    /// # Panics
    /// When the reply is not `subscribed`.
    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.send(&serde_json::json!({"type": "subscribe", "channel": channel}))
            .await;
        self.expect("subscribed").await
    }

    /// Subscribes with `since: {epoch, offset}` and returns the `subscribed` reply.
    ///
    /// # Panics
    /// When the reply is not `subscribed`.
    pub async fn subscribe_since(&mut self, channel: &str, epoch: &str, offset: u64) -> Value {
        self.send(&serde_json::json!({
            "type": "subscribe",
            "channel": channel,
            "since": {"epoch": epoch, "offset": offset},
        }))
        .await;
        self.expect("subscribed").await
    }

    /// Publishes and returns the `ack`'s offset.
    ///
    /// # Panics
    /// When the reply is not an `ack`.
    pub async fn publish(&mut self, channel: &str, data: Value) -> u64 {
        self.send(
            &serde_json::json!({"type": "publish", "channel": channel, "data": data, "id": 1}),
        )
        .await;
        let ack = self.expect("ack").await;
        ack["offset"].as_u64().expect("offset")
    }
}
