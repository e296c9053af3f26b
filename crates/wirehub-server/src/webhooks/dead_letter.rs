//! The dead-letter file: webhook events that could not be delivered, one JSON object per
//! line, appended: `{"reason": "overflow"|"attempts"|"shutdown", "url": URL, "event": EVENT}`
//! where EVENT is the event as the webhook body carries it (same `id`). Written
//! synchronously (a line is a small append to the page cache), so an event is never lost
//! between the queue and the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{DeadReason, Envelope};

/// How often the overflow warning is logged at most.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The file, opened on first use.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    file: Mutex<Option<File>>,
    /// When the overflow warning was last logged, and how many overflows since.
    warned: Mutex<(Option<Instant>, u64)>,
}

#[derive(Serialize)]
struct Line<'a> {
    reason: &'static str,
    url: &'a str,
    event: serde_json::Value,
}

impl DeadLetter {
    /// The file at `path` (created when first written).
    pub fn new(path: PathBuf) -> Self {
        DeadLetter {
            path,
            file: Mutex::new(None),
            warned: Mutex::new((None, 0)),
        }
    }

    /// Appends one line per event.
    ///
    /// # Errors
    /// The file cannot be opened or written.
    pub fn write(&self, url: &str, reason: DeadReason, envelopes: &[Envelope]) -> io::Result<()> {
        let mut text = Vec::with_capacity(256 * envelopes.len());
        for envelope in envelopes {
            let line = Line {
                reason: reason.as_str(),
                url,
                event: envelope.to_json(),
            };
            serde_json::to_writer(&mut text, &line)?;
            text.push(b'\n');
        }
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if file.is_none() {
            *file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let result = file.as_mut().map_or(Ok(()), |f| f.write_all(&text));
        if result.is_err() {
            // Opened again next time (the file may have been removed or the disk freed).
            *file = None;
        }
        result
    }

    /// Logs that the queue overflowed, at most once per `WARN_EVERY`, with the count.
    pub fn warn_overflow(&self, target: &str, capacity: usize) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        warned.1 += 1;
        let now = Instant::now();
        if warned
            .0
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            let count = std::mem::take(&mut warned.1);
            warned.0 = Some(now);
            drop(warned);
            tracing::warn!(
                target_name = target,
                capacity,
                events = count,
                path = %self.path.display(),
                "webhook queue full: events written to the dead-letter file"
            );
        }
    }
}
