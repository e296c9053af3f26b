//! Property: any interleaving of publishes, disconnects and reconnects (with `since`
//! recovery) gives a subscriber, per channel, the published sequence with no gap and no
//! duplicate whenever `recovered` is true; when it is false, the subscriber is told the
//! current position and continues from there.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;
use wirehub_core::{HistoryLimits, Hub, HubConfig, Outbox, OutboxLimits, SessionRef};
use wirehub_protocol::StreamPosition;

const CHANNELS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Op {
    Publish(usize),
    Drain,
    Disconnect,
    Reconnect,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..CHANNELS.len()).prop_map(Op::Publish),
        2 => Just(Op::Drain),
        1 => Just(Op::Disconnect),
        1 => Just(Op::Reconnect),
    ]
}

fn json_of(frame: &Bytes) -> Value {
    let header = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    serde_json::from_slice(&frame[header..]).expect("frames carry JSON")
}

/// What the subscriber knows of one channel.
#[derive(Debug, Default)]
struct Seen {
    position: Option<StreamPosition>,
}

struct Subscriber {
    session: Option<SessionRef>,
    next_id: u64,
    seen: HashMap<String, Seen>,
}

impl Subscriber {
    async fn connect(&mut self, hub: &Hub) {
        self.next_id += 1;
        let session = SessionRef {
            id: self.next_id,
            outbox: Arc::new(Outbox::new(OutboxLimits {
                max_frames: 100_000,
                max_bytes: usize::MAX,
            })),
        };
        for channel in CHANNELS {
            let since = self.seen.get(channel).and_then(|s| s.position.clone());
            hub.subscribe(&session, channel, None, since)
                .await
                .expect("subscribe");
        }
        self.session = Some(session);
    }

    async fn disconnect(&mut self, hub: &Hub) {
        if let Some(session) = self.session.take() {
            // Whatever was queued but not read is lost with the connection.
            for channel in CHANNELS {
                hub.unsubscribe(channel, session.id)
                    .await
                    .expect("unsubscribe");
            }
        }
    }

    /// Reads everything queued, checking order and continuity as it goes.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let mut frames = VecDeque::new();
        session.outbox.drain_into(&mut frames);
        for frame in frames {
            let message = json_of(&frame);
            let channel = message["channel"].as_str().expect("channel").to_owned();
            let seen = self.seen.entry(channel.clone()).or_default();
            let offset = message["offset"].as_u64().expect("offset");
            match message["type"].as_str() {
                Some("subscribed") => {
                    let epoch = message["epoch"].as_str().expect("epoch").to_owned();
                    match (message["recovered"].as_bool(), &seen.position) {
                        (Some(true), Some(before)) => {
                            // The replayed messages follow and lead from where the
                            // subscriber left off up to `offset`.
                            prop_assert_eq!(&before.epoch, &epoch);
                            prop_assert!(before.offset <= offset);
                        }
                        (Some(false), Some(before)) => {
                            prop_assert!(before.epoch != epoch || before.offset != offset);
                            seen.position = Some(StreamPosition { epoch, offset });
                        }
                        _ => seen.position = Some(StreamPosition { epoch, offset }),
                    }
                }
                Some("message") => {
                    let position = seen.position.as_mut().expect("subscribed first");
                    prop_assert_eq!(
                        offset,
                        position.offset + 1,
                        "no gap, no duplicate on {}",
                        channel
                    );
                    position.offset = offset;
                }
                other => prop_assert!(false, "unexpected {:?}", other),
            }
        }
        Ok(())
    }
}

fn run(history: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let hub = Hub::in_memory(HubConfig {
            history: HistoryLimits {
                size: history,
                ttl: None,
                max_total_bytes: usize::MAX,
            },
            max_pending: 1000,
            channels: wirehub_core::ChannelRules::default(),
        });
        // A second, always-connected subscriber keeps the streams (and epochs) alive.
        let keeper = SessionRef {
            id: 1_000_000,
            outbox: Arc::new(Outbox::new(OutboxLimits {
                max_frames: 1_000_000,
                max_bytes: usize::MAX,
            })),
        };
        for channel in CHANNELS {
            hub.subscribe(&keeper, channel, None, None)
                .await
                .expect("keeper");
        }
        let mut published = [0u64; CHANNELS.len()];
        let mut subscriber = Subscriber {
            session: None,
            next_id: 0,
            seen: HashMap::new(),
        };
        subscriber.connect(&hub).await;
        for op in ops {
            match op {
                Op::Publish(index) => {
                    let offset = hub
                        .publish(CHANNELS[index], b"{}", None)
                        .await
                        .expect("publish")
                        .offset;
                    published[index] += 1;
                    prop_assert_eq!(offset, published[index]);
                }
                Op::Drain => subscriber.drain()?,
                Op::Disconnect => subscriber.disconnect(&hub).await,
                Op::Reconnect => {
                    subscriber.disconnect(&hub).await;
                    subscriber.connect(&hub).await;
                    subscriber.drain()?;
                }
            }
        }
        // At the end, a connected subscriber has caught up with everything published.
        if subscriber.session.is_none() {
            subscriber.connect(&hub).await;
        }
        subscriber.drain()?;
        for (index, channel) in CHANNELS.iter().enumerate() {
            let position = subscriber.seen[*channel]
                .position
                .as_ref()
                .expect("position");
            prop_assert_eq!(position.offset, published[index]);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn recovery_never_loses_or_duplicates(history in 0usize..12, ops in proptest::collection::vec(op(), 0..80)) {
        run(history, ops)?;
    }
}

#[test]
fn recovery_within_history_is_complete() {
    // A fixed case: disconnect, 5 publishes, reconnect with history 10.
    let ops = vec![Op::Publish(0), Op::Drain, Op::Disconnect]
        .into_iter()
        .chain(std::iter::repeat_n(Op::Publish(0), 5))
        .chain([Op::Reconnect])
        .collect();
    run(10, ops).expect("recovers");
}
