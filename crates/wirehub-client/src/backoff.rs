//! The reconnect schedule: capped exponential backoff with full jitter applied after the cap.
//!
//! The delay before the `k`-th consecutive retry (`k = 0, 1, 2, …`) is
//!
//! ```text
//! ceiling(k) = min(max, initial × multiplier^k)
//! delay(k)   = random(0, ceiling(k))        with Jitter::Full (the default)
//! delay(k)   = ceiling(k)                   with Jitter::None
//! ```
//!
//! Jitter is applied *after* the cap, so that even clients that have been failing for a long
//! time (all at the cap) spread their reconnects over the whole `[0, max)` window instead of
//! arriving together. With the defaults (1 s, ×2, 30 s) the ceilings are 1, 2, 4, 8, 16, 30,
//! 30, … seconds.
//!
//! `k` counts retries since the connection last *proved healthy* (see
//! [`ClientConfig::healthy_after`](crate::ClientConfig::healthy_after)); a connection that
//! is accepted and then dropped right away does not reset it, so a server that accepts and
//! immediately closes sees growing delays. When the server's close code asks the client to
//! back off (4100–4199, other error codes, or the connection failed without a close code),
//! `k` is raised to at least 1 first, so such a retry never uses the smallest ceiling.
//!
//! Everything here is pure: the random source is injected, so tests compute exact delays.

use std::time::Duration;

use rand::Rng;
use wirehub_protocol::ReconnectAdvice;

/// How reconnect delays are randomized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// `delay = random(0, ceiling)`: spreads reconnecting clients evenly over the window.
    #[default]
    Full,
    /// `delay = ceiling`: deterministic; only for tests and single clients.
    None,
}

/// The parameters of the reconnect schedule.
///
/// The delay before the `k`-th consecutive retry (`k = 0, 1, 2, …`) is
/// `random(0, min(max, initial × multiplier^k))` with [`Jitter::Full`] (the jitter is
/// applied after the cap), or `min(max, initial × multiplier^k)` with [`Jitter::None`].
/// `k` restarts at 0 once a connection proved healthy; see the crate docs for when.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The ceiling of the first retry. Default 1 s.
    pub initial: Duration,
    /// The largest ceiling: the cap. Default 30 s.
    pub max: Duration,
    /// How much the ceiling grows per consecutive retry. Default 2.0; values below 1.0 (or
    /// NaN) are treated as 1.0.
    pub multiplier: f64,
    /// How the delay is drawn below the ceiling. Default [`Jitter::Full`].
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// Sets the ceiling of the first retry.
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets the cap.
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets the growth factor per retry.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// `min(max, initial × multiplier^k)`: the ceiling of the `k`-th consecutive retry.
    pub fn ceiling(&self, k: u32) -> Duration {
        let multiplier = if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exponent = i32::try_from(k).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * multiplier.powi(exponent);
        match Duration::try_from_secs_f64(secs) {
            Ok(ceiling) => ceiling.min(self.max),
            // Overflowed to infinity: the cap applies.
            Err(_) => self.max,
        }
    }

    /// The delay of the `k`-th retry with the jitter drawn from the thread's random source:
    /// for callers that run their own retry loop (e.g. around an awaited
    /// [`Client::subscribe`](crate::Client::subscribe) refused for a passing reason).
    pub fn random_delay(&self, k: u32) -> Duration {
        let sample = match self.jitter {
            Jitter::None => 0.0,
            Jitter::Full => rand::random::<f64>(),
        };
        self.delay(k, sample)
    }

    /// The delay of the `k`-th retry given a uniform sample in `[0, 1)` (the jitter draw).
    ///
    /// `sample` is ignored with [`Jitter::None`]; out-of-range samples are clamped.
    pub fn delay(&self, k: u32, sample: f64) -> Duration {
        let ceiling = self.ceiling(k);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => ceiling.mul_f64(if sample.is_finite() {
                sample.clamp(0.0, 1.0)
            } else {
                0.0
            }),
        }
    }
}

/// The reconnect state of one client: the retry counter and the random source.
#[derive(Debug)]
pub struct ReconnectSchedule<R> {
    backoff: Backoff,
    retries: u32,
    rng: R,
}

impl<R: Rng> ReconnectSchedule<R> {
    /// A schedule that has not failed yet, drawing jitter from `rng`.
    pub fn new(backoff: Backoff, rng: R) -> Self {
        ReconnectSchedule {
            backoff,
            retries: 0,
            rng,
        }
    }

    /// The number of consecutive retries since the last healthy connection (`k` of the next
    /// retry, before any back-off adjustment).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The delay before the next connection attempt, given the advice of the close code (or
    /// [`ReconnectAdvice::Backoff`] for a failed attempt without one). Advances the counter.
    ///
    /// [`ReconnectAdvice::Stop`] is treated like `Backoff`: deciding to stop is the caller's job.
    pub fn next_delay(&mut self, advice: ReconnectAdvice) -> Duration {
        let k = match advice {
            ReconnectAdvice::Reconnect => self.retries,
            ReconnectAdvice::Backoff | ReconnectAdvice::Stop => self.retries.max(1),
        };
        self.retries = k.saturating_add(1);
        let sample = match self.backoff.jitter {
            Jitter::None => 0.0,
            Jitter::Full => self.rng.random::<f64>(),
        };
        self.backoff.delay(k, sample)
    }

    /// The connection proved healthy: the next retry starts from the first ceiling again.
    pub fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use rand::RngCore;

    use super::*;

    /// An RNG whose every draw is the same `u64`, so `random::<f64>()` is exact.
    struct Fixed(u64);

    impl RngCore for Fixed {
        fn next_u32(&mut self) -> u32 {
            (self.0 >> 32) as u32
        }
        fn next_u64(&mut self) -> u64 {
            self.0
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for byte in dest {
                *byte = self.0 as u8;
            }
        }
    }

    /// `random::<f64>()` with this RNG is exactly 0.5.
    const HALF: u64 = 1 << 63;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let backoff = Backoff::default();
        let got: Vec<u64> = (0..8).map(|k| backoff.ceiling(k).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn full_jitter_is_applied_after_the_cap() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(0, 0.5), ms(500));
        assert_eq!(backoff.delay(3, 0.5), ms(4000));
        // At the cap the window is still the whole [0, max): 0.5 × 30 s, not 30 s − something.
        assert_eq!(backoff.delay(10, 0.5), ms(15_000));
        assert_eq!(backoff.delay(10, 0.0), Duration::ZERO);
        assert_eq!(backoff.delay(10, 7.0), Duration::from_secs(30));
        assert_eq!(backoff.delay(10, f64::NAN), Duration::ZERO);
    }

    #[test]
    fn no_jitter_uses_the_ceiling() {
        let backoff = Backoff::default().jitter(Jitter::None);
        assert_eq!(backoff.delay(2, 0.1), ms(4000));
    }

    #[test]
    fn odd_parameters_do_not_panic() {
        let backoff = Backoff::default().multiplier(f64::NAN);
        assert_eq!(backoff.ceiling(5), Duration::from_secs(1));
        let backoff = Backoff::default().multiplier(0.5);
        assert_eq!(backoff.ceiling(5), Duration::from_secs(1));
        let backoff = Backoff::default().multiplier(1e300).max(Duration::MAX);
        assert_eq!(backoff.ceiling(3), Duration::MAX);
        let backoff = Backoff::default().initial(Duration::ZERO);
        assert_eq!(backoff.ceiling(3), Duration::ZERO);
    }

    #[test]
    fn schedule_grows_and_resets_only_when_told() {
        let backoff = Backoff::default()
            .initial(ms(100))
            .max(ms(1000))
            .multiplier(3.0);
        let mut schedule = ReconnectSchedule::new(backoff, Fixed(HALF));
        let got: Vec<Duration> = (0..5)
            .map(|_| schedule.next_delay(ReconnectAdvice::Reconnect))
            .collect();
        // Ceilings 100, 300, 900, 1000, 1000; half of each.
        assert_eq!(got, [ms(50), ms(150), ms(450), ms(500), ms(500)]);
        assert_eq!(schedule.retries(), 5);
        schedule.reset();
        assert_eq!(schedule.next_delay(ReconnectAdvice::Reconnect), ms(50));
    }

    #[test]
    fn backoff_advice_skips_the_first_step() {
        let backoff = Backoff::default().jitter(Jitter::None);
        let mut schedule = ReconnectSchedule::new(backoff, Fixed(0));
        assert_eq!(
            schedule.next_delay(ReconnectAdvice::Backoff),
            Duration::from_secs(2)
        );
        assert_eq!(
            schedule.next_delay(ReconnectAdvice::Reconnect),
            Duration::from_secs(4)
        );
        schedule.reset();
        assert_eq!(
            schedule.next_delay(ReconnectAdvice::Reconnect),
            Duration::from_secs(1)
        );
        assert_eq!(
            schedule.next_delay(ReconnectAdvice::Backoff),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn jitter_draws_come_from_the_injected_rng() {
        let backoff = Backoff::default();
        let mut low = ReconnectSchedule::new(backoff, Fixed(0));
        assert_eq!(low.next_delay(ReconnectAdvice::Reconnect), Duration::ZERO);
        let mut high = ReconnectSchedule::new(backoff, Fixed(u64::MAX));
        let delay = high.next_delay(ReconnectAdvice::Reconnect);
        // The draw is just below 1.0; nanosecond rounding may reach the ceiling itself.
        assert!(
            delay <= Duration::from_secs(1) && delay > ms(999),
            "{delay:?}"
        );
    }
}
