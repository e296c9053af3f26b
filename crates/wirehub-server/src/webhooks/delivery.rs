//! The delivery task: batches from the queue, POSTed one at a time, each retried until it is
//! answered 2xx or has failed `max_attempts` times.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{DeadReason, Envelope, Webhooks};

/// How often the task looks whether the server's sessions are gone, after shutdown.
const QUIET_POLL: Duration = Duration::from_millis(20);

/// What one attempt came to.
enum Outcome {
    Delivered,
    Failed(String),
}

pub(super) async fn run(
    webhooks: Arc<Webhooks>,
    client: reqwest::Client,
    shutdown: CancellationToken,
) {
    let config = &webhooks.config;
    // Set once shutdown is seen: past it, what is left goes to the dead-letter file.
    let mut deadline: Option<Instant> = None;
    loop {
        if deadline.is_none() && shutdown.is_cancelled() {
            deadline = Some(Instant::now() + config.flush_window);
        }
        let Some(batch) = next_batch(&webhooks, &shutdown, &mut deadline).await else {
            break;
        };
        deliver(&webhooks, &client, &batch, &shutdown, &mut deadline).await;
    }
    let rest: Vec<Envelope> = webhooks.lock_queue().drain(..).collect();
    if !rest.is_empty() {
        warn!(
            target_name = %webhooks.name,
            events = rest.len(),
            "webhook events still queued at shutdown: written to the dead-letter file"
        );
        webhooks.bury(&rest, DeadReason::Shutdown);
    }
}

/// Waits for the next batch: up to `batch_size` events, the first of which waited at most
/// `batch_delay` (no wait once shutting down). `None` when the task should end.
async fn next_batch(
    webhooks: &Webhooks,
    shutdown: &CancellationToken,
    deadline: &mut Option<Instant>,
) -> Option<Vec<Envelope>> {
    let config = &webhooks.config;
    // Wait for a first event.
    loop {
        if !webhooks.lock_queue().is_empty() {
            break;
        }
        match *deadline {
            None => {
                tokio::select! {
                    () = webhooks.notify.notified() => {}
                    () = shutdown.cancelled() => {
                        *deadline = Some(Instant::now() + config.flush_window);
                    }
                }
            }
            Some(at) => {
                let quiet = webhooks.quiet.get().is_none_or(|quiet| quiet());
                if quiet || Instant::now() >= at {
                    // Events emitted between the check and now are in the queue: look again.
                    if webhooks.lock_queue().is_empty() {
                        return None;
                    }
                    break;
                }
                tokio::select! {
                    () = webhooks.notify.notified() => {}
                    () = sleep(QUIET_POLL) => {}
                }
            }
        }
    }
    // Let the batch fill, for at most the batch delay.
    if deadline.is_none() && webhooks.lock_queue().len() < config.batch_size {
        let until = Instant::now() + config.batch_delay;
        loop {
            tokio::select! {
                () = sleep_until(until) => break,
                () = webhooks.notify.notified() => {
                    if webhooks.lock_queue().len() >= config.batch_size {
                        break;
                    }
                }
                () = shutdown.cancelled(), if deadline.is_none() => {
                    *deadline = Some(Instant::now() + config.flush_window);
                    break;
                }
            }
        }
    }
    let mut queue = webhooks.lock_queue();
    let take = queue.len().min(config.batch_size);
    Some(queue.drain(..take).collect())
}

/// Sends one batch until it is delivered, has failed `max_attempts` times, or the shutdown
/// deadline passed; the last two go to the dead-letter file.
async fn deliver(
    webhooks: &Webhooks,
    client: &reqwest::Client,
    batch: &[Envelope],
    shutdown: &CancellationToken,
    deadline: &mut Option<Instant>,
) {
    let config = &webhooks.config;
    let encoded = webhooks.format.encode(batch);
    let metrics = &webhooks.metrics;
    let mut attempt = 1u32;
    loop {
        let mut request = client
            .post(&config.url)
            .header(CONTENT_TYPE, "application/json")
            .body(encoded.body.clone());
        for (name, value) in &encoded.headers {
            request = request.header(name, value);
        }
        let send = async {
            match request.send().await {
                Ok(response) if response.status().is_success() => Outcome::Delivered,
                Ok(response) => Outcome::Failed(format!("answered {}", response.status())),
                Err(err) if err.is_timeout() => {
                    Outcome::Failed(format!("no answer within {:?}", config.timeout))
                }
                Err(err) => Outcome::Failed(err.to_string()),
            }
        };
        let outcome = match *deadline {
            Some(at) => match tokio::time::timeout_at(at, send).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed("the server stopped".to_owned()),
            },
            None => send.await,
        };
        let why = match outcome {
            Outcome::Delivered => {
                metrics
                    .sent
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                debug!(events = batch.len(), attempt, "webhook batch delivered");
                return;
            }
            Outcome::Failed(why) => why,
        };
        metrics.failed.fetch_add(1, Ordering::Relaxed);
        if attempt >= config.max_attempts {
            warn!(
                target_name = %webhooks.name,
                events = batch.len(),
                attempts = attempt,
                reason = %why,
                "webhook batch given up: written to the dead-letter file"
            );
            webhooks.bury(batch, DeadReason::Attempts);
            return;
        }
        if deadline.is_some_and(|at| Instant::now() >= at) {
            webhooks.bury(batch, DeadReason::Shutdown);
            return;
        }
        let delay = backoff(config.retry_initial, config.retry_max, attempt);
        debug!(attempt, reason = %why, ?delay, "webhook request failed; retrying");
        let retry_at = Instant::now() + delay;
        let stop_at = deadline.map_or(retry_at, |at| at.min(retry_at));
        tokio::select! {
            () = sleep_until(stop_at) => {}
            () = shutdown.cancelled(), if deadline.is_none() => {
                *deadline = Some(Instant::now() + config.flush_window);
                sleep_until(retry_at.min(Instant::now() + config.flush_window)).await;
            }
        }
        if deadline.is_some_and(|at| Instant::now() >= at) {
            webhooks.bury(batch, DeadReason::Shutdown);
            return;
        }
        attempt += 1;
        metrics.retried.fetch_add(1, Ordering::Relaxed);
    }
}

/// The delay before attempt `attempt + 1`: `initial` doubled per attempt up to `max`, then
/// a random point in its upper half (so that nodes retrying together spread out).
fn backoff(initial: Duration, max: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let full = initial.saturating_mul(1 << exponent).min(max);
    full.mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let delay = backoff(initial, max, attempt);
            let full = Duration::from_millis(full);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
        }
    }
}
