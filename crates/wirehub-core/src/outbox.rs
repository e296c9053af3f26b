//! The bounded outbound queue of one connection.
//!
//! Everything a connection sends goes through its [`Outbox`] as ready-made WebSocket frames
//! (`Bytes`, shared between all the subscribers of a message), in the order it must reach the
//! client: replies, replayed history, live deliveries. The session's writer drains the whole
//! queue at once and writes it with one vectored write.
//!
//! The queue is bounded in frames and in bytes. A push that would overflow it marks the
//! outbox closed with [`CloseCode::SlowConsumer`] instead of blocking the publisher or
//! dropping the frame: the connection is then closed (and the client recovers what it missed
//! from history when it reconnects). No message is ever skipped silently.
//!
//! An empty outbox holds no allocation.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::Notify;
use wirehub_protocol::CloseCode;

/// Limits of one outbound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Frames queued at most.
    pub max_frames: usize,
    /// Bytes queued at most (frame lengths added up, even where frames are shared).
    pub max_bytes: usize,
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue is full: the outbox is now closed as a slow consumer.
    #[error("outbound queue full (slow consumer)")]
    Overflow,
    /// The outbox was closed before (the connection is going away).
    #[error("connection closing")]
    Closed,
}

/// A connection's bounded outbound queue of WebSocket frames.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    notify: Notify,
    limits: OutboxLimits,
}

#[derive(Debug, Default)]
struct OutboxState {
    frames: VecDeque<Bytes>,
    bytes: usize,
    closed: Option<CloseCode>,
}

impl Outbox {
    /// An empty outbox with the given limits.
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            state: Mutex::new(OutboxState::default()),
            notify: Notify::new(),
            limits,
        }
    }

    /// Queues one frame.
    ///
    /// # Errors
    /// [`PushError::Overflow`] when the queue is full (the outbox closes itself as a slow
    /// consumer), [`PushError::Closed`] when it was closed before.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut state = lock(&self.state);
        if state.closed.is_some() {
            return Err(PushError::Closed);
        }
        // A frame larger than the byte limit still goes through an empty queue, so that one
        // message of up to --max-message-size always fits.
        if !state.frames.is_empty()
            && (state.frames.len() >= self.limits.max_frames
                || state.bytes + frame.len() > self.limits.max_bytes)
        {
            state.closed = Some(CloseCode::SlowConsumer);
            drop(state);
            self.notify.notify_one();
            return Err(PushError::Overflow);
        }
        let was_empty = state.frames.is_empty();
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Closes the outbox with a reason; later pushes fail. The first reason wins.
    pub fn close(&self, code: CloseCode) {
        let mut state = lock(&self.state);
        if state.closed.is_none() {
            state.closed = Some(code);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Why the outbox was closed, if it was.
    pub fn closed(&self) -> Option<CloseCode> {
        lock(&self.state).closed
    }

    /// Moves every queued frame to the back of `out` and returns the close reason, if any.
    ///
    /// Frames queued before a slow-consumer close are still handed out, so the writer may
    /// flush them before it closes the connection.
    pub fn drain_into(&self, out: &mut VecDeque<Bytes>) -> Option<CloseCode> {
        let mut state = lock(&self.state);
        if out.is_empty() {
            std::mem::swap(out, &mut state.frames);
        } else {
            out.append(&mut state.frames);
        }
        state.bytes = 0;
        if state.frames.capacity() > 64 {
            state.frames = VecDeque::new();
        }
        state.closed
    }

    /// Number of frames queued now.
    pub fn len(&self) -> usize {
        lock(&self.state).frames.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until a frame is queued or the outbox is closed (returns at once if a wake-up
    /// arrived since the last call). Cancel-safe.
    pub async fn ready(&self) {
        self.notify.notified().await;
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it (the state of these
/// queues stays consistent at every step, so it is safe to go on).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(max_frames: usize, max_bytes: usize) -> Outbox {
        Outbox::new(OutboxLimits {
            max_frames,
            max_bytes,
        })
    }

    #[test]
    fn keeps_order_and_drains_everything() {
        let outbox = outbox(10, 1000);
        for i in 0..5u8 {
            outbox.push(Bytes::from(vec![i])).expect("room");
        }
        let mut out = VecDeque::new();
        assert_eq!(outbox.drain_into(&mut out), None);
        assert_eq!(
            out.iter().map(|b| b[0]).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(outbox.is_empty());
    }

    #[test]
    fn overflow_closes_as_slow_consumer() {
        let outbox = outbox(2, 1000);
        outbox.push(Bytes::from_static(b"a")).expect("room");
        outbox.push(Bytes::from_static(b"b")).expect("room");
        assert_eq!(
            outbox.push(Bytes::from_static(b"c")),
            Err(PushError::Overflow)
        );
        assert_eq!(outbox.closed(), Some(CloseCode::SlowConsumer));
        assert_eq!(
            outbox.push(Bytes::from_static(b"d")),
            Err(PushError::Closed)
        );
        let mut out = VecDeque::new();
        assert_eq!(outbox.drain_into(&mut out), Some(CloseCode::SlowConsumer));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn byte_limit() {
        let outbox = outbox(100, 5);
        outbox
            .push(Bytes::from_static(b"larger than the limit"))
            .expect("an empty queue takes any frame");
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        outbox.push(Bytes::from_static(b"abc")).expect("room");
        assert_eq!(
            outbox.push(Bytes::from_static(b"def")),
            Err(PushError::Overflow)
        );
    }

    #[tokio::test]
    async fn ready_wakes_on_push_and_close() {
        let outbox = std::sync::Arc::new(outbox(10, 100));
        let waiter = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.ready().await })
        };
        outbox.push(Bytes::from_static(b"x")).expect("room");
        waiter.await.expect("woken");
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        outbox.close(CloseCode::GoingAway);
        outbox.ready().await;
        assert_eq!(outbox.closed(), Some(CloseCode::GoingAway));
    }
}
