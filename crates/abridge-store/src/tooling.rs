//! Queries for benchmarks and tests, not the fleet: the burn-down's timings and commit count,
//! the latency scenario's starts, the retention scenario's fill, and what tests inspect
//! (fenced-write records, `items` partitions). Behind the `tooling` feature, so a crate of the
//! fleet that calls one does not build on its own.

use std::collections::HashMap;
use std::time::Duration;

use abridge_core::{BatchId, ItemId};
use chrono::{DateTime, Utc};

use crate::{Context, Result, Store};

/// When a batch's items started and finished, for benchmarks.
#[derive(Clone, Debug)]
pub struct BatchTimes {
    pub first_start: Option<DateTime<Utc>>,
    pub last_finish: Option<DateTime<Utc>>,
    /// Every item's start time, in position order.
    pub starts: Vec<Option<DateTime<Utc>>>,
}

impl Store {
    /// Start and finish times of a batch's items.
    pub async fn batch_times(&self, batch: BatchId) -> Result<BatchTimes> {
        let rows = sqlx::query!(
            "SELECT started_at, finished_at FROM items WHERE batch_id = $1 ORDER BY position",
            batch.0
        )
        .fetch_all(&self.pool)
        .await
        .context("read item times")?;
        Ok(BatchTimes {
            first_start: rows.iter().filter_map(|r| r.started_at).min(),
            last_finish: rows.iter().filter_map(|r| r.finished_at).max(),
            starts: rows.into_iter().map(|r| r.started_at).collect(),
        })
    }

    /// Every item of a queue's batches with its start time, for benchmarks.
    pub async fn queue_item_starts(
        &self,
        queue: &str,
    ) -> Result<Vec<(BatchId, Option<DateTime<Utc>>)>> {
        let rows = sqlx::query!(
            "SELECT i.batch_id, i.started_at FROM items i JOIN batches b ON b.id = i.batch_id
             WHERE b.queue = $1",
            queue
        )
        .fetch_all(&self.pool)
        .await
        .context("read item start times")?;
        Ok(rows
            .into_iter()
            .map(|r| (BatchId(r.batch_id), r.started_at))
            .collect())
    }

    /// Transactions committed in this database so far (`pg_stat_database`), for benchmarks.
    pub async fn commit_count(&self) -> Result<i64> {
        sqlx::query_scalar!(
            r#"SELECT xact_commit AS "n!" FROM pg_stat_database WHERE datname = current_database()"#
        )
        .fetch_one(&self.pool)
        .await
        .context("read commit count")
    }

    /// The process id of a backend serving this store (benchmarks find the server's processes
    /// from it).
    pub async fn backend_pid(&self) -> Result<i32> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&self.pool)
            .await
            .context("read the backend's process id")
    }

    /// Inserts `batches` completed batches of `items_per_batch` succeeded items each (with a
    /// `summary_bytes` summary) in queue `queue`, finished `finished_ago` ago.
    pub async fn fill_finished_batches(
        &self,
        queue: &str,
        batches: i64,
        items_per_batch: i32,
        finished_ago: Duration,
        summary_bytes: i32,
    ) -> Result<()> {
        let ids = sqlx::query_scalar!(
            "INSERT INTO batches (id, queue, status, total, created_at, started_at, finished_at)
             SELECT gen_random_uuid(), $1, 'completed', $3,
                    now() - make_interval(secs => $4::float8 + 3600), now() - make_interval(secs => $4::float8 + 3600),
                    now() - make_interval(secs => $4::float8)
             FROM generate_series(1::bigint, $2::bigint)
             RETURNING id",
            queue,
            batches,
            items_per_batch,
            finished_ago.as_secs_f64(),
        )
        .fetch_all(&self.pool)
        .await
        .context("insert finished benchmark batches")?;
        let last = sqlx::query_scalar!("SELECT last_value FROM items_id_seq")
            .fetch_one(&self.pool)
            .await
            .context("read the item id sequence")?;
        self.cover_items(last + batches * i64::from(items_per_batch))
            .await?;
        sqlx::query!(
            "INSERT INTO items (batch_id, position, url, video_id, status, attempts, summary,
                                queued_at, started_at, finished_at)
             SELECT b, p, 'https://www.youtube.com/watch?v=r' || lpad(p::text, 10, '0'),
                    'r' || lpad(p::text, 10, '0'), 'succeeded', 1, repeat('s', $3),
                    now() - make_interval(secs => $4::float8 + 3600), now() - make_interval(secs => $4::float8 + 60),
                    now() - make_interval(secs => $4::float8)
             FROM unnest($1::uuid[]) b, generate_series(0, $2 - 1) p",
            &ids,
            items_per_batch,
            summary_bytes,
            finished_ago.as_secs_f64(),
        )
        .execute(&self.pool)
        .await
        .context("insert finished benchmark items")?;
        Ok(())
    }

    /// `VACUUM ANALYZE` of the tables a fill or a prune changed, as autovacuum would do in
    /// time, then a `CHECKPOINT` (if the role may), so that what comes next is not measured
    /// while gigabytes of freshly written pages go to disk.
    pub async fn vacuum_analyze(&self) -> Result<()> {
        // One statement per call: several in one message would run as one transaction block,
        // which VACUUM refuses.
        for statement in ["VACUUM ANALYZE batches", "VACUUM ANALYZE items"] {
            sqlx::raw_sql(statement)
                .execute(&self.pool)
                .await
                .context("vacuum analyze")?;
        }
        if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&self.pool).await {
            tracing::warn!(error = %e, "cannot checkpoint (needs superuser or pg_checkpoint); measuring anyway");
        }
        Ok(())
    }

    /// Rows in `items` (an estimate is not enough for a benchmark's report).
    pub async fn item_rows(&self) -> Result<i64> {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM items"#)
            .fetch_one(&self.pool)
            .await
            .context("count items")
    }

    /// The number of fenced writes recorded for each item (tests and `abridge stats`).
    pub async fn fenced_write_counts(&self, ids: &[ItemId]) -> Result<HashMap<ItemId, i64>> {
        let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        let rows = sqlx::query!(
            r#"SELECT item_id, count(*) AS "n!" FROM fenced_writes WHERE item_id = ANY($1) GROUP BY item_id"#,
            &ids
        )
        .fetch_all(&self.pool)
        .await
        .context("count fenced writes")?;
        Ok(rows.into_iter().map(|r| (ItemId(r.item_id), r.n)).collect())
    }

    /// The partitions of `items`, oldest first: (name, first id or `None`, end).
    pub async fn item_partitions(&self) -> Result<Vec<(String, Option<i64>, i64)>> {
        let rows = sqlx::query!("SELECT name, lo, hi FROM item_partitions ORDER BY hi")
            .fetch_all(&self.pool)
            .await
            .context("list item partitions")?;
        Ok(rows.into_iter().map(|r| (r.name, r.lo, r.hi)).collect())
    }
}
