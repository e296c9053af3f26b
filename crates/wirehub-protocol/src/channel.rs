//! Channel names and channel patterns.
//!
//! A channel name is 1 to [`MAX_CHANNEL_LEN`] bytes of ASCII letters, digits and
//! `_ - : . @ / = + , #`. Names are case-sensitive. `*` is reserved for patterns (as used in
//! token permissions): a pattern is a channel name, optionally ending in one `*` that matches
//! any suffix (`chat:*`), or `*` alone for every channel.

/// The longest channel name accepted, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;

/// Why a channel name or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The name is the empty string.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than [`MAX_CHANNEL_LEN`] bytes.
    #[error("channel name is {len} bytes long; the limit is {MAX_CHANNEL_LEN}")]
    TooLong {
        /// The length that was given.
        len: usize,
    },
    /// The name contains a character outside the allowed set.
    #[error(
        "channel name contains {found:?}; allowed are ASCII letters, digits and _ - : . @ / = + , #"
    )]
    InvalidCharacter {
        /// The first offending character.
        found: char,
    },
}

fn is_channel_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'_' | b'-' | b':' | b'.' | b'@' | b'/' | b'=' | b'+' | b',' | b'#'
        )
}

/// Checks a channel name against the rules in this module's documentation.
///
/// # Errors
/// Returns the first rule the name breaks.
pub fn validate_channel(name: &str) -> Result<(), ChannelError> {
    if name.is_empty() {
        return Err(ChannelError::Empty);
    }
    if name.len() > MAX_CHANNEL_LEN {
        return Err(ChannelError::TooLong { len: name.len() });
    }
    match name
        .chars()
        .find(|&c| !c.is_ascii() || !is_channel_byte(c as u8))
    {
        Some(found) => Err(ChannelError::InvalidCharacter { found }),
        None => Ok(()),
    }
}

/// Checks a channel pattern: a channel name, optionally with one trailing `*`, or `*` alone.
///
/// # Errors
/// Returns the first rule the pattern breaks.
pub fn validate_pattern(pattern: &str) -> Result<(), ChannelError> {
    match pattern.strip_suffix('*') {
        Some("") => Ok(()),
        Some(prefix) => validate_channel(prefix),
        None => validate_channel(pattern),
    }
}

/// Whether `channel` matches `pattern` (exact name, or prefix when the pattern ends in `*`).
pub fn channel_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// The longest `idempotency_key` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 64;

/// Checks a publish's `idempotency_key`: 1 to 64 visible ASCII characters (`!` to `~`).
///
/// # Errors
/// A sentence saying what is wrong, for the `invalid_message` error.
pub fn validate_idempotency_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err("field `idempotency_key` must be 1 to 64 characters long");
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("field `idempotency_key` may hold visible ASCII characters only (no spaces)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(name: &str, expect: Result<(), ChannelError>) {
        assert_eq!(validate_channel(name), expect, "channel {name:?}");
    }

    #[test]
    fn channel_names() {
        check("chat", Ok(()));
        check("chat:room-1/a_b.c@d=e+f,g#h", Ok(()));
        check(&"a".repeat(MAX_CHANNEL_LEN), Ok(()));
        check("", Err(ChannelError::Empty));
        check(
            &"a".repeat(MAX_CHANNEL_LEN + 1),
            Err(ChannelError::TooLong {
                len: MAX_CHANNEL_LEN + 1,
            }),
        );
        check("a b", Err(ChannelError::InvalidCharacter { found: ' ' }));
        check("chat*", Err(ChannelError::InvalidCharacter { found: '*' }));
        check("é", Err(ChannelError::InvalidCharacter { found: 'é' }));
        check("a\nb", Err(ChannelError::InvalidCharacter { found: '\n' }));
    }

    #[test]
    fn patterns() {
        assert_eq!(validate_pattern("*"), Ok(()));
        assert_eq!(validate_pattern("chat:*"), Ok(()));
        assert_eq!(validate_pattern("chat"), Ok(()));
        assert!(validate_pattern("chat**").is_err());
        assert!(validate_pattern("*chat").is_err());
        assert!(channel_matches("chat:*", "chat:1"));
        assert!(channel_matches("chat:*", "chat:"));
        assert!(!channel_matches("chat:*", "chat"));
        assert!(channel_matches("*", "anything"));
        assert!(channel_matches("news", "news"));
        assert!(!channel_matches("news", "news2"));
    }
}
