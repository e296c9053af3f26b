//! The hub: what sessions and the HTTP API call to subscribe, unsubscribe, publish and read
//! history. It joins the node's local fan-out ([`Fanout`]) with a [`Broker`], and it alone
//! knows the order in which a new subscription's reply, replayed history and live messages
//! reach the client.

use std::sync::Arc;

use bytes::Bytes;
use wirehub_protocol::{ErrorCode, ServerMessage, StreamPosition, encode_server_message};

use crate::broker::{Broker, BrokerError, Deliver, HistoryPage, HistoryQuery, Published};
use crate::channel::{Added, Fanout, SessionRef};
use crate::history::HistoryLimits;
use crate::memory::MemoryBroker;
use crate::policy::ChannelRules;

/// Settings of the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// History kept per channel and in total (the default of channels that no rule gives
    /// their own history settings).
    pub history: HistoryLimits,
    /// Deliveries held for one subscriber while its subscription is being set up.
    pub max_pending: usize,
    /// Options per kind of channel: each subscription's delivery policy, looked up when it
    /// is made, and the in-memory broker's history settings per channel.
    pub channels: ChannelRules,
}

/// Why a hub request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The session is subscribed to the channel already.
    #[error("already subscribed to this channel")]
    AlreadySubscribed,
    /// The session is not subscribed to the channel.
    #[error("not subscribed to this channel")]
    NotSubscribed,
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl HubError {
    /// The protocol error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            HubError::AlreadySubscribed => ErrorCode::AlreadySubscribed,
            HubError::NotSubscribed => ErrorCode::NotSubscribed,
            HubError::Broker(_) => ErrorCode::Internal,
        }
    }
}

/// What a subscription started from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// The stream's epoch.
    pub epoch: Arc<str>,
    /// The stream's latest offset when the subscription took effect (`subscribed.offset`);
    /// replayed messages, when any, lead up to it.
    pub offset: u64,
    /// Whether recovery was complete, when `since` was given.
    pub recovered: Option<bool>,
    /// Number of messages replayed from history.
    pub replayed: usize,
}

/// What a subscription starts from, for the frames that announce it
/// ([`Hub::subscribe_with`]).
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionStart<'a> {
    /// The stream's epoch.
    pub epoch: &'a str,
    /// The stream's latest offset.
    pub offset: u64,
    /// Whether recovery was complete, when `since` was given.
    pub recovered: Option<bool>,
    /// How many messages from history follow (at most; a replay that does not fit the
    /// connection's queue is cut short by a `gap`).
    pub replaying: usize,
}

/// What [`Hub::replay`] queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The stream's epoch now.
    pub epoch: Arc<str>,
    /// The stream's latest offset when the history was read.
    pub top: u64,
    /// Whether the history held every message after `since` (same epoch, none of them
    /// expired, `since` not ahead of the stream); nothing is queued otherwise.
    pub complete: bool,
    /// Messages queued.
    pub replayed: usize,
    /// How far the replay went: `top` when all of it fit, else the offset of the last
    /// message queued (or skipped) before the queue's recovery half was full. Replaying
    /// again from here goes on where this one stopped.
    pub offset: u64,
}

/// Subscriptions, publishing and history for one node.
#[derive(Debug)]
pub struct Hub {
    fanout: Arc<Fanout>,
    broker: Arc<dyn Broker>,
}

impl Hub {
    /// A hub whose broker is built by `make_broker` from the hub's fan-out sink.
    pub fn new(
        config: HubConfig,
        make_broker: impl FnOnce(Arc<dyn Deliver>) -> Arc<dyn Broker>,
    ) -> Self {
        let fanout = Arc::new(Fanout::with_rules(config.max_pending, config.channels));
        let broker = make_broker(fanout.clone());
        Hub { fanout, broker }
    }

    /// A hub with the in-memory broker (history per channel as `config.channels` says).
    pub fn in_memory(config: HubConfig) -> Self {
        let history = config.history;
        let rules = config.channels.clone();
        Hub::new(config, move |sink| {
            Arc::new(MemoryBroker::new(history, sink).with_channel_rules(rules))
        })
    }

    /// The local fan-out (for statistics).
    pub fn fanout(&self) -> &Fanout {
        &self.fanout
    }

    /// The broker.
    pub fn broker(&self) -> &dyn Broker {
        &*self.broker
    }

    /// Subscribes a session to a channel. Queues, in this order, the `subscribed` reply, the
    /// replayed messages after `since` (when recovery is complete), and from then on every
    /// live message, with no gap and no duplicate between replay and live. A recovery larger
    /// than half the connection's queue is sent in part, followed by a `gap` whose `from` is
    /// the first offset not sent: recovering again from the last offset received goes on
    /// from there.
    ///
    /// # Errors
    /// [`HubError::AlreadySubscribed`], or a broker failure (the subscription is undone).
    pub async fn subscribe(
        &self,
        session: &SessionRef,
        channel: &str,
        id: Option<u64>,
        since: Option<StreamPosition>,
    ) -> Result<Subscribed, HubError> {
        self.subscribe_with(session, channel, since, |start| {
            let reply = ServerMessage::Subscribed {
                id,
                channel: channel.to_owned(),
                epoch: start.epoch.to_owned(),
                offset: start.offset,
                recovered: start.recovered,
            };
            vec![text_frame(&encode_server_message(&reply))]
        })
        .await
    }

    /// As [`Hub::subscribe`], with the first frames queued (instead of the v1 `subscribed`
    /// reply, before replayed and live messages) built by `reply`: how a connection of
    /// another protocol says that its subscription took effect.
    ///
    /// # Errors
    /// As [`Hub::subscribe`].
    pub async fn subscribe_with(
        &self,
        session: &SessionRef,
        channel: &str,
        since: Option<StreamPosition>,
        reply: impl FnOnce(&SubscriptionStart<'_>) -> Vec<Bytes> + Send,
    ) -> Result<Subscribed, HubError> {
        if self.fanout.add_pending(channel, session) == Added::Duplicate {
            return Err(HubError::AlreadySubscribed);
        }
        // Every subscription waits for the broker to deliver the channel here (the broker
        // counts watchers), not only the first: a second subscriber must not read the
        // stream's position before this node receives the channel's publications.
        if let Err(err) = self.broker.watch(channel).await {
            self.fanout.remove(channel, session.id);
            return Err(err.into());
        }
        let query = HistoryQuery {
            since: since.clone(),
            limit: None,
        };
        let page = match self.broker.history(channel, query).await {
            Ok(page) => page,
            Err(err) => {
                let _ = self.unsubscribe(channel, session.id).await;
                return Err(err.into());
            }
        };
        let HistoryPage {
            epoch,
            top,
            publications,
            complete,
        } = page;
        let recovered = since.as_ref().map(|_| complete);
        let mut replayed = 0;
        self.fanout.activate(channel, session.id, |queue| {
            let start = SubscriptionStart {
                epoch: &epoch,
                offset: top,
                recovered,
                replaying: if complete { publications.len() } else { 0 },
            };
            for frame in reply(&start) {
                queue.reply(frame);
            }
            let mut last = top;
            if complete {
                for publication in &publications {
                    if !queue.has_room(publication.frame.len()) {
                        // The rest of the recovery does not fit: it is sent as a `gap`, and a
                        // client that recovers again from its last offset gets the next part.
                        let gap = ServerMessage::Gap {
                            channel: channel.to_owned(),
                            epoch: epoch.to_string(),
                            offset: top,
                            from: Some(publication.offset),
                            to: Some(top),
                        };
                        queue.reply(text_frame(&encode_server_message(&gap)));
                        break;
                    }
                    last = publication.offset;
                    if !queue.message(publication) {
                        break;
                    }
                    replayed += 1;
                }
            }
            (epoch.clone(), last.max(top))
        });
        Ok(Subscribed {
            epoch,
            offset: top,
            recovered,
            replayed,
        })
    }

    /// Queues again, on a live subscription of `session` to `channel`, the messages after
    /// `since` that the history holds, for a connection whose protocol could not name a
    /// position when it subscribed (the Pusher protocol): the recovery of
    /// [`Hub::subscribe`], on a subscription that stays live meanwhile, so the client gets
    /// what it missed as well as live messages, some of them twice, and tells them apart by
    /// their offsets. A publication that a connection known as one of `excluded` (earlier
    /// connections of the same client, in the outbox's dialect) must not get is not queued.
    /// Bounded as a subscription's recovery: at most the history, and at most half the
    /// connection's queue; [`Replayed::offset`] says where a replay that did not fit stopped.
    ///
    /// # Errors
    /// [`HubError::NotSubscribed`] when the session has no live subscription to `channel`,
    /// or a broker failure.
    pub async fn replay(
        &self,
        session: &SessionRef,
        channel: &str,
        since: StreamPosition,
        excluded: &[Arc<str>],
    ) -> Result<Replayed, HubError> {
        let from = since.offset;
        let query = HistoryQuery {
            since: Some(since),
            limit: None,
        };
        let page = self.broker.history(channel, query).await?;
        let HistoryPage {
            epoch,
            top,
            publications,
            complete,
        } = page;
        let outcome = self.fanout.with_live(channel, session.id, |queue| {
            let mut replayed = 0;
            let mut last = from;
            if !complete {
                return (replayed, last);
            }
            for publication in &publications {
                if queue.excludes(publication, excluded) {
                    last = publication.offset;
                    continue;
                }
                if !queue.has_room(publication.frame.len()) || !queue.message(publication) {
                    return (replayed, last);
                }
                last = publication.offset;
                replayed += 1;
            }
            (replayed, top)
        });
        let Some((replayed, offset)) = outcome else {
            return Err(HubError::NotSubscribed);
        };
        Ok(Replayed {
            epoch,
            top,
            complete,
            replayed,
            offset,
        })
    }

    /// Ends a session's subscription to a channel.
    ///
    /// # Errors
    /// [`HubError::NotSubscribed`], or a broker failure while releasing the channel.
    pub async fn unsubscribe(&self, channel: &str, session: u64) -> Result<(), HubError> {
        match self.fanout.remove(channel, session) {
            None => Err(HubError::NotSubscribed),
            Some(_) => Ok(self.broker.unwatch(channel).await?),
        }
    }

    /// Publishes JSON `data` to a channel, once per idempotency `key` while the first message
    /// with that key is kept in history (see [`Broker::publish`]).
    ///
    /// # Errors
    /// A broker failure.
    pub async fn publish(
        &self,
        channel: &str,
        data: &[u8],
        key: Option<&str>,
    ) -> Result<Published, HubError> {
        Ok(self.broker.publish(channel, data, key).await?)
    }

    /// Reads a channel's position and history.
    ///
    /// # Errors
    /// A broker failure.
    pub async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, HubError> {
        Ok(self.broker.history(channel, query).await?)
    }
}

/// A server message as a complete WebSocket text frame.
pub fn text_frame(json: &str) -> Bytes {
    wirehub_ws::encode_frame(wirehub_ws::OpCode::Text, json.as_bytes())
}
