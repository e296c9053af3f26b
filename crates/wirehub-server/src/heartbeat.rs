//! The server's heartbeat: a WebSocket ping each interval; no pong by the next tick ends
//! the connection.
//!
//! Each connection keeps one deadline, polled as one arm of its session loop. Deadlines live
//! in tokio's timer wheel, shared by all connections, so a heartbeat costs no task and no
//! allocation per connection. The first ping comes at a random point of the first interval,
//! so that connections opened together (after a restart) do not ping in lockstep.

use std::time::Duration;

use tokio::time::Instant;

use crate::session::spread;

/// One connection's heartbeat state.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    interval: Option<Duration>,
    next: Instant,
    awaiting_pong: bool,
}

impl Heartbeat {
    /// A heartbeat whose first tick falls at a random point of the first interval.
    pub(crate) fn new(interval: Duration) -> Self {
        Heartbeat {
            interval: Some(interval),
            next: Instant::now() + spread(interval),
            awaiting_pong: false,
        }
    }

    /// No heartbeat (the echo route).
    pub(crate) fn disabled() -> Self {
        Heartbeat {
            interval: None,
            next: Instant::now(),
            awaiting_pong: false,
        }
    }

    /// When the next ping is due (`None` when disabled).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.interval.map(|_| self.next)
    }

    /// Whether the ping sent at the previous tick is still unanswered.
    pub(crate) fn awaiting_pong(&self) -> bool {
        self.awaiting_pong
    }

    /// Records that a ping was sent at this tick and schedules the next one.
    pub(crate) fn sent_ping(&mut self) {
        self.awaiting_pong = true;
        if let Some(interval) = self.interval {
            self.next = Instant::now().max(self.next) + interval;
        }
    }

    /// Records a pong.
    pub(crate) fn pong_received(&mut self) {
        self.awaiting_pong = false;
    }
}
