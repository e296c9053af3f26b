//! The client against the real server on a real `redis-server` that is paused (SIGSTOP)
//! while a subscriber reconnects: the server refuses the restoring `subscribe` with
//! `internal` (its broker is unavailable), and the client keeps the subscription and asks
//! again until Redis is back, losing and repeating nothing (issue 9).

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::timeout;
use wirehub_client::{
    Backoff, Client, ClientConfig, ErrorCode, Event, Subscription, SubscriptionEvent,
};
use wirehub_server::{BrokerConfig, RedisConfig, ServerConfig};
use wirehub_testkit::{RedisServer, TcpProxy, TestServer, wait_for};

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(15);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn client_config(url: &str) -> ClientConfig {
    ClientConfig::new(url)
        .backoff(Backoff::default().initial(ms(50)).max(ms(200)))
        .resubscribe_backoff(Backoff::default().initial(ms(50)).max(ms(400)))
        .request_timeout(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(2))
}

/// A node on Redis at `url` that notices a fault within a fraction of a second.
fn server_config(url: &str) -> ServerConfig {
    ServerConfig::new()
        .history_size(1000)
        .publish_rate(1_000_000)
        .shutdown_drain(ms(50))
        .broker(BrokerConfig::Redis(
            RedisConfig::new(url)
                .timeout(ms(300))
                .ping_interval(ms(200))
                .canary_interval(ms(200)),
        ))
}

fn raw(n: u64) -> Box<serde_json::value::RawValue> {
    serde_json::value::to_raw_value(&n).expect("JSON")
}

/// Publishes `n` with the key `m{n}` until it is acknowledged (the key makes asking again
/// safe while the server's broker recovers).
async fn publish_acknowledged(publisher: &Client, channel: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match publisher
            .publish_raw_with_key(channel, raw(n), format!("m{n}"))
            .await
        {
            Ok(_) => return,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "publish {n} kept failing: {error}"
                );
                tokio::time::sleep(ms(50)).await;
            }
        }
    }
}

/// Reads until the message whose data is `last`; every item must be a message whose offset
/// follows the previous one. Returns the data read, in order.
async fn read_until(subscription: &mut Subscription, previous: &mut u64, last: u64) -> Vec<u64> {
    let mut data = Vec::new();
    loop {
        let item = timeout(WAIT, subscription.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing within {WAIT:?} after offset {previous}"))
            .expect("the subscription is open");
        let SubscriptionEvent::Message(message) = item else {
            panic!("expected a message after offset {previous}, got {item:?}");
        };
        assert_eq!(
            message.offset,
            *previous + 1,
            "gap or duplicate after {previous}"
        );
        *previous = message.offset;
        let n: u64 = message.deserialize().expect("a number");
        data.push(n);
        if n == last {
            return data;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_9_a_subscriber_reconnecting_while_redis_is_paused_retries_and_loses_nothing() {
    let redis = RedisServer::start();
    let server = TestServer::start(server_config(&redis.url())).await;
    let proxy = TcpProxy::start(server.addr()).await;
    let subscriber = Client::connect(client_config(&proxy.ws_url())).expect("connect");
    let mut events = subscriber.events();
    let publisher = Client::connect(client_config(&server.ws_url())).expect("connect");
    let mut feed = subscriber.subscribe("feed").await.expect("subscribe");

    // Before: 1..=5, read as they come.
    for n in 1..=5 {
        publish_acknowledged(&publisher, "feed", n).await;
    }
    let mut previous = 0;
    let mut received = read_until(&mut feed, &mut previous, 5).await;

    // During: Redis stops answering and the subscriber's link is cut.
    let paused = redis.pause();
    proxy.cut();
    wait_for(&mut events, "the disconnect", |event| {
        matches!(event, Event::Disconnected { .. })
    })
    .await;
    // Publishes meanwhile mostly fail; the acknowledged ones must arrive.
    let mut acknowledged = BTreeSet::new();
    let mut attempted = BTreeSet::new();
    for n in 6..=8 {
        attempted.insert(n);
        if publisher
            .publish_raw_with_key("feed", raw(n), format!("m{n}"))
            .await
            .is_ok()
        {
            acknowledged.insert(n);
        }
    }
    proxy.restore();
    // The restoring subscribe is refused with `internal`, then asked for again.
    for attempt in 1..=2 {
        let event = wait_for(&mut events, "a subscribe retry", |event| {
            matches!(event, Event::SubscribeRetrying { .. })
        })
        .await;
        let Event::SubscribeRetrying { channel, error, .. } = event else {
            unreachable!()
        };
        assert_eq!(channel, "feed", "retry {attempt}");
        assert!(
            matches!(
                error,
                wirehub_client::Error::Server {
                    code: ErrorCode::Internal,
                    ..
                }
            ),
            "retry {attempt}: {error:?}"
        );
    }
    paused.resume();

    // After: 9..=12, published once Redis answers again.
    for n in 9..=12 {
        attempted.insert(n);
        acknowledged.insert(n);
        publish_acknowledged(&publisher, "feed", n).await;
    }
    received.extend(read_until(&mut feed, &mut previous, 12).await);

    // Everything acknowledged arrived, in order, once; nothing else but what was attempted.
    assert_eq!(&received[..5], [1, 2, 3, 4, 5]);
    let unique: BTreeSet<u64> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "a duplicate in {received:?}");
    let mut sorted = received.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, received, "out of order");
    assert!(
        acknowledged.is_subset(&unique),
        "{acknowledged:?} not all in {received:?}"
    );
    assert!(
        unique.is_subset(&(1..=5).chain(attempted).collect()),
        "{received:?}"
    );
    // The subscriber never ended its subscription: it reconnected once (the cut), and
    // nothing was reported lost.
    assert!(
        !events_seen_ended(&mut events),
        "a subscription ended or a recovery failed"
    );
    assert!(subscriber.stop_error().is_none());
    publisher.close().await;
    subscriber.close().await;
}

/// Whether an event already received says a subscription ended or lost messages.
fn events_seen_ended(events: &mut wirehub_client::Events) -> bool {
    use futures_util::FutureExt;
    while let Some(Some(event)) = events.recv().now_or_never() {
        if matches!(
            event,
            Event::SubscriptionEnded { .. } | Event::RecoveryFailed { .. }
        ) {
            return true;
        }
    }
    false
}
