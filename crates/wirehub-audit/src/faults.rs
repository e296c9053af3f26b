//! The fault plan: drawn up front from the seed (so the same seed gives the same schedule,
//! as far as timing allows), printed, then played against the running system.
//!
//! A fault holds its target for a while and then restores it; the plan never puts two
//! faults on the same target at once, and leaves the last seconds of the run quiet.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fault {
    /// Cut the proxied link `proxy` for `hold`.
    Cut { proxy: usize, hold: Duration },
    /// SIGKILL node `node`, restart it after `down` on the same port.
    Kill { node: usize, down: Duration },
    /// Kill Redis, restart it empty after `down`.
    RedisRestart { down: Duration },
    /// SIGSTOP Redis for `hold`.
    RedisPause { hold: Duration },
    /// Subscriber `subscriber`'s application stops reading for `hold` while its
    /// cluster's publishers send `burst` messages each.
    Stall {
        subscriber: usize,
        hold: Duration,
        burst: u64,
    },
    /// SIGSTOP subscriber process `subscriber` for `hold` while its cluster's publishers
    /// send `burst` messages each (it stops reading its socket: the server's queue for it
    /// fills).
    Freeze {
        subscriber: usize,
        hold: Duration,
        burst: u64,
    },
    /// Publisher `publisher` sends `count` messages as fast as it can.
    Burst { publisher: usize, count: u64 },
}

impl Fault {
    /// How long the fault holds its target.
    fn hold(&self) -> Duration {
        match self {
            Fault::Cut { hold, .. }
            | Fault::RedisPause { hold }
            | Fault::Stall { hold, .. }
            | Fault::Freeze { hold, .. } => *hold,
            Fault::Kill { down, .. } | Fault::RedisRestart { down } => *down,
            Fault::Burst { .. } => Duration::from_secs(2),
        }
    }

    /// What it occupies: no two faults on one target at once.
    fn target(&self) -> String {
        match self {
            Fault::Cut { proxy, .. } => format!("proxy {proxy}"),
            Fault::Kill { node, .. } => format!("node {node}"),
            Fault::RedisRestart { .. } | Fault::RedisPause { .. } => "redis".into(),
            Fault::Stall { subscriber, .. } | Fault::Freeze { subscriber, .. } => {
                format!("subscriber {subscriber}")
            }
            Fault::Burst { publisher, .. } => format!("publisher {publisher}"),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Cut { proxy, hold } => write!(f, "cut proxy {proxy} for {hold:.1?}"),
            Fault::Kill { node, down } => {
                write!(f, "SIGKILL node {node}, restart after {down:.1?}")
            }
            Fault::RedisRestart { down } => write!(f, "restart Redis empty after {down:.1?}"),
            Fault::RedisPause { hold } => write!(f, "SIGSTOP Redis for {hold:.1?}"),
            Fault::Stall {
                subscriber,
                hold,
                burst,
            } => write!(
                f,
                "stall subscriber {subscriber} for {hold:.1?} during a burst of {burst} per publisher"
            ),
            Fault::Freeze {
                subscriber,
                hold,
                burst,
            } => write!(
                f,
                "SIGSTOP subscriber {subscriber} for {hold:.1?} during a burst of {burst} per publisher"
            ),
            Fault::Burst { publisher, count } => {
                write!(f, "burst of {count} from publisher {publisher}")
            }
        }
    }
}

/// What the plan may pick from.
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    /// Proxies.
    pub(crate) proxies: usize,
    /// Nodes.
    pub(crate) nodes: usize,
    /// Whether there is a Redis to restart and pause.
    pub(crate) redis: bool,
    /// All subscribers (any can be stalled).
    pub(crate) subscribers: usize,
    /// The subscribers that are processes (they can be frozen).
    pub(crate) processes: Vec<usize>,
    /// Publishers.
    pub(crate) publishers: usize,
}

/// A fault at a time from the start of the workload.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    /// When it starts.
    pub(crate) at: Duration,
    /// What.
    pub(crate) fault: Fault,
}

/// Draws the faults for a workload of `duration` from `seed`: one every 1.5 to 4 s, none in
/// the last 8 s (so that the end is quiet before the drain).
pub(crate) fn plan(seed: u64, duration: Duration, targets: &Targets) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut busy: Vec<(String, Duration)> = Vec::new();
    let mut plan = Vec::new();
    let quiet = duration.saturating_sub(Duration::from_secs(8));
    let mut at = Duration::from_secs(2);
    let secs = |rng: &mut StdRng, low: f64, high: f64| {
        Duration::from_secs_f64(rng.random_range(low..high))
    };
    while at < quiet {
        for _ in 0..8 {
            let fault = match rng.random_range(0..100) {
                0..25 if targets.proxies > 0 => Fault::Cut {
                    proxy: rng.random_range(0..targets.proxies),
                    hold: secs(&mut rng, 0.1, 3.0),
                },
                25..37 if targets.nodes > 0 => Fault::Kill {
                    node: rng.random_range(0..targets.nodes),
                    down: secs(&mut rng, 0.3, 3.0),
                },
                37..45 if targets.redis => Fault::RedisRestart {
                    down: secs(&mut rng, 0.0, 2.0),
                },
                45..52 if targets.redis => Fault::RedisPause {
                    hold: secs(&mut rng, 1.0, 5.0),
                },
                52..72 if targets.subscribers > 0 => Fault::Stall {
                    subscriber: rng.random_range(0..targets.subscribers),
                    hold: secs(&mut rng, 2.0, 8.0),
                    burst: rng.random_range(300..1200),
                },
                72..85 if !targets.processes.is_empty() => Fault::Freeze {
                    subscriber: targets.processes[rng.random_range(0..targets.processes.len())],
                    hold: secs(&mut rng, 1.0, 6.0),
                    burst: rng.random_range(0..1500),
                },
                85..100 if targets.publishers > 0 => Fault::Burst {
                    publisher: rng.random_range(0..targets.publishers),
                    count: rng.random_range(200..1500),
                },
                _ => continue,
            };
            let target = fault.target();
            if busy.iter().any(|(t, until)| *t == target && *until > at) {
                continue;
            }
            // One second of settling after each fault before the target is used again.
            busy.push((target, at + fault.hold() + Duration::from_secs(1)));
            plan.push(Planned { at, fault });
            break;
        }
        at += secs(&mut rng, 1.5, 4.0);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets() -> Targets {
        Targets {
            proxies: 4,
            nodes: 3,
            redis: true,
            subscribers: 9,
            processes: vec![4, 5, 6, 7, 8],
            publishers: 12,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan_and_another_seed_another() {
        let a = plan(7, Duration::from_secs(60), &targets());
        assert_eq!(a, plan(7, Duration::from_secs(60), &targets()));
        assert_ne!(a, plan(8, Duration::from_secs(60), &targets()));
        assert!(a.len() >= 10, "{a:?}");
    }

    #[test]
    fn faults_never_overlap_on_one_target_and_the_end_is_quiet() {
        for seed in 0..50 {
            let planned = plan(seed, Duration::from_secs(60), &targets());
            for (i, a) in planned.iter().enumerate() {
                assert!(a.at < Duration::from_secs(52));
                for b in &planned[i + 1..] {
                    if a.fault.target() == b.fault.target() {
                        assert!(b.at >= a.at + a.fault.hold(), "{a:?} overlaps {b:?}");
                    }
                }
            }
        }
    }
}
