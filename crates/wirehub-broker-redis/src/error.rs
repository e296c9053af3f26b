//! [`Error`]: why a Redis request failed. Every one becomes
//! [`BrokerError::Unavailable`] at the [`wirehub_core::Broker`] seam (sessions answer `internal`).

use std::time::Duration;

use wirehub_core::BrokerError;

/// Why the Redis broker could not do something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL cannot be used (malformed), or the CA certificates given for `rediss://`
    /// cannot be read.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password redacted.
        url: String,
        /// What the client library said.
        reason: redis::RedisError,
    },
    /// A setting cannot be used ([`crate::RedisConfig::validate`]).
    #[error("invalid Redis setting `{field}`: {problem}")]
    InvalidSetting {
        /// The field of [`crate::RedisConfig`].
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The pub/sub connection was up but a canary published through the command connection
    /// did not come back through it in time: the subscription no longer delivers.
    #[error("the pub/sub canary did not come back within {0:?}")]
    CanaryLost(Duration),
    /// Redis could not be reached when the node started.
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What failed.
        reason: Box<Error>,
    },
    /// Redis answered with an error, or the connection failed. (Its message is part of this
    /// one, so it is not repeated as a source.)
    #[error("Redis: {0}")]
    Redis(redis::RedisError),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The pub/sub connection is down (it is being re-established).
    #[error("not connected to Redis pub/sub (reconnecting)")]
    Disconnected,
    /// Redis answered something the broker's scripts never return.
    #[error("unexpected reply from Redis: {0}")]
    Reply(String),
}

/// A convenient result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<redis::RedisError> for Error {
    fn from(err: redis::RedisError) -> Self {
        Error::Redis(err)
    }
}

impl From<Error> for BrokerError {
    fn from(err: Error) -> Self {
        BrokerError::Unavailable(err.to_string())
    }
}
