//! The broker on its own, against a real Redis: the `Broker` contract the hub relies on.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use wirehub_broker_redis::{RedisBroker, RedisConfig};
use wirehub_core::{
    Broker, Deliver, HistoryLimits, HistoryQuery, MemoryBroker, Publication, encode_publication,
};
use wirehub_protocol::StreamPosition;
use wirehub_testkit::{RedisServer, TIMEOUT};

/// Records what a broker hands to the fan-out, optionally slowly.
#[derive(Debug, Default)]
struct Recorder {
    delivered: Mutex<Vec<(String, String, u64)>>,
    lost: Mutex<Vec<String>>,
    delay: Duration,
}

impl Recorder {
    fn delivered(&self) -> Vec<(String, String, u64)> {
        self.delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn wait_for_deliveries(&self, count: usize) -> Vec<(String, String, u64)> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            let delivered = self.delivered();
            if delivered.len() >= count {
                return delivered;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} delivered",
                delivered.len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Deliver for Recorder {
    fn deliver(&self, publication: &Publication) {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.delivered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((
                publication.channel.to_string(),
                publication.epoch.to_string(),
                publication.offset,
            ));
    }

    fn lost(&self, channel: &str, _epoch: &str, _offset: u64) {
        self.lost
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(channel.to_owned());
    }
}

async fn broker(redis: &RedisServer, history: usize, sink: Arc<Recorder>) -> RedisBroker {
    let config = RedisConfig::new(redis.url())
        .history_size(history)
        .history_ttl(None);
    RedisBroker::connect(config)
        .await
        .expect("connect")
        .start(sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_a_watched_channel_returns_once_the_publications_before_it_were_delivered() {
    let redis = RedisServer::start();
    // A slow fan-out: the listener falls behind Redis.
    let sink = Arc::new(Recorder {
        delay: Duration::from_millis(2),
        ..Recorder::default()
    });
    let node = broker(&redis, 100, sink.clone()).await;
    let publisher = broker(&redis, 100, Arc::new(Recorder::default())).await;
    node.watch("c").await.expect("watch");
    for n in 1..=50 {
        assert_eq!(
            publisher
                .publish("c", b"1", None)
                .await
                .expect("publish")
                .offset,
            n
        );
    }
    let page = node
        .history("c", HistoryQuery::default())
        .await
        .expect("history");
    assert_eq!(page.top, 50);
    // Whatever the hub reads as the subscription's start has already reached the fan-out, so
    // nothing at or below it can arrive afterwards as a live message.
    let offsets: Vec<u64> = sink.delivered().iter().map(|(_, _, o)| *o).collect();
    assert_eq!(offsets, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn watch_returns_once_the_node_receives_the_channel() {
    let redis = RedisServer::start();
    let sink = Arc::new(Recorder::default());
    let node = broker(&redis, 10, sink.clone()).await;
    let publisher = broker(&redis, 10, Arc::new(Recorder::default())).await;
    node.watch("w").await.expect("watch");
    publisher.publish("w", b"1", None).await.expect("publish");
    publisher
        .publish("other", b"1", None)
        .await
        .expect("publish");
    let delivered = sink.wait_for_deliveries(1).await;
    assert_eq!(delivered[0].0, "w");
    assert_eq!(delivered[0].2, 1);

    // Watched twice, unwatched once: still delivered; unwatched again: not any more.
    node.watch("w").await.expect("watch");
    node.unwatch("w").await.expect("unwatch");
    publisher.publish("w", b"2", None).await.expect("publish");
    sink.wait_for_deliveries(2).await;
    node.unwatch("w").await.expect("unwatch");
    publisher.publish("w", b"3", None).await.expect("publish");
    node.watch("x").await.expect("watch");
    publisher.publish("x", b"1", None).await.expect("publish");
    let delivered = sink.wait_for_deliveries(3).await;
    assert_eq!(delivered.len(), 3);
    assert_eq!(delivered[2].0, "x", "w's third message was not delivered");
}

#[tokio::test]
async fn history_pages_are_the_memory_brokers_pages() {
    let redis = RedisServer::start();
    let redis_broker = broker(&redis, 5, Arc::new(Recorder::default())).await;
    let memory = MemoryBroker::new(
        HistoryLimits {
            size: 5,
            ttl: None,
            max_total_bytes: usize::MAX,
        },
        Arc::new(Recorder::default()),
    );
    let brokers: [&dyn Broker; 2] = [&redis_broker, &memory];
    // A watch keeps the in-memory stream (and its epoch) alive.
    for broker in brokers {
        broker.watch("h").await.expect("watch");
    }
    let mut epochs = Vec::new();
    for broker in brokers {
        epochs.push(
            broker
                .history("h", HistoryQuery::default())
                .await
                .expect("history")
                .epoch,
        );
    }
    for step in 0..12 {
        for broker in brokers {
            let page = broker
                .history("h", HistoryQuery::default())
                .await
                .expect("history");
            assert_eq!(page.top, step);
        }
        for (broker, epoch) in brokers.iter().zip(&epochs) {
            for since in 0..=step + 1 {
                for limit in [None, Some(0), Some(2)] {
                    let query = HistoryQuery {
                        since: Some(StreamPosition {
                            epoch: epoch.to_string(),
                            offset: since,
                        }),
                        limit,
                    };
                    let page = broker.history("h", query).await.expect("history");
                    let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
                    if let Some(first) = page.publications.first() {
                        let live =
                            encode_publication(Arc::from("h"), epoch.clone(), first.offset, b"{}");
                        assert_eq!(first.frame, live.frame, "the same frame as a live delivery");
                    }
                    let result = (offsets, page.complete, page.top);
                    let memory_page = memory
                        .history(
                            "h",
                            HistoryQuery {
                                since: Some(StreamPosition {
                                    epoch: epochs[1].to_string(),
                                    offset: since,
                                }),
                                limit,
                            },
                        )
                        .await
                        .expect("history");
                    let memory_result = (
                        memory_page
                            .publications
                            .iter()
                            .map(|p| p.offset)
                            .collect::<Vec<_>>(),
                        memory_page.complete,
                        memory_page.top,
                    );
                    assert_eq!(result, memory_result, "since {since}, limit {limit:?}");
                }
            }
        }
        for broker in brokers {
            broker.publish("h", b"{}", None).await.expect("publish");
        }
    }
    // A position of another epoch recovers nothing.
    let page = redis_broker
        .history(
            "h",
            HistoryQuery {
                since: Some(StreamPosition {
                    epoch: "other".to_owned(),
                    offset: 1,
                }),
                limit: None,
            },
        )
        .await
        .expect("history");
    assert!(!page.complete);
    assert!(page.publications.is_empty());
}

#[tokio::test]
async fn a_flush_is_reported_as_lost_publications() {
    let redis = RedisServer::start();
    let sink = Arc::new(Recorder::default());
    let node = broker(&redis, 10, sink.clone()).await;
    node.watch("f").await.expect("watch");
    let before = node
        .history("f", HistoryQuery::default())
        .await
        .expect("history");
    node.publish("f", b"1", None).await.expect("publish");
    sink.wait_for_deliveries(1).await;
    redis.flush();
    node.publish("f", b"1", None).await.expect("publish");
    let delivered = sink.wait_for_deliveries(2).await;
    assert_ne!(delivered[1].1, before.epoch.to_string(), "a new epoch");
    assert_eq!(delivered[1].2, 1);
    assert_eq!(
        *sink.lost.lock().unwrap_or_else(PoisonError::into_inner),
        vec!["f".to_owned()]
    );
}

#[tokio::test]
async fn a_sweep_reaps_more_than_one_batch_of_ended_members_of_a_channel() {
    // A node with many members of one channel died (here: their graces end together): one
    // sweep removes them all, each with its leave, not a batch of 100 per second.
    let redis = RedisServer::start();
    let broker = broker(&redis, 10, Arc::new(Recorder::default())).await;
    const MEMBERS: usize = 250;
    for n in 0..MEMBERS {
        let member = wirehub_protocol::Member {
            client: format!("c{n}"),
            user: None,
            info: None,
        };
        let joined = broker.presence_join("room", member).await.expect("join");
        assert!(joined.announced);
    }
    for n in 0..MEMBERS {
        let grace = wirehub_core::Departure::Grace(Duration::from_millis(1));
        let left = broker
            .presence_leave("room", &format!("c{n}"), grace)
            .await
            .expect("grace");
        assert_eq!(left, None, "listed during the grace");
    }
    // The graces end a millisecond later by Redis' clock.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let left = broker.presence_sweep().await.expect("sweep");
    assert_eq!(left.len(), MEMBERS);
    let mut clients: Vec<String> = left.into_iter().map(|l| l.member.client).collect();
    clients.sort();
    clients.dedup();
    assert_eq!(clients.len(), MEMBERS, "each member once");
    assert_eq!(broker.presence("room", 10).await.expect("read").count, 0);
    assert!(broker.presence_sweep().await.expect("sweep").is_empty());
}
