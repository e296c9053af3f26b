//! The wirehub client SDK: an async, reconnecting client for the wirehub WebSocket
//! pub/sub server.
//!
//! A [`Client`] is a cheap, cloneable handle. Every clone talks to one background
//! connection task that owns the socket, so the client can be shared freely between tasks.
//! The task connects in the background and keeps reconnecting until it is told to stop:
//!
//! - **Backoff.** Reconnects wait `random(0, min(max, initial × multiplier^k))` for the
//!   `k`-th consecutive retry (full jitter, applied after the cap; 1 s doubling to 30 s by
//!   default). See [`Backoff`].
//! - **Health.** `k` goes back to 0 only once a connection proved healthy: `welcome`
//!   arrived and every resubscription was acknowledged, or it stayed up for
//!   [`ClientConfig::healthy_after`]. A server that accepts and immediately closes sees
//!   growing delays, not a tight loop.
//! - **Close codes.** 1000/1001 and 4200–4299: reconnect with jitter. 4100–4199, other
//!   codes and connections lost without a code: reconnect after backing off (`k` is at
//!   least 1). 4000–4099 and HTTP 401/403 at the upgrade: stop, with the error reported in
//!   [`Event::Stopped`] and to every pending and later call.
//! - **Resubscription and recovery.** After a reconnect every subscription is restored
//!   with `since: {epoch, offset}` of the last message it handed to the consumer, so the
//!   server replays what was missed. When it cannot, the client reports [`Event::RecoveryFailed`] and the
//!   subscription yields [`SubscriptionEvent::RecoveryFailed`]: loss is never silent.
//!   Duplicates (offset not above the last one seen in the same epoch) are dropped.
//! - **Slow consumers lose nothing.** Each subscription queues up to
//!   [`ClientConfig::subscription_capacity`] deliveries. When its consumer falls further
//!   behind, the client stops queueing for it (other channels flow on), and once the consumer
//!   has read half the queue it catches up from the server's history (`unsubscribe`, then
//!   `subscribe` with `since` = the last message handed over), as often as needed. The same
//!   happens when the server sends `gap` (messages it will not send this subscription).
//!   Every message arrives in order, or [`SubscriptionEvent::RecoveryFailed`] marks the place
//!   where the history no longer covered what was missed: never a silent drop.
//! - **Dead servers.** When nothing arrived for [`ClientConfig::idle_timeout`] the client
//!   sends an app-level `ping`; when nothing arrives within [`ClientConfig::pong_timeout`]
//!   after it, the connection is dropped and re-established.
//! - **Publishing while disconnected.** Up to [`ClientConfig::publish_buffer`] publishes
//!   are held and sent in order once the next connection has resubscribed; more fail at
//!   once with [`Error::BufferFull`]. A publish already sent when the connection dropped
//!   is sent again after the reconnect with the same idempotency key, so the server
//!   publishes it once (see [`ClientConfig::retry_publishes`]; with it off, such a publish
//!   fails with [`Error::Disconnected`]).
//! - **Tokens.** [`ClientConfig::token`] is sent as `Authorization: Bearer` on every upgrade;
//!   [`Client::refresh_token`] replaces it on the live connection before it expires. A
//!   subscription the server ends on its own (a refreshed token no longer allows it) ends
//!   with [`Error::Revoked`].
//! - **TLS.** `wss://` URLs are served by rustls, trusting the bundled Mozilla roots and
//!   whatever [`ClientConfig::add_root_certificates_pem`] adds (a private CA).
//!
//! # Example
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use wirehub_client::{Client, ClientConfig, Event, SubscriptionEvent};
//!
//! # async fn example() -> Result<(), wirehub_client::Error> {
//! let client = Client::connect(ClientConfig::new("ws://127.0.0.1:8080/ws"))?;
//!
//! // Report connection state changes.
//! let mut events = client.events();
//! tokio::spawn(async move {
//!     while let Some(event) = events.next().await {
//!         eprintln!("{event:?}");
//!     }
//! });
//!
//! let mut chat = client.subscribe("chat").await?;
//! let offset = client.publish("chat", &serde_json::json!({"text": "hi"})).await?;
//! println!("published at offset {offset}");
//!
//! while let Some(item) = chat.next().await {
//!     match item {
//!         SubscriptionEvent::Message(message) => println!("{}", message.json()),
//!         SubscriptionEvent::RecoveryFailed { .. } => eprintln!("missed messages: reload"),
//!         SubscriptionEvent::Ended(error) => return Err(error),
//!         _ => {}
//!     }
//! }
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - `client`: the [`Client`] handle and the commands it sends to the connection task.
//! - `connector`: connecting: the URL, TLS, the upgrade request, and which refusals stop
//!   the client.
//! - `registry`: what outlives a connection: the subscriptions (with the last position
//!   handed to each consumer) and the publishes held while disconnected.
//! - `connection`: the connection task (the actor that owns the socket) and its loop.
//! - `backoff`: the reconnect schedule, pure and unit-tested with an injected RNG.
//! - `config`: [`ClientConfig`].
//! - `event`: [`Event`] and the [`Events`] stream.
//! - `subscription`: [`Subscription`], [`SubscriptionEvent`] and [`Message`].
//! - `error`: [`Error`].

mod backoff;
mod client;
mod config;
mod connection;
mod connector;
mod error;
mod event;
mod registry;
mod socket;

#[cfg(test)]
mod autobahn;
mod subscription;

pub use backoff::{Backoff, Jitter, ReconnectSchedule};
pub use client::Client;
pub use config::ClientConfig;
pub use error::{Error, Result};
pub use event::{Event, Events, ReconnectReason};
pub use subscription::{Message, Subscription, SubscriptionEvent};
pub use wirehub_protocol::{ErrorCode, Member, PresenceReply, StreamPosition};

/// Compiles the README's example as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
