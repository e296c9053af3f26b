//! Stable error codes (sent in `error` messages) and close codes (sent in close frames).
//!
//! Both are part of the public contract: clients branch on them, so a code is never renamed
//! or reused for another meaning. New codes may be added.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The `code` of an `error` message: a stable snake_case word a program can branch on.
///
/// Every variant except [`ErrorCode::Unknown`] is sent by the server. `Unknown` exists so that a
/// client built against this version still parses codes added later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The text frame is not valid JSON.
    InvalidJson,
    /// The `type` is not one this protocol version knows.
    UnknownType,
    /// A field is missing or has the wrong kind (or the message is not a JSON object).
    InvalidMessage,
    /// The channel name breaks the channel-name rules.
    InvalidChannel,
    /// The message is larger than the server accepts.
    TooLarge,
    /// The connection's token does not allow this action on this channel.
    Forbidden,
    /// Too many publishes per second on this connection.
    RateLimited,
    /// `unsubscribe` for a channel this connection is not subscribed to.
    NotSubscribed,
    /// `subscribe` for a channel this connection is already subscribed to.
    AlreadySubscribed,
    /// The connection holds as many subscriptions as the server allows.
    TooManySubscriptions,
    /// A binary frame: protocol v1 carries JSON in text frames only.
    BinaryNotSupported,
    /// A token in `refresh` (or at the upgrade) is invalid or expired.
    Unauthorized,
    /// The server could not complete the request (e.g. its broker is unreachable).
    Internal,
    /// `presence` (or `GET /api/presence`) for a channel without presence (no `[[channels]]`
    /// table with `presence = true` matches it).
    PresenceDisabled,
    /// A code this version of the library does not know (sent by a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::InvalidChannel => "invalid_channel",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::AlreadySubscribed => "already_subscribed",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Internal => "internal",
            ErrorCode::PresenceDisabled => "presence_disabled",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// Every code the server sends, for metrics and documentation.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::InvalidJson,
        ErrorCode::UnknownType,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidChannel,
        ErrorCode::TooLarge,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::NotSubscribed,
        ErrorCode::AlreadySubscribed,
        ErrorCode::TooManySubscriptions,
        ErrorCode::BinaryNotSupported,
        ErrorCode::Unauthorized,
        ErrorCode::Internal,
        ErrorCode::PresenceDisabled,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client should do after the server closed its connection with a given code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectAdvice {
    /// Reconnect (with jitter): 1000, 1001 and 4200–4299.
    Reconnect,
    /// Reconnect after backing off: 4100–4199, and codes signalling a fault (1002–1015).
    Backoff,
    /// Do not reconnect; report the error: 4000–4099.
    Stop,
}

impl ReconnectAdvice {
    /// The advice for any close code, following the contract's ranges.
    pub const fn for_code(code: u16) -> ReconnectAdvice {
        match code {
            1000 | 1001 | 4200..=4299 => ReconnectAdvice::Reconnect,
            4000..=4099 => ReconnectAdvice::Stop,
            _ => ReconnectAdvice::Backoff,
        }
    }
}

/// The close codes the server sends, with their meaning. See the table in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: the client asked to close.
    Normal,
    /// 1001: the server is shutting down; reconnect (to another node) with jitter.
    GoingAway,
    /// 1002: the client broke RFC 6455 framing.
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8.
    InvalidPayload,
    /// 1009: a frame or message exceeded `--max-message-size`.
    MessageTooBig,
    /// 1011: the server hit an unexpected condition.
    InternalError,
    /// 4001: the token is missing, invalid or expired (and was not refreshed in time).
    Unauthorized,
    /// 4003: the token does not permit what the connection asked for.
    Forbidden,
    /// 4100: the client read too slowly; its outbound queue overflowed.
    SlowConsumer,
    /// 4101: the client did not answer a ping before the next heartbeat tick.
    HeartbeatTimeout,
    /// 4102: the client kept breaking limits (e.g. publish rate) after being told.
    PolicyViolation,
    /// 4200: the server asks the client to reconnect (e.g. to rebalance).
    Reconnect,
    /// 4103: the server is overloaded (an admission limit refused the connection); come back
    /// in the window of the reason's retry hint, or after backing off.
    Overloaded,
}

impl CloseCode {
    /// The numeric code sent in the close frame.
    pub const fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::GoingAway => 1001,
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::Unauthorized => 4001,
            CloseCode::Forbidden => 4003,
            CloseCode::SlowConsumer => 4100,
            CloseCode::HeartbeatTimeout => 4101,
            CloseCode::PolicyViolation => 4102,
            CloseCode::Reconnect => 4200,
            CloseCode::Overloaded => 4103,
        }
    }

    /// A short reason sent with the close frame (and used as a metric label).
    pub const fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::GoingAway => "server shutting down",
            CloseCode::ProtocolError => "protocol error",
            CloseCode::InvalidPayload => "invalid utf-8",
            CloseCode::MessageTooBig => "message too big",
            CloseCode::InternalError => "internal error",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Forbidden => "forbidden",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::HeartbeatTimeout => "heartbeat timeout",
            CloseCode::PolicyViolation => "policy violation",
            CloseCode::Reconnect => "reconnect",
            CloseCode::Overloaded => "overloaded",
        }
    }

    /// What a client should do after this code.
    pub const fn advice(self) -> ReconnectAdvice {
        ReconnectAdvice::for_code(self.code())
    }

    /// Every code the server sends.
    pub const ALL: [CloseCode; 13] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::ProtocolError,
        CloseCode::InvalidPayload,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::Unauthorized,
        CloseCode::Forbidden,
        CloseCode::SlowConsumer,
        CloseCode::HeartbeatTimeout,
        CloseCode::PolicyViolation,
        CloseCode::Reconnect,
        CloseCode::Overloaded,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).expect("parses");
            assert_eq!(back, code);
        }
        let unknown: ErrorCode = serde_json::from_str("\"from_the_future\"").expect("parses");
        assert_eq!(unknown, ErrorCode::Unknown);
    }

    #[test]
    fn close_codes_follow_the_contract_ranges() {
        use ReconnectAdvice::*;
        let expect = [
            (CloseCode::Normal, Reconnect),
            (CloseCode::GoingAway, Reconnect),
            (CloseCode::ProtocolError, Backoff),
            (CloseCode::InvalidPayload, Backoff),
            (CloseCode::MessageTooBig, Backoff),
            (CloseCode::InternalError, Backoff),
            (CloseCode::Unauthorized, Stop),
            (CloseCode::Forbidden, Stop),
            (CloseCode::SlowConsumer, Backoff),
            (CloseCode::HeartbeatTimeout, Backoff),
            (CloseCode::PolicyViolation, Backoff),
            (CloseCode::Reconnect, Reconnect),
            (CloseCode::Overloaded, Backoff),
        ];
        assert_eq!(expect.len(), CloseCode::ALL.len());
        for (code, advice) in expect {
            assert_eq!(code.advice(), advice, "{code:?}");
        }
    }
}
