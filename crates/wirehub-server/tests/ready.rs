//! `GET /readyz` beside `GET /healthz` on a node with the in-memory broker (the Redis broker's
//! readiness under faults is tested in `wirehub-broker-redis/tests/faults.rs`).

use serde_json::{Value, json};
use wirehub_server::ServerConfig;
use wirehub_testkit::TestServer;

#[tokio::test]
async fn a_memory_node_is_ready_and_says_so_in_json() {
    let server = TestServer::start(ServerConfig::new()).await;
    let response = reqwest::get(server.http_url("/readyz")).await.expect("get");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok()),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("json");
    assert_eq!(body, json!({"status": "ready"}));
    assert_eq!(server.metric("wirehub_broker_reachable").await, 1);
    assert_eq!(server.metric("wirehub_broker_resubscribes_total").await, 0);
    let health = reqwest::get(server.http_url("/healthz"))
        .await
        .expect("get");
    assert_eq!(health.status(), 200);
}
