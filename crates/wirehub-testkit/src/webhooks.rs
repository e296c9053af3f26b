//! [`WebhookReceiver`]: a real HTTP endpoint on `127.0.0.1:0` for the server's webhooks. It
//! checks every request's `X-Wirehub-Signature` (with its own HMAC-SHA256, not the server's
//! code), answers 500 to its first requests on purpose, and records what it accepted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::TIMEOUT;

/// What the receiver saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Events of the requests answered 2xx, in arrival order.
    pub accepted: Vec<Value>,
    /// Ids of the events in requests answered 500.
    pub refused: Vec<String>,
    /// Requests whose signature did not match (answered 401).
    pub bad_signatures: usize,
}

/// The endpoint (stops with the test's runtime).
#[derive(Debug)]
pub struct WebhookReceiver {
    url: String,
    seen: Arc<Mutex<Seen>>,
}

#[derive(Clone)]
struct ReceiverState {
    secret: Arc<str>,
    seen: Arc<Mutex<Seen>>,
    /// Requests still to answer 500.
    fail: Arc<AtomicU32>,
}

fn lock(seen: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` keyed with `secret`.
pub fn expected_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let given = headers
        .get("x-wirehub-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let batch: Value = serde_json::from_slice(&body).expect("a webhook body is JSON");
    let events = batch["events"].as_array().cloned().unwrap_or_default();
    let mut seen = lock(&state.seen);
    if given != expected_signature(&state.secret, &body) {
        seen.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let failing = state
        .fail
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        seen.refused.extend(
            events
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned)),
        );
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    seen.accepted.extend(events);
    StatusCode::OK
}

impl WebhookReceiver {
    /// A receiver for `secret` answering its first `fail` requests with 500.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start(secret: &str, fail: u32) -> WebhookReceiver {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let state = ReceiverState {
            secret: secret.into(),
            seen: seen.clone(),
            fail: Arc::new(AtomicU32::new(fail)),
        };
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            url: format!("http://{addr}/hooks"),
            seen,
        }
    }

    /// The URL to give `--webhook-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A copy of what it saw.
    pub fn seen(&self) -> Seen {
        lock(&self.seen).clone()
    }

    /// The accepted events.
    pub fn accepted(&self) -> Vec<Value> {
        lock(&self.seen).accepted.clone()
    }

    /// Accepted events of `kind` (on `channel`, unless it is empty).
    pub fn count(&self, kind: &str, channel: &str) -> usize {
        lock(&self.seen)
            .accepted
            .iter()
            .filter(|e| e["type"] == kind && (channel.is_empty() || e["channel"] == channel))
            .count()
    }

    /// Waits until `predicate` holds for the accepted events.
    ///
    /// # Panics
    /// When it does not within [`TIMEOUT`].
    pub async fn wait(&self, what: &str, predicate: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if predicate(&self.accepted()) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited for {what}; got {:#?}",
                self.accepted()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
