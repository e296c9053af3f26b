//! The client's error type.
//!
//! Every error is [`Clone`] so that the one that stopped the client can be handed to every
//! pending and later call and to every [`Event::Stopped`](crate::Event::Stopped) listener.

use std::sync::Arc;

use wirehub_protocol::{ChannelError, ErrorCode};

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
///
/// Variants say whether they are *fatal* (the client stopped and every later call returns
/// the same error) or concern one request only.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a valid `ws://` or `wss://` URL. Fatal, returned by
    /// [`Client::connect`](crate::Client::connect).
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL that was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token cannot be sent in an HTTP header (e.g. it contains a line break). Fatal,
    /// returned by [`Client::connect`](crate::Client::connect).
    #[error("the token is not a valid HTTP header value")]
    InvalidToken,
    /// The TLS settings cannot be used: a root certificate that cannot be parsed. Fatal,
    /// returned by [`Client::connect`](crate::Client::connect) or the
    /// [`ClientConfig`](crate::ClientConfig) setter. (A certificate the server presents and
    /// that does not verify is a [`Connect`](Error::Connect) error, retried with backoff.)
    #[error("TLS: {reason}")]
    Tls {
        /// What is wrong.
        reason: String,
    },
    /// The idempotency key given to
    /// [`Client::publish_raw_with_key`](crate::Client::publish_raw_with_key) is not 1 to 64
    /// visible ASCII characters. Concerns this publish only.
    #[error("invalid idempotency key: {0}")]
    InvalidIdempotencyKey(&'static str),
    /// [`Client::connect`](crate::Client::connect) was called outside a Tokio runtime.
    #[error("the client must be started inside a Tokio runtime")]
    NoRuntime,
    /// The server refused the WebSocket upgrade with HTTP 401 or 403: the token is missing,
    /// invalid or expired, or the origin is not allowed. Fatal: the client does not retry.
    #[error(
        "the server refused the connection with HTTP {status} (authentication failed or forbidden)"
    )]
    Unauthorized {
        /// The HTTP status code (401 or 403).
        status: u16,
    },
    /// The server closed the connection with a close code in 4000–4099, which means "do not
    /// reconnect" (e.g. 4001 unauthorized, 4003 forbidden). Fatal.
    #[error(
        "the server closed the connection with code {code} ({reason}) and asked not to reconnect"
    )]
    Rejected {
        /// The close code.
        code: u16,
        /// The reason sent with the close frame.
        reason: String,
    },
    /// A connection attempt failed (refused, DNS failure, handshake timeout, unexpected HTTP
    /// status…). Retried with backoff; fatal only once the configured reconnect limit is
    /// reached (see [`ClientConfig::max_reconnects`](crate::ClientConfig::max_reconnects)).
    #[error("could not connect: {reason}")]
    Connect {
        /// A description for people.
        reason: String,
    },
    /// The server refused the WebSocket upgrade because it is overloaded: HTTP 503 (its
    /// connection rate or connection limit) or 429 (too many connections from this address).
    /// Retried after `retry_after` (the server's `Retry-After`) plus a random part of a
    /// second, or after the backoff delay when the server named no wait; fatal only once the
    /// reconnect limit is reached.
    #[error("the server is overloaded (HTTP {status}){}", retry_after.map(|wait| format!("; retry after {wait:?}")).unwrap_or_default())]
    Overloaded {
        /// The HTTP status code (503 or 429).
        status: u16,
        /// The server's `Retry-After`, when it sent one in seconds.
        retry_after: Option<std::time::Duration>,
    },
    /// The connection was lost before the server answered this request. For a publish (only
    /// with [`ClientConfig::retry_publishes`](crate::ClientConfig::retry_publishes) off, or
    /// when the client stops) this means the outcome is unknown: the server may or may not
    /// have accepted it. Also the
    /// fatal error when the connection is lost and the reconnect limit is reached.
    #[error("the connection was lost before the server answered")]
    Disconnected,
    /// The server answered the request with an `error` message. Concerns this request only.
    #[error("the server refused the request: {code}: {message}")]
    Server {
        /// The contract's stable error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The publish could not be held while disconnected because the buffer already holds
    /// [`ClientConfig::publish_buffer`](crate::ClientConfig::publish_buffer) publishes.
    /// Nothing was sent; concerns this publish only.
    #[error("the publish buffer is full ({capacity} publishes waiting for the connection)")]
    BufferFull {
        /// The buffer's capacity.
        capacity: usize,
    },
    /// No answer within [`ClientConfig::request_timeout`](crate::ClientConfig::request_timeout).
    /// For a publish the outcome is unknown if it had already been sent.
    #[error("the request timed out")]
    Timeout,
    /// The client was closed with [`Client::close`](crate::Client::close) (or every handle
    /// was dropped). Fatal.
    #[error("the client is closed")]
    Closed,
    /// This client already has a [`Subscription`](crate::Subscription) for the channel.
    #[error("already subscribed to {channel:?}")]
    AlreadySubscribed {
        /// The channel.
        channel: String,
    },
    /// The server ended the subscription on its own, e.g. because a refreshed token no
    /// longer allows the channel. Ends that [`Subscription`](crate::Subscription) only.
    #[error("the server ended the subscription to {channel:?}")]
    Revoked {
        /// The channel.
        channel: String,
    },
    /// The channel name breaks the protocol's naming rules; nothing was sent.
    #[error("invalid channel name: {0}")]
    InvalidChannel(ChannelError),
    /// The data to publish could not be serialized to JSON, or a delivered message could not
    /// be deserialized into the requested type.
    #[error("JSON error: {0}")]
    Json(Arc<serde_json::Error>),
}

impl Error {
    /// A stable snake_case word for this error: the contract's error code for
    /// [`Error::Server`], and a client-side word for everything else.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidUrl { .. } => "invalid_url",
            Error::InvalidToken => "invalid_token",
            Error::NoRuntime => "no_runtime",
            Error::Tls { .. } => "tls",
            Error::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            Error::Unauthorized { .. } => "unauthorized",
            Error::Rejected { .. } => "rejected",
            Error::Connect { .. } => "connect_failed",
            Error::Overloaded { .. } => "overloaded",
            Error::Disconnected => "disconnected",
            Error::Server { code, .. } => code.as_str(),
            Error::BufferFull { .. } => "buffer_full",
            Error::Timeout => "timeout",
            Error::Closed => "closed",
            Error::AlreadySubscribed { .. } => "already_subscribed",
            Error::Revoked { .. } => "revoked",
            Error::InvalidChannel(_) => "invalid_channel",
            Error::Json(_) => "json",
        }
    }

    /// Whether this kind of error always stops the client for good. ([`Error::Connect`] and
    /// [`Error::Disconnected`] stop it too once the reconnect limit is reached.)
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::InvalidUrl { .. }
                | Error::InvalidToken
                | Error::NoRuntime
                | Error::Tls { .. }
                | Error::Unauthorized { .. }
                | Error::Rejected { .. }
                | Error::Closed
        )
    }

    /// Whether the server refused a request for a passing reason, so that the same request
    /// may succeed later: `internal` (e.g. the server's broker is unavailable) and
    /// `rate_limited`. The client retries a subscription it is restoring or catching up
    /// after such a refusal; an awaited [`Client::subscribe`](crate::Client::subscribe)
    /// returns it, for the caller to retry.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Server {
                code: ErrorCode::Internal | ErrorCode::RateLimited,
                ..
            }
        )
    }

    pub(crate) fn connect(reason: impl Into<String>) -> Error {
        Error::Connect {
            reason: reason.into(),
        }
    }
}

// The channel error is part of the message, not a separate `source`, so that error reports
// that print the chain do not say it twice.
impl From<ChannelError> for Error {
    fn from(err: ChannelError) -> Self {
        Error::InvalidChannel(err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::Json(Arc::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_use_the_contract_code() {
        let err = Error::Server {
            code: ErrorCode::Forbidden,
            message: "no".into(),
        };
        assert_eq!(err.code(), "forbidden");
        assert!(!err.is_fatal());
        assert!(
            Error::Rejected {
                code: 4001,
                reason: "unauthorized".into()
            }
            .is_fatal()
        );
    }
}
