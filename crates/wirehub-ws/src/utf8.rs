//! Incremental UTF-8 validation for text messages that arrive in pieces (fragments, or a
//! frame whose payload arrives over several reads).
//!
//! Validating only the finished message would accept megabytes of garbage before failing;
//! RFC 6455 §8.1 asks to fail as soon as the bytes seen so far cannot be UTF-8. The state
//! is the (at most 3-byte) incomplete code point at the end of what was fed so far.

/// Validation state of a text message fed piece by piece.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Utf8Validator {
    /// Bytes of an incomplete trailing code point (a valid prefix of one).
    partial: [u8; 4],
    /// How many bytes of `partial` are in use (0..=3).
    len: u8,
}

/// The bytes fed so far cannot be the start of valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalid;

impl Utf8Validator {
    /// Forgets any state (start of a new message).
    pub(crate) fn reset(&mut self) {
        self.len = 0;
    }

    /// True when what was fed so far ends on a code point boundary.
    pub(crate) fn is_complete(&self) -> bool {
        self.len == 0
    }

    /// Validates the next piece of the message; fails at the first impossible byte.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), Invalid> {
        // Complete the code point carried from the previous piece, one byte at a time so an
        // impossible continuation byte fails right here.
        while self.len > 0 {
            let Some((&byte, rest)) = data.split_first() else {
                return Ok(());
            };
            data = rest;
            let n = usize::from(self.len);
            let slot = self.partial.get_mut(n).ok_or(Invalid)?;
            *slot = byte;
            self.len += 1;
            match std::str::from_utf8(self.partial.get(..=n).ok_or(Invalid)?) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_none() => {}
                Err(_) => return Err(Invalid),
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                // A truncated but so far valid code point: at most 3 bytes.
                let tail = data.get(e.valid_up_to()..).ok_or(Invalid)?;
                let dst = self.partial.get_mut(..tail.len()).ok_or(Invalid)?;
                dst.copy_from_slice(tail);
                self.len = u8::try_from(tail.len()).map_err(|_| Invalid)?;
                Ok(())
            }
            Err(_) => Err(Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Invalid, Utf8Validator};

    fn feed_all(pieces: &[&[u8]]) -> Result<bool, (usize, Invalid)> {
        let mut v = Utf8Validator::default();
        for (i, p) in pieces.iter().enumerate() {
            v.feed(p).map_err(|e| (i, e))?;
        }
        Ok(v.is_complete())
    }

    #[test]
    fn split_code_points_are_carried() {
        let s = "aκόσμε€𝄞z".as_bytes();
        for i in 0..=s.len() {
            for j in i..=s.len() {
                assert_eq!(feed_all(&[&s[..i], &s[i..j], &s[j..]]), Ok(true), "{i} {j}");
            }
        }
        // Every byte on its own.
        let pieces: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(feed_all(&pieces), Ok(true));
    }

    #[test]
    fn incomplete_at_end_is_not_complete() {
        assert_eq!(feed_all(&[b"ab\xf0\x9d"]), Ok(false));
        assert_eq!(feed_all(&[b"ab\xf0", b"\x9d"]), Ok(false));
    }

    #[test]
    fn fails_at_the_piece_with_the_bad_byte() {
        // U+110000 encoded: F4 90 is already impossible.
        assert_eq!(
            feed_all(&[b"ok\xf4", b"\x90", b"\x80\x80"]),
            Err((1, Invalid))
        );
        assert_eq!(
            feed_all(&[b"ok", b"\xf4\x90\x80\x80", b"x"]),
            Err((1, Invalid))
        );
        // Overlong and surrogate encodings.
        assert_eq!(feed_all(&[b"\xc0", b"\x80"]), Err((0, Invalid)));
        assert_eq!(feed_all(&[b"\xed", b"\xa0\x80"]), Err((1, Invalid)));
        // Lone continuation byte.
        assert_eq!(feed_all(&[b"a", b"\x80"]), Err((1, Invalid)));
        // Carried lead byte followed by an ASCII byte.
        assert_eq!(feed_all(&[b"\xe2\x82", b"a"]), Err((1, Invalid)));
    }
}
