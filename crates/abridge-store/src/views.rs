//! The read side of batches for their owners: a tenant's batches page by page and its counts,
//! a batch's recent failures, and the light item pages of an export.

use std::collections::HashMap;

use abridge_core::{BatchId, BatchStatus, ItemStatus, Priority};
use chrono::{DateTime, Utc};

use crate::batches::{BatchView, Counts, ItemRow, ItemView};
use crate::{Context, Result, Store};

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
            r#"SELECT i.status AS "status: ItemStatus", count(*) AS "n!"
               FROM items i JOIN batches b ON b.id = i.batch_id
               WHERE b.tenant = $1 GROUP BY i.status"#,
            tenant
        )
        .fetch_all(&self.pool)
        .await
        .context("count a tenant's items")?;
        Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
    }

    async fn counts_of(&self, ids: &[uuid::Uuid]) -> Result<HashMap<uuid::Uuid, Counts>> {
        let rows = sqlx::query!(
            r#"SELECT batch_id, status AS "status: ItemStatus", count(*) AS "n!" FROM items
               WHERE batch_id = ANY($1) GROUP BY batch_id, status"#,
            ids
        )
        .fetch_all(&self.pool)
        .await
        .context("count items of batches")?;
        let mut counts: HashMap<uuid::Uuid, Counts> = HashMap::new();
        for r in rows {
            counts.entry(r.batch_id).or_default().add(r.status, r.n);
        }
        Ok(counts)
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
