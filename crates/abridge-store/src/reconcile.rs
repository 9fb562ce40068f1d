//! What Postgres says Redis should hold, for the reconciler: queued items per open batch, and
//! running items with their claims.

use abridge_core::{BatchId, ItemId, LeaseToken, Priority, WorkerId};
use chrono::{DateTime, Utc};

use crate::{Context, Result, Store};

/// An open batch with unfinished items.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenBatch {
    pub id: BatchId,
    pub priority: Priority,
    /// Its tenant (`None`: the CLI's or the operator's), and the tenant's weight, for its
    /// turn in the claim's fair share.
    pub tenant: Option<String>,
    pub weight: i32,
    pub max_in_flight: Option<i32>,
    /// Items queued or running: each should be in Redis, ready, delayed or leased.
    pub open: i64,
}

/// A queued item, as Redis should hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedItem {
    pub id: ItemId,
    pub position: i32,
    pub available_at: Option<DateTime<Utc>>,
}

/// A running item and the claim Postgres holds for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningItem {
    pub id: ItemId,
    pub token: LeaseToken,
    pub worker: WorkerId,
    pub batch_id: BatchId,
}

impl Store {
    /// Open batches of `queue` that have unfinished items, with how many.
    ///
    /// Counted per batch before anything is joined to it: joined per item row, the tenant
    /// lookup and the grouping sort cost Postgres a fifth of a second per 100,000 open items
    /// on every pass.
    pub async fn open_batches(&self, queue: &str) -> Result<Vec<OpenBatch>> {
        let rows = sqlx::query!(
            r#"SELECT b.id, b.priority AS "priority: Priority", b.tenant,
                      coalesce(t.weight, 1) AS "weight!",
                      t.max_in_flight AS "max_in_flight?", o.n AS "open!"
               FROM batches b
               CROSS JOIN LATERAL (SELECT count(*) AS n FROM items i
                                   WHERE i.batch_id = b.id
                                     AND i.status IN ('queued', 'running')) o
               LEFT JOIN tenants t ON t.name = b.tenant
               WHERE b.queue = $1 AND b.status IN ('pending', 'running') AND o.n > 0"#,
            queue
        )
        .fetch_all(&self.pool)
        .await
        .context("count unfinished items per batch")?;
        Ok(rows
            .into_iter()
            .map(|r| OpenBatch {
                id: BatchId(r.id),
                priority: r.priority,
                tenant: r.tenant,
                weight: r.weight,
                max_in_flight: r.max_in_flight,
                open: r.open,
            })
            .collect())
    }

    /// A batch's queued items.
    pub async fn queued_items(&self, batch: BatchId) -> Result<Vec<QueuedItem>> {
        let rows = sqlx::query!(
            "SELECT id, position, available_at FROM items WHERE batch_id = $1 AND status = 'queued'
             ORDER BY position",
            batch.0
        )
        .fetch_all(&self.pool)
        .await
        .context("list queued items")?;
        Ok(rows
            .into_iter()
            .map(|r| QueuedItem {
                id: ItemId(r.id),
                position: r.position,
                available_at: r.available_at,
            })
            .collect())
    }

    /// Every running item of `queue`'s open batches with its claim.
    pub async fn running_items(&self, queue: &str) -> Result<Vec<RunningItem>> {
        let rows = sqlx::query!(
            r#"SELECT i.id, i.lease_token AS "token!", i.worker_id AS "worker!", i.batch_id
               FROM batches b JOIN items i ON i.batch_id = b.id AND i.status = 'running'
               WHERE b.queue = $1 AND b.status IN ('pending', 'running')"#,
            queue
        )
        .fetch_all(&self.pool)
        .await
        .context("list running items")?;
        Ok(rows
            .into_iter()
            .map(|r| RunningItem {
                id: ItemId(r.id),
                token: LeaseToken(r.token),
                worker: WorkerId(r.worker),
                batch_id: BatchId(r.batch_id),
            })
            .collect())
    }
}
