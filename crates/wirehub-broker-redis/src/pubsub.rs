//! The pub/sub connection, whatever the endpoint: [`PubSubLink`], split into a [`SubSink`]
//! (subscribe, unsubscribe, ping) and a [`SubStream`] (what arrives).
//!
//! - One server, or the master the sentinels name: a RESP2 pub/sub connection, `SUBSCRIBE`.
//! - A Redis Cluster: sharded pub/sub (`SSUBSCRIBE`, Redis 7), so that a publication goes
//!   only to the shard that serves its channel's slot and not to every node. The client
//!   library's cluster connection (RESP3, pushes to one channel) keeps one connection per
//!   node and routes each `SSUBSCRIBE` by slot, following `MOVED`. Its own resubscription
//!   after a broken node connection cannot be relied on (it sends every sharded channel in
//!   one command, which a cluster refuses across slots), so a broken node connection ends
//!   the link ([`Incoming::Lost`]) and the listener makes the whole link again, as for one
//!   server. A channel whose slot moved to another shard gets an `SUNSUBSCRIBE` from the
//!   server ([`Incoming::Moved`]); the listener subscribes it again (the library follows the
//!   `MOVED` to the new owner) and catches it up from the history.

use redis::aio::{PubSub, PubSubSink, PubSubStream};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo};
use redis::{Msg, PushInfo, PushKind};
use tokio::sync::mpsc;

use crate::commands::{Endpoint, cluster_builder};
use crate::error::{Error, Result};

/// One pub/sub connection.
pub(crate) enum PubSubLink {
    Single(PubSub),
    Cluster {
        connection: ClusterConnection,
        pushes: mpsc::UnboundedReceiver<PushInfo>,
    },
}

/// The command half of a [`PubSubLink`].
#[derive(Clone)]
pub(crate) enum SubSink {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

/// The receiving half of a [`PubSubLink`].
pub(crate) enum SubStream {
    Single(PubSubStream),
    Cluster(mpsc::UnboundedReceiver<PushInfo>),
}

/// What arrived on a pub/sub connection.
pub(crate) enum Incoming {
    /// A message on a subscribed channel.
    Message(Msg),
    /// The server dropped the subscription of this (Redis) channel: its slot moved.
    Moved(String),
}

impl PubSubLink {
    /// Opens a pub/sub connection to `endpoint`.
    pub(crate) async fn connect(endpoint: &Endpoint) -> Result<PubSubLink> {
        match endpoint {
            Endpoint::Cluster {
                seeds,
                root_cert,
                timeout,
                ..
            } => {
                let (tx, pushes) = mpsc::unbounded_channel();
                let client = cluster_builder(seeds, root_cert.as_deref(), *timeout)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?;
                let connection = client.get_async_connection().await?;
                Ok(PubSubLink::Cluster { connection, pushes })
            }
            _ => {
                let client = endpoint.server().await?.ok_or(Error::Disconnected)?;
                Ok(PubSubLink::Single(client.get_async_pubsub().await?))
            }
        }
    }

    pub(crate) fn split(self) -> (SubSink, SubStream) {
        match self {
            PubSubLink::Single(pubsub) => {
                let (sink, stream) = pubsub.split();
                (SubSink::Single(sink), SubStream::Single(stream))
            }
            PubSubLink::Cluster { connection, pushes } => {
                (SubSink::Cluster(connection), SubStream::Cluster(pushes))
            }
        }
    }
}

impl SubSink {
    /// `SUBSCRIBE` (`SSUBSCRIBE` on a cluster, on the channel's shard).
    pub(crate) async fn subscribe(&mut self, channel: &str) -> Result<()> {
        match self {
            SubSink::Single(sink) => sink.subscribe(channel).await?,
            SubSink::Cluster(connection) => connection.ssubscribe(channel).await?,
        }
        Ok(())
    }

    /// `UNSUBSCRIBE` (`SUNSUBSCRIBE`).
    pub(crate) async fn unsubscribe(&mut self, channel: &str) -> Result<()> {
        match self {
            SubSink::Single(sink) => sink.unsubscribe(channel).await?,
            SubSink::Cluster(connection) => connection.sunsubscribe(channel).await?,
        }
        Ok(())
    }

    /// `PING` on the connection (on a cluster: on every master's connection).
    pub(crate) async fn ping(&mut self) -> Result<()> {
        match self {
            SubSink::Single(sink) => {
                sink.ping::<redis::Value>().await?;
            }
            SubSink::Cluster(connection) => {
                connection
                    .route_command(
                        &redis::cmd("PING"),
                        RoutingInfo::MultiNode((
                            MultipleNodeRoutingInfo::AllMasters,
                            Some(ResponsePolicy::AllSucceeded),
                        )),
                    )
                    .await?;
            }
        }
        Ok(())
    }
}

impl SubStream {
    /// The next message or event; `None` when the connection (or, on a cluster, one of its
    /// node connections) is gone.
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        match self {
            SubStream::Single(stream) => futures_util::StreamExt::next(stream)
                .await
                .map(Incoming::Message),
            SubStream::Cluster(pushes) => loop {
                let push = pushes.recv().await?;
                match push.kind {
                    PushKind::Message | PushKind::SMessage => {
                        if let Some(message) = Msg::from_push_info(push) {
                            return Some(Incoming::Message(message));
                        }
                    }
                    PushKind::SUnsubscribe => {
                        if let Some(channel) = push
                            .data
                            .first()
                            .and_then(|name| redis::from_redis_value::<String>(name).ok())
                        {
                            return Some(Incoming::Moved(channel));
                        }
                    }
                    PushKind::Disconnection => return None,
                    _ => {}
                }
            },
        }
    }
}
