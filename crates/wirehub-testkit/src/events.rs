//! The Rust client in tests: settings that reconnect fast, and waiting on its event stream
//! with a timeout.

use std::time::Duration;

use wirehub_client::{Backoff, ClientConfig, Event, Events, Jitter};

use crate::TIMEOUT;

/// A client of `url` for tests: it reconnects within 50 to 200 ms (full jitter), gives up
/// connecting after 2 s, and waits `wait` for a request's answer.
pub fn client_config(url: &str, wait: Duration) -> ClientConfig {
    ClientConfig::new(url)
        .backoff(
            Backoff::default()
                .initial(Duration::from_millis(50))
                .max(Duration::from_millis(200))
                .jitter(Jitter::Full),
        )
        .request_timeout(wait)
        .connect_timeout(Duration::from_secs(2))
}

/// Waits for the first event matching `predicate`, skipping the others, and returns it.
///
/// # Panics
/// When the stream ends first or nothing matches within [`TIMEOUT`]; `what` names the event
/// in the message.
pub async fn wait_for(
    events: &mut Events,
    what: &str,
    predicate: impl Fn(&Event) -> bool,
) -> Event {
    let found = tokio::time::timeout(TIMEOUT, async {
        while let Some(event) = events.recv().await {
            if predicate(&event) {
                return Some(event);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the event stream ended before {what}"),
        Err(_) => panic!("no {what} within {TIMEOUT:?}"),
    }
}
