//! The connection layer: [`Endpoint`] (how Redis is reached: one server, a Redis Cluster, or
//! a master found through Sentinel) and [`Commands`], the command connection every request
//! and script goes through, whatever the endpoint.
//!
//! A call site builds a [`redis::Cmd`], a [`redis::Pipeline`] or a script invocation and hands
//! it to [`Commands`]; it never asks which kind of deployment it runs against. On a cluster the
//! client library routes each command by its first key's slot and follows `MOVED`/`ASK`
//! itself; every key a command or script touches carries the channel's `{hash tag}`, so it
//! lives in one slot. A pipeline whose commands span slots runs as separate commands there.
//!
//! Requests share the connection (pipelined by the client library). When a request fails
//! because the connection broke (or landed on a replica after a failover: `READONLY`), the
//! connection is dropped and the next request connects again (through the sentinels, which
//! then name the new master); every request, connecting included, is bounded by the
//! configured timeout, so a caller never waits longer than that while Redis is away.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, Cmd, FromRedisValue, ProtocolVersion, RedisConnectionInfo,
    RedisError, RedisFuture, ScriptInvocation, Value,
};

use crate::config::{RedisConfig, redact};
use crate::error::{Error, Result};
use crate::target::Target;

/// Commands of a pipeline that spans slots run at most this many at once on a cluster.
const CLUSTER_FAN_OUT: usize = 64;

/// How Redis is reached.
pub(crate) enum Endpoint {
    /// One server.
    Single(Client),
    /// A Redis Cluster: `commands` for requests; pub/sub connections are built from the seeds
    /// (they need RESP3 and a push sender of their own).
    Cluster {
        commands: ClusterClient,
        seeds: Vec<String>,
        root_cert: Option<Vec<u8>>,
        timeout: Duration,
    },
    /// The master the sentinels name, asked again for every new connection.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

impl Endpoint {
    /// The endpoint of a (validated) config.
    pub(crate) fn new(config: &RedisConfig) -> Result<Endpoint> {
        let invalid = |reason| Error::InvalidUrl {
            url: redact(&config.url),
            reason,
        };
        let target = Target::parse(&config.url).map_err(|problem| Error::InvalidSetting {
            field: "url",
            problem,
        })?;
        let certs = |pem: &Vec<u8>| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.clone()),
        };
        match target {
            Target::Single(url) => match &config.ca_cert_pem {
                Some(pem) => Client::build_with_tls(url.as_str(), certs(pem)),
                None => Client::open(url.as_str()),
            }
            .map(Endpoint::Single)
            .map_err(invalid),
            Target::Cluster(seeds) => {
                let builder =
                    cluster_builder(&seeds, config.ca_cert_pem.as_deref(), config.timeout);
                let commands = builder.build().map_err(invalid)?;
                Ok(Endpoint::Cluster {
                    commands,
                    seeds,
                    root_cert: config.ca_cert_pem.clone(),
                    timeout: config.timeout,
                })
            }
            Target::Sentinel {
                sentinels,
                master,
                tls,
                username,
                password,
                db,
            } => {
                let info = SentinelNodeConnectionInfo {
                    tls_mode: tls.then_some(redis::TlsMode::Secure),
                    redis_connection_info: Some(RedisConnectionInfo {
                        db,
                        username,
                        password,
                        protocol: ProtocolVersion::RESP2,
                    }),
                };
                SentinelClient::build(sentinels, master, Some(info), SentinelServerType::Master)
                    .map(|client| Endpoint::Sentinel(tokio::sync::Mutex::new(client)))
                    .map_err(invalid)
            }
        }
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Endpoint::Cluster { .. })
    }

    /// A client for the server to use now: the one server, or the master the sentinels name.
    /// `None` for a cluster.
    pub(crate) async fn server(&self) -> Result<Option<Client>> {
        match self {
            Endpoint::Single(client) => Ok(Some(client.clone())),
            Endpoint::Sentinel(sentinel) => {
                Ok(Some(sentinel.lock().await.async_get_client().await?))
            }
            Endpoint::Cluster { .. } => Ok(None),
        }
    }

    /// A client for classic (cluster-wide) pub/sub and other commands that any node can
    /// serve: the one server, the master the sentinels name, or on a cluster the first seed
    /// that answers (classic `PUBLISH` reaches every node of a cluster). For the node-to-node
    /// control messages that every node must get.
    pub(crate) async fn broadcast_client(&self) -> Result<Client> {
        match self {
            Endpoint::Cluster {
                seeds, root_cert, ..
            } => {
                let mut last = None;
                for seed in seeds {
                    let client = match root_cert {
                        Some(pem) => Client::build_with_tls(
                            seed.as_str(),
                            redis::TlsCertificates {
                                client_tls: None,
                                root_cert: Some(pem.clone()),
                            },
                        ),
                        None => Client::open(seed.as_str()),
                    }?;
                    match client.get_multiplexed_async_connection().await {
                        Ok(_) => return Ok(client),
                        Err(err) => last = Some(err),
                    }
                }
                Err(last.map_or(Error::Disconnected, Error::Redis))
            }
            _ => self.server().await?.ok_or(Error::Disconnected),
        }
    }

    /// A new command connection.
    async fn connect(&self, timeout: Duration) -> Result<Connection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout);
        match self {
            Endpoint::Cluster { commands, .. } => {
                Ok(Connection::Cluster(commands.get_async_connection().await?))
            }
            _ => {
                let client = self.server().await?.ok_or(Error::Disconnected)?;
                Ok(Connection::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                ))
            }
        }
    }
}

/// A cluster client builder for `seeds` with the broker's timeouts.
pub(crate) fn cluster_builder(
    seeds: &[String],
    root_cert: Option<&[u8]>,
    timeout: Duration,
) -> redis::cluster::ClusterClientBuilder {
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        // Our own timeout bounds every request; retries inside it follow MOVED/ASK and
        // failovers.
        .retries(6)
        .min_retry_wait(20)
        .max_retry_wait(500);
    if let Some(pem) = root_cert {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        });
    }
    builder
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Endpoint::Single(_) => "Endpoint::Single",
            Endpoint::Cluster { .. } => "Endpoint::Cluster",
            Endpoint::Sentinel(_) => "Endpoint::Sentinel",
        })
    }
}

/// A command connection: to one server, or to a cluster (routing each command by slot).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connection::Single(_) => "Connection::Single",
            Connection::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(connection) => connection.get_db(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Commands {
    endpoint: std::sync::Arc<Endpoint>,
    timeout: Duration,
    current: Mutex<Option<Connection>>,
    /// Held while connecting, so that callers waiting for a connection make one together.
    connecting: tokio::sync::Mutex<()>,
}

impl Commands {
    /// Connects now (the node must not start without Redis).
    pub(crate) async fn connect(
        endpoint: std::sync::Arc<Endpoint>,
        timeout: Duration,
    ) -> Result<Commands> {
        let commands = Commands {
            endpoint,
            timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        };
        let pong: String = commands.query(&redis::cmd("PING")).await?;
        if pong != "PONG" {
            return Err(Error::Reply(pong));
        }
        Ok(commands)
    }

    /// Runs a script.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T> {
        self.run(async {
            let mut connection = self.connection().await?;
            invocation
                .invoke_async(&mut connection)
                .await
                .map_err(|err| self.failed(err))
        })
        .await
    }

    /// Runs one command (on a cluster: on the node that serves its first key, or the node
    /// its routing says).
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        self.run(async {
            let mut connection = self.connection().await?;
            cmd.query_async(&mut connection)
                .await
                .map_err(|err| self.failed(err))
        })
        .await
    }

    /// Runs a pipeline whose replies are not needed. On a cluster its commands run one by
    /// one (concurrently), since they may span slots.
    pub(crate) async fn pipeline(&self, pipeline: &redis::Pipeline) -> Result<()> {
        self.run(async {
            let connection = self.connection().await?;
            match connection {
                Connection::Single(mut connection) => pipeline
                    .exec_async(&mut connection)
                    .await
                    .map_err(|err| self.failed(err)),
                Connection::Cluster(connection) => {
                    let cmds: Vec<Cmd> = pipeline.cmd_iter().cloned().collect();
                    let mut runs = futures_util::stream::iter(cmds.into_iter().map(|cmd| {
                        let mut connection = connection.clone();
                        async move { cmd.exec_async(&mut connection).await }
                    }))
                    .buffer_unordered(CLUSTER_FAN_OUT);
                    while let Some(result) = runs.next().await {
                        result.map_err(|err| self.failed(err))?;
                    }
                    Ok(())
                }
            }
        })
        .await
    }

    /// Runs a request for at most the timeout; a request that timed out leaves the connection
    /// suspect, so the next one connects again.
    async fn run<T>(&self, request: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.timeout, request).await {
            Ok(result) => result,
            Err(_) => {
                self.forget();
                Err(Error::Timeout(self.timeout))
            }
        }
    }

    async fn connection(&self) -> Result<Connection> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        // Boxed: the cluster client's connect future is deep, and would make every future
        // that awaits a request deep too.
        let connect: futures_util::future::BoxFuture<'_, Result<Connection>> =
            Box::pin(self.endpoint.connect(self.timeout));
        let connection = connect.await?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }

    fn current(&self) -> Option<Connection> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the connection when the error means it is broken (or talks to a replica).
    fn failed(&self, err: RedisError) -> Error {
        if err.is_connection_dropped()
            || err.is_io_error()
            || err.is_unrecoverable_error()
            || err.is_timeout()
            || err.kind() == redis::ErrorKind::ReadOnly
            || err.is_cluster_error()
        {
            self.forget();
        }
        Error::Redis(err)
    }

    /// Drops the connection: the next request connects again. Also called when the pub/sub
    /// connection broke, since the command connection (to the same Redis) most likely broke
    /// too and a request on it would fail once before anyone noticed.
    pub(crate) fn forget(&self) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
