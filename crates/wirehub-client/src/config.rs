//! [`ClientConfig`]: every knob of the client, with builder-style setters.

use std::time::Duration;

use crate::Backoff;

/// How a [`Client`](crate::Client) connects, reconnects and detects a dead server.
///
/// Build it with [`ClientConfig::new`] and the setters; every field has a documented default.
///
/// ```
/// use std::time::Duration;
/// use wirehub_client::{Backoff, ClientConfig};
///
/// let config = ClientConfig::new("ws://127.0.0.1:8080/ws")
///     .token("eyJ...")
///     .backoff(Backoff::default().initial(Duration::from_millis(500)))
///     .publish_buffer(128);
/// assert_eq!(config.publish_buffer, 128);
/// ```
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The WebSocket URL, e.g. `ws://127.0.0.1:8080/ws`.
    pub url: String,
    /// A token sent as `Authorization: Bearer TOKEN` on every upgrade request. Default none.
    pub token: Option<String>,
    /// The reconnect schedule. Default: 1 s doubling to a 30 s cap with full jitter.
    pub backoff: Backoff,
    /// How many consecutive reconnects are tried before the client stops with the last
    /// error. `None` (the default) retries forever; `Some(0)` makes exactly one connection
    /// attempt and stops when it fails or the connection ends.
    pub max_reconnects: Option<u32>,
    /// How long a connection must stay up to count as healthy even if it never finished
    /// resubscribing. A connection is also healthy once `welcome` arrived and every
    /// resubscription was acknowledged. Only a healthy connection resets the backoff.
    /// Default 10 s.
    pub healthy_after: Duration,
    /// How long the TCP connect plus WebSocket handshake may take. Default 10 s.
    pub connect_timeout: Duration,
    /// When nothing at all (message, reply, WebSocket ping or pong) arrived for this long,
    /// the client sends an app-level `ping`. Default 45 s: longer than the server's default
    /// 30 s heartbeat, so a healthy idle connection never needs an app-level ping.
    pub idle_timeout: Duration,
    /// When nothing arrived within this long after the app-level `ping` (or a write was
    /// blocked this long), the server is presumed dead: the client drops the connection and
    /// reconnects. Default 10 s.
    pub pong_timeout: Duration,
    /// How many publishes are held while disconnected, to be sent in order after the next
    /// connection resubscribed. A publish beyond this fails at once with
    /// [`Error::BufferFull`](crate::Error::BufferFull). Default 64.
    pub publish_buffer: usize,
    /// How many deliveries each [`Subscription`](crate::Subscription) queues for its
    /// consumer. When the queue is full the client stops queueing for that subscription
    /// (nothing else waits) and, once the consumer has read half of it, catches up from the
    /// server's history with `subscribe` + `since`; what the history no longer holds is
    /// reported as [`SubscriptionEvent::RecoveryFailed`](crate::SubscriptionEvent::RecoveryFailed)
    /// at its place. A larger queue means fewer catch-ups for a bursty consumer. Default 1024.
    pub subscription_capacity: usize,
    /// How long `subscribe`, `unsubscribe` and `publish` wait for the server's answer,
    /// including any time spent waiting for a connection. Default 10 s.
    pub request_timeout: Duration,
    /// Whether a publish whose `ack` was lost with the connection is sent again after the
    /// reconnect. Every publish then carries a random `idempotency_key`, and the server
    /// acknowledges a repeated key with the first message's offset instead of publishing it
    /// twice, as long as that message is still in the channel's history (the server's
    /// `--history-size`, 100 by default, and `--history-ttl`). With `false`, such a publish
    /// fails with [`Error::Disconnected`](crate::Error::Disconnected). Default `true`.
    pub retry_publishes: bool,
    /// Certificate authorities trusted for `wss://` URLs in addition to the bundled Mozilla
    /// roots (the `webpki-roots` crate), DER-encoded: for a server whose certificate comes
    /// from a private CA, or a self-signed one. Default none.
    pub root_certificates: Vec<Vec<u8>>,
    /// The retry schedule of a subscription whose restoring (after a reconnect) or catching
    /// up (after a `gap` or a full queue) the server refused for a passing reason
    /// (`internal`, e.g. its broker is unavailable, or `rate_limited`; see
    /// [`Error::is_transient`](crate::Error::is_transient)): the same formula as
    /// [`ClientConfig::backoff`], counted per subscription and restarted once a
    /// subscribe succeeds. Default: 100 ms doubling to a 5 s cap with full jitter.
    pub resubscribe_backoff: Backoff,
    /// Whether to offer permessage-deflate (RFC 7692). When the server accepts it, the
    /// messages it compresses (wirehub: those of 256 bytes and more) arrive compressed and
    /// are inflated here, and the client compresses what it sends from 256 bytes on. Each
    /// message is compressed on its own in both directions, so an idle connection holds no
    /// compression state. Default `true`.
    pub compression: bool,
    /// The largest message accepted from the server, on the wire and once inflated (a
    /// message past it fails the connection with close 1009, which is then re-established).
    /// Default 64 MiB.
    pub max_message_size: usize,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("backoff", &self.backoff)
            .field("max_reconnects", &self.max_reconnects)
            .field("healthy_after", &self.healthy_after)
            .field("connect_timeout", &self.connect_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("pong_timeout", &self.pong_timeout)
            .field("publish_buffer", &self.publish_buffer)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("request_timeout", &self.request_timeout)
            .field("retry_publishes", &self.retry_publishes)
            .field("root_certificates", &self.root_certificates.len())
            .field("resubscribe_backoff", &self.resubscribe_backoff)
            .field("compression", &self.compression)
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

impl ClientConfig {
    /// The defaults, connecting to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            token: None,
            backoff: Backoff::default(),
            max_reconnects: None,
            healthy_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(45),
            pong_timeout: Duration::from_secs(10),
            publish_buffer: 64,
            subscription_capacity: 1024,
            request_timeout: Duration::from_secs(10),
            retry_publishes: true,
            root_certificates: Vec::new(),
            resubscribe_backoff: Backoff::default()
                .initial(Duration::from_millis(100))
                .max(Duration::from_secs(5)),
            compression: true,
            max_message_size: 64 << 20,
        }
    }

    /// Sets the bearer token sent on the upgrade request.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the reconnect schedule.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Sets the retry schedule of a subscription refused for a passing reason.
    pub fn resubscribe_backoff(mut self, backoff: Backoff) -> Self {
        self.resubscribe_backoff = backoff;
        self
    }

    /// Sets how many consecutive reconnects are tried (`None`: forever).
    pub fn max_reconnects(mut self, max_reconnects: Option<u32>) -> Self {
        self.max_reconnects = max_reconnects;
        self
    }

    /// Sets the uptime after which a connection counts as healthy.
    pub fn healthy_after(mut self, healthy_after: Duration) -> Self {
        self.healthy_after = healthy_after;
        self
    }

    /// Sets the time allowed for the TCP connect and WebSocket handshake.
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets the silence after which an app-level `ping` is sent.
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// Sets how long to wait for any answer after the app-level `ping`.
    pub fn pong_timeout(mut self, pong_timeout: Duration) -> Self {
        self.pong_timeout = pong_timeout;
        self
    }

    /// Sets how many publishes are held while disconnected.
    pub fn publish_buffer(mut self, publish_buffer: usize) -> Self {
        self.publish_buffer = publish_buffer;
        self
    }

    /// Sets how many deliveries each subscription queues (at least 1).
    pub fn subscription_capacity(mut self, subscription_capacity: usize) -> Self {
        self.subscription_capacity = subscription_capacity;
        self
    }

    /// Sets how long requests wait for the server's answer.
    pub fn request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
        self
    }

    /// Sets whether permessage-deflate is offered.
    pub fn compression(mut self, compression: bool) -> Self {
        self.compression = compression;
        self
    }

    /// Sets the largest message accepted from the server.
    pub fn max_message_size(mut self, max_message_size: usize) -> Self {
        self.max_message_size = max_message_size;
        self
    }

    /// Sets whether publishes whose ack was lost are sent again after a reconnect.
    pub fn retry_publishes(mut self, retry_publishes: bool) -> Self {
        self.retry_publishes = retry_publishes;
        self
    }

    /// Trusts one more certificate authority (DER-encoded) for `wss://`.
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(der.into());
        self
    }

    /// Trusts every certificate in a PEM file's contents (`-----BEGIN CERTIFICATE-----`
    /// blocks) for `wss://`.
    ///
    /// ```
    /// use wirehub_client::ClientConfig;
    ///
    /// let pem = b"not a certificate";
    /// assert!(ClientConfig::new("wss://example.com/ws").add_root_certificates_pem(pem).is_err());
    /// ```
    ///
    /// # Errors
    /// [`Error::Tls`](crate::Error::Tls) when the text holds no certificate or a malformed one.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> crate::Result<Self> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;

        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|error| crate::Error::Tls {
                reason: format!("cannot read the PEM certificates: {error}"),
            })?;
            self.root_certificates.push(cert.as_ref().to_vec());
            added += 1;
        }
        if added == 0 {
            return Err(crate::Error::Tls {
                reason: "no certificate found in the PEM text".into(),
            });
        }
        Ok(self)
    }
}
