//! Waiting on the Rust client's event stream, with a timeout.

use wirehub_client::{Event, Events};

use crate::TIMEOUT;

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
