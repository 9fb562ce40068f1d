//! Retention: the pruner's statements. Each deletes at most `limit` rows (a chunk), in its own
//! short transaction, so that no statement holds row locks for long; the caller
//! (`abridge_worker::pruner`) sizes the chunks and loops.
//!
//! What goes, and when (the ages come from `abridge_core::settings::Retention`):
//!
//! - a finished (`completed`/`cancelled`) batch, once it finished longer ago than its tenant's
//!   `retention_days` or else the fleet's retention, and once its webhook (if any) is delivered
//!   or has given up. Its items go first, a chunk at a time (with their checkpoints and
//!   fenced-write records), then the emptied batch rows (with their webhook deliveries and
//!   idempotency keys). No tombstone is left: a pruned batch is an unknown id.
//! - cache entries (transcripts, summaries) not read for their retention;
//! - idempotency keys, stopped worker sessions and fenced-write records, by age.
//!
//! Every delete re-checks its condition in the statement that deletes, under the row locks it
//! takes: a batch that a retry reopened (`running` again) or an item that is not terminal is
//! never deleted, whatever a caller read before.

use std::time::Duration;

use abridge_core::{BatchId, WorkerId};
use serde::Serialize;

use crate::{Context, Result, Store};

/// The kinds of row the pruner deletes (the `kind` label of `abridge_pruned_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneKind {
    Batches,
    Items,
    Checkpoints,
    WebhookDeliveries,
    IdempotencyKeys,
    FencedWrites,
    WorkerSessions,
    Transcripts,
    Summaries,
    /// Partitions of `items` that retention emptied (dropped whole).
    ItemPartitions,
}

impl PruneKind {
    pub const ALL: [PruneKind; 10] = [
        PruneKind::Batches,
        PruneKind::Items,
        PruneKind::Checkpoints,
        PruneKind::WebhookDeliveries,
        PruneKind::IdempotencyKeys,
        PruneKind::FencedWrites,
        PruneKind::WorkerSessions,
        PruneKind::Transcripts,
        PruneKind::Summaries,
        PruneKind::ItemPartitions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PruneKind::Batches => "batches",
            PruneKind::Items => "items",
            PruneKind::Checkpoints => "checkpoints",
            PruneKind::WebhookDeliveries => "webhook_deliveries",
            PruneKind::IdempotencyKeys => "idempotency_keys",
            PruneKind::FencedWrites => "fenced_writes",
            PruneKind::WorkerSessions => "worker_sessions",
            PruneKind::Transcripts => "transcripts",
            PruneKind::Summaries => "summaries",
            PruneKind::ItemPartitions => "item_partitions",
        }
    }
}

/// Rows per kind: deleted by a pass, or that a dry run would delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneCounts {
    pub batches: u64,
    pub items: u64,
    pub checkpoints: u64,
    pub webhook_deliveries: u64,
    pub idempotency_keys: u64,
    pub fenced_writes: u64,
    pub worker_sessions: u64,
    pub transcripts: u64,
    pub summaries: u64,
    pub item_partitions: u64,
}

impl PruneCounts {
    pub fn get(&self, kind: PruneKind) -> u64 {
        *self.field(kind)
    }

    pub fn add(&mut self, kind: PruneKind, n: u64) {
        *self.field_mut(kind) += n;
    }

    pub fn total(&self) -> u64 {
        PruneKind::ALL.iter().map(|k| self.get(*k)).sum()
    }

    fn field(&self, kind: PruneKind) -> &u64 {
        match kind {
            PruneKind::Batches => &self.batches,
            PruneKind::Items => &self.items,
            PruneKind::Checkpoints => &self.checkpoints,
            PruneKind::WebhookDeliveries => &self.webhook_deliveries,
            PruneKind::IdempotencyKeys => &self.idempotency_keys,
            PruneKind::FencedWrites => &self.fenced_writes,
            PruneKind::WorkerSessions => &self.worker_sessions,
            PruneKind::Transcripts => &self.transcripts,
            PruneKind::Summaries => &self.summaries,
            PruneKind::ItemPartitions => &self.item_partitions,
        }
    }

    fn field_mut(&mut self, kind: PruneKind) -> &mut u64 {
        match kind {
            PruneKind::Batches => &mut self.batches,
            PruneKind::Items => &mut self.items,
            PruneKind::Checkpoints => &mut self.checkpoints,
            PruneKind::WebhookDeliveries => &mut self.webhook_deliveries,
            PruneKind::IdempotencyKeys => &mut self.idempotency_keys,
            PruneKind::FencedWrites => &mut self.fenced_writes,
            PruneKind::WorkerSessions => &mut self.worker_sessions,
            PruneKind::Transcripts => &mut self.transcripts,
            PruneKind::Summaries => &mut self.summaries,
            PruneKind::ItemPartitions => &mut self.item_partitions,
        }
    }
}

/// The ages past which each kind goes; `None` keeps that kind forever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneAges {
    /// Finished batches of a tenant without its own `retention_days` (and the CLI's).
    pub batches: Option<Duration>,
    /// Cache entries, counted from their last read.
    pub caches: Option<Duration>,
    pub idempotency_keys: Option<Duration>,
    /// Stopped worker sessions, counted from when they stopped.
    pub sessions: Option<Duration>,
    pub fenced_writes: Option<Duration>,
}

/// A finished batch due for deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueBatch {
    pub id: BatchId,
    /// Its items' positions are `0..total`.
    pub total: i32,
}

/// Items `from..to` (positions) of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemRange {
    pub batch: BatchId,
    pub from: i32,
    pub to: i32,
}

/// The lease row of the pruner (`maintenance_leases.task`).
pub const PRUNE_TASK: &str = "prune";

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

fn count(n: Option<i64>) -> u64 {
    n.unwrap_or(0).max(0) as u64
}

impl Store {
    /// Up to `limit` finished batches due for deletion, oldest first. `batches` is the age for
    /// batches without a tenant override (`None`: those are kept).
    pub async fn prunable_batches(
        &self,
        batches: Option<Duration>,
        limit: i64,
    ) -> Result<Vec<DueBatch>> {
        // The first bound (the shortest retention of any batch) keeps the walk of
        // `batches_finished` to the batches old enough for someone; the second is the batch's own.
        let rows = sqlx::query!(
            r#"SELECT b.id, b.total FROM batches b
               WHERE b.status IN ('completed', 'cancelled')
                 AND b.finished_at < now() - make_interval(secs => least(
                         $1::float8, (SELECT min(retention_days) * 86400.0 FROM tenants)::float8))
                 AND b.finished_at < now() - make_interval(secs => coalesce(
                         (SELECT t.retention_days * 86400.0 FROM tenants t WHERE t.name = b.tenant)::float8,
                         $1::float8))
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w
                                 WHERE w.batch_id = b.id AND w.delivered_at IS NULL
                                   AND w.gave_up_at IS NULL)
               ORDER BY b.finished_at
               LIMIT $2"#,
            secs(batches),
            limit,
        )
        .fetch_all(&self.pool)
        .await
        .context("find batches due for pruning")?;
        Ok(rows
            .into_iter()
            .map(|r| DueBatch {
                id: BatchId(r.id),
                total: r.total,
            })
            .collect())
    }

    /// Deletes the items of these position ranges (`[lo, hi)` of a batch), with their
    /// checkpoints and fenced-write records. Only items of a batch that is still finished and
    /// due (checked under a share lock on the batch row, so a concurrent retry waits or wins),
    /// and only terminal ones. Ranges, not "any N items of these batches": each is one walk of
    /// the `(batch_id, position)` index, whatever the statistics say about the batch (a
    /// `LIMIT` over the batches' items was planned as a scan of the whole table once most of
    /// them were gone).
    pub async fn prune_batch_items(
        &self,
        ranges: &[ItemRange],
        batches: Option<Duration>,
    ) -> Result<PruneCounts> {
        let ids: Vec<uuid::Uuid> = ranges.iter().map(|r| r.batch.0).collect();
        let lo: Vec<i32> = ranges.iter().map(|r| r.from).collect();
        let hi: Vec<i32> = ranges.iter().map(|r| r.to).collect();
        let r = sqlx::query!(
            r#"WITH r AS (
                   SELECT * FROM unnest($1::uuid[], $2::int4[], $3::int4[]) AS r (batch_id, lo, hi)
               ),
               due AS (
                   SELECT b.id FROM batches b
                   WHERE b.id IN (SELECT batch_id FROM r) AND b.status IN ('completed', 'cancelled')
                     AND b.finished_at < now() - make_interval(secs => coalesce(
                             (SELECT t.retention_days * 86400.0 FROM tenants t WHERE t.name = b.tenant)::float8,
                             $4::float8))
                   FOR SHARE OF b
               ),
               gone AS (
                   DELETE FROM items i USING r
                   WHERE i.batch_id = r.batch_id AND i.position >= r.lo AND i.position < r.hi
                     AND i.batch_id IN (SELECT id FROM due)
                     AND i.status IN ('succeeded', 'failed', 'cancelled')
                   RETURNING i.id
               ),
               checkpoints AS (
                   DELETE FROM item_checkpoints c WHERE c.item_id IN (SELECT id FROM gone) RETURNING 1
               ),
               fenced AS (
                   DELETE FROM fenced_writes f WHERE f.item_id IN (SELECT id FROM gone) RETURNING 1
               )
               SELECT (SELECT count(*) FROM gone) AS items,
                      (SELECT count(*) FROM checkpoints) AS checkpoints,
                      (SELECT count(*) FROM fenced) AS fenced"#,
            &ids,
            &lo,
            &hi,
            secs(batches),
        )
        .fetch_one(&self.pool)
        .await
        .context("prune items of finished batches")?;
        let mut counts = PruneCounts::default();
        counts.add(PruneKind::Items, count(r.items));
        counts.add(PruneKind::Checkpoints, count(r.checkpoints));
        counts.add(PruneKind::FencedWrites, count(r.fenced));
        Ok(counts)
    }

    /// Deletes those of these batches that are still due and have no item left, with their
    /// webhook deliveries and idempotency keys.
    pub async fn prune_empty_batches(
        &self,
        ids: &[BatchId],
        batches: Option<Duration>,
    ) -> Result<PruneCounts> {
        let ids: Vec<uuid::Uuid> = ids.iter().map(|b| b.0).collect();
        let r = sqlx::query!(
            r#"WITH gone AS (
                   DELETE FROM batches b
                   WHERE b.id = ANY($1) AND b.status IN ('completed', 'cancelled')
                     AND b.finished_at < now() - make_interval(secs => coalesce(
                             (SELECT t.retention_days * 86400.0 FROM tenants t WHERE t.name = b.tenant)::float8,
                             $2::float8))
                     AND NOT EXISTS (SELECT 1 FROM items i WHERE i.batch_id = b.id)
                     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w
                                     WHERE w.batch_id = b.id AND w.delivered_at IS NULL
                                       AND w.gave_up_at IS NULL)
                   RETURNING b.id
               ),
               hooks AS (
                   DELETE FROM webhook_deliveries w WHERE w.batch_id IN (SELECT id FROM gone) RETURNING 1
               ),
               keys AS (
                   DELETE FROM idempotency_keys k WHERE k.batch_id IN (SELECT id FROM gone) RETURNING 1
               )
               SELECT (SELECT count(*) FROM gone) AS batches,
                      (SELECT count(*) FROM hooks) AS hooks,
                      (SELECT count(*) FROM keys) AS keys"#,
            &ids,
            secs(batches),
        )
        .fetch_one(&self.pool)
        .await
        .context("prune emptied batches")?;
        let mut counts = PruneCounts::default();
        counts.add(PruneKind::Batches, count(r.batches));
        counts.add(PruneKind::WebhookDeliveries, count(r.hooks));
        counts.add(PruneKind::IdempotencyKeys, count(r.keys));
        Ok(counts)
    }

    /// Deletes up to `limit` rows of `kind` older than `age` (for the kinds pruned by age
    /// alone: idempotency keys, worker sessions, fenced writes, transcripts, summaries).
    /// Returns how many went.
    pub async fn prune_by_age(&self, kind: PruneKind, age: Duration, limit: i64) -> Result<u64> {
        let age = age.as_secs_f64();
        // Rows are picked by `ctid` (or id) in the statement that deletes them, and the age is
        // checked again on the row deleted: an entry read (touched) meanwhile stays.
        let n = match kind {
            PruneKind::IdempotencyKeys => sqlx::query!(
                "DELETE FROM idempotency_keys
                 WHERE ctid = ANY(ARRAY(SELECT ctid FROM idempotency_keys
                                        WHERE created_at < now() - make_interval(secs => $1)
                                        LIMIT $2))
                   AND created_at < now() - make_interval(secs => $1)",
                age,
                limit
            )
            .execute(&self.pool)
            .await
            .context("prune idempotency keys")?,
            PruneKind::WorkerSessions => sqlx::query!(
                "DELETE FROM worker_sessions
                 WHERE id IN (SELECT id FROM worker_sessions
                              WHERE stopped_at < now() - make_interval(secs => $1) LIMIT $2)
                   AND stopped_at < now() - make_interval(secs => $1)",
                age,
                limit
            )
            .execute(&self.pool)
            .await
            .context("prune stopped worker sessions")?,
            PruneKind::FencedWrites => sqlx::query!(
                "DELETE FROM fenced_writes
                 WHERE id IN (SELECT id FROM fenced_writes
                              WHERE at < now() - make_interval(secs => $1) LIMIT $2)
                   AND at < now() - make_interval(secs => $1)",
                age,
                limit
            )
            .execute(&self.pool)
            .await
            .context("prune fenced-write records")?,
            PruneKind::Transcripts => sqlx::query!(
                "DELETE FROM transcripts
                 WHERE ctid = ANY(ARRAY(SELECT ctid FROM transcripts
                                        WHERE last_used_at < now() - make_interval(secs => $1)
                                        LIMIT $2))
                   AND last_used_at < now() - make_interval(secs => $1)",
                age,
                limit
            )
            .execute(&self.pool)
            .await
            .context("prune unused cached transcripts")?,
            PruneKind::Summaries => sqlx::query!(
                "DELETE FROM summaries
                 WHERE ctid = ANY(ARRAY(SELECT ctid FROM summaries
                                        WHERE last_used_at < now() - make_interval(secs => $1)
                                        LIMIT $2))
                   AND last_used_at < now() - make_interval(secs => $1)",
                age,
                limit
            )
            .execute(&self.pool)
            .await
            .context("prune unused cached summaries")?,
            PruneKind::Batches
            | PruneKind::Items
            | PruneKind::Checkpoints
            | PruneKind::WebhookDeliveries
            | PruneKind::ItemPartitions => return Ok(0),
        };
        Ok(n.rows_affected())
    }

    /// What a pass with these ages would delete now, per kind (`abridge prune --dry-run`).
    /// Read-only; a concurrent change can make the real pass differ.
    pub async fn count_prunable(&self, ages: &PruneAges) -> Result<PruneCounts> {
        let r = sqlx::query!(
            r#"WITH due AS (
                   SELECT b.id FROM batches b
                   WHERE b.status IN ('completed', 'cancelled')
                     AND b.finished_at < now() - make_interval(secs => coalesce(
                             (SELECT t.retention_days * 86400.0 FROM tenants t WHERE t.name = b.tenant)::float8,
                             $1::float8))
                     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w
                                     WHERE w.batch_id = b.id AND w.delivered_at IS NULL
                                       AND w.gave_up_at IS NULL)
               ),
               due_items AS (
                   SELECT i.id FROM items i WHERE i.batch_id IN (SELECT id FROM due)
               )
               SELECT
                   (SELECT count(*) FROM due) AS batches,
                   (SELECT count(*) FROM due_items) AS items,
                   (SELECT count(*) FROM item_checkpoints c
                    WHERE c.item_id IN (SELECT id FROM due_items)) AS checkpoints,
                   (SELECT count(*) FROM webhook_deliveries w
                    WHERE w.batch_id IN (SELECT id FROM due)) AS webhook_deliveries,
                   (SELECT count(*) FROM idempotency_keys k
                    WHERE k.batch_id IN (SELECT id FROM due)
                       OR k.created_at < now() - make_interval(secs => $2::float8)) AS idempotency_keys,
                   (SELECT count(*) FROM fenced_writes f
                    WHERE f.item_id IN (SELECT id FROM due_items)
                       OR f.at < now() - make_interval(secs => $3::float8)) AS fenced_writes,
                   (SELECT count(*) FROM worker_sessions s
                    WHERE s.stopped_at < now() - make_interval(secs => $4::float8)) AS worker_sessions,
                   (SELECT count(*) FROM transcripts t
                    WHERE t.last_used_at < now() - make_interval(secs => $5::float8)) AS transcripts,
                   (SELECT count(*) FROM summaries s
                    WHERE s.last_used_at < now() - make_interval(secs => $5::float8)) AS summaries"#,
            secs(ages.batches),
            secs(ages.idempotency_keys),
            secs(ages.fenced_writes),
            secs(ages.sessions),
            secs(ages.caches),
        )
        .fetch_one(&self.pool)
        .await
        .context("count rows due for pruning")?;
        Ok(PruneCounts {
            batches: count(r.batches),
            items: count(r.items),
            checkpoints: count(r.checkpoints),
            webhook_deliveries: count(r.webhook_deliveries),
            idempotency_keys: count(r.idempotency_keys),
            fenced_writes: count(r.fenced_writes),
            worker_sessions: count(r.worker_sessions),
            transcripts: count(r.transcripts),
            summaries: count(r.summaries),
            // Those empty now; items the pass deletes can empty more.
            item_partitions: self.empty_item_partitions().await?.len() as u64,
        })
    }

    /// Takes the lease of `task` for `ttl` if nobody holds it (or `holder` already does) and,
    /// with `min_gap`, only if its last pass ended at least that long ago. On Postgres's clock.
    pub async fn try_take_lease(
        &self,
        task: &str,
        holder: WorkerId,
        ttl: Duration,
        min_gap: Option<Duration>,
    ) -> Result<bool> {
        let taken = sqlx::query_scalar!(
            r#"INSERT INTO maintenance_leases AS l (task, holder, expires_at)
               VALUES ($1, $2, now() + make_interval(secs => $3))
               ON CONFLICT (task) DO UPDATE
               SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
               WHERE (l.expires_at < now() OR l.holder = EXCLUDED.holder)
                 AND ($4::float8 IS NULL OR l.last_run_at IS NULL
                      OR l.last_run_at < now() - make_interval(secs => $4::float8))
               RETURNING l.holder"#,
            task,
            holder.0,
            ttl.as_secs_f64(),
            secs(min_gap),
        )
        .fetch_optional(&self.pool)
        .await
        .context("take maintenance lease")?;
        Ok(taken.is_some())
    }

    /// Extends `holder`'s lease of `task` to `ttl` from now; false if it no longer holds it.
    pub async fn renew_lease(&self, task: &str, holder: WorkerId, ttl: Duration) -> Result<bool> {
        let n = sqlx::query!(
            "UPDATE maintenance_leases SET expires_at = now() + make_interval(secs => $3)
             WHERE task = $1 AND holder = $2 AND expires_at >= now()",
            task,
            holder.0,
            ttl.as_secs_f64(),
        )
        .execute(&self.pool)
        .await
        .context("renew maintenance lease")?;
        Ok(n.rows_affected() == 1)
    }

    /// Ends `holder`'s lease of `task`; `ran` records that a pass completed now.
    pub async fn release_lease(&self, task: &str, holder: WorkerId, ran: bool) -> Result<()> {
        sqlx::query!(
            "UPDATE maintenance_leases
             SET holder = NULL, expires_at = '-infinity',
                 last_run_at = CASE WHEN $3 THEN now() ELSE last_run_at END
             WHERE task = $1 AND holder = $2",
            task,
            holder.0,
            ran,
        )
        .execute(&self.pool)
        .await
        .context("release maintenance lease")?;
        Ok(())
    }

    /// Who holds `task`'s lease, and for how many more seconds (for messages).
    pub async fn lease_holder(&self, task: &str) -> Result<Option<(WorkerId, f64)>> {
        let row = sqlx::query!(
            r#"SELECT holder AS "holder!", extract(epoch FROM expires_at - now())::float8 AS "left!"
               FROM maintenance_leases WHERE task = $1 AND holder IS NOT NULL AND expires_at >= now()"#,
            task
        )
        .fetch_optional(&self.pool)
        .await
        .context("read maintenance lease")?;
        Ok(row.map(|r| (WorkerId(r.holder), r.left)))
    }
}

/// Old finished rows made fast (for `abridge bench`'s retention scenario): no queue, no
/// worker, one statement per group of batches.
impl Store {}
