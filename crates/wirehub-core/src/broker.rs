//! The seam between the hub and whatever orders messages: the [`Broker`] trait.
//!
//! A broker assigns each published message its offset in the channel's stream, keeps the
//! stream's history, and hands every publication, in offset order, to the node's local
//! fan-out through the [`Deliver`] sink it was built with. The in-memory broker
//! ([`crate::MemoryBroker`]) does this inside the process; a Redis broker does it across
//! nodes. Sessions never see which broker runs: they only talk to the [`crate::Hub`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use wirehub_protocol::{Member, MemberEvent, StreamPosition};

use crate::presence::{Departure, Joined, Left, PresencePage};

/// A boxed future, as returned by [`Broker`] methods (the trait is used as `dyn Broker`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One message in a channel's stream, ready to send.
#[derive(Debug, Clone)]
pub struct Publication {
    /// The channel.
    pub channel: Arc<str>,
    /// The stream's epoch when the message was published.
    pub epoch: Arc<str>,
    /// The message's offset in the stream.
    pub offset: u64,
    /// The complete WebSocket text frame of the `message` delivery, built once and shared.
    pub frame: Bytes,
    /// Where the JSON text starts inside `frame` (after the WebSocket header).
    pub json_start: usize,
    /// The publication as the connections of another [`Dialect`] get it, built on first use
    /// by the first such subscriber and shared by the others.
    pub alternate: OnceLock<Option<Alternate>>,
    /// The same delivery as a permessage-deflate frame, built at most once, by the first
    /// subscriber that negotiated the extension and for whom the message is large enough
    /// (`None` inside: compression would not make it smaller). Every such subscriber gets a
    /// clone of the same `Bytes`; clones of the publication made afterwards (its history
    /// entry) share it too.
    deflated: OnceLock<Option<Bytes>>,
}

/// A publication encoded for another wire dialect (see [`Dialect`]).
#[derive(Debug, Clone)]
pub struct Alternate {
    /// The complete WebSocket frame.
    pub frame: Bytes,
    /// The connection (by its dialect tag) that must not get it, e.g. the sender of a
    /// client event or the connection an API call excluded.
    pub skip: Option<Arc<str>>,
}

/// Another wire format for deliveries, for connections of another protocol (the Pusher
/// protocol). A connection whose outbox names a dialect gets each publication as the
/// dialect encodes it: encoded once per node on first use and shared, like the v1 frame.
pub trait Dialect: Send + Sync + fmt::Debug + 'static {
    /// The frame for `publication`, or `None` when the dialect's connections get nothing.
    fn encode(&self, publication: &Publication) -> Option<Alternate>;

    /// The frame a presence transition on `channel` is sent as to the dialect's connections
    /// (`member`: the member's JSON text, [`Member::to_json`]), or `None`. Called once per
    /// node for each transition on a channel with at least one such local subscriber, also
    /// one still being set up, so that the dialect may keep its own view of the members.
    /// The default sends nothing.
    fn member(&self, channel: &str, event: MemberEvent, member: &[u8]) -> Option<Alternate> {
        let _ = (channel, event, member);
        None
    }
}

impl Publication {
    /// The JSON text of the `message` delivery (without the WebSocket header).
    pub fn json(&self) -> &[u8] {
        &self.frame[self.json_start..]
    }

    /// The publication as `dialect` encodes it (encoded on first use and kept); `None` when
    /// the dialect has no form for it.
    pub(crate) fn alternate_in(&self, dialect: &dyn Dialect) -> Option<&Alternate> {
        self.alternate.get_or_init(|| dialect.encode(self)).as_ref()
    }

    /// The frame to send to a connection whose outbox says [`crate::Outbox::deflate`]:
    /// with `None` (no permessage-deflate), or a message shorter than the threshold, the
    /// plain frame; otherwise the compressed one, built on the first call.
    pub fn frame_for(&self, deflate: Option<usize>) -> &Bytes {
        self.frame_counting(deflate, None)
    }

    /// As [`Publication::frame_for`], counting in `compressions` each compression done.
    pub(crate) fn frame_counting(
        &self,
        deflate: Option<usize>,
        compressions: Option<&AtomicU64>,
    ) -> &Bytes {
        match deflate {
            Some(threshold) if self.frame.len() - self.json_start >= threshold => {
                let deflated = self.deflated.get_or_init(|| {
                    if let Some(count) = compressions {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    wirehub_ws::deflate_frame(wirehub_ws::OpCode::Text, self.json())
                });
                deflated.as_ref().unwrap_or(&self.frame)
            }
            _ => &self.frame,
        }
    }
}

/// Where a broker hands publications: the node's local fan-out.
pub trait Deliver: Send + Sync + 'static {
    /// Delivers one publication to the local subscribers of its channel. Called in offset
    /// order per channel; must not block.
    fn deliver(&self, publication: &Publication);

    /// Tells the local subscribers of `channel` that publications were lost and cannot be
    /// delivered (the broker's link to the other nodes broke and the history no longer covers
    /// the gap, or the stream's epoch changed). `epoch` and `offset` are the stream's position
    /// now: deliveries go on from there. The subscribers learn what they missed with
    /// `subscribe` + `since`. The default does nothing.
    fn lost(&self, channel: &str, epoch: &str, offset: u64) {
        let _ = (channel, epoch, offset);
    }

    /// Tells the local subscribers of a presence channel that a member joined or left.
    /// `member` is the member's JSON text ([`Member::to_json`]), copied into the frame. Called
    /// once per node for each transition; must not block. The default does nothing.
    fn member(&self, channel: &str, event: MemberEvent, member: &[u8]) {
        let _ = (channel, event, member);
    }
}

/// The outcome of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's offset; for a duplicate, the offset of the message first published with
    /// the same idempotency key.
    pub offset: u64,
    /// The idempotency key matched a message still in the history: nothing was published.
    pub duplicate: bool,
}

/// What to read from a channel's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Return the messages after this position; `None` returns none, only the position.
    pub since: Option<StreamPosition>,
    /// Return at most this many messages (the oldest first).
    pub limit: Option<usize>,
}

/// A channel stream's position and, when asked for, its messages after a position.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The stream's current epoch.
    pub epoch: Arc<str>,
    /// The offset of the stream's latest message (0 when none yet).
    pub top: u64,
    /// The messages after `since` that are still kept, oldest first (none when `since` is of
    /// another epoch).
    pub publications: Vec<Publication>,
    /// Whether `publications` holds every message after `since` (same epoch, and nothing
    /// after `since` has left the history yet). False when no `since` was given.
    pub complete: bool,
}

/// What a broker says about itself ([`Broker::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerHealth {
    /// Whether the broker's backend answers and delivers: when false, publishes and new
    /// subscriptions fail and deliveries from other nodes are delayed.
    pub reachable: bool,
    /// How often a subscription that was connected but no longer delivering was detected and
    /// made again.
    pub resubscribes: u64,
}

impl BrokerHealth {
    /// Reachable, never resubscribed.
    pub const REACHABLE: BrokerHealth = BrokerHealth {
        reachable: true,
        resubscribes: 0,
    };

    /// A health report.
    pub fn new(reachable: bool, resubscribes: u64) -> Self {
        BrokerHealth {
            reachable,
            resubscribes,
        }
    }
}

/// Why a broker could not carry out a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker's backend could not be reached or failed.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// Orders, stores and distributes the messages of channel streams.
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Publishes `data` (JSON text) on `channel`: assigns the next offset, keeps the message in
    /// history and delivers it. With an idempotency `key` that a message still in the
    /// channel's history was published with, nothing is published and that message's offset
    /// is returned as a duplicate.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: &'a [u8],
        key: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Published, BrokerError>>;

    /// Reads a channel's position and history.
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<HistoryPage, BrokerError>>;

    /// The node gained its first local subscriber of `channel`: start delivering it here.
    fn watch<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// The node lost its last local subscriber of `channel`.
    fn unwatch<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Periodic housekeeping: expire old history and free unused streams.
    fn sweep(&self) {}

    /// Whether the broker can serve now, for readiness checks and metrics. The default (a
    /// broker inside the process) is always reachable.
    fn health(&self) -> BrokerHealth {
        BrokerHealth::REACHABLE
    }

    /// A short name for logs and metrics (`memory`, `redis`).
    fn name(&self) -> &'static str;

    /// Adds `member` to a presence channel's members and announces it with a `join` to the
    /// channel's subscribers on every node, unless it takes over a member of the same user
    /// that is in its grace ([`Departure::Grace`]): then nothing is announced and the member
    /// keeps the listed identity ([`Joined`]). The default: presence is not supported.
    fn presence_join<'a>(
        &'a self,
        channel: &'a str,
        member: Member,
    ) -> BoxFuture<'a, Result<Joined, BrokerError>> {
        let _ = (channel, member);
        Box::pin(async { Err(no_presence()) })
    }

    /// The member `client` (the [`Joined::member`]'s `client`) leaves `channel`: at once, with
    /// a `leave` to the subscribers on every node (returns the member, so that the caller can
    /// report the transition, which happened exactly here), or after a grace (returns `None`;
    /// the member stays listed until the grace ends, then [`Broker::presence_sweep`] on some
    /// node removes it and announces its `leave`, unless a join of the same user took it over
    /// meanwhile). `None` too when `client` is not a member.
    fn presence_leave<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
        departure: Departure,
    ) -> BoxFuture<'a, Result<Option<Member>, BrokerError>> {
        let _ = (channel, client, departure);
        Box::pin(async { Err(no_presence()) })
    }

    /// A presence channel's members: the exact count, and at most `max` members listed.
    fn presence<'a>(
        &'a self,
        channel: &'a str,
        max: usize,
    ) -> BoxFuture<'a, Result<PresencePage, BrokerError>> {
        let _ = (channel, max);
        Box::pin(async { Err(no_presence()) })
    }

    /// Presence housekeeping, called about every second: renews the leases of this node's
    /// members (when the broker has leases), removes members whose grace or lease ended
    /// (announcing each `leave`) and returns those that this call removed: each member that
    /// leaves this way is returned by exactly one call on one node. The default does nothing.
    fn presence_sweep(&self) -> BoxFuture<'_, Result<Vec<Left>, BrokerError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

fn no_presence() -> BrokerError {
    BrokerError::Unavailable("this broker does not keep presence".to_owned())
}

/// Builds the `message` frame for a publication: JSON encoded once, WebSocket header in front.
pub fn encode_publication(
    channel: Arc<str>,
    epoch: Arc<str>,
    offset: u64,
    data: &[u8],
) -> Publication {
    let mut json = Vec::with_capacity(64 + channel.len() + data.len());
    wirehub_protocol::encode_message(&mut json, &channel, offset, data);
    let json_start = wirehub_ws::header_len(json.len());
    let frame = wirehub_ws::encode_frame(wirehub_ws::OpCode::Text, &json);
    Publication {
        channel,
        epoch,
        offset,
        frame,
        json_start,
        alternate: OnceLock::new(),
        deflated: OnceLock::new(),
    }
}
