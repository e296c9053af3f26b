//! Micro-benchmark of the fan-out hot path: one publish through the in-memory broker to N
//! in-process subscribers (message encoded once, the same frame pushed into every
//! subscriber's outbox), without sockets.
//!
//! Throughput is reported in deliveries (elements). Outboxes are drained between batches of
//! publishes, outside the timed part, as the sessions' writers would.
//!
//! Run with `cargo bench -p wirehub-core`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wirehub_core::{HistoryLimits, Hub, HubConfig, Outbox, OutboxLimits, SessionRef};

const BATCH: u64 = 64;

/// Polls a future that completes without waiting (the in-memory broker never waits).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-memory hub does not wait"),
    }
}

fn hub_with(subscribers: usize, history: usize) -> (Hub, Vec<SessionRef>) {
    hub_deflate(subscribers, history, None)
}

/// As `hub_with`, every subscriber having negotiated permessage-deflate with `deflate` as
/// its threshold (`None`: none did).
fn hub_deflate(
    subscribers: usize,
    history: usize,
    deflate: Option<usize>,
) -> (Hub, Vec<SessionRef>) {
    let hub = Hub::in_memory(HubConfig {
        history: HistoryLimits {
            size: history,
            ttl: None,
            max_total_bytes: 64 << 20,
        },
        max_pending: 4096,
        channels: wirehub_core::ChannelRules::default(),
    });
    let sessions: Vec<SessionRef> = (0..subscribers as u64)
        .map(|id| SessionRef {
            id,
            outbox: Arc::new(
                Outbox::new(OutboxLimits {
                    max_frames: 4096,
                    max_bytes: 64 << 20,
                })
                .with_deflate(deflate),
            ),
        })
        .collect();
    for session in &sessions {
        now(hub.subscribe(session, "bench", None, None)).expect("subscribes");
    }
    (hub, sessions)
}

fn drain(sessions: &[SessionRef], scratch: &mut VecDeque<bytes::Bytes>) {
    for session in sessions {
        session.outbox.drain_into(scratch);
        scratch.clear();
    }
}

fn publish(c: &mut Criterion) {
    let data = br#"{"t":1700000000000,"s":17}"#;
    let mut group = c.benchmark_group("publish_to_subscribers");
    for (subscribers, history) in [(1, 0), (100, 0), (1000, 0), (1000, 100), (10_000, 0)] {
        let (hub, sessions) = hub_with(subscribers, history);
        let mut scratch = VecDeque::new();
        drain(&sessions, &mut scratch);
        group.throughput(Throughput::Elements(subscribers as u64));
        let name = if history > 0 {
            format!("{subscribers}_history{history}")
        } else {
            subscribers.to_string()
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(BATCH);
                    let started = Instant::now();
                    for _ in 0..batch {
                        black_box(
                            now(hub.publish("bench", black_box(data), None)).expect("publishes"),
                        );
                    }
                    timed += started.elapsed();
                    drain(&sessions, &mut scratch);
                    left -= batch;
                }
                timed
            });
        });
    }
    group.finish();
}

/// A 1.2 KB JSON text message to 1 000 subscribers, without and with permessage-deflate: the
/// compression is done once per publish, whatever the number of subscribers.
fn publish_text(c: &mut Criterion) {
    let items: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"symbol":"SYM{i}","bid":{},"ask":{},"venue":"primary"}}"#,
                100 + i,
                101 + i
            )
        })
        .collect();
    let data = format!(r#"{{"items":[{}]}}"#, items.join(","));
    let mut group = c.benchmark_group("publish_text_1k_to_1000");
    for (name, deflate) in [("plain", None), ("deflate", Some(256))] {
        let (hub, sessions) = hub_deflate(1000, 0, deflate);
        let mut scratch = VecDeque::new();
        group.throughput(Throughput::Elements(1000));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let batch = left.min(BATCH);
                    let started = Instant::now();
                    for _ in 0..batch {
                        black_box(
                            now(hub.publish("bench", black_box(data.as_bytes()), None))
                                .expect("publishes"),
                        );
                    }
                    timed += started.elapsed();
                    drain(&sessions, &mut scratch);
                    left -= batch;
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, publish, publish_text);
criterion_main!(benches);
