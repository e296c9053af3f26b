//! Per-connection publish rate limiting: a token bucket, and a line past which refusals count
//! as abuse.
//!
//! A connection may publish `rate` messages per second with bursts of `rate`. A publish beyond
//! that is refused (`rate_limited`) and the connection stays open. A client that keeps going
//! at ten times its rate or more (more than `10 × rate` refusals within one second) is closed
//! with 4102 (policy violation): it is not listening to the errors.

use std::time::{Duration, Instant};

/// What to do with one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Go ahead.
    Allowed,
    /// Refuse it (`rate_limited`).
    Refused,
    /// Refuse it and close the connection (4102).
    Abuse,
}

/// One connection's publish limiter.
#[derive(Debug)]
pub(crate) struct PublishLimiter {
    rate: f64,
    tokens: f64,
    refilled: Instant,
    window_start: Instant,
    refused_in_window: u64,
}

impl PublishLimiter {
    /// A limiter for `rate` publishes per second (0: no limit), full at `now`.
    pub(crate) fn new(rate: u32, now: Instant) -> Self {
        PublishLimiter {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            refilled: now,
            window_start: now,
            refused_in_window: 0,
        }
    }

    /// Decides on one publish at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        if self.rate <= 0.0 {
            return Verdict::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed;
        }
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.refused_in_window = 0;
        }
        self.refused_in_window += 1;
        if self.refused_in_window as f64 > 10.0 * self.rate.max(10.0) {
            Verdict::Abuse
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_then_refills() {
        let start = Instant::now();
        let mut limiter = PublishLimiter::new(5, start);
        for _ in 0..5 {
            assert_eq!(limiter.check(start), Verdict::Allowed);
        }
        assert_eq!(limiter.check(start), Verdict::Refused);
        // 200 ms later one token is back.
        let later = start + Duration::from_millis(200);
        assert_eq!(limiter.check(later), Verdict::Allowed);
        assert_eq!(limiter.check(later), Verdict::Refused);
    }

    #[test]
    fn ten_times_the_rate_within_a_second_is_abuse() {
        let start = Instant::now();
        let mut limiter = PublishLimiter::new(10, start);
        for _ in 0..10 {
            assert_eq!(limiter.check(start), Verdict::Allowed);
        }
        for _ in 0..100 {
            assert_eq!(limiter.check(start), Verdict::Refused);
        }
        assert_eq!(limiter.check(start), Verdict::Abuse);
        // A new second starts a new count.
        let mut limiter = PublishLimiter::new(10, start);
        for i in 0..10 {
            limiter.check(start + Duration::from_millis(i));
        }
        for _ in 0..100 {
            limiter.check(start);
        }
        assert_eq!(
            limiter.check(start + Duration::from_millis(1100)),
            Verdict::Allowed,
            "tokens came back"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let start = Instant::now();
        let mut limiter = PublishLimiter::new(0, start);
        for _ in 0..10_000 {
            assert_eq!(limiter.check(start), Verdict::Allowed);
        }
    }
}
