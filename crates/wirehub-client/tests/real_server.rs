//! The client against the real wirehub server: restarts on the same port, graceful
//! shutdown, and recovery of missed messages through `since` after a network cut (through
//! `TcpProxy`).

use std::time::Duration;

use serde_json::json;
use tokio::time::timeout;
use wirehub_client::{Client, ClientConfig, Error, ErrorCode, Event, SubscriptionEvent};
use wirehub_server::{AuthConfig, ServerConfig};
use wirehub_testkit::{
    Claims, TcpProxy, TestServer, client_config, hs256_token, read_fixture, wait_for,
};

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn config(url: &str) -> ClientConfig {
    client_config(url, WAIT)
}

fn server_config() -> ServerConfig {
    ServerConfig::new()
        .history_size(100)
        .shutdown_drain(Duration::from_millis(50))
}

async fn next_item(subscription: &mut wirehub_client::Subscription) -> SubscriptionEvent {
    timeout(WAIT, subscription.recv())
        .await
        .expect("a delivery in time")
        .expect("the subscription is open")
}

fn message_of(item: SubscriptionEvent) -> (u64, serde_json::Value) {
    match item {
        SubscriptionEvent::Message(message) => {
            (message.offset, message.deserialize().expect("JSON data"))
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn reconnects_and_resubscribes_after_the_server_is_killed_and_restarted() {
    let server = TestServer::start(server_config()).await;
    let addr = server.addr();
    let url = server.ws_url();
    let client = Client::connect(config(&url)).expect("connect");
    let mut events = client.events();
    let publisher = Client::connect(config(&url)).expect("connect");
    let mut publisher_events = publisher.events();
    let mut chat = client.subscribe("chat").await.expect("subscribe");
    assert_eq!(
        publisher
            .publish("chat", &json!("before"))
            .await
            .expect("publish"),
        1
    );
    assert_eq!(message_of(next_item(&mut chat).await), (1, json!("before")));

    server.kill().await;
    wait_for(&mut events, "the disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let server = TestServer::start_on(addr, server_config()).await;
    wait_for(&mut events, "the reconnect", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;

    // The restarted in-memory server starts a new epoch: what was missed cannot be replayed,
    // and the client says so instead of staying silent.
    let event = wait_for(&mut events, "the recovery report", |e| {
        matches!(e, Event::RecoveryFailed { .. })
    })
    .await;
    match event {
        Event::RecoveryFailed {
            channel,
            since,
            position,
        } => {
            assert_eq!(channel, "chat");
            assert_eq!(since.offset, 1);
            assert_ne!(since.epoch, position.epoch);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next_item(&mut chat).await,
        SubscriptionEvent::RecoveryFailed { .. }
    ));

    // Once the publisher is connected to the new server too (its old connection may
    // outlive the kill briefly), new messages reach the resubscribed client.
    wait_for(&mut publisher_events, "the publisher's disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    wait_for(&mut publisher_events, "the publisher's reconnect", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    let offset = publisher
        .publish("chat", &json!("after"))
        .await
        .expect("publish");
    let (got_offset, data) = message_of(next_item(&mut chat).await);
    assert_eq!((got_offset, data), (offset, json!("after")));
    client.close().await;
    publisher.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_graceful_shutdown_closes_with_1001_and_the_client_comes_back() {
    let server = TestServer::start(server_config()).await;
    let addr = server.addr();
    let client = Client::connect(config(&server.ws_url())).expect("connect");
    let mut events = client.events();
    let mut news = client.subscribe("news").await.expect("subscribe");
    server.stop().await;
    wait_for(&mut events, "the 1001 close", |e| {
        matches!(
            e,
            Event::Disconnected {
                code: Some(1001),
                ..
            }
        )
    })
    .await;
    let server = TestServer::start_on(addr, server_config()).await;
    wait_for(&mut events, "the reconnect", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    let publisher = Client::connect(config(&server.ws_url())).expect("connect");
    publisher
        .publish("news", &json!({"n": 1}))
        .await
        .expect("publish");
    let message = timeout(WAIT, news.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!(
        message.deserialize::<serde_json::Value>().expect("json"),
        json!({"n": 1})
    );
    client.close().await;
    publisher.close().await;
    server.stop().await;
}

#[tokio::test]
async fn messages_missed_during_a_network_cut_are_replayed_through_since() {
    let server = TestServer::start(server_config()).await;
    let proxy = TcpProxy::start(server.addr()).await;
    let client = Client::connect(config(&proxy.ws_url())).expect("connect");
    let mut events = client.events();
    let publisher = Client::connect(config(&server.ws_url())).expect("connect");
    let mut chat = client.subscribe("chat").await.expect("subscribe");
    publisher.publish("chat", &json!(1)).await.expect("publish");
    assert_eq!(message_of(next_item(&mut chat).await), (1, json!(1)));

    // Cut the client off and keep it off while two messages are published.
    proxy.cut();
    wait_for(&mut events, "the disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    publisher.publish("chat", &json!(2)).await.expect("publish");
    publisher.publish("chat", &json!(3)).await.expect("publish");
    proxy.restore();
    wait_for(&mut events, "the reconnect", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;

    // Replayed in order, exactly once, with no gap reported; then live messages follow.
    assert_eq!(message_of(next_item(&mut chat).await), (2, json!(2)));
    assert_eq!(message_of(next_item(&mut chat).await), (3, json!(3)));
    publisher.publish("chat", &json!(4)).await.expect("publish");
    assert_eq!(message_of(next_item(&mut chat).await), (4, json!(4)));
    client.close().await;
    // No recovery failure was reported at any point.
    while let Some(event) = events.recv().await {
        assert!(!matches!(event, Event::RecoveryFailed { .. }), "{event:?}");
    }
    publisher.close().await;
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_sent_and_refusals_are_typed() {
    const SECRET: &str = "a-test-secret-that-is-long-enough";
    let server =
        TestServer::start(server_config().auth(Some(AuthConfig::Secret(SECRET.to_owned())))).await;
    let url = server.ws_url();

    // No token: HTTP 401 at the upgrade stops the client.
    let anonymous = Client::connect(config(&url)).expect("connect");
    let mut events = anonymous.events();
    let stopped = wait_for(&mut events, "the stop", |e| {
        matches!(e, Event::Stopped { .. })
    })
    .await;
    assert!(
        matches!(
            stopped,
            Event::Stopped {
                error: Some(Error::Unauthorized { status: 401 })
            }
        ),
        "{stopped:?}"
    );

    let token = |subscribe: &[&str]| {
        let claims = Claims::valid_for("alice", Duration::from_secs(3600))
            .subscribe(subscribe.iter().copied())
            .publish(["chat:*"]);
        hs256_token(SECRET, &claims)
    };
    let client = Client::connect(config(&url).token(token(&["chat:*"]))).expect("connect");
    let mut events = client.events();
    let mut chat = client.subscribe("chat:1").await.expect("allowed subscribe");
    let mut other = client.subscribe("chat:2").await.expect("allowed subscribe");
    let refused = client.subscribe("news").await;
    assert!(
        matches!(
            &refused,
            Err(Error::Server {
                code: ErrorCode::Forbidden,
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = client.publish("news", &json!(1)).await;
    assert!(
        matches!(&refused, Err(error) if error.code() == "forbidden"),
        "{refused:?}"
    );
    let offset = client
        .publish("chat:1", &json!("mine"))
        .await
        .expect("allowed publish");
    assert_eq!(
        message_of(next_item(&mut chat).await),
        (offset, json!("mine"))
    );

    // A refreshed token that no longer allows chat:2 ends that subscription, visibly.
    client
        .refresh_token(token(&["chat:1"]))
        .await
        .expect("refresh");
    match next_item(&mut other).await {
        SubscriptionEvent::Ended(Error::Revoked { channel }) => assert_eq!(channel, "chat:2"),
        item => panic!("{item:?}"),
    }
    wait_for(
        &mut events,
        "the ended subscription",
        |e| matches!(e, Event::SubscriptionEnded { channel, .. } if channel == "chat:2"),
    )
    .await;
    let refused = client.refresh_token("not-a-token").await;
    assert!(
        matches!(
            &refused,
            Err(Error::Server {
                code: ErrorCode::Unauthorized,
                ..
            })
        ),
        "{refused:?}"
    );
    // The connection and the remaining subscription are fine.
    let offset = client
        .publish("chat:1", &json!("still"))
        .await
        .expect("publish");
    assert_eq!(
        message_of(next_item(&mut chat).await),
        (offset, json!("still"))
    );
    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn wss_with_a_trusted_ca_and_refusal_of_an_unknown_one() {
    let tls = wirehub_server::TlsConfig {
        cert_pem: read_fixture("tls-cert.pem"),
        key_pem: read_fixture("tls-key.pem"),
    };
    let server = TestServer::start(server_config().tls(Some(tls))).await;
    let url = format!("wss://{}/ws", server.addr());

    // The test CA is not among the bundled roots: the handshake fails on the certificate,
    // which is a connection error (retried), here with no retry allowed.
    let untrusting = Client::connect(config(&url).max_reconnects(Some(0))).expect("connect");
    let mut events = untrusting.events();
    let stopped = wait_for(&mut events, "the stop", |e| {
        matches!(e, Event::Stopped { .. })
    })
    .await;
    match stopped {
        Event::Stopped {
            error: Some(Error::Connect { reason }),
        } => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("expected a certificate failure, got {other:?}"),
    }

    let trusting = config(&url)
        .add_root_certificates_pem(&read_fixture("tls-ca.pem"))
        .expect("the CA parses");
    let client = Client::connect(trusting).expect("connect");
    let mut subscription = client
        .subscribe("secure")
        .await
        .expect("subscribe over wss");
    let offset = client
        .publish("secure", &json!({"over": "tls"}))
        .await
        .expect("publish over wss");
    assert_eq!(
        message_of(next_item(&mut subscription).await),
        (offset, json!({"over": "tls"}))
    );
    client.close().await;

    let garbage = ClientConfig::new(&url).add_root_certificates_pem(
        b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    assert!(matches!(garbage, Err(Error::Tls { .. })), "{garbage:?}");
    let not_der = Client::connect(ClientConfig::new(&url).add_root_certificate(vec![1, 2, 3]));
    assert!(matches!(not_der, Err(Error::Tls { .. })), "{not_der:?}");
}

#[tokio::test]
async fn a_caller_chosen_idempotency_key_publishes_at_most_once() {
    let server = TestServer::start(server_config()).await;
    let client = Client::connect(config(&server.ws_url())).expect("connect");
    let mut jobs = client.subscribe("jobs").await.expect("subscribe");
    let data = || serde_json::value::to_raw_value(&json!("nightly")).expect("JSON");
    let first = client
        .publish_raw_with_key("jobs", data(), "job-42")
        .await
        .expect("publish");
    let again = client
        .publish_raw_with_key("jobs", data(), "job-42")
        .await
        .expect("publish");
    assert_eq!((first, again), (1, 1));
    assert_eq!(
        client
            .publish("jobs", &json!("next"))
            .await
            .expect("publish"),
        2
    );
    assert_eq!(
        message_of(next_item(&mut jobs).await),
        (1, json!("nightly"))
    );
    assert_eq!(message_of(next_item(&mut jobs).await), (2, json!("next")));
    let refused = client.publish_raw_with_key("jobs", data(), "").await;
    assert!(
        matches!(refused, Err(Error::InvalidIdempotencyKey(_))),
        "{refused:?}"
    );
    client.close().await;
}
