//! What operators watch, as Postgres sees it: the fleet gauges' Postgres half (the oldest
//! ready item, items and batches per state, live workers), recent batches, and throughput.
//! Read-only; each query is bounded by an index (see `migrations/0004_operating.sql`).

use std::time::Duration;

use abridge_core::{BatchId, BatchStatus, ItemStatus, Priority};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::batches::Counts;
use crate::{Context, Result, Store};

/// The Postgres half of the fleet gauges, for one queue.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FleetSnapshot {
    /// Seconds the longest-waiting ready item has waited (on Postgres's clock); 0 if none.
    pub oldest_ready_age_s: f64,
    /// Items of unfinished batches, per state.
    pub items: Counts,
    pub batches_pending: i64,
    pub batches_running: i64,
    /// Sessions that heartbeated within the session TTL.
    pub workers_alive: i64,
}

/// A batch without its counts (counting a big finished batch again at every refresh would
/// cost more than everything else `abridge top` reads).
#[derive(Clone, Debug, Serialize)]
pub struct BatchHeader {
    pub id: BatchId,
    pub name: Option<String>,
    pub status: BatchStatus,
    pub priority: Priority,
    pub total: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The queue's depth in one minute (the largest sample of that minute).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MinuteDepth {
    pub minute: DateTime<Utc>,
    pub ready: i64,
    pub delayed: i64,
    pub leased: i64,
}

/// Items that finished in one minute.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MinuteThroughput {
    pub minute: DateTime<Utc>,
    pub succeeded: i64,
    pub failed: i64,
}

/// Items finished within a recent window, for an ETA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinishRate {
    /// Items that reached `succeeded` or `failed` within the window.
    pub finished: i64,
    /// The window: the configured one, or less if the batch started more recently.
    pub window: Duration,
}

impl Store {
    /// The Postgres half of the fleet gauges for `queue`. `session_ttl` decides which
    /// sessions count as alive, as the reaper would judge them.
    pub async fn fleet_snapshot(
        &self,
        queue: &str,
        session_ttl: Duration,
    ) -> Result<FleetSnapshot> {
        let oldest = sqlx::query_scalar!(
            r#"SELECT extract(epoch FROM now() - coalesce(i.available_at, i.queued_at))::float8 AS "age!"
               FROM items i JOIN batches b ON b.id = i.batch_id
               WHERE i.status = 'queued' AND coalesce(i.available_at, i.queued_at) <= now()
                 AND b.queue = $1 AND b.status IN ('pending', 'running')
               ORDER BY coalesce(i.available_at, i.queued_at)
               LIMIT 1"#,
            queue
        )
        .fetch_optional(&self.pool)
        .await
        .context("find the oldest ready item")?;
        let item_rows = sqlx::query!(
            r#"SELECT i.status AS "status: ItemStatus", count(*) AS "n!"
               FROM batches b JOIN items i ON i.batch_id = b.id
               WHERE b.queue = $1 AND b.status IN ('pending', 'running')
               GROUP BY i.status"#,
            queue
        )
        .fetch_all(&self.pool)
        .await
        .context("count items of unfinished batches")?;
        let items: Counts = item_rows.into_iter().map(|r| (r.status, r.n)).collect();
        let batch_rows = sqlx::query!(
            r#"SELECT status AS "status: BatchStatus", count(*) AS "n!" FROM batches
               WHERE queue = $1 AND status IN ('pending', 'running')
               GROUP BY status"#,
            queue
        )
        .fetch_all(&self.pool)
        .await
        .context("count unfinished batches")?;
        let count = |s: BatchStatus| batch_rows.iter().find(|r| r.status == s).map_or(0, |r| r.n);
        let ttl_ms = i64::try_from(session_ttl.as_millis()).unwrap_or(i64::MAX);
        let workers_alive = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM worker_sessions
               WHERE queue = $1 AND stopped_at IS NULL
                 AND last_seen_at >= now() - $2 * interval '1 millisecond'"#,
            queue,
            ttl_ms as f64,
        )
        .fetch_one(&self.pool)
        .await
        .context("count live workers")?;
        Ok(FleetSnapshot {
            oldest_ready_age_s: oldest.unwrap_or(0.0).max(0.0),
            items,
            batches_pending: count(BatchStatus::Pending),
            batches_running: count(BatchStatus::Running),
            workers_alive,
        })
    }

    /// The newest `limit` batches of `queue`, newest first.
    pub async fn recent_batch_headers(&self, queue: &str, limit: i64) -> Result<Vec<BatchHeader>> {
        let rows = sqlx::query!(
            r#"SELECT id, name, status AS "status: BatchStatus", priority AS "priority: Priority",
                      total, created_at, started_at, finished_at
               FROM batches WHERE queue = $1 ORDER BY created_at DESC LIMIT $2"#,
            queue,
            limit
        )
        .fetch_all(&self.pool)
        .await
        .context("list recent batches")?;
        Ok(rows
            .into_iter()
            .map(|r| BatchHeader {
                id: BatchId(r.id),
                name: r.name,
                status: r.status,
                priority: r.priority,
                total: i64::from(r.total),
                created_at: r.created_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
            })
            .collect())
    }

    /// Items of `queue` that succeeded or failed in each of the last `minutes` minutes (the
    /// current, partial minute last); minutes without any are included with zeros.
    pub async fn throughput_per_minute(
        &self,
        queue: &str,
        minutes: i32,
        tenant: Option<&str>,
    ) -> Result<Vec<MinuteThroughput>> {
        let rows = sqlx::query!(
            r#"WITH minutes AS (
                   SELECT generate_series(date_trunc('minute', now()) - ($2 - 1) * interval '1 minute',
                                          date_trunc('minute', now()), interval '1 minute') AS minute
               ),
               done AS (
                   SELECT date_trunc('minute', i.finished_at) AS minute,
                          count(*) FILTER (WHERE i.status = 'succeeded') AS succeeded,
                          count(*) FILTER (WHERE i.status = 'failed') AS failed
                   FROM items i JOIN batches b ON b.id = i.batch_id
                   WHERE i.finished_at >= date_trunc('minute', now()) - ($2 - 1) * interval '1 minute'
                     AND i.status IN ('succeeded', 'failed') AND b.queue = $1
                     AND ($3::text IS NULL OR b.tenant = $3)
                   GROUP BY 1
               )
               SELECT m.minute AS "minute!", coalesce(d.succeeded, 0) AS "succeeded!",
                      coalesce(d.failed, 0) AS "failed!"
               FROM minutes m LEFT JOIN done d ON d.minute = m.minute
               ORDER BY m.minute"#,
            queue,
            minutes.max(1),
            tenant,
        )
        .fetch_all(&self.pool)
        .await
        .context("count finished items per minute")?;
        Ok(rows
            .into_iter()
            .map(|r| MinuteThroughput {
                minute: r.minute,
                succeeded: r.succeeded,
                failed: r.failed,
            })
            .collect())
    }

    /// Ready and delayed items of `queue` at its latest depth sample (within the last minute),
    /// if there is one: a tenant's share of the queue is read from it, never from a scan of
    /// every batch in Redis.
    pub async fn latest_queued(&self, queue: &str) -> Result<Option<i64>> {
        sqlx::query_scalar!(
            r#"SELECT ready + delayed AS "queued!" FROM queue_samples
               WHERE queue = $1 AND at > now() - interval '1 minute'
               ORDER BY at DESC LIMIT 1"#,
            queue
        )
        .fetch_optional(&self.pool)
        .await
        .context("read the latest depth sample")
    }

    /// Records the queue's depth for the time bucket of `every` that holds now. Replicas
    /// sampling the same bucket write one row; samples older than a day are dropped.
    pub async fn record_depth_sample(
        &self,
        queue: &str,
        every: Duration,
        ready: i64,
        delayed: i64,
        leased: i64,
    ) -> Result<()> {
        let every_s = every.as_secs_f64().max(1.0);
        sqlx::query!(
            "INSERT INTO queue_samples (queue, at, ready, delayed, leased)
             VALUES ($1, to_timestamp(floor(extract(epoch FROM now())::float8 / $2::float8) * $2::float8),
                     $3, $4, $5)
             ON CONFLICT (queue, at) DO NOTHING",
            queue,
            every_s,
            ready,
            delayed,
            leased,
        )
        .execute(&self.pool)
        .await
        .context("record a queue depth sample")?;
        sqlx::query!(
            "DELETE FROM queue_samples WHERE queue = $1 AND at < now() - interval '1 day'",
            queue
        )
        .execute(&self.pool)
        .await
        .context("drop old queue depth samples")?;
        Ok(())
    }

    /// The largest depth sampled in each of the last `minutes` minutes (the current one
    /// last); minutes without a sample are left out (nobody was sampling).
    pub async fn depth_per_minute(&self, queue: &str, minutes: i32) -> Result<Vec<MinuteDepth>> {
        let rows = sqlx::query!(
            r#"SELECT date_trunc('minute', at) AS "minute!", max(ready) AS "ready!",
                      max(delayed) AS "delayed!", max(leased) AS "leased!"
               FROM queue_samples
               WHERE queue = $1 AND at >= date_trunc('minute', now()) - ($2 - 1) * interval '1 minute'
               GROUP BY 1 ORDER BY 1"#,
            queue,
            minutes.max(1),
        )
        .fetch_all(&self.pool)
        .await
        .context("read queue depth samples")?;
        Ok(rows
            .into_iter()
            .map(|r| MinuteDepth {
                minute: r.minute,
                ready: r.ready,
                delayed: r.delayed,
                leased: r.leased,
            })
            .collect())
    }

    /// Items of `queue` that succeeded or failed within the last `window`.
    pub async fn finished_within(&self, queue: &str, window: Duration) -> Result<i64> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM items i JOIN batches b ON b.id = i.batch_id
               WHERE i.finished_at >= now() - $2 * interval '1 millisecond'
                 AND i.status IN ('succeeded', 'failed') AND b.queue = $1"#,
            queue,
            window_ms as f64,
        )
        .fetch_one(&self.pool)
        .await
        .context("count recently finished items")
    }

    /// How many of a batch's items finished within the last `window` (or since the batch
    /// started, if that is more recent), on Postgres's clock.
    pub async fn finish_rate(&self, id: BatchId, window: Duration) -> Result<FinishRate> {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX) as f64;
        let row = sqlx::query!(
            r#"WITH w AS (
                   SELECT greatest(now() - $2 * interval '1 millisecond',
                                   coalesce(b.started_at, now())) AS since
                   FROM batches b WHERE b.id = $1
               )
               SELECT (SELECT count(*) FROM items i
                       WHERE i.batch_id = $1 AND i.status IN ('succeeded', 'failed')
                         AND i.finished_at >= w.since) AS "finished!",
                      extract(epoch FROM now() - w.since)::float8 AS "window_s!"
               FROM w"#,
            id.0,
            window_ms,
        )
        .fetch_optional(&self.pool)
        .await
        .context("read recent completion rate")?;
        Ok(match row {
            Some(r) => FinishRate {
                finished: r.finished,
                window: Duration::from_secs_f64(r.window_s.max(0.0)),
            },
            None => FinishRate {
                finished: 0,
                window: Duration::ZERO,
            },
        })
    }
}
