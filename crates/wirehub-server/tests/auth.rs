//! Token authentication over real sockets: 401 at the upgrade without a valid token, channel
//! permissions from the claims, expiry (close 4001) and `refresh`.

use std::time::Duration;

use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wirehub_server::{AuthConfig, ServerConfig};
use wirehub_testkit::unix_now as now;
use wirehub_testkit::{Algorithm, TestServer, WsClient, hs256_token, read_fixture, signed_token};

const SECRET: &str = "a-test-secret-of-some-length";

fn hs256(claims: &serde_json::Value) -> String {
    hs256_token(SECRET, claims)
}

fn config() -> ServerConfig {
    ServerConfig::new()
        .heartbeat_interval(Duration::from_secs(60))
        .auth(Some(AuthConfig::Secret(SECRET.into())))
}

async fn status_of(url: String, bearer: Option<&str>) -> u16 {
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = bearer {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_upgrade_needs_a_valid_token() {
    let server = TestServer::start(config()).await;
    let good = hs256(&json!({"sub": "ann", "exp": now() + 60, "subscribe": ["*"]}));
    assert_eq!(status_of(server.ws_url(), None).await, 401, "no token");
    assert_eq!(
        status_of(server.ws_url(), Some("not.a.jwt")).await,
        401,
        "garbage"
    );
    let expired = hs256(&json!({"sub": "ann", "exp": now() - 10}));
    assert_eq!(
        status_of(server.ws_url(), Some(&expired)).await,
        401,
        "expired"
    );
    let early = hs256(&json!({"sub": "ann", "exp": now() + 60, "nbf": now() + 30}));
    assert_eq!(
        status_of(server.ws_url(), Some(&early)).await,
        401,
        "not yet valid"
    );
    let no_exp = hs256(&json!({"sub": "ann"}));
    assert_eq!(
        status_of(server.ws_url(), Some(&no_exp)).await,
        401,
        "exp is required"
    );
    let other_key = hs256_token(
        "another secret entirely",
        &json!({"sub": "ann", "exp": now() + 60}),
    );
    assert_eq!(
        status_of(server.ws_url(), Some(&other_key)).await,
        401,
        "wrong key"
    );
    assert_eq!(status_of(server.ws_url(), Some(&good)).await, 101, "header");
    assert_eq!(
        status_of(format!("{}?token={good}", server.ws_url()), None).await,
        101,
        "query"
    );
}

#[tokio::test]
async fn permissions_come_from_the_claims() {
    let server = TestServer::start(config()).await;
    let token = hs256(&json!({
        "sub": "ann", "exp": now() + 60,
        "subscribe": ["chat:*", "news"], "publish": ["chat:lobby"]
    }));
    let (mut client, _) = WsClient::connect(&format!("{}?token={token}", server.ws_url())).await;
    client.subscribe("chat:lobby").await;
    client.subscribe("news").await;
    client
        .send(&json!({"type": "subscribe", "channel": "secret", "id": 1}))
        .await;
    let error = client.expect("error").await;
    assert_eq!(
        (error["code"].as_str(), error["id"].as_u64()),
        (Some("forbidden"), Some(1))
    );
    client
        .send(&json!({"type": "publish", "channel": "news", "data": 1, "id": 2}))
        .await;
    assert_eq!(client.expect("error").await["code"], "forbidden");
    client
        .send(&json!({"type": "publish", "channel": "chat:lobby", "data": 1, "id": 3}))
        .await;
    let mut replies = [client.recv().await, client.recv().await];
    replies.sort_by_key(|r| r["type"].as_str().map(str::to_owned));
    assert_eq!(replies[0]["type"], "ack");
    assert_eq!(replies[1]["type"], "message");
}

#[tokio::test]
async fn an_expiring_token_closes_with_4001_unless_refreshed() {
    let server = TestServer::start(config()).await;
    let short = hs256(&json!({"sub": "ann", "exp": now() + 1, "subscribe": ["*"]}));
    let (mut client, _) = WsClient::connect(&format!("{}?token={short}", server.ws_url())).await;
    let frame = client.expect_close().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4001);

    let short = hs256(&json!({"sub": "bob", "exp": now() + 1, "subscribe": ["a", "b"]}));
    let (mut client, _) = WsClient::connect(&format!("{}?token={short}", server.ws_url())).await;
    client.subscribe("a").await;
    client.subscribe("b").await;
    // Another user's token is refused.
    let other = hs256(&json!({"sub": "eve", "exp": now() + 3600}));
    client
        .send(&json!({"type": "refresh", "token": other, "id": 1}))
        .await;
    assert_eq!(client.expect("error").await["code"], "forbidden");
    client
        .send(&json!({"type": "refresh", "token": "junk", "id": 2}))
        .await;
    assert_eq!(client.expect("error").await["code"], "unauthorized");
    // A longer token for the same user that no longer allows `b`.
    let longer = hs256(&json!({"sub": "bob", "exp": now() + 3600, "subscribe": ["a"]}));
    client
        .send(&json!({"type": "refresh", "token": longer, "id": 3}))
        .await;
    assert_eq!(client.expect("unsubscribed").await["channel"], "b");
    let refreshed = client.expect("refreshed").await;
    assert_eq!(refreshed["id"], 3);
    // Past the first token's expiry the connection is still open.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.send(&json!({"type": "ping", "id": 4})).await;
    assert_eq!(client.expect("pong").await["id"], 4);
}

#[tokio::test]
async fn public_keys_verify_rs256_and_es256_tokens() {
    for (public, private, algorithm) in [
        ("rsa-public.pem", "rsa-private.pem", Algorithm::RS256),
        (
            "es256-public.pem",
            "es256-private.pk8.pem",
            Algorithm::ES256,
        ),
    ] {
        let public = read_fixture(public);
        let private = read_fixture(private);
        let server =
            TestServer::start(ServerConfig::new().auth(Some(AuthConfig::PublicKeyPem(public))))
                .await;
        let token = signed_token(algorithm, &private, &json!({"sub": "k", "exp": now() + 60}));
        assert_eq!(
            status_of(server.ws_url(), Some(&token)).await,
            101,
            "{algorithm:?}"
        );
        let hs = hs256(&json!({"sub": "k", "exp": now() + 60}));
        assert_eq!(
            status_of(server.ws_url(), Some(&hs)).await,
            401,
            "HS256 is refused with a public key"
        );
    }
}
