//! Postgres, abridge's source of truth. Only this crate writes SQL.
//!
//! - [`admin`]: creating and dropping databases (`abridge up`, tests).
//! - [`Store`]: the connection pools, migrations and the "is this database migrated" check.
//! - [`batches`]: a batch's transitions (created with `COPY`, cancelled, completed, its
//!   failed items retried) and the batch with its counts.
//! - [`items`]: the worker's fenced writes: start, finish, reclaim, release.
//! - [`sessions`]: worker sessions: register, heartbeat, close, bury the dead.
//! - [`reconcile`]: what Postgres says should be in Redis.
//! - [`figures`]: what operators watch: the fleet gauges' Postgres half, recent batches,
//!   throughput, the finish rate.
//! - [`summaries`]: the transcript and summary caches, and fenced per-item checkpoints.
//! - [`tenants`]: API tenants and their (hashed) bearer tokens.
//! - [`views`]: what owners read: a tenant's batches page by page and its counts, export rows.
//! - `tooling` (feature `tooling`): queries for benchmarks and tests.
//! - [`webhooks`]: webhook deliveries, claimed by dispatchers and recorded per attempt.
//! - [`retention`]: the pruner's bounded deletes (finished batches and what hangs off them,
//!   unused cache entries, old keys, sessions and fenced-write records) and its lease.
//!
//! Architecture Invariant: every write to an item that is `running` is a compare-and-set on
//! `(id, lease_token, status = 'running')`. No statement writes an item from a stale snapshot.

pub mod admin;
pub mod batches;
pub mod cost;
pub mod figures;
pub mod items;
pub mod partitions;
pub mod pauses;
pub mod reconcile;
pub mod retention;
pub mod search;
pub mod sessions;
pub mod summaries;
pub mod tenants;
pub mod text;
#[cfg(feature = "tooling")]
pub mod tooling;
pub mod views;
pub mod webhooks;

use std::time::Duration;

use abridge_core::settings::Secret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

pub use batches::{
    BatchView, Counts, CreateOnce, CreatedBatch, IdempotencyKey, ItemView, NewBatch,
};
pub use figures::{BatchHeader, FinishRate, FleetSnapshot, MinuteDepth, MinuteThroughput};
pub use items::{Claim, Finish, FinishReport, Finished, ItemRef, Outcome, Reclaimed, StartedItem};
pub use retention::{PruneAges, PruneCounts, PruneKind};
pub use sessions::{NewSession, SessionView};
pub use summaries::{CachedSummary, CachedTranscript, SummaryKey};
pub use views::IndexRow;

/// The migrations, embedded so that `abridge migrate` needs no files at run time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database schema is not migrated (missing {missing}): run `abridge migrate`")]
    NotMigrated { missing: String },
    // Causes are part of the message (not `source()`), so a log line shows the whole story.
    #[error("database {url} is invalid: {cause}")]
    BadUrl { url: String, cause: sqlx::Error },
    #[error("{context}: {}", describe(.cause))]
    Query {
        context: &'static str,
        cause: sqlx::Error,
    },
    #[error("migrate database: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The caller asked for something the store refuses before any statement (a bug in the
    /// caller, not a database problem: trying again cannot help).
    #[error("{context}: {message}")]
    Invalid {
        context: &'static str,
        message: String,
    },
}

/// A sqlx error as one readable line: for database errors, Postgres's message (and detail),
/// without the server-internal source position sqlx appends.
fn describe(e: &sqlx::Error) -> String {
    match e.as_database_error() {
        Some(db) => match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            Some(pg) => match pg.detail() {
                Some(detail) => format!("{} ({detail})", pg.message()),
                None => pg.message().to_owned(),
            },
            None => db.message().to_owned(),
        },
        None => e.to_string(),
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migrate(e)
    }
}

impl StoreError {
    /// True when the database could not be reached (down, restarting, pool exhausted): the
    /// caller should back off and try again rather than give up.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Query { cause, .. } => {
                matches!(
                    cause,
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::Protocol(_)
                ) || cause
                    .as_database_error()
                    .and_then(|e| e.code())
                    // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection
                    .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
            }
            _ => false,
        }
    }

    /// True when Postgres refused the statement for the moment, not for good: a
    /// serialization failure or deadlock (40001, 40P01), a lock or statement timeout (55P03,
    /// 57014). The same statement may pass if run again.
    pub fn is_contention(&self) -> bool {
        match self {
            StoreError::Query { cause, .. } => cause
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|c| matches!(&*c, "40001" | "40P01" | "55P03" | "57014")),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Extension for attaching a verb phrase to a sqlx error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T> {
        self.map_err(|cause| StoreError::Query { context, cause })
    }
}

/// Postgres pools. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Durable writes (`synchronous_commit` on): enqueues, terminal states, cancels.
    pool: PgPool,
    /// Writes that may be lost in a Postgres crash without harm (`synchronous_commit = off`):
    /// starting an item and heartbeats. A lost start reverts the item to `queued`, which only
    /// fences out the worker that started it; a durable terminal write flushes the WAL past
    /// every earlier start, so a committed result never depends on a lost start.
    fast_pool: PgPool,
    /// Ids below this need no call to `items_cover`: the partitions of `items` reach half a
    /// partition past them (0 until asked; shared by clones).
    items_covered_below: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

/// A fast-pool connection idle this long is pinged before use (see `Store::connect_lazy`).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

impl Store {
    /// Connects lazily: no connection is made until the first query, so a worker can start
    /// while Postgres is still coming up and back off on its own.
    pub fn connect_lazy(url: &Secret, pool_size: u32) -> Result<Self> {
        let options: PgConnectOptions =
            url.expose().parse().map_err(|cause| StoreError::BadUrl {
                url: url.redacted_url(),
                cause,
            })?;
        let options = options.application_name("abridge");
        let pool_options = || {
            PgPoolOptions::new()
                .acquire_timeout(Duration::from_secs(5))
                .idle_timeout(Duration::from_secs(300))
        };
        // The durable pool keeps sqlx's check of every connection it hands out (a ping): after
        // a Postgres restart the API, the CLI and the outcome writer get a live connection
        // rather than one error per dead pooled connection.
        let pool = pool_options()
            .max_connections(pool_size)
            .connect_lazy_with(options.clone());
        // The worker's hot path (reading claimed items, starts, heartbeats) skips it: that
        // ping is a round trip before every read of a claimed item, a third of an idle item's
        // way from claim to start. A connection used within the last second is handed out as
        // it is; if it died since, the statement fails and the worker retries, as it does for
        // any failure. Only one that sat idle longer is pinged first.
        let fast_pool = pool_options()
            .max_connections(pool_size.div_ceil(2).max(2))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options.options([("synchronous_commit", "off")]));
        Ok(Self {
            pool,
            fast_pool,
            items_covered_below: Default::default(),
        })
    }

    /// The durable pool, for callers that need a raw connection (the benchmark's counters).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations; safe to run any number of times and from several
    /// processes at once (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<Vec<String>> {
        let before = self.applied_versions().await.unwrap_or_default();
        MIGRATOR.run(&self.pool).await?;
        Ok(MIGRATOR
            .iter()
            .filter(|m| !before.contains(&m.version))
            .map(|m| format!("{:04}_{}", m.version, m.description))
            .collect())
    }

    /// Fails with [`StoreError::NotMigrated`] unless every embedded migration is applied.
    pub async fn check_migrated(&self) -> Result<()> {
        let applied = match self.applied_versions().await {
            Ok(v) => v,
            Err(StoreError::Query { cause, .. })
                if cause
                    .as_database_error()
                    .and_then(|e| e.code())
                    .is_some_and(|c| c == "42P01") =>
            {
                Vec::new() // undefined_table: no migration has ever run
            }
            Err(e) => return Err(e),
        };
        let missing: Vec<String> = MIGRATOR
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            .map(|m| format!("{:04}_{}", m.version, m.description))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::NotMigrated {
                missing: missing.join(", "),
            })
        }
    }

    async fn applied_versions(&self) -> Result<Vec<i64>> {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&self.pool)
            .await
            .context("read applied migrations")
    }

    /// Closes both pools, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        self.pool.close().await;
        self.fast_pool.close().await;
    }

    /// Checks that Postgres answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query_scalar!("SELECT 1 AS \"one!\"")
            .fetch_one(&self.pool)
            .await
            .context("ping database")?;
        Ok(())
    }
}
