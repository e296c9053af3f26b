//! The core of wirehub: channels, history and fan-out, independent of any transport.
//!
//! - [`Hub`] (`hub`): what sessions call: subscribe (with recovery), unsubscribe, publish,
//!   history.
//! - [`Fanout`] (`channel`): the node's local subscribers per channel.
//! - [`Outbox`] (`outbox`): a connection's bounded queue of ready-made frames.
//! - [`Broker`] (`broker`): the seam to whatever assigns offsets and keeps history;
//!   [`MemoryBroker`] (`memory`) is the in-process one, with its `history` ring.
//! - [`ChannelRules`] (`policy`): options per kind of channel (`[[channels]]`).
//! - presence (`presence`): the members of presence channels ([`Joined`], [`Departure`],
//!   [`PresencePage`]), kept by the broker, announced with `join`/`leave`.
//! - [`Lifecycle`] (`lifecycle`): where connection, subscription, occupancy and presence
//!   events go (the server's webhooks).
//! - [`OccupancyStore`] (`occupancy`): which channels have subscribers anywhere, so that one
//!   node announces each occupied/vacated transition; [`MemoryOccupancy`] for one process.
//! - [`ControlBus`] (`control`): orders to every node (closing a user's connections).
//!
//! This crate knows nothing about sockets, HTTP or Redis. It builds WebSocket frames (with
//! `wirehub-ws`) and JSON (with `wirehub-protocol`) once per message, so that every
//! subscriber shares the same bytes.

mod broker;
mod channel;
mod control;
mod history;
mod hub;
mod lifecycle;
mod memory;
mod occupancy;
mod outbox;
mod policy;
mod presence;

pub use broker::{
    Alternate, BoxFuture, Broker, BrokerError, BrokerHealth, Deliver, Dialect, HistoryPage,
    HistoryQuery, Publication, Published, encode_publication,
};
pub use channel::{Fanout, SessionRef};
pub use control::{ControlBus, ControlHandler};
pub use history::HistoryLimits;
pub use hub::{Hub, HubConfig, HubError, Replayed, Subscribed, SubscriptionStart, text_frame};
pub use lifecycle::{Lifecycle, LifecycleEvent, LifecycleSink};
pub use memory::{MemoryBroker, new_epoch};
pub use occupancy::{
    ChannelCount, Maintained, MemoryOccupancy, OccupancyStore, Settled, Transition,
};
pub use outbox::{DEPTH_BOUNDS, Outbox, OutboxLimits, PushError, QueueStats};
pub use policy::{ChannelOptions, ChannelRules, OnSlow};
pub use presence::{Departure, Joined, Left, PresencePage};
