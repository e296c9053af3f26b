//! `GET /readyz`: whether this node serves fully, for load balancers and orchestrators.
//!
//! `/healthz` is liveness (the process answers); `/readyz` is readiness: `200
//! {"status":"ready"}` when the node accepts connections and its broker is reachable, `503`
//! with a JSON body naming what is wrong otherwise (`"broker": "unreachable"` while the Redis
//! broker cannot publish or its pub/sub connection is down, `"shutdown": "draining"` once the
//! node is shutting down). Connections stay open while the broker is unreachable: taking the
//! node out of a balancer's rotation only steers new clients elsewhere.
//!
//! Also the broker's lines of `/metrics` ([`broker_metrics`]).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wirehub_core::Hub;

use crate::state::AppState;

/// Answers `GET /readyz`.
pub(crate) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let broker = state.hub.broker();
    let health = broker.health();
    let mut problems = serde_json::Map::new();
    if !health.reachable {
        problems.insert("broker".to_owned(), "unreachable".into());
    }
    if state.shutdown.is_cancelled() {
        problems.insert("shutdown".to_owned(), "draining".into());
    }
    if problems.is_empty() {
        return (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))).into_response();
    }
    problems.insert("status".to_owned(), "unavailable".into());
    problems.insert("broker_kind".to_owned(), broker.name().into());
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::Value::Object(problems)),
    )
        .into_response()
}

/// Appends the broker's metrics to the `/metrics` page.
pub(crate) fn broker_metrics(hub: &Hub, out: &mut String) {
    let health = hub.broker().health();
    let _ = writeln!(
        out,
        "# HELP wirehub_broker_reachable Whether the broker is reachable (1) or not (0); /readyz answers 503 while it is not.\n\
         # TYPE wirehub_broker_reachable gauge\n\
         wirehub_broker_reachable {}\n\
         # HELP wirehub_broker_resubscribes_total Broker subscriptions that were connected but no longer delivering (a canary did not come back) and were made again.\n\
         # TYPE wirehub_broker_resubscribes_total counter\n\
         wirehub_broker_resubscribes_total {}",
        u8::from(health.reachable),
        health.resubscribes,
    );
}
