//! Redis, abridge's fast path: queue order, leases and wake-ups. Only this crate talks to Redis.
//!
//! Redis holds item ids, positions, deadlines and lease records, never payloads or results, so
//! a queued item costs a sorted-set entry and Redis may lose everything without losing work: the
//! reconciler rebuilds it from Postgres. Each state change is one atomic Lua script
//! ([`scripts`], files under `src/lua/`); [`Queue`] is their typed front, its methods in the
//! module of their subject: `enqueue`, `claim`, `leases`, `cancel`, `inspect`, `limits`,
//! `control`, `notices`, and [`tooling`] for benchmarks.
//!
//! Architecture Invariant: nothing here decides an item's fate. A claim in Redis only lets a
//! worker *try* to start the item in Postgres; a lease lost or re-created in Redis is settled by
//! the Postgres compare-and-set on the lease token.

mod cancel;
mod claim;
mod control;
pub mod engine;
mod enqueue;
mod inspect;
mod keys;
mod leases;
mod limits;
mod notices;
mod pool;
mod scripts;
mod shards;
pub mod tooling;

use std::sync::Arc;
use std::time::Duration;

use abridge_core::settings::Secret;
use abridge_core::{BatchId, ItemId, Priority};
use deadpool::Runtime;
use pool::{Manager, Pool};
use redis::AsyncConnectionConfig;

pub use claim::{Claim, ClaimConnection};
pub use control::ReconcileMark;
pub use inspect::QueueStats;
pub use keys::Keys;
pub use leases::{Acked, AfterAck, LeaseRef, Placement, Renewal, TakenLease};
pub use notices::{Subscribed, resubscribing};
pub use shards::{PLACEMENT_BLOCK, RECORD_EVERY, ShardId};
pub use tooling::ServerStats;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    // Causes are part of the message (not `source()`), so a log line shows the whole story.
    #[error("redis url {url} is invalid: {cause}")]
    BadUrl {
        url: String,
        cause: redis::RedisError,
    },
    #[error("{context}: {cause}")]
    Redis {
        context: &'static str,
        cause: redis::RedisError,
    },
    #[error("{context}: redis unavailable: {cause}")]
    Pool {
        context: &'static str,
        cause: deadpool::managed::PoolError<redis::RedisError>,
    },
    #[error("{context}: unexpected reply: {detail}")]
    Reply {
        context: &'static str,
        detail: String,
    },
}

impl QueueError {
    /// True when Redis could not be reached or answered too late: back off and retry.
    pub fn is_unavailable(&self) -> bool {
        match self {
            QueueError::Redis { cause, .. } => {
                use redis::ServerErrorKind as S;
                cause.is_io_error()
                    || cause.is_timeout()
                    || cause.is_connection_dropped()
                    || cause.is_connection_refusal()
                    // A failover under way (a demoted master, a cluster without a master
                    // for a slot yet, a replica still loading): wait and retry.
                    || matches!(
                        cause.kind(),
                        redis::ErrorKind::Server(
                            S::ReadOnly | S::ClusterDown | S::TryAgain | S::MasterDown | S::BusyLoading
                        )
                    )
            }
            QueueError::Pool { .. } => true,
            _ => false,
        }
    }
}

pub type Result<T, E = QueueError> = std::result::Result<T, E>;

trait Context<T> {
    fn context(self, context: &'static str) -> Result<T>;
}

impl<T> Context<T> for redis::RedisResult<T> {
    fn context(self, context: &'static str) -> Result<T> {
        self.map_err(|cause| QueueError::Redis { context, cause })
    }
}

/// The queue: a Redis pool and this queue's key names. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pool: Pool,
    /// Shared, like the pool: a queue is cloned for every item a worker runs, and the
    /// connector (its connection info) and the key names are a score of strings.
    connector: Arc<engine::Connector>,
    /// The first shard's keys: the queue's own (wake-ups, pause, budgets, the reconciler's).
    keys: Arc<Keys>,
    shards: Arc<shards::Shards>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("prefix", &self.keys.prefix)
            .finish()
    }
}

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Scripts over big batches and blocking waits take longer than the 500 ms default.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most wake-up tokens left waiting, as the scripts' own wake-ups leave.
pub(crate) const WAKE_LIMIT: i64 = 64;
/// Whose turn a batch's items take in a claim's fair share: its tenant's (weighted), or the
/// one turn that every batch of no tenant (the CLI's, the operator's) shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share<'a> {
    pub tenant: Option<&'a str>,
    /// The owner's weight against the others' (1 = an equal share).
    pub weight: i32,
    /// Most of the owner's items leased at once across the fleet.
    pub max_in_flight: Option<i32>,
}

impl Share<'_> {
    /// The turn of batches that belong to no tenant.
    pub const NO_TENANT: Share<'static> = Share {
        tenant: None,
        weight: 1,
        max_in_flight: None,
    };

    /// The owner's name in Redis: tenant names never contain `~`.
    fn owner(&self) -> &str {
        self.tenant.unwrap_or("~")
    }
}

impl Queue {
    /// Builds the pool, for a queue of one shard ([`Queue::with_shards`] for more); no
    /// connection is made until first use.
    pub fn connect(
        url: &Secret,
        redis_prefix: &str,
        queue: &str,
        pool_size: usize,
    ) -> Result<Self> {
        let bad_url = |cause| QueueError::BadUrl {
            url: url.redacted_url(),
            cause,
        };
        let target = engine::Target::parse(url.expose()).map_err(|cause| QueueError::BadUrl {
            url: url.redacted_url(),
            cause: redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a Redis URL",
                cause,
            )),
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let connector = Arc::new(engine::Connector::new(&target).map_err(bad_url)?);
        let manager = Manager::new(connector.clone(), config);
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| QueueError::Reply {
                context: "build redis pool",
                detail: e.to_string(),
            })?;
        let shards = Arc::new(shards::Shards::new(redis_prefix, queue, 1));
        Ok(Self {
            pool,
            connector,
            keys: shards.keys(ShardId::FIRST),
            shards,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    async fn conn(&self, context: &'static str) -> Result<pool::Connection> {
        self.pool
            .get()
            .await
            .map(pool::Connection::from)
            .map_err(|cause| QueueError::Pool { context, cause })
    }

    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn("ping redis").await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .context("ping redis")?;
        Ok(())
    }
}

/// The INFO texts in a reply: one server's, or one per node of a cluster's.
fn collect_text(v: &redis::Value, out: &mut Vec<String>) {
    match v {
        redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
        redis::Value::VerbatimString { text, .. } | redis::Value::SimpleString(text) => {
            out.push(text.clone())
        }
        redis::Value::Map(pairs) => pairs.iter().for_each(|(_, v)| collect_text(v, out)),
        redis::Value::Array(items) => items.iter().for_each(|v| collect_text(v, out)),
        _ => {}
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_item(s: &str) -> Result<ItemId> {
    s.parse().map(ItemId).map_err(|_| QueueError::Reply {
        context: "parse item id",
        detail: format!("{s:?}"),
    })
}

fn parse_batch(s: &str) -> Result<BatchId> {
    s.parse().map_err(|_| QueueError::Reply {
        context: "parse batch id",
        detail: format!("{s:?}"),
    })
}

fn parse_rank(s: &str) -> Result<Priority> {
    s.parse::<u8>()
        .ok()
        .and_then(Priority::from_rank)
        .ok_or_else(|| QueueError::Reply {
            context: "parse priority rank",
            detail: format!("{s:?}"),
        })
}

fn parse_position(s: &str) -> Result<i32> {
    // Positions come back as ZSET scores, which Redis may render as "12" or "12.0".
    s.parse::<i32>()
        .ok()
        .or_else(|| s.parse::<f64>().ok().map(|f| f as i32))
        .ok_or_else(|| QueueError::Reply {
            context: "parse item position",
            detail: format!("{s:?}"),
        })
}
