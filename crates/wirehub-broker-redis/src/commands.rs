//! The command connection: one multiplexed connection for scripts, re-established on demand.
//!
//! Requests share the connection (pipelined by the client library). When a request fails
//! because the connection broke, the connection is dropped and the next request connects
//! again; every request, connecting included, is bounded by the configured timeout, so a
//! caller never waits longer than that while Redis is away.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, FromRedisValue, RedisError, ScriptInvocation};

use crate::error::{Error, Result};

#[derive(Debug)]
pub(crate) struct Commands {
    client: Client,
    timeout: Duration,
    current: Mutex<Option<MultiplexedConnection>>,
    /// Held while connecting, so that callers waiting for a connection make one together.
    connecting: tokio::sync::Mutex<()>,
}

impl Commands {
    /// Connects now (the node must not start without Redis).
    pub(crate) async fn connect(client: Client, timeout: Duration) -> Result<Commands> {
        let commands = Commands {
            client,
            timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        };
        let pong: String = commands
            .run(async {
                let mut connection = commands.connection().await?;
                redis::cmd("PING")
                    .query_async(&mut connection)
                    .await
                    .map_err(|err| commands.failed(err))
            })
            .await?;
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

    /// Runs a pipeline.
    pub(crate) async fn pipeline(&self, pipeline: &redis::Pipeline) -> Result<()> {
        self.run(async {
            let mut connection = self.connection().await?;
            pipeline
                .exec_async(&mut connection)
                .await
                .map_err(|err| self.failed(err))
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

    async fn connection(&self) -> Result<MultiplexedConnection> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(connection.clone());
        Ok(connection)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the connection when the error means it is broken.
    fn failed(&self, err: RedisError) -> Error {
        if err.is_connection_dropped()
            || err.is_io_error()
            || err.is_unrecoverable_error()
            || err.is_timeout()
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
