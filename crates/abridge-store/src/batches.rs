//! Batches: creation (one transaction, items by `COPY`), status with per-state counts,
//! cancellation and completion.
//!
//! Batch counts are computed from the item rows (an index scan on `(batch_id, status)`), not
//! kept in counter columns: they cannot drift from the rows, and finishing items never
//! contends on a hot batch row.

use abridge_core::input::ItemInput;
use abridge_core::{BatchId, BatchStatus, ItemId, ItemStatus, Priority};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::items::ItemRef;
use crate::{Context, Result, Store, StoreError};

/// A batch to create.
#[derive(Clone, Debug)]
pub struct NewBatch<'a> {
    pub id: BatchId,
    pub queue: &'a str,
    pub name: Option<&'a str>,
    pub priority: Priority,
    /// Per-batch processing options, stored as given (summarizer backend, length, ...).
    pub options: serde_json::Value,
    /// The API tenant that owns the batch; `None` for batches made with the CLI.
    pub tenant: Option<&'a str>,
    /// Where to POST the final status once the batch finishes (API batches only).
    pub webhook_url: Option<&'a str>,
    /// The W3C `traceparent` of the enqueueing span, continued by the workers (`None` when
    /// traces are off).
    pub traceparent: Option<&'a str>,
}

impl<'a> NewBatch<'a> {
    /// A batch of no name, owner, options, webhook or trace, with a new id: what tools,
    /// benchmarks and tests start from (`NewBatch { name, ..NewBatch::plain(queue, p) }`).
    pub fn plain(queue: &'a str, priority: Priority) -> Self {
        Self {
            id: BatchId::new(),
            queue,
            name: None,
            priority,
            options: serde_json::json!({}),
            tenant: None,
            webhook_url: None,
            traceparent: None,
        }
    }
}

/// An `Idempotency-Key` to record with a new batch, so that a retried request finds it.
#[derive(Clone, Debug)]
pub struct IdempotencyKey<'a> {
    pub key: &'a str,
    /// SHA-256 of the canonical request: the same key with another request is refused.
    pub request_hash: &'a [u8],
    /// What the first request answered, replayed to retries.
    pub response: serde_json::Value,
}

/// What `create_batch_once` did.
#[derive(Clone, Debug)]
pub enum CreateOnce {
    Created(CreatedBatch),
    /// The tenant already used this key: nothing was created.
    Existing {
        batch_id: BatchId,
        /// False when the key came with a different request body.
        same_request: bool,
        response: serde_json::Value,
    },
}

/// A created batch and its items' ids in input order, ready to be pushed to Redis.
#[derive(Clone, Debug)]
pub struct CreatedBatch {
    pub id: BatchId,
    pub priority: Priority,
    pub item_ids: Vec<ItemId>,
}

/// Items per state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl Counts {
    pub fn total(&self) -> i64 {
        self.queued + self.running + self.succeeded + self.failed + self.cancelled
    }

    pub fn terminal(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled
    }

    pub(crate) fn add(&mut self, status: ItemStatus, n: i64) {
        match status {
            ItemStatus::Queued => self.queued += n,
            ItemStatus::Running => self.running += n,
            ItemStatus::Succeeded => self.succeeded += n,
            ItemStatus::Failed => self.failed += n,
            ItemStatus::Cancelled => self.cancelled += n,
        }
    }
}

/// Counts from `(status, how many)` rows, as `GROUP BY status` returns them.
impl FromIterator<(ItemStatus, i64)> for Counts {
    fn from_iter<I: IntoIterator<Item = (ItemStatus, i64)>>(rows: I) -> Self {
        let mut counts = Counts::default();
        for (status, n) in rows {
            counts.add(status, n);
        }
        counts
    }
}

/// A batch as `abridge status --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct BatchView {
    pub id: BatchId,
    pub name: Option<String>,
    pub queue: String,
    pub status: BatchStatus,
    pub priority: Priority,
    pub total: i64,
    pub counts: Counts,
    pub options: serde_json::Value,
    /// The API tenant that owns the batch (`None`: made with the CLI).
    pub tenant: Option<String>,
    pub webhook_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What its model requests have cost so far.
    pub spend: crate::cost::Spend,
}

/// What `cancel_batch` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The batch is now cancelled; these unfinished items were cancelled with it.
    Cancelled {
        items: Vec<ItemId>,
        priority: Priority,
    },
    /// Nothing to do: the batch had already finished in this state.
    AlreadyFinished(BatchStatus),
    NotFound,
}

/// What `retry_failed` did.
#[derive(Clone, Debug)]
pub enum RetryOutcome {
    /// These items are `queued` again (empty: the batch had no failed item).
    Retried(Vec<ItemRef>),
    /// A cancelled batch stays cancelled.
    Cancelled,
    NotFound,
}

impl Store {
    /// Creates a batch and its items atomically. Small batches are one statement (one round
    /// trip, so a single enqueued item is visible within a millisecond or so); large ones
    /// stream their items with `COPY` in one transaction, so 100,000 items commit in well
    /// under a second.
    pub async fn create_batch(
        &self,
        batch: NewBatch<'_>,
        items: &[ItemInput],
    ) -> Result<CreatedBatch> {
        match self.create_batch_once(batch, items, None, None).await? {
            CreateOnce::Created(created) => Ok(created),
            CreateOnce::Existing { .. } => unreachable!("no idempotency key was given"),
        }
    }

    /// Like [`Store::create_batch`], recording `idempotency` (for the batch's tenant) in the
    /// same transaction. If the tenant already used the key, nothing is created and the first
    /// batch is returned. Two concurrent requests with one key create one batch: the second
    /// waits on the key's unique index until the first commits.
    ///
    /// `ids`, if given, are the items' ids, drawn beforehand with [`Store::draw_item_ids`]
    /// (one per item, in order): the caller can then stage the items in Redis while this
    /// writes them.
    pub async fn create_batch_once(
        &self,
        batch: NewBatch<'_>,
        items: &[ItemInput],
        ids: Option<&[ItemId]>,
        idempotency: Option<IdempotencyKey<'_>>,
    ) -> Result<CreateOnce> {
        let total = i32::try_from(items.len()).map_err(|_| StoreError::Invalid {
            context: "create batch",
            message: "more than 2^31 items in one batch".into(),
        })?;
        if ids.is_some_and(|ids| ids.len() != items.len()) {
            return Err(StoreError::Invalid {
                context: "create batch",
                message: "not one drawn id per item".into(),
            });
        }
        let created = |item_ids| {
            CreateOnce::Created(CreatedBatch {
                id: batch.id,
                priority: batch.priority,
                item_ids,
            })
        };
        // The common case needs no transaction: one statement writes the batch and its items.
        let simple = idempotency.is_none() && batch.webhook_url.is_none();
        if simple && ids.is_none() && items.len() <= SMALL_BATCH {
            let item_ids = self.insert_small_batch(&batch, total, items).await?;
            self.cover_items_after(&item_ids).await;
            return Ok(created(item_ids));
        }

        let mut tx = self.pool.begin().await.context("begin batch transaction")?;
        sqlx::query!(
            "INSERT INTO batches (id, queue, name, priority, total, options, tenant, webhook_url, traceparent)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            batch.id.0,
            batch.queue,
            batch.name,
            batch.priority.as_str(),
            total,
            batch.options,
            batch.tenant,
            batch.webhook_url,
            batch.traceparent,
        )
        .execute(&mut *tx)
        .await
        .context("insert batch")?;
        if let (Some(idem), Some(tenant)) = (&idempotency, batch.tenant) {
            let inserted = sqlx::query_scalar!(
                "INSERT INTO idempotency_keys (tenant, key, request_hash, batch_id, response)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant, key) DO NOTHING
                 RETURNING batch_id",
                tenant,
                idem.key,
                idem.request_hash,
                batch.id.0,
                idem.response,
            )
            .fetch_optional(&mut *tx)
            .await
            .context("record idempotency key")?;
            if inserted.is_none() {
                tx.rollback().await.context("roll back duplicate batch")?;
                let first = sqlx::query!(
                    "SELECT batch_id, request_hash, response FROM idempotency_keys
                     WHERE tenant = $1 AND key = $2",
                    tenant,
                    idem.key
                )
                .fetch_one(&self.pool)
                .await
                .context("read idempotency key")?;
                return Ok(CreateOnce::Existing {
                    batch_id: BatchId(first.batch_id),
                    same_request: first.request_hash == idem.request_hash,
                    response: first.response,
                });
            }
        }
        if let Some(url) = batch.webhook_url {
            sqlx::query!(
                "INSERT INTO webhook_deliveries (batch_id, url, event_id) VALUES ($1, $2, $3)",
                batch.id.0,
                url,
                uuid::Uuid::new_v4(),
            )
            .execute(&mut *tx)
            .await
            .context("arm batch webhook")?;
        }
        let item_ids = match ids {
            Some(ids) => {
                copy_items(&mut tx, batch.id, items, ids).await?;
                ids.to_vec()
            }
            None if items.len() <= SMALL_BATCH => {
                insert_small_items(&mut tx, batch.id, items).await?
            }
            None => {
                let ids = draw_item_ids(&mut *tx, items.len()).await?;
                self.cover_items(ids.last().map_or(0, |i| i.0)).await?;
                copy_items(&mut tx, batch.id, items, &ids).await?;
                ids
            }
        };
        tx.commit().await.context("commit batch")?;
        self.cover_items_after(&item_ids).await;
        Ok(created(item_ids))
    }

    /// Draws `n` item ids from the items' sequence, in one statement. Ids drawn and not used leave a gap, as a rolled-back insert would.
    /// Partitions for them are made before they return.
    pub async fn draw_item_ids(&self, n: usize) -> Result<Vec<ItemId>> {
        let ids = draw_item_ids(&self.pool, n).await?;
        self.cover_items(ids.last().map_or(0, |i| i.0)).await?;
        Ok(ids)
    }

    /// A batch and its items in one statement.
    async fn insert_small_batch(
        &self,
        batch: &NewBatch<'_>,
        total: i32,
        items: &[ItemInput],
    ) -> Result<Vec<ItemId>> {
        let cols = SmallItems::new(items);
        let ids = sqlx::query_scalar!(
            r#"WITH b AS (
                   INSERT INTO batches (id, queue, name, priority, total, options, tenant, webhook_url, traceparent)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $13)
               ),
               ins AS (
                   INSERT INTO items (batch_id, position, url, video_id, title, transcript)
                   SELECT $1, (t.n - 1)::int4, t.url, t.video_id, nullif(t.title, ''), nullif(t.transcript, '')
                   FROM unnest($9::text[], $10::text[], $11::text[], $12::text[])
                        WITH ORDINALITY AS t(url, video_id, title, transcript, n)
                   RETURNING id, position
               )
               SELECT id AS "id!" FROM ins ORDER BY position"#,
            batch.id.0,
            batch.queue,
            batch.name,
            batch.priority.as_str(),
            total,
            batch.options,
            batch.tenant,
            batch.webhook_url,
            &cols.urls,
            &cols.videos,
            &cols.titles,
            &cols.transcripts,
            batch.traceparent,
        )
        .fetch_all(&self.pool)
        .await
        .context("insert batch")?;
        Ok(ids.into_iter().map(ItemId).collect())
    }

    /// A batch with its per-state counts, or `None` if there is no such batch.
    pub async fn batch(&self, id: BatchId) -> Result<Option<BatchView>> {
        let Some(row) = sqlx::query!(
            r#"SELECT id, queue, name, priority AS "priority: Priority",
                      status AS "status: BatchStatus", total, options, tenant, webhook_url,
                      created_at, started_at, finished_at
               FROM batches WHERE id = $1"#,
            id.0
        )
        .fetch_optional(&self.pool)
        .await
        .context("read batch")?
        else {
            return Ok(None);
        };
        let counts = self.counts(id).await?;
        let spend = self
            .batch_spend(&[id])
            .await?
            .pop()
            .map(|(_, s)| s)
            .unwrap_or_default();
        Ok(Some(BatchView {
            id,
            name: row.name,
            queue: row.queue,
            status: row.status,
            priority: row.priority,
            total: i64::from(row.total),
            counts,
            options: row.options,
            tenant: row.tenant,
            webhook_url: row.webhook_url,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            spend,
        }))
    }

    /// Just a batch's status (one row, no counting).
    pub async fn batch_status(&self, id: BatchId) -> Result<Option<BatchStatus>> {
        sqlx::query_scalar!(
            r#"SELECT status AS "status: BatchStatus" FROM batches WHERE id = $1"#,
            id.0
        )
        .fetch_optional(&self.pool)
        .await
        .context("read batch status")
    }

    /// Items of a batch per state, counted from the rows.
    pub async fn counts(&self, id: BatchId) -> Result<Counts> {
        let rows = sqlx::query!(
            r#"SELECT status AS "status: ItemStatus", count(*) AS "n!"
               FROM items WHERE batch_id = $1 GROUP BY status"#,
            id.0
        )
        .fetch_all(&self.pool)
        .await
        .context("count batch items")?;
        Ok(rows.into_iter().map(|r| (r.status, r.n)).collect())
    }

    /// Cancels a batch and every item of it that has not finished, in one transaction.
    /// Workers holding its items find out through Redis and stop; their writes are fenced.
    pub async fn cancel_batch(&self, id: BatchId) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await.context("begin cancel")?;
        let cancelled = sqlx::query!(
            "UPDATE batches SET status = 'cancelled', finished_at = now()
             WHERE id = $1 AND status IN ('pending', 'running')
             RETURNING priority AS \"priority: Priority\"",
            id.0
        )
        .fetch_optional(&mut *tx)
        .await
        .context("cancel batch")?;
        let Some(cancelled) = cancelled else {
            let status = sqlx::query_scalar!(
                r#"SELECT status AS "status: BatchStatus" FROM batches WHERE id = $1"#,
                id.0
            )
            .fetch_optional(&mut *tx)
            .await
            .context("read batch status")?;
            return Ok(match status {
                Some(s) => CancelOutcome::AlreadyFinished(s),
                None => CancelOutcome::NotFound,
            });
        };
        let items = sqlx::query_scalar!(
            "UPDATE items SET status = 'cancelled', finished_at = now(), available_at = NULL
             WHERE batch_id = $1 AND status IN ('queued', 'running')
             RETURNING id",
            id.0
        )
        .fetch_all(&mut *tx)
        .await
        .context("cancel batch items")?
        .into_iter()
        .map(ItemId)
        .collect();
        tx.commit().await.context("commit cancel")?;
        Ok(CancelOutcome::Cancelled {
            items,
            priority: cancelled.priority,
        })
    }

    /// Marks `completed` each of these batches whose items are all terminal; returns those.
    ///
    /// Run after the transaction that finished items has committed: the last of several
    /// concurrent finishers then always sees every item terminal, so a batch is never left
    /// `running` (and the reaper repeats this for batches whose finisher died in between).
    pub async fn complete_batches_if_done(&self, ids: &[BatchId]) -> Result<Vec<BatchId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<uuid::Uuid> = ids.iter().map(|b| b.0).collect();
        let done = sqlx::query_scalar!(
            "UPDATE batches b SET status = 'completed', finished_at = now(),
                    started_at = coalesce(b.started_at, now())
             WHERE b.id = ANY($1) AND b.status IN ('pending', 'running')
               AND NOT EXISTS (SELECT 1 FROM items i
                               WHERE i.batch_id = b.id AND i.status IN ('queued', 'running'))
             RETURNING b.id",
            &ids
        )
        .fetch_all(&self.pool)
        .await
        .context("complete finished batches")?;
        Ok(done.into_iter().map(BatchId).collect())
    }

    /// The unfinished batches of a queue (for the reaper's completion sweep).
    pub async fn open_batch_ids(&self, queue: &str) -> Result<Vec<BatchId>> {
        let ids = sqlx::query_scalar!(
            "SELECT id FROM batches WHERE queue = $1 AND status IN ('pending', 'running')",
            queue
        )
        .fetch_all(&self.pool)
        .await
        .context("list open batches")?;
        Ok(ids.into_iter().map(BatchId).collect())
    }

    /// Failed items across a queue's unfinished batches.
    pub async fn failed_in_open_batches(&self, queue: &str) -> Result<i64> {
        sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM items i JOIN batches b ON b.id = i.batch_id
               WHERE b.queue = $1 AND b.status IN ('pending', 'running') AND i.status = 'failed'"#,
            queue
        )
        .fetch_one(&self.pool)
        .await
        .context("count failed items")
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
}

/// Batches up to this size are written with `INSERT ... unnest`, larger ones with `COPY`.
/// (`COPY` ends with two small writes that can meet Nagle's algorithm and a delayed ACK, a
/// 40 ms stall that only matters for small batches.)
pub const SMALL_BATCH: usize = 1_000;

async fn draw_item_ids<'c>(db: impl sqlx::PgExecutor<'c>, n: usize) -> Result<Vec<ItemId>> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let ids = sqlx::query_scalar!(
        r#"SELECT nextval('items_id_seq') AS "id!" FROM generate_series(1, $1::int8)"#,
        n
    )
    .fetch_all(db)
    .await
    .context("draw item ids")?;
    Ok(ids.into_iter().map(ItemId).collect())
}

/// A small batch's items as column arrays. Empty text means none: NULL array elements cannot
/// be typed by the query macros, and `nullif` turns them back into NULL.
struct SmallItems {
    urls: Vec<String>,
    videos: Vec<String>,
    titles: Vec<String>,
    transcripts: Vec<String>,
}

impl SmallItems {
    fn new(items: &[ItemInput]) -> Self {
        Self {
            urls: items.iter().map(|i| i.url.clone()).collect(),
            videos: items
                .iter()
                .map(|i| i.video_id.as_str().to_owned())
                .collect(),
            titles: items
                .iter()
                .map(|i| i.title.as_deref().map(strip_nul).unwrap_or_default())
                .collect(),
            transcripts: items
                .iter()
                .map(|i| i.transcript.as_deref().map(strip_nul).unwrap_or_default())
                .collect(),
        }
    }
}

/// A small batch's items, inside the batch's transaction.
async fn insert_small_items(
    tx: &mut sqlx::PgConnection,
    batch: BatchId,
    items: &[ItemInput],
) -> Result<Vec<ItemId>> {
    let cols = SmallItems::new(items);
    let ids = sqlx::query_scalar!(
        r#"WITH ins AS (
               INSERT INTO items (batch_id, position, url, video_id, title, transcript)
               SELECT $1, (t.n - 1)::int4, t.url, t.video_id, nullif(t.title, ''), nullif(t.transcript, '')
               FROM unnest($2::text[], $3::text[], $4::text[], $5::text[])
                    WITH ORDINALITY AS t(url, video_id, title, transcript, n)
               RETURNING id, position
           )
           SELECT id AS "id!" FROM ins ORDER BY position"#,
        batch.0,
        &cols.urls,
        &cols.videos,
        &cols.titles,
        &cols.transcripts,
    )
    .fetch_all(&mut *tx)
    .await
    .context("insert items")?;
    Ok(ids.into_iter().map(ItemId).collect())
}

/// A large batch's items streamed with `COPY`, inside the batch's transaction, with the ids
/// drawn for them (`ids[i]` is item `i`'s), so nothing has to be read back.
async fn copy_items(
    tx: &mut sqlx::PgConnection,
    batch: BatchId,
    items: &[ItemInput],
    ids: &[ItemId],
) -> Result<()> {
    use std::fmt::Write as _;

    let mut copy = tx
        .copy_in_raw(
            "COPY items (id, batch_id, position, url, video_id, title, transcript) FROM STDIN",
        )
        .await
        .context("start copying items")?;
    let batch_id = batch.to_string();
    let mut buf = String::with_capacity(64 * 1024);
    for (position, (item, id)) in items.iter().zip(ids).enumerate() {
        let _ = write!(buf, "{}\t{batch_id}\t{position}\t", id.0);
        copy_text(&mut buf, Some(&item.url));
        buf.push('\t');
        copy_text(&mut buf, Some(item.video_id.as_str()));
        buf.push('\t');
        copy_text(&mut buf, item.title.as_deref());
        buf.push('\t');
        copy_text(&mut buf, item.transcript.as_deref());
        buf.push('\n');
        if buf.len() >= 60 * 1024 {
            copy.send(buf.as_bytes()).await.context("copy items")?;
            buf.clear();
        }
    }
    if !buf.is_empty() {
        copy.send(buf.as_bytes()).await.context("copy items")?;
    }
    copy.finish().await.context("finish copying items")?;
    Ok(())
}

fn strip_nul(s: &str) -> String {
    s.replace('\0', "")
}

/// Appends a value in `COPY ... FROM STDIN` text format (`\N` for NULL, backslash escapes).
fn copy_text(buf: &mut String, value: Option<&str>) {
    let Some(value) = value else {
        buf.push_str("\\N");
        return;
    };
    for c in value.chars() {
        match c {
            '\\' => buf.push_str("\\\\"),
            '\t' => buf.push_str("\\t"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\0' => {} // Postgres text cannot hold NUL; drop it rather than fail the batch.
            c => buf.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::copy_text;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut buf = String::new();
        copy_text(&mut buf, Some("a\tb\nc\\d\r\0e"));
        buf.push('|');
        copy_text(&mut buf, None);
        assert_eq!(buf, "a\\tb\\nc\\\\d\\re|\\N");
    }
}

/// One item as `abridge status` and the API show it.
#[derive(Clone, Debug, Serialize)]
pub struct ItemView {
    pub id: ItemId,
    pub batch_id: BatchId,
    pub position: i32,
    pub url: String,
    pub video_id: String,
    pub title: Option<String>,
    pub status: abridge_core::ItemStatus,
    pub attempts: i32,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub summary: Option<String>,
    pub result_meta: Option<serde_json::Value>,
    pub worker_id: Option<uuid::Uuid>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Store {
    /// Items of a batch in input order, from position `from` on, optionally of one status.
    pub async fn items_of(
        &self,
        batch: BatchId,
        status: Option<abridge_core::ItemStatus>,
        from: i32,
        limit: i64,
    ) -> Result<Vec<ItemView>> {
        let rows = sqlx::query_as!(
            ItemRow,
            r#"SELECT id, batch_id, position, url, video_id, title, status AS "status: ItemStatus",
                      attempts, error_kind, error_message, summary, result_meta, worker_id,
                      queued_at, started_at, finished_at
               FROM items
               WHERE batch_id = $1 AND position >= $2 AND ($3::text IS NULL OR status = $3)
               ORDER BY position
               LIMIT $4"#,
            batch.0,
            from,
            status.map(|s| s.as_str()),
            limit,
        )
        .fetch_all(&self.pool)
        .await
        .context("list batch items")?;
        Ok(rows.into_iter().map(ItemView::from).collect())
    }
}

/// An `items` row as selected for an [`ItemView`].
pub(crate) struct ItemRow {
    pub id: i64,
    pub batch_id: uuid::Uuid,
    pub position: i32,
    pub url: String,
    pub video_id: String,
    pub title: Option<String>,
    pub status: ItemStatus,
    pub attempts: i32,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub summary: Option<String>,
    pub result_meta: Option<serde_json::Value>,
    pub worker_id: Option<uuid::Uuid>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<ItemRow> for ItemView {
    fn from(r: ItemRow) -> Self {
        ItemView {
            id: ItemId(r.id),
            batch_id: BatchId(r.batch_id),
            position: r.position,
            url: r.url,
            video_id: r.video_id,
            title: r.title,
            status: r.status,
            attempts: r.attempts,
            error_kind: r.error_kind,
            error_message: r.error_message,
            summary: r.summary,
            result_meta: r.result_meta,
            worker_id: r.worker_id,
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        }
    }
}
