//! Retry hints: when the server closes a connection it wants back later (shutdown, overload),
//! its close reason says in which window the client should reconnect.
//!
//! The reason of a close frame is free text (at most 123 bytes). A hint is one
//! `;`-separated part of it of the form `retry=MIN-MAX` (or `retry=MS`), in milliseconds
//! from the close, `MIN ≤ MAX`:
//!
//! ```text
//! server shutting down; retry=1200-3700
//! overloaded; retry=4000-5000
//! ```
//!
//! A client that understands the hint waits a uniformly random point of the window before
//! reconnecting, instead of its own backoff delay; one that does not sees a reason text like
//! any other, so the format is backward compatible. Parts that are not hints are ignored, a
//! malformed hint is ignored (the client uses its own backoff), and a window is capped at
//! [`MAX_HINT`].

use std::time::Duration;

/// The longest wait a hint can ask for; longer windows are cut to it.
pub const MAX_HINT: Duration = Duration::from_secs(3600);

/// When to come back, in time from the close (or from a refused upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryWindow {
    /// The earliest point.
    pub min: Duration,
    /// The latest point (`≥ min`).
    pub max: Duration,
}

impl RetryWindow {
    /// A window, with its ends swapped when given in the wrong order and capped at
    /// [`MAX_HINT`].
    pub fn new(min: Duration, max: Duration) -> RetryWindow {
        let (min, max) = if min <= max { (min, max) } else { (max, min) };
        RetryWindow {
            min: min.min(MAX_HINT),
            max: max.min(MAX_HINT),
        }
    }

    /// The point `sample` (in `[0, 1]`) of the way through the window; out-of-range or NaN
    /// samples are clamped.
    pub fn at(&self, sample: f64) -> Duration {
        let sample = if sample.is_finite() {
            sample.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.min + (self.max - self.min).mul_f64(sample)
    }

    /// The hint as it appears in a close reason: `retry=MIN-MAX` (milliseconds).
    pub fn to_hint(&self) -> String {
        format!("retry={}-{}", self.min.as_millis(), self.max.as_millis())
    }
}

/// `text; retry=MIN-MAX`, the close reason carrying `window`; `text` is cut (at a character
/// boundary) so that the reason fits the 123 bytes a close frame allows.
pub fn reason_with_hint(text: &str, window: RetryWindow) -> String {
    let hint = window.to_hint();
    let room = 123usize.saturating_sub(hint.len() + 2);
    let mut cut = text.len().min(room);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        hint
    } else {
        format!("{}; {hint}", &text[..cut])
    }
}

/// The retry window a close reason carries, if any.
pub fn parse_retry_hint(reason: &str) -> Option<RetryWindow> {
    reason.split(';').find_map(|part| {
        let value = part.trim().strip_prefix("retry=")?;
        let (min, max) = match value.split_once('-') {
            Some((min, max)) => (min.trim(), max.trim()),
            None => (value.trim(), value.trim()),
        };
        let min: u64 = min.parse().ok()?;
        let max: u64 = max.parse().ok()?;
        (min <= max)
            .then(|| RetryWindow::new(Duration::from_millis(min), Duration::from_millis(max)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn hints_round_trip() {
        let window = RetryWindow::new(ms(1200), ms(3700));
        let reason = reason_with_hint("server shutting down", window);
        assert_eq!(reason, "server shutting down; retry=1200-3700");
        assert_eq!(parse_retry_hint(&reason), Some(window));
        assert_eq!(
            parse_retry_hint("retry=250"),
            Some(RetryWindow::new(ms(250), ms(250)))
        );
        assert_eq!(
            parse_retry_hint("a; retry=1-2; b"),
            Some(RetryWindow::new(ms(1), ms(2)))
        );
    }

    #[test]
    fn text_without_a_valid_hint_has_none() {
        for reason in [
            "",
            "server shutting down",
            "retry=",
            "retry=a-b",
            "retry=5-1",
            "retry=-5",
            "retry=1-2-3",
            "noretry=1-2",
            "retry=99999999999999999999",
        ] {
            assert_eq!(parse_retry_hint(reason), None, "{reason:?}");
        }
    }

    #[test]
    fn long_reasons_are_cut_to_fit_the_close_frame() {
        let window = RetryWindow::new(ms(3_000_000), ms(3_600_000));
        let reason = reason_with_hint(&"é".repeat(100), window);
        assert!(reason.len() <= 123, "{}", reason.len());
        assert_eq!(parse_retry_hint(&reason), Some(window));
    }

    #[test]
    fn windows_are_ordered_capped_and_sampled() {
        let window = RetryWindow::new(ms(800), ms(200));
        assert_eq!((window.min, window.max), (ms(200), ms(800)));
        assert_eq!(window.at(0.5), ms(500));
        assert_eq!(window.at(f64::NAN), ms(200));
        assert_eq!(window.at(9.0), ms(800));
        let huge = RetryWindow::new(Duration::ZERO, Duration::from_secs(1 << 40));
        assert_eq!(huge.max, MAX_HINT);
    }
}
