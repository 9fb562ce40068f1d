//! What the producer API needs of batches beyond the CLI's: a tenant's batches page by page,
//! the recent completion rate, retrying failed items, and the light item pages of an export.

use std::collections::HashMap;
use std::time::Duration;

use abridge_core::{BatchId, BatchStatus, ItemId, ItemStatus, Priority};
use chrono::{DateTime, Utc};

use crate::batches::{BatchView, Counts, ItemRow, ItemView};
use crate::items::ItemRef;
use crate::{Context, Result, Store};

/// What `retry_failed` did.
#[derive(Clone, Debug)]
pub enum RetryOutcome {
    /// These items are `queued` again (empty: the batch had no failed item).
    Retried(Vec<ItemRef>),
    /// A cancelled batch stays cancelled.
    Cancelled,
    NotFound,
}

/// Items finished within a recent window, for an ETA.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FinishRate {
    /// Items that reached `succeeded` or `failed` within the window.
    pub finished: i64,
    /// The window: the configured one, or less if the batch started more recently.
    pub window: Duration,
}

/// One item's row in an export's `index.csv` and `batch.json` (no summary).
#[derive(Clone, Debug)]
pub struct IndexRow {
    pub position: i32,
    pub url: String,
    pub video_id: String,
    pub title: Option<String>,
    pub status: ItemStatus,
    pub attempts: i32,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Checks that Postgres answers (for `/readyz`).
    pub async fn ping(&self) -> Result<()> {
        sqlx::query_scalar!("SELECT 1 AS \"one!\"")
            .fetch_one(&self.pool)
            .await
            .context("ping database")?;
        Ok(())
    }

    /// The latest failures among a tenant's newest 100 batches (every batch's, for the
    /// operator: `tenant` `None`), newest failure first (what the dashboard lists with retry
    /// buttons).
    pub async fn recent_failed_items(
        &self,
        tenant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ItemView>> {
        let rows = sqlx::query_as!(
            ItemRow,
            r#"SELECT id, batch_id, position, url, video_id, title, status AS "status: ItemStatus",
                      attempts, error_kind, error_message, summary, result_meta, worker_id,
                      queued_at, started_at, finished_at
             FROM items
             WHERE status = 'failed'
               AND batch_id IN (SELECT id FROM batches WHERE ($1::text IS NULL OR tenant = $1)
                                ORDER BY id DESC LIMIT 100)
             ORDER BY finished_at DESC NULLS LAST, id DESC
             LIMIT $2"#,
            tenant,
            limit,
        )
        .fetch_all(&self.pool)
        .await
        .context("list recently failed items")?;
        Ok(rows.into_iter().map(ItemView::from).collect())
    }

    /// A tenant's batch, or `None` if there is none or another tenant owns it. The operator
    /// (`tenant` `None`) sees every batch.
    pub async fn tenant_batch(
        &self,
        tenant: Option<&str>,
        id: BatchId,
    ) -> Result<Option<BatchView>> {
        let owned = sqlx::query_scalar!(
            "SELECT 1 AS \"one!\" FROM batches WHERE id = $1 AND ($2::text IS NULL OR tenant = $2)",
            id.0,
            tenant
        )
        .fetch_optional(&self.pool)
        .await
        .context("check batch owner")?;
        if owned.is_none() {
            return Ok(None);
        }
        self.batch(id).await
    }

    /// A tenant's batches (every batch, for the operator: `tenant` `None`), newest first,
    /// older than `before` (a cursor), optionally of one status, with their counts.
    pub async fn list_batches(
        &self,
        tenant: Option<&str>,
        status: Option<BatchStatus>,
        before: Option<BatchId>,
        limit: i64,
    ) -> Result<Vec<BatchView>> {
        let rows = sqlx::query!(
            r#"SELECT id, queue, name, priority AS "priority: Priority",
                      status AS "status: BatchStatus", total, options, tenant, webhook_url,
                      created_at, started_at, finished_at
               FROM batches
               WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR status = $2)
                 AND ($3::uuid IS NULL OR id < $3)
               ORDER BY id DESC
               LIMIT $4"#,
            tenant,
            status.map(|s| s.as_str()),
            before.map(|b| b.0),
            limit,
        )
        .fetch_all(&self.pool)
        .await
        .context("list batches")?;
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        let mut counts = self.counts_of(&ids).await?;
        let batch_ids: Vec<BatchId> = ids.iter().copied().map(BatchId).collect();
        let mut spend: HashMap<BatchId, crate::cost::Spend> =
            self.batch_spend(&batch_ids).await?.into_iter().collect();
        Ok(rows
            .into_iter()
            .map(|r| BatchView {
                id: BatchId(r.id),
                name: r.name,
                queue: r.queue,
                status: r.status,
                priority: r.priority,
                total: i64::from(r.total),
                counts: counts.remove(&r.id).unwrap_or_default(),
                options: r.options,
                tenant: r.tenant,
                webhook_url: r.webhook_url,
                created_at: r.created_at,
                started_at: r.started_at,
                finished_at: r.finished_at,
                spend: spend.remove(&BatchId(r.id)).unwrap_or_default(),
            })
            .collect())
    }

    /// Items per state for several batches at once.
    /// Every item of a tenant's batches, by status (what `/v1/stats` shows a tenant).
    pub async fn tenant_counts(&self, tenant: &str) -> Result<Counts> {
        let rows = sqlx::query!(
            r#"SELECT i.status, count(*) AS "n!" FROM items i JOIN batches b ON b.id = i.batch_id
               WHERE b.tenant = $1 GROUP BY i.status"#,
            tenant
        )
        .fetch_all(&self.pool)
        .await
        .context("count a tenant's items")?;
        let mut c = Counts::default();
        for r in rows {
            c.add(&r.status, r.n);
        }
        Ok(c)
    }

    async fn counts_of(&self, ids: &[uuid::Uuid]) -> Result<HashMap<uuid::Uuid, Counts>> {
        let rows = sqlx::query!(
            r#"SELECT batch_id, status, count(*) AS "n!" FROM items
               WHERE batch_id = ANY($1) GROUP BY batch_id, status"#,
            ids
        )
        .fetch_all(&self.pool)
        .await
        .context("count items of batches")?;
        let mut counts: HashMap<uuid::Uuid, Counts> = HashMap::new();
        for r in rows {
            counts.entry(r.batch_id).or_default().add(&r.status, r.n);
        }
        Ok(counts)
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

    /// Puts a batch's failed items (or only its failed item `only`) back in the queue
    /// (`failed` → `queued`, attempts reset, last error kept), reopens the batch if it had
    /// completed, and re-arms its webhook. Returns the requeued items, for Redis.
    pub async fn retry_failed(&self, id: BatchId, only: Option<ItemId>) -> Result<RetryOutcome> {
        let mut tx = self.pool.begin().await.context("begin retry")?;
        let batch = sqlx::query!(
            r#"SELECT status AS "status: BatchStatus", priority AS "priority: Priority"
               FROM batches WHERE id = $1 FOR UPDATE"#,
            id.0
        )
        .fetch_optional(&mut *tx)
        .await
        .context("lock batch")?;
        let Some(batch) = batch else {
            return Ok(RetryOutcome::NotFound);
        };
        if batch.status == BatchStatus::Cancelled {
            return Ok(RetryOutcome::Cancelled);
        }
        let priority = batch.priority;
        let rows = sqlx::query!(
            "UPDATE items SET status = 'queued', attempts = 0, lease_token = NULL,
                    finished_at = NULL, available_at = NULL, queued_at = now()
             WHERE batch_id = $1 AND status = 'failed' AND ($2::bigint IS NULL OR id = $2)
             RETURNING id, position",
            id.0,
            only.map(|i| i.0),
        )
        .fetch_all(&mut *tx)
        .await
        .context("requeue failed items")?;
        if !rows.is_empty() {
            sqlx::query!(
                "UPDATE batches SET finished_at = NULL,
                        status = CASE WHEN started_at IS NULL THEN 'pending' ELSE 'running' END
                 WHERE id = $1 AND status = 'completed'",
                id.0
            )
            .execute(&mut *tx)
            .await
            .context("reopen batch")?;
            sqlx::query!(
                "UPDATE webhook_deliveries
                 SET delivered_at = NULL, attempts = 0, claim = NULL, event_id = $2,
                     next_attempt_at = now(), last_status = NULL, last_error = NULL,
                     first_attempt_at = NULL, gave_up_at = NULL
                 WHERE batch_id = $1",
                id.0,
                uuid::Uuid::new_v4(),
            )
            .execute(&mut *tx)
            .await
            .context("re-arm batch webhook")?;
        }
        tx.commit().await.context("commit retry")?;
        Ok(RetryOutcome::Retried(
            rows.into_iter()
                .map(|r| ItemRef {
                    id: ItemId(r.id),
                    batch_id: id,
                    priority,
                    position: r.position,
                    status: ItemStatus::Queued,
                    available_at: None,
                })
                .collect(),
        ))
    }

    /// A page of a batch's items without their summaries, in input order from `from` on.
    pub async fn index_rows(&self, id: BatchId, from: i32, limit: i64) -> Result<Vec<IndexRow>> {
        let rows = sqlx::query!(
            r#"SELECT position, url, video_id, title, status AS "status: ItemStatus", attempts,
                      error_kind, error_message, finished_at
               FROM items WHERE batch_id = $1 AND position >= $2
               ORDER BY position LIMIT $3"#,
            id.0,
            from,
            limit
        )
        .fetch_all(&self.pool)
        .await
        .context("read item index")?;
        Ok(rows
            .into_iter()
            .map(|r| IndexRow {
                position: r.position,
                url: r.url,
                video_id: r.video_id,
                title: r.title,
                status: r.status,
                attempts: r.attempts,
                error_kind: r.error_kind,
                error_message: r.error_message,
                finished_at: r.finished_at,
            })
            .collect())
    }
}
