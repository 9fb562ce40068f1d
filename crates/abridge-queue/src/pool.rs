//! The Redis connection pool: deadpool-redis's manager, without a round trip on every checkout.
//!
//! deadpool-redis checks each connection it hands out with `UNWATCH` + `PING`: one more round
//! trip and two more commands for every enqueue, renewal and acknowledgement, on a connection
//! that answered a moment ago. Here a connection is checked only if it was last handed out more
//! than [`CHECK_IF_IDLE_FOR`] ago, and one that failed with a connection-level error is thrown
//! away instead of being handed out again (a multiplexed connection whose socket dropped never
//! recovers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use redis::aio::ConnectionLike;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::engine::{AnyConnection, Connector};

/// A pooled connection last handed out this long ago is checked with a `PING` first.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_secs(1);

pub(crate) type Pool = managed::Pool<Manager>;

pub(crate) struct Manager {
    connector: std::sync::Arc<Connector>,
    config: AsyncConnectionConfig,
    /// Moves on when a connection finds its server demoted (a failover): every connection
    /// made before then is to the old master, and is thrown away at its next checkout.
    generation: std::sync::Arc<AtomicU64>,
}

impl Manager {
    pub(crate) fn new(connector: std::sync::Arc<Connector>, config: AsyncConnectionConfig) -> Self {
        Self {
            connector,
            config,
            generation: Default::default(),
        }
    }
}

/// A connection (multiplexed, or a cluster's) that remembers whether it broke.
pub(crate) struct Conn {
    inner: AnyConnection,
    /// The pool's generation when this connection was made.
    made_in: u64,
    generation: std::sync::Arc<AtomicU64>,
    /// Set when a command failed because the connection itself failed (dropped, I/O error):
    /// the pool then discards it rather than hand it out again.
    broken: bool,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        let made_in = self.generation.load(Ordering::Acquire);
        Ok(Conn {
            inner: self.connector.connect(&self.config).await?,
            made_in,
            generation: self.generation.clone(),
            broken: false,
        })
    }

    async fn recycle(&self, conn: &mut Conn, metrics: &Metrics) -> RecycleResult<RedisError> {
        if conn.broken {
            return Err(RecycleError::message("the connection failed"));
        }
        if conn.made_in != self.generation.load(Ordering::Acquire) {
            return Err(RecycleError::message("made before a failover"));
        }
        if metrics.last_used() < CHECK_IF_IDLE_FOR {
            return Ok(());
        }
        redis::cmd("PING")
            .query_async::<()>(&mut conn.inner)
            .await
            .map_err(RecycleError::Backend)
    }
}

impl ConnectionLike for AnyConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Multiplexed(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Multiplexed(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Multiplexed(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Marks the connection broken if `reply` failed because the connection itself did,
    /// rather than the command.
    fn note<T>(&mut self, reply: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &reply {
            // READONLY: the server was a master and is a replica now (a Sentinel failover):
            // this connection and every other one made before are to the old master.
            let demoted = matches!(
                e.kind(),
                redis::ErrorKind::Server(
                    redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
                )
            );
            if demoted {
                self.generation
                    .fetch_max(self.made_in + 1, Ordering::AcqRel);
            }
            if demoted || e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error()
            {
                self.broken = true;
            }
        }
        reply
    }
}

/// A connection checked out of the pool; returns to it when dropped.
pub struct Connection(managed::Object<Manager>);

impl From<managed::Object<Manager>> for Connection {
    fn from(o: managed::Object<Manager>) -> Self {
        Self(o)
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let reply = self.0.inner.req_packed_command(cmd).await;
            self.0.note(reply)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let reply = self.0.inner.req_packed_commands(cmd, offset, count).await;
            self.0.note(reply)
        })
    }

    fn get_db(&self) -> i64 {
        self.0.inner.get_db()
    }
}
