//! The client against scripted fake servers: backoff timing, health resets, jitter, dead
//! servers, stop codes, the server's retry hints, the publish buffer, resubscription and
//! recovery.
//!
//! Every wait has a timeout. Timing assertions use lower bounds that sleeping guarantees and
//! generous upper bounds, so a loaded machine does not make them flaky.

use std::time::Duration;

use serde_json::json;
use tokio::time::{Instant, timeout};
use wirehub_client::{
    Backoff, Client, ClientConfig, Error, ErrorCode, Event, Events, Jitter, ReconnectReason,
    StreamPosition, SubscriptionEvent,
};
use wirehub_testkit::fake::{Behavior, BlackHole, FakeServer, ServeOptions};
use wirehub_testkit::wait_for;

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Short settings for tests: 40 ms doubling to 320 ms, no jitter.
fn config(url: &str) -> ClientConfig {
    ClientConfig::new(url)
        .backoff(
            Backoff::default()
                .initial(ms(40))
                .max(ms(320))
                .jitter(Jitter::None),
        )
        .request_timeout(WAIT)
        .connect_timeout(ms(2000))
}

/// Collects the delays of the next `n` `Reconnecting` events.
async fn reconnect_delays(events: &mut Events, n: usize) -> Vec<Duration> {
    let mut delays = Vec::new();
    while delays.len() < n {
        if let Event::Reconnecting { delay, .. } = wait_for(events, "a reconnect", |e| {
            matches!(e, Event::Reconnecting { .. })
        })
        .await
        {
            delays.push(delay);
        }
    }
    delays
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// Issue 14: the server's retry hints override the client's own (40 ms) backoff. A `503` or
/// `429` with `Retry-After: 1` is waited for 1 s plus a random part of a second; a close
/// whose reason carries `retry=MIN-MAX` (4103 for an overloaded server, 1001 for a drain) at
/// a random point of that window. The server sees the attempts that far apart.
#[tokio::test]
async fn issue_14_retry_after_and_close_hints_set_the_reconnect_delays() {
    let server = FakeServer::start(|attempt| match attempt {
        0 => Behavior::RejectRetryAfter(503, "1".into()),
        1 => Behavior::RejectRetryAfter(429, "1".into()),
        2 => Behavior::CloseWithReason(4103, "overloaded; retry=1500-1700".into()),
        3 => Behavior::CloseWithReason(1001, "server shutting down; retry=600-700".into()),
        _ => Behavior::serve(),
    })
    .await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut events = client.events();
    let mut delays = Vec::new();
    while delays.len() < 4 {
        let event = wait_for(&mut events, "a reconnect", |e| {
            matches!(e, Event::Reconnecting { .. })
        })
        .await;
        if let Event::Reconnecting { delay, reason, .. } = event {
            delays.push((delay, reason));
        }
    }
    wait_for(&mut events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    let second = Duration::from_secs(1);
    for (delay, reason) in &delays[..2] {
        assert_eq!(*reason, ReconnectReason::RetryAfter(second));
        assert!(*delay >= second && *delay < 2 * second, "{delay:?}");
    }
    let windows = [(ms(1500), ms(1700)), (ms(600), ms(700))];
    for ((delay, reason), (min, max)) in delays[2..].iter().zip(windows) {
        assert_eq!(*reason, ReconnectReason::RetryHint { min, max });
        assert!(
            *delay >= min && *delay <= max,
            "{delay:?} in {min:?}..{max:?}"
        );
    }
    // The attempts the server saw: each at least the delay after the one before (the
    // closes come a moment after their attempt), and not much later.
    let attempts = server.wait_for_attempts(5, WAIT).await;
    for (gap, (delay, _)) in gaps(&attempts).into_iter().zip(&delays) {
        assert!(gap >= *delay, "attempt gap {gap:?}, delay {delay:?}");
        assert!(
            gap < *delay + ms(1000),
            "attempt gap {gap:?}, delay {delay:?}"
        );
    }
    client.close().await;
}

#[tokio::test]
async fn a_server_that_closes_at_once_sees_growing_gaps() {
    let server = FakeServer::always(Behavior::CloseAfterHandshake(Some(1000))).await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut events = client.events();

    // 1000 asks for a plain reconnect: the schedule starts at the first ceiling.
    let delays = reconnect_delays(&mut events, 5).await;
    assert_eq!(delays, [ms(40), ms(80), ms(160), ms(320), ms(320)]);

    let attempts = server.wait_for_attempts(6, WAIT).await;
    let gaps = gaps(&attempts[..6]);
    for (gap, delay) in gaps.iter().zip([40, 80, 160, 320, 320]) {
        assert!(*gap >= ms(delay), "gaps {gaps:?}");
        assert!(*gap < ms(delay + 250), "gaps {gaps:?}");
    }
    client.close().await;
}

#[tokio::test]
async fn a_connection_lost_without_a_close_code_backs_off_from_the_second_step() {
    let server = FakeServer::always(Behavior::CloseAfterHandshake(None)).await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut events = client.events();
    let delays = reconnect_delays(&mut events, 4).await;
    assert_eq!(delays, [ms(80), ms(160), ms(320), ms(320)]);
    client.close().await;
}

#[tokio::test]
async fn only_a_healthy_connection_resets_the_backoff() {
    // Connection 0 serves fully; later ones send `welcome` but never answer the
    // resubscription, and close after 20 ms: not healthy, so the delays grow.
    let server = FakeServer::start(|n| {
        let options = ServeOptions::default();
        if n == 0 {
            Behavior::Serve(options)
        } else {
            Behavior::Serve(options.answer_subscribes(false).close_after(ms(20), 1000))
        }
    })
    .await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut events = client.events();
    let _chat = client.subscribe("chat").await.expect("subscribe");
    server.close_all(1000);
    let delays = reconnect_delays(&mut events, 4).await;
    assert_eq!(delays, [ms(40), ms(80), ms(160), ms(320)]);
    client.close().await;

    // Welcome with every resubscription acknowledged proves health: every delay is the first.
    let server = FakeServer::always(Behavior::Serve(
        ServeOptions::default().close_after(ms(20), 1000),
    ))
    .await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut events = client.events();
    let _chat = client.subscribe("chat").await.expect("subscribe");
    let delays = reconnect_delays(&mut events, 3).await;
    assert_eq!(delays, [ms(40), ms(40), ms(40)]);
    client.close().await;

    // Staying up for `healthy_after` proves health too, even without the acknowledgements.
    let server = FakeServer::start(|n| {
        let options = ServeOptions::default();
        if n == 0 {
            Behavior::Serve(options)
        } else {
            Behavior::Serve(options.answer_subscribes(false).close_after(ms(150), 1000))
        }
    })
    .await;
    let client = Client::connect(config(&server.url()).healthy_after(ms(50))).expect("connect");
    let mut events = client.events();
    let _chat = client.subscribe("chat").await.expect("subscribe");
    server.close_all(1000);
    let delays = reconnect_delays(&mut events, 3).await;
    assert_eq!(delays, [ms(40), ms(40), ms(40)]);
    client.close().await;
}

#[tokio::test]
async fn jitter_spreads_the_reconnects_of_fifty_clients() {
    const CLIENTS: usize = 50;
    let window = ms(400);
    let server = FakeServer::always(Behavior::CloseAfterHandshake(Some(1001))).await;
    let mut watchers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let config =
            config(&server.url()).backoff(Backoff::default().initial(window).max(ms(4000)));
        let client = Client::connect(config).expect("connect");
        let mut events = client.events();
        watchers.push(tokio::spawn(async move {
            // The second attempt is the first reconnect.
            wait_for(&mut events, "the first reconnect", |e| {
                matches!(e, Event::Connecting { attempt: 2 })
            })
            .await;
            Instant::now()
        }));
        clients.push(client);
    }
    let mut times = Vec::new();
    for watcher in watchers {
        times.push(watcher.await.expect("watcher"));
    }
    times.sort();
    let spread = times[CLIENTS - 1] - times[0];
    assert!(spread >= window / 2, "spread {spread:?}");
    // Uniform over 400 ms puts about 2.5 clients in any 20 ms; without jitter all 50 would be.
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t - *start < ms(20))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(busiest <= 15, "{busiest} clients reconnected within 20 ms");
    for client in clients {
        client.close().await;
    }
}

#[tokio::test]
async fn a_frozen_server_is_detected_and_left() {
    let server = FakeServer::start(|n| {
        if n == 0 {
            Behavior::Freeze
        } else {
            Behavior::serve()
        }
    })
    .await;
    let config = config(&server.url())
        .idle_timeout(ms(150))
        .pong_timeout(ms(150));
    // The idle timer starts with the connection, which is after this instant.
    let start = Instant::now();
    let client = Client::connect(config).expect("connect");
    let mut events = client.events();
    wait_for(
        &mut events,
        "the first connection",
        |e| matches!(e, Event::Connected { session, .. } if session == "fake-0"),
    )
    .await;
    let event = wait_for(&mut events, "the disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    let detected = start.elapsed();
    assert!(detected >= ms(300), "left after {detected:?}");
    assert!(
        matches!(&event, Event::Disconnected { code: None, reason } if reason.contains("ping")),
        "{event:?}"
    );
    wait_for(
        &mut events,
        "the second connection",
        |e| matches!(e, Event::Connected { session, .. } if session == "fake-1"),
    )
    .await;
    // And the new connection works.
    let offset = client.publish("chat", &json!(1)).await.expect("publish");
    assert_eq!(offset, 1);
    client.close().await;
}

#[tokio::test]
async fn a_black_hole_times_out_and_is_retried() {
    let hole = BlackHole::start().await;
    let client = Client::connect(config(&hole.url()).connect_timeout(ms(100))).expect("connect");
    let mut events = client.events();
    let event = wait_for(&mut events, "a failed attempt", |e| {
        matches!(e, Event::ConnectFailed { .. })
    })
    .await;
    assert!(
        matches!(&event, Event::ConnectFailed { error: Error::Connect { reason, .. } } if reason.contains("handshake")),
        "{event:?}"
    );
    let attempts = hole.wait_for_attempts(2, WAIT).await;
    // The timeout plus the first back-off step (80 ms: no close code).
    assert!(
        attempts[1] - attempts[0] >= ms(180),
        "{:?}",
        gaps(&attempts)
    );
    client.close().await;
}

async fn assert_stops(behavior: Behavior, expect: impl Fn(&Error) -> bool) -> FakeServer {
    let server = FakeServer::always(behavior).await;
    let client = Client::connect(config(&server.url()).token("secret")).expect("connect");
    let mut events = client.events();
    // Issued before the connection is up: held, then failed with the stop error.
    let early = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("chat", &json!("early")).await })
    };
    let event = wait_for(&mut events, "the stop", |e| {
        matches!(e, Event::Stopped { .. })
    })
    .await;
    match &event {
        Event::Stopped { error: Some(error) } => assert!(expect(error), "{error:?}"),
        other => panic!("stopped without an error: {other:?}"),
    }
    let early = early.await.expect("task");
    assert!(matches!(&early, Err(error) if expect(error)), "{early:?}");
    let later = client.publish("chat", &json!("later")).await;
    assert!(matches!(&later, Err(error) if expect(error)), "{later:?}");
    assert!(client.stop_error().is_some_and(|error| expect(&error)));
    // A late listener still learns why.
    let mut late = client.events();
    assert!(matches!(
        late.recv().await,
        Some(Event::Stopped { error: Some(_) })
    ));
    assert!(late.recv().await.is_none());
    // Several back-off periods later there was still only the one attempt.
    tokio::time::sleep(ms(400)).await;
    assert_eq!(server.attempts().len(), 1);
    server
}

#[tokio::test]
async fn close_codes_4001_and_4003_stop_the_client() {
    for code in [4001, 4003] {
        assert_stops(
            Behavior::CloseAfterHandshake(Some(code)),
            |error| matches!(error, Error::Rejected { code: c, .. } if *c == code),
        )
        .await;
    }
}

#[tokio::test]
async fn http_401_at_the_upgrade_stops_the_client() {
    let server = assert_stops(Behavior::RejectHttp(401), |error| {
        matches!(error, Error::Unauthorized { status: 401 })
    })
    .await;
    assert_eq!(
        server.authorization_headers(),
        [Some("Bearer secret".to_owned())]
    );
}

#[tokio::test]
async fn other_http_statuses_are_retried() {
    let server = FakeServer::always(Behavior::RejectHttp(503)).await;
    let client = Client::connect(config(&server.url())).expect("connect");
    server.wait_for_attempts(3, WAIT).await;
    assert!(client.stop_error().is_none());
    client.close().await;
}

#[tokio::test]
async fn buffered_publishes_are_sent_in_order_and_overflow_is_reported() {
    // The first connection drops at once; the client waits 80 ms and connects again.
    let server = FakeServer::start(|n| {
        if n == 0 {
            Behavior::CloseAfterHandshake(None)
        } else {
            Behavior::serve()
        }
    })
    .await;
    let client = Client::connect(
        config(&server.url())
            .publish_buffer(3)
            .backoff(Backoff::default().initial(ms(150)).jitter(Jitter::None)),
    )
    .expect("connect");
    let mut events = client.events();
    wait_for(&mut events, "the reconnect wait", |e| {
        matches!(e, Event::Reconnecting { .. })
    })
    .await;
    let data = [json!(1), json!(2), json!(3), json!(4)];
    // `join!` polls in order, so the publishes reach the client in this order.
    let (a, b, c, overflow) = tokio::join!(
        client.publish("chat", &data[0]),
        client.publish("chat", &data[1]),
        client.publish("chat", &data[2]),
        client.publish("chat", &data[3]),
    );
    assert!(
        matches!(overflow, Err(Error::BufferFull { capacity: 3 })),
        "{overflow:?}"
    );
    let offsets = [a, b, c].map(|r| r.expect("buffered publish"));
    assert_eq!(offsets, [1, 2, 3]);
    let sent = server
        .wait_for_received(3, WAIT, |r| r.kind() == "publish")
        .await;
    let data: Vec<_> = sent.iter().map(|r| r.message["data"].clone()).collect();
    assert_eq!(data, [json!(1), json!(2), json!(3)]);
    assert!(sent.iter().all(|r| r.connection == 1));
    client.close().await;
}

#[tokio::test]
async fn without_retries_a_publish_in_flight_when_the_connection_drops_fails_with_disconnected() {
    let server = FakeServer::start(|n| {
        if n == 0 {
            Behavior::Serve(ServeOptions::default().ack_publishes(false))
        } else {
            Behavior::serve()
        }
    })
    .await;
    let client = Client::connect(config(&server.url()).retry_publishes(false)).expect("connect");
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("chat", &json!("lost?")).await })
    };
    let sent = server
        .wait_for_received(1, WAIT, |r| r.kind() == "publish")
        .await;
    assert!(sent[0].message.get("idempotency_key").is_none());
    server.close_all(1001);
    let result = in_flight.await.expect("task");
    assert!(matches!(result, Err(Error::Disconnected)), "{result:?}");
    // Not resent: the next connection only sees the next publish.
    assert_eq!(
        client
            .publish("chat", &json!("next"))
            .await
            .expect("publish"),
        1
    );
    let sent = server
        .wait_for_received(2, WAIT, |r| r.kind() == "publish")
        .await;
    assert_eq!(sent[1].message["data"], json!("next"));
    client.close().await;
}

/// The first connection carries publishes out but its acks never arrive; the next one
/// answers normally.
async fn acks_lost_then_served(lose: ServeOptions) -> (FakeServer, Client) {
    let server = FakeServer::start(move |n| {
        if n == 0 {
            Behavior::Serve(lose.clone())
        } else {
            Behavior::serve()
        }
    })
    .await;
    let client = Client::connect(config(&server.url())).expect("connect");
    (server, client)
}

#[tokio::test]
async fn a_publish_whose_ack_was_lost_is_sent_again_and_published_once() {
    let (server, client) = acks_lost_then_served(ServeOptions::default().lose_acks(true)).await;
    let mut events = client.events();
    // Three publishes reach the server (which publishes them) but no ack comes back.
    let in_flight: Vec<_> = (1..=3)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { client.publish("chat", &json!(n)).await })
        })
        .collect();
    let sent = server
        .wait_for_received(3, WAIT, |r| r.kind() == "publish")
        .await;
    server.close_all(1001);
    wait_for(&mut events, "the reconnect", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    let mut offsets = Vec::new();
    for task in in_flight {
        offsets.push(
            task.await
                .expect("task")
                .expect("acknowledged after the retry"),
        );
    }
    offsets.sort_unstable();
    assert_eq!(offsets, [1, 2, 3], "the first offsets, as duplicates");
    // Sent again in the same order with the same keys, and not published twice: the next
    // publish gets offset 4.
    let resent = server
        .wait_for_received(6, WAIT, |r| r.kind() == "publish")
        .await;
    let keys = |requests: &[wirehub_testkit::fake::Received]| -> Vec<String> {
        requests
            .iter()
            .map(|r| {
                r.message["idempotency_key"]
                    .as_str()
                    .expect("a key")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(keys(&sent[..3]), keys(&resent[3..]));
    assert!(resent[3..].iter().all(|r| r.connection == 1));
    let data: Vec<_> = resent[3..]
        .iter()
        .map(|r| r.message["data"].clone())
        .collect();
    assert_eq!(data, data_of(&sent));
    assert_eq!(client.publish("chat", &json!(4)).await.expect("publish"), 4);
    client.close().await;
}

/// The `data` of recorded publishes, in the order they were received.
fn data_of(requests: &[wirehub_testkit::fake::Received]) -> Vec<serde_json::Value> {
    requests.iter().map(|r| r.message["data"].clone()).collect()
}

#[tokio::test]
async fn a_publish_that_never_reached_the_server_is_sent_again_and_published() {
    let (server, client) =
        acks_lost_then_served(ServeOptions::default().ack_publishes(false)).await;
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move { client.publish("chat", &json!("retried")).await })
    };
    server
        .wait_for_received(1, WAIT, |r| r.kind() == "publish")
        .await;
    server.close_all(1001);
    let offset = in_flight
        .await
        .expect("task")
        .expect("acknowledged after the retry");
    assert_eq!(offset, 1, "published by the second connection");
    client.close().await;
}

#[tokio::test]
async fn resubscribes_with_since_and_receives_what_was_missed() {
    let server = FakeServer::always(Behavior::serve()).await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut events = client.events();
    let mut chat = client.subscribe("chat").await.expect("subscribe");
    server.publish("chat", &json!("one"));
    server.publish("chat", &json!("two"));
    for offset in [1, 2] {
        let message = timeout(WAIT, chat.next_message())
            .await
            .expect("in time")
            .expect("message");
        assert_eq!(message.offset, offset);
    }
    server.close_all(1001);
    wait_for(&mut events, "the disconnect", |e| {
        matches!(
            e,
            Event::Disconnected {
                code: Some(1001),
                ..
            }
        )
    })
    .await;
    server.publish("chat", &json!("three"));
    let message = timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!((message.offset, message.json()), (3, "\"three\""));
    let resubscribe = server
        .wait_for_received(2, WAIT, |r| r.kind() == "subscribe")
        .await;
    assert_eq!(resubscribe[1].connection, 1);
    assert_eq!(
        resubscribe[1].message["since"],
        json!({"epoch": "e1", "offset": 2})
    );
    // Live deliveries continue after the recovery.
    server.publish("chat", &json!("four"));
    let message = timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!(message.offset, 4);
    client.close().await;
}

#[tokio::test]
async fn a_failed_recovery_is_reported_on_events_and_on_the_subscription() {
    let server =
        FakeServer::start(|n| Behavior::Serve(ServeOptions::default().epoch(format!("e{n}"))))
            .await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut events = client.events();
    let mut chat = client.subscribe("chat").await.expect("subscribe");
    server.publish("chat", &json!("one"));
    timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    server.close_all(1001);
    let event = wait_for(&mut events, "the failed recovery", |e| {
        matches!(e, Event::RecoveryFailed { .. })
    })
    .await;
    let since = StreamPosition {
        epoch: "e0".into(),
        offset: 1,
    };
    let position = StreamPosition {
        epoch: "e1".into(),
        offset: 1,
    };
    match event {
        Event::RecoveryFailed {
            channel,
            since: got_since,
            position: got_position,
        } => {
            assert_eq!(channel, "chat");
            assert_eq!(got_since, since);
            assert_eq!(got_position, position);
        }
        other => panic!("{other:?}"),
    }
    match timeout(WAIT, chat.recv()).await.expect("in time") {
        Some(SubscriptionEvent::RecoveryFailed {
            since: got_since,
            position: got_position,
        }) => {
            assert_eq!(got_since, since);
            assert_eq!(got_position, position);
        }
        other => panic!("{other:?}"),
    }
    // Deliveries continue in the new epoch.
    server.publish("chat", &json!("two"));
    let message = timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!(message.offset, 2);
    client.close().await;
}

#[tokio::test]
async fn duplicate_deliveries_are_dropped() {
    let server = FakeServer::always(Behavior::serve()).await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut chat = client.subscribe("chat").await.expect("subscribe");
    server.publish("chat", &json!("one"));
    server.send_all(r#"{"type":"message","channel":"chat","data":"again","offset":1}"#);
    server.send_all(r#"{"type":"message","channel":"chat","data":"older","offset":0}"#);
    server.publish("chat", &json!("two"));
    let mut got = Vec::new();
    for _ in 0..2 {
        let message = timeout(WAIT, chat.next_message())
            .await
            .expect("in time")
            .expect("message");
        got.push((
            message.offset,
            message.deserialize::<String>().expect("string"),
        ));
    }
    assert_eq!(got, [(1, "one".to_owned()), (2, "two".to_owned())]);
    client.close().await;
}

#[tokio::test]
async fn subscribing_while_disconnected_completes_after_the_reconnect() {
    let server = FakeServer::start(|n| {
        if n == 0 {
            Behavior::CloseAfterHandshake(None)
        } else {
            Behavior::serve()
        }
    })
    .await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut chat = client.subscribe("chat").await.expect("subscribe");
    let subscribes = server
        .wait_for_received(1, WAIT, |r| r.kind() == "subscribe")
        .await;
    assert_eq!(subscribes[0].connection, 1);
    assert!(matches!(
        client.subscribe("chat").await,
        Err(Error::AlreadySubscribed { .. })
    ));
    server.publish("chat", &json!({"n": 1}));
    let message = timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!(
        message.deserialize::<serde_json::Value>().expect("json"),
        json!({"n": 1})
    );
    chat.unsubscribe().await.expect("unsubscribe");
    server
        .wait_for_received(1, WAIT, |r| r.kind() == "unsubscribe")
        .await;
    // The channel can be subscribed again.
    let _chat = client.subscribe("chat").await.expect("subscribe again");
    client.close().await;
}

#[tokio::test]
async fn a_timed_out_subscribe_can_be_retried() {
    let server = FakeServer::start(|n| {
        if n == 0 {
            Behavior::Serve(ServeOptions::default().answer_subscribes(false))
        } else {
            Behavior::serve()
        }
    })
    .await;
    let client = Client::connect(config(&server.url()).request_timeout(ms(150))).expect("connect");
    for _ in 0..2 {
        let result = client.subscribe("chat").await;
        assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    }
    server.close_all(1000);
    let mut chat = timeout(WAIT, async {
        loop {
            match client.subscribe("chat").await {
                Ok(subscription) => return subscription,
                Err(Error::Timeout) => continue,
                Err(error) => panic!("{error}"),
            }
        }
    })
    .await
    .expect("subscribed in time");
    server.publish("chat", &json!("hi"));
    let message = timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!(message.json(), "\"hi\"");
    client.close().await;
}

#[tokio::test]
async fn close_stops_the_client_and_fails_later_calls() {
    let server = FakeServer::always(Behavior::serve()).await;
    let client = Client::connect(config(&server.url())).expect("connect");
    let mut events = client.events();
    wait_for(&mut events, "the connection", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;
    client.close().await;
    wait_for(&mut events, "the stop", |e| {
        matches!(e, Event::Stopped { error: None })
    })
    .await;
    assert!(matches!(
        client.publish("chat", &1).await,
        Err(Error::Closed)
    ));
    assert!(matches!(client.subscribe("chat").await, Err(Error::Closed)));
    assert!(matches!(
        client.subscribe("not a channel").await,
        Err(Error::InvalidChannel(_))
    ));
    // Closing twice is fine.
    client.close().await;
}

#[tokio::test]
async fn invalid_urls_are_refused_up_front() {
    for url in ["http://127.0.0.1/ws", "nonsense", ""] {
        assert!(
            matches!(
                Client::connect(ClientConfig::new(url)),
                Err(Error::InvalidUrl { .. })
            ),
            "{url}"
        );
    }
}

/// Serves normally on the first connection; every later one refuses its first `n`
/// subscribes with `code`.
async fn refusing_after_reconnect(code: ErrorCode, n: usize) -> FakeServer {
    FakeServer::start(move |index| {
        Behavior::Serve(if index == 0 {
            ServeOptions::default()
        } else {
            ServeOptions::default().refuse_subscribes(code, n)
        })
    })
    .await
}

fn retrying_config(url: &str) -> ClientConfig {
    config(url).resubscribe_backoff(
        Backoff::default()
            .initial(ms(20))
            .max(ms(80))
            .jitter(Jitter::None),
    )
}

#[tokio::test]
async fn issue_9_an_internal_refusal_of_a_restoring_subscribe_is_retried_with_the_same_since() {
    let server = refusing_after_reconnect(ErrorCode::Internal, 4).await;
    let client = Client::connect(retrying_config(&server.url())).expect("connect");
    let mut events = client.events();
    let mut chat = client.subscribe("chat").await.expect("subscribe");
    server.publish("chat", &json!("one"));
    server.publish("chat", &json!("two"));
    for offset in [1, 2] {
        let message = timeout(WAIT, chat.next_message())
            .await
            .expect("in time")
            .expect("message");
        assert_eq!(message.offset, offset);
    }
    server.close_all(1001);
    wait_for(&mut events, "the disconnect", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    server.publish("chat", &json!("three"));
    let mut delays = Vec::new();
    while delays.len() < 4 {
        if let Event::SubscribeRetrying {
            channel,
            error,
            delay,
        } = wait_for(&mut events, "a subscribe retry", |e| {
            matches!(e, Event::SubscribeRetrying { .. })
        })
        .await
        {
            assert_eq!(channel, "chat");
            assert!(error.is_transient(), "{error:?}");
            delays.push(delay);
        }
    }
    assert_eq!(delays, [ms(20), ms(40), ms(80), ms(80)]);
    // The consumer sees the missed message next, then live ones: nothing lost or repeated.
    let message = timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!((message.offset, message.json()), (3, "\"three\""));
    server.publish("chat", &json!("four"));
    let message = timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!(message.offset, 4);
    // Five subscribes on the second connection (four refused), each with the same since;
    // the connection was never dropped for it.
    let subscribes = server
        .wait_for_received(6, WAIT, |r| r.kind() == "subscribe")
        .await;
    for retry in &subscribes[1..] {
        assert_eq!(retry.connection, 1);
        assert_eq!(retry.message["since"], json!({"epoch": "e1", "offset": 2}));
    }
    assert_eq!(server.attempts().len(), 2);
    client.close().await;
}

#[tokio::test]
async fn issue_9_a_forbidden_refusal_of_a_restoring_subscribe_ends_the_subscription() {
    let server = refusing_after_reconnect(ErrorCode::Forbidden, 1).await;
    let client = Client::connect(retrying_config(&server.url())).expect("connect");
    let mut events = client.events();
    let mut chat = client.subscribe("chat").await.expect("subscribe");
    server.publish("chat", &json!("one"));
    let message = timeout(WAIT, chat.next_message())
        .await
        .expect("in time")
        .expect("message");
    assert_eq!(message.offset, 1);
    server.close_all(1001);
    let ended = wait_for(&mut events, "the end of the subscription", |e| {
        matches!(
            e,
            Event::SubscriptionEnded { .. } | Event::SubscribeRetrying { .. }
        )
    })
    .await;
    assert!(
        matches!(&ended, Event::SubscriptionEnded { channel, error: Error::Server { code: ErrorCode::Forbidden, .. } } if channel == "chat"),
        "{ended:?}"
    );
    let last = timeout(WAIT, futures_util::StreamExt::next(&mut chat))
        .await
        .expect("in time");
    assert!(
        matches!(
            last,
            Some(SubscriptionEvent::Ended(Error::Server {
                code: ErrorCode::Forbidden,
                ..
            }))
        ),
        "{last:?}"
    );
    assert_eq!(
        server
            .received()
            .iter()
            .filter(|r| r.kind() == "subscribe")
            .count(),
        2
    );
    client.close().await;
}

#[tokio::test]
async fn issue_9_an_awaited_first_subscribe_returns_a_passing_refusal() {
    let server = FakeServer::always(Behavior::Serve(
        ServeOptions::default().refuse_subscribes(ErrorCode::Internal, 1),
    ))
    .await;
    let client = Client::connect(retrying_config(&server.url())).expect("connect");
    let error = client.subscribe("chat").await.expect_err("refused");
    assert!(error.is_transient(), "{error:?}");
    // The caller retries; the second subscribe on the same connection succeeds.
    let _chat = client.subscribe("chat").await.expect("subscribe");
    assert_eq!(server.attempts().len(), 1);
    client.close().await;
}
