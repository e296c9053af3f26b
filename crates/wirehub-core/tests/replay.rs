//! `Hub::replay` on a live subscription of a connection of another dialect: the messages
//! after `since` that the history holds, in order, except those excluded for this connection
//! or for the tags it names; at most half the outbox at a time, each part saying where it
//! stopped, so that replaying again from there ends with every offset once; refused for a
//! connection that is not subscribed; nothing queued when the epoch is another.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use wirehub_core::{
    Alternate, Dialect, HistoryLimits, Hub, HubConfig, HubError, Outbox, OutboxLimits, Publication,
    SessionRef, text_frame,
};
use wirehub_protocol::StreamPosition;

/// Frames `{"offset": N}`; a message `{"skip": TAG}` is not for the connection tagged TAG.
#[derive(Debug)]
struct Offsets;

impl Dialect for Offsets {
    fn encode(&self, publication: &Publication) -> Option<Alternate> {
        let message: Value = serde_json::from_slice(publication.json()).ok()?;
        let skip = message["data"]["skip"].as_str().map(Arc::from);
        let frame = text_frame(&format!("{{\"offset\":{}}}", publication.offset));
        Some(Alternate { frame, skip })
    }
}

fn offsets(session: &SessionRef) -> Vec<u64> {
    let mut frames = VecDeque::new();
    session.outbox.drain_into(&mut frames);
    frames
        .iter()
        .map(|frame: &Bytes| {
            let json: Value = serde_json::from_slice(&frame[2..]).expect("JSON");
            json["offset"].as_u64().expect("offset")
        })
        .collect()
}

#[tokio::test]
async fn replay_on_a_live_subscription_in_parts_without_the_excluded() {
    let hub = Hub::in_memory(HubConfig {
        history: HistoryLimits {
            size: 100,
            ttl: None,
            max_total_bytes: usize::MAX,
        },
        max_pending: 100,
        channels: wirehub_core::ChannelRules::default(),
    });
    let limits = OutboxLimits {
        max_frames: 8,
        max_bytes: usize::MAX,
    };
    let session = SessionRef {
        id: 1,
        outbox: Arc::new(Outbox::new(limits).with_dialect(Arc::new(Offsets), Arc::from("me"))),
    };
    let subscribed = hub
        .subscribe(&session, "c", None, None)
        .await
        .expect("subscribe");
    offsets(&session);
    for n in 1..=12u64 {
        let data = match n {
            3 | 9 => r#"{"skip":"earlier"}"#.to_owned(),
            5 => r#"{"skip":"me"}"#.to_owned(),
            _ => format!("{{\"n\":{n}}}"),
        };
        hub.publish("c", data.as_bytes(), None)
            .await
            .expect("publish");
        if n % 4 == 0 {
            offsets(&session);
        }
    }
    assert!(session.outbox.is_empty());

    // From the start: 3 and 9 excluded by the tag named, 5 by the connection's own.
    let mut got = Vec::new();
    let mut from = 0;
    let mut parts = 0;
    loop {
        let since = StreamPosition {
            epoch: subscribed.epoch.to_string(),
            offset: from,
        };
        let replay = hub
            .replay(&session, "c", since, &[Arc::from("earlier")])
            .await
            .expect("replay");
        assert!(replay.complete);
        assert_eq!(replay.top, 12);
        let part = offsets(&session);
        assert!(part.len() <= 4, "half of the outbox at most: {part:?}");
        assert_eq!(part.len(), replay.replayed);
        assert!(replay.offset > from, "{replay:?}");
        got.extend(part);
        parts += 1;
        from = replay.offset;
        if from == replay.top {
            break;
        }
    }
    assert_eq!(got, [1, 2, 4, 6, 7, 8, 10, 11, 12]);
    assert!(parts > 1);

    // Live deliveries keep coming after a replay, in order.
    hub.publish("c", b"13", None).await.expect("publish");
    assert_eq!(offsets(&session), [13]);

    // Another epoch: nothing queued, the stream's position said.
    let since = StreamPosition {
        epoch: "another".to_owned(),
        offset: 1,
    };
    let replay = hub.replay(&session, "c", since, &[]).await.expect("replay");
    assert!(!replay.complete);
    assert_eq!((replay.replayed, replay.top), (0, 13));
    assert!(session.outbox.is_empty());

    // A connection without a live subscription to the channel is refused.
    let since = StreamPosition {
        epoch: subscribed.epoch.to_string(),
        offset: 0,
    };
    let stranger = SessionRef {
        id: 2,
        outbox: Arc::new(Outbox::new(limits)),
    };
    let refused = hub.replay(&stranger, "c", since, &[]).await;
    assert!(
        matches!(refused, Err(HubError::NotSubscribed)),
        "{refused:?}"
    );
}
