//! Fatal protocol violations found by the decoder, each tied to the close code to send before
//! dropping the connection (RFC 6455 §7.4.1).

/// A fatal protocol violation: the connection must be failed with [`ProtocolError::close_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1, RSV2 or RSV3 is set where no negotiated extension allows it (RSV1 is allowed
    /// only on the first frame of a data message, with permessage-deflate).
    #[error("reserved bits set without a negotiated extension")]
    ReservedBits,
    /// A compressed message is not valid deflate data (permessage-deflate).
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// The opcode is not one RFC 6455 defines.
    #[error("unknown opcode {0:#x}")]
    UnknownOpCode(u8),
    /// A client frame arrived without a mask.
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server frame arrived masked (a client's decoder).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A control frame arrived with FIN clear.
    #[error("control frame is fragmented")]
    FragmentedControl,
    /// A control frame announced a payload longer than 125 bytes.
    #[error("control frame payload longer than 125 bytes")]
    ControlTooLong,
    /// A continuation frame arrived while no fragmented message was in progress.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived while a fragmented message was in progress.
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// A 64-bit payload length has its most significant bit set.
    #[error("payload length has its most significant bit set")]
    InvalidLength,
    /// A text message or a close reason is not valid UTF-8.
    #[error("invalid UTF-8 in a text message or close reason")]
    InvalidUtf8,
    /// A close frame carries a status code that must not be sent on the wire.
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A close frame payload is one byte long (a code needs two).
    #[error("close frame payload of one byte")]
    InvalidClosePayload,
    /// The message would exceed the decoder's size limit.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size the message would reach with the announced frame (accumulated + this frame).
        size: u64,
        /// The decoder's limit.
        max: usize,
    },
}

impl ProtocolError {
    /// The close code to send for this violation: 1007 for invalid UTF-8 or compressed data
    /// that does not inflate, 1009 for a message
    /// over the size limit, 1002 (protocol error) for everything else.
    #[must_use]
    pub fn close_code(&self) -> u16 {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => 1007,
            Self::TooLarge { .. } => 1009,
            _ => 1002,
        }
    }
}
