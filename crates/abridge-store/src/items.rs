//! The worker's writes to items. Each is one statement over many items (`unnest` arrays), so a
//! worker's group of claims or results costs one round trip and one commit.
//!
//! Their plans must not depend on statistics, which are always wrong about `items` in one of
//! two ways: a table never analyzed (a fresh database right after a big batch was copied in)
//! looks tiny, and an analyzed mature table says almost no item is `queued` or `running`.
//! Either way the planner expected one row from `items` and rescanned the `unnest` for every
//! item (or scanned every item for each array row): quadratic in the group. So each
//! statement (1) names its ids twice, `i.id = ANY($1)` beside the join on `unnest`, an index
//! condition on the primary key whatever the statistics say, and
//! (2) states the status it expects as a *join* clause (`i.status = CASE ... t.x ... END`),
//! which the planner cannot turn into a badly estimated filter on `items` alone. The plans are
//! then a key lookup and a hash join, linear in the group.
//!
//! The fencing rule (ARCHITECTURE.md, "Leases and fencing"): every write a claim makes is a
//! compare-and-set that a claim taken over cannot pass. Out of `running`: `lease_token =
//! $token AND status = 'running'`. Out of `queued` (a start, or the outcome of an item that
//! never started): `status = 'queued' AND attempts = $attempt - 1`, the count the claim read;
//! every take-over of an unstarted claim counts an attempt, so it moves that count on. And no
//! write of a worker whose session was buried is taken.

use std::time::Duration;

use abridge_core::{BatchId, ErrorKind, ItemId, ItemStatus, LeaseToken, Priority, WorkerId};
use chrono::{DateTime, Utc};

use crate::text::{clean, clean_json};
use crate::{Context, Result, Store, StoreError};

/// An item that this worker has started: its payload, and the batch's options.
#[derive(Clone, Debug)]
pub struct StartedItem {
    pub id: ItemId,
    pub token: LeaseToken,
    pub batch_id: BatchId,
    pub priority: Priority,
    pub position: i32,
    pub url: String,
    pub video_id: String,
    pub title: Option<String>,
    pub transcript: Option<String>,
    /// 1 for the first attempt.
    pub attempt: i32,
    /// When the item last became ready: enqueue-to-start latency is measured from here.
    pub queued_at: DateTime<Utc>,
    pub options: serde_json::Value,
    /// The API tenant that owns the batch; `None` for the operator's (CLI) batches.
    pub tenant: Option<String>,
    /// The W3C `traceparent` stored with the batch at enqueue: the item's work continues
    /// that trace.
    pub traceparent: Option<String>,
    /// The batch was still `pending` when read: the worker marks it running
    /// ([`Store::mark_batches_running`]) beside the item's work, not before it.
    pub batch_pending: bool,
}

pub use abridge_core::Claim;

/// A claimed item's row, as [`Store::read_claimed`] reads it.
struct ClaimedRow {
    id: i64,
    batch_id: uuid::Uuid,
    position: i32,
    url: String,
    video_id: String,
    title: Option<String>,
    transcript: Option<String>,
    attempts: i32,
    queued_at: DateTime<Utc>,
    priority: Priority,
    options: serde_json::Value,
    traceparent: Option<String>,
    tenant: Option<String>,
    batch_pending: bool,
}

/// The result of one attempt, as the worker reports it.
#[derive(Clone, Debug)]
pub enum Outcome {
    Succeeded {
        summary: String,
        /// A title learned while processing; kept only if the item had none.
        title: Option<String>,
        /// How the summary was made (backend, model, tokens, durations).
        meta: serde_json::Value,
    },
    /// A permanent failure: the item fails now.
    Failed { kind: ErrorKind, message: String },
    /// A transient failure: the item is retried after `delay`, or fails if this was its last
    /// allowed attempt.
    Retry {
        kind: ErrorKind,
        message: String,
        delay: Duration,
    },
    /// Not really attempted (a provider's breaker is open, a budget is spent): retry after
    /// `delay` without using up an attempt, and never fail for it.
    Defer {
        kind: ErrorKind,
        message: String,
        delay: Duration,
    },
    /// The item will not be attempted (its batch's cost budget is spent): it ends
    /// `cancelled` with `kind`, and the attempt is refunded.
    Cancelled { kind: ErrorKind, message: String },
    /// Give the item back untouched (graceful shutdown): the attempt is refunded.
    Release,
}

impl Outcome {
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Succeeded { .. } => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::Retry { .. } => "retry",
            Outcome::Defer { .. } => "defer",
            Outcome::Cancelled { .. } => "cancelled",
            Outcome::Release => "release",
        }
    }
}

/// One outcome to write.
#[derive(Clone, Debug)]
pub struct Finish {
    pub item: ItemId,
    /// The claim's token.
    pub token: LeaseToken,
    pub outcome: Outcome,
    /// Whether this claim marked the item `running` ([`Store::start_items`]). If not, the
    /// write applies only while the item is still `queued` with the attempt count the claim
    /// read, and counts the attempt.
    pub started: bool,
    /// The attempt this claim makes ([`Claim::attempt`]): fences an unstarted write.
    pub attempt: i32,
    /// When the attempt began, on this process's monotonic clock. An item never marked
    /// running gets `started_at = now() - began.elapsed()` as the write runs: Postgres's
    /// clock, and the true start however long the outcome waited for its group commit.
    pub began: std::time::Instant,
}

/// Where an item stands after a write, with what Redis needs to place it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRef {
    pub id: ItemId,
    pub batch_id: BatchId,
    pub priority: Priority,
    pub position: i32,
    pub status: ItemStatus,
    /// For a `queued` item waiting to be retried: not before this time.
    pub available_at: Option<DateTime<Utc>>,
}

/// One accepted finish write: where the item stands now. Its priority is the claim's (a
/// batch's priority never changes), so the write need not read the batch for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    pub id: ItemId,
    pub batch_id: BatchId,
    pub position: i32,
    pub status: ItemStatus,
    /// For a `queued` item waiting to be retried: not before this time.
    pub available_at: Option<DateTime<Utc>>,
}

/// What a reclaim did: how many running items it took back, and where every item it was
/// asked about stands now.
#[derive(Clone, Debug, Default)]
pub struct Reclaimed {
    pub reclaimed: u64,
    /// The items it took back (were running under the claim).
    pub ids: Vec<ItemId>,
    pub items: Vec<ItemRef>,
}

/// What `finish_items` did: the writes that held the lease, and the ones fenced out.
#[derive(Clone, Debug, Default)]
pub struct FinishReport {
    pub accepted: Vec<Finished>,
    /// Writes refused because the writer no longer held the item: the item and the status
    /// it was found in. Each is also recorded in `fenced_writes`.
    pub rejected: Vec<(ItemId, LeaseToken, ItemStatus)>,
}

impl Store {
    /// Reads the payload of claimed items that are still `queued`, so a worker can begin
    /// work on them; the others (cancelled, finished, or started under another claim) must be
    /// dropped. Read-only: it is on every item's path to its start, where a write (flipping a
    /// `pending` batch) would cost a large share of the idle enqueue-to-start latency.
    ///
    /// The item is not marked `running` here: see [`Store::start_items`] and
    /// ARCHITECTURE.md ("Deferred starts").
    pub async fn read_claimed(&self, claims: &[(ItemId, LeaseToken)]) -> Result<Vec<StartedItem>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: std::collections::HashMap<ItemId, LeaseToken> =
            claims.iter().copied().collect();
        // An idle worker claims one item at a time: a statement with a scalar id gets a
        // cached generic plan, where the array form below is planned anew on every call. Its
        // status check is written so that the plan cannot use the partial `items_ready_since`
        // index for the id (ARCHITECTURE.md, "Hot statements do not trust statistics").
        let rows = if let [(id, _)] = claims {
            sqlx::query_as!(
                ClaimedRow,
                r#"SELECT i.id, i.batch_id, i.position, i.url, i.video_id, i.title, i.transcript,
                          i.attempts, i.queued_at, b.priority AS "priority: Priority", b.options, b.traceparent, b.tenant,
                          b.status = 'pending' AS "batch_pending!"
                   FROM items i
                   JOIN batches b ON b.id = i.batch_id
                   WHERE i.id = $1
                     AND i.status = CASE WHEN i.id IS NOT NULL THEN 'queued' END"#,
                id.0,
            )
            .fetch_all(&self.fast_pool)
            .await
        } else {
            let ids: Vec<i64> = claims.iter().map(|(id, _)| id.0).collect();
            sqlx::query_as!(
                ClaimedRow,
                r#"SELECT i.id, i.batch_id, i.position, i.url, i.video_id, i.title, i.transcript,
                          i.attempts, i.queued_at, b.priority AS "priority: Priority", b.options, b.traceparent, b.tenant,
                          b.status = 'pending' AS "batch_pending!"
                   FROM unnest($1::bigint[]) AS t(id)
                   JOIN items i ON i.id = t.id
                   JOIN batches b ON b.id = i.batch_id
                   WHERE i.id = ANY($1)
                     AND i.status = CASE WHEN t.id IS NOT NULL THEN 'queued' END"#,
                &ids,
            )
            .fetch_all(&self.fast_pool)
            .await
        }
        .context("read claimed items")?;
        Ok(rows
            .into_iter()
            .map(|r| StartedItem {
                id: ItemId(r.id),
                token: tokens[&ItemId(r.id)],
                batch_id: BatchId(r.batch_id),
                priority: r.priority,
                position: r.position,
                url: r.url,
                video_id: r.video_id,
                title: r.title,
                transcript: r.transcript,
                attempt: r.attempts + 1,
                queued_at: r.queued_at,
                options: r.options,
                tenant: r.tenant,
                traceparent: r.traceparent,
                batch_pending: r.batch_pending,
            })
            .collect())
    }

    /// Marks these batches `running` if they are still `pending` (their first item has
    /// begun). A lost call is harmless: the first outcome or start write flips the batch too.
    /// It locks only batch rows, so it cannot deadlock with a cancel (batch, then items).
    pub async fn mark_batches_running(&self, batches: &[BatchId]) -> Result<()> {
        let ids: Vec<uuid::Uuid> = batches.iter().map(|b| b.0).collect();
        sqlx::query!(
            "UPDATE batches SET status = 'running', started_at = now()
             WHERE id = ANY($1) AND status = 'pending'",
            &ids,
        )
        .execute(&self.fast_pool)
        .await
        .context("mark batches running")?;
        Ok(())
    }

    /// Marks claimed items `running` under their claim's token (`queued` → `running`, one
    /// attempt more), fenced by the attempt count each claim read. Returns the ids that
    /// started; the others are no longer `queued` under that claim (taken over, finished, or
    /// cancelled), or `worker`'s session was buried, and their worker must stop.
    pub async fn start_items(&self, worker: WorkerId, claims: &[Claim]) -> Result<Vec<ItemId>> {
        self.start_items_begun(worker, claims, &[]).await
    }

    /// [`Self::start_items`] for attempts that began `began[i]` (claim `i`): `started_at` is
    /// when the attempt began, on Postgres's clock, not when this deferred write ran.
    pub async fn start_items_begun(
        &self,
        worker: WorkerId,
        claims: &[Claim],
        began: &[std::time::Instant],
    ) -> Result<Vec<ItemId>> {
        if claims.is_empty() {
            return Ok(Vec::new());
        }
        // The connection first: `ran_us` is measured as late as it can be, so that
        // `now() - ran_us` is the attempt's start, not the start plus the wait for a connection.
        let mut conn = self
            .fast_pool
            .acquire()
            .await
            .context("start claimed items")?;
        let ids: Vec<i64> = claims.iter().map(|c| c.item.0).collect();
        let tokens: Vec<i64> = claims.iter().map(|c| c.token.0).collect();
        let attempts: Vec<i32> = claims.iter().map(|c| c.attempt).collect();
        let ran_us: Vec<i64> = began
            .iter()
            .map(|b| i64::try_from(b.elapsed().as_micros()).unwrap_or(i64::MAX))
            .collect();
        // A shorter `ran_us` (none given) is padded with NULLs by `unnest`: started now.
        let started = sqlx::query_scalar!(
            r#"UPDATE items i
               SET status = 'running', lease_token = t.token, worker_id = $3,
                   attempts = i.attempts + 1, available_at = NULL,
                   started_at = now() - coalesce(t.ran_us, 0) * interval '1 microsecond'
               FROM unnest($1::bigint[], $2::bigint[], $4::bigint[], $5::int4[])
                        AS t(id, token, ran_us, attempt)
               WHERE i.id = ANY($1) AND i.id = t.id
                 AND i.status = CASE WHEN t.token IS NOT NULL THEN 'queued' END
                 AND i.attempts = t.attempt - 1
                 AND NOT EXISTS (SELECT 1 FROM worker_sessions s
                                 WHERE s.id = $3 AND s.stopped_at IS NOT NULL)
               RETURNING i.id"#,
            &ids,
            &tokens,
            worker.0,
            &ran_us,
            &attempts,
        )
        .fetch_all(&mut *conn)
        .await
        .context("start claimed items")?;
        Ok(started.into_iter().map(ItemId).collect())
    }

    /// Counts an attempt for claimed items that never started and whose claim is gone (lease
    /// expired, worker dead): `queued` → `queued` with one attempt more, or `failed` with
    /// `kind` once out of attempts. So a poison item that kills its worker before its start
    /// is written still runs out of attempts. Returns how many items it counted.
    pub async fn count_unstarted_attempts(
        &self,
        ids: &[ItemId],
        max_attempts: u32,
        kind: &ErrorKind,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = ids.iter().map(|i| i.0).collect();
        Ok(sqlx::query!(
            "UPDATE items i SET
                 attempts = i.attempts + 1,
                 status = CASE WHEN item_gives_up(i.attempts + 1, $2) THEN 'failed' ELSE 'queued' END,
                 error_kind = CASE WHEN item_gives_up(i.attempts + 1, $2) THEN $3 ELSE i.error_kind END,
                 error_message = CASE WHEN item_gives_up(i.attempts + 1, $2)
                     THEN item_gave_up_message(i.attempts + 1, $4)
                     ELSE i.error_message END,
                 finished_at = CASE WHEN item_gives_up(i.attempts + 1, $2) THEN now() ELSE NULL END,
                 queued_at = now()
             FROM unnest($1::bigint[]) AS t(id)
             WHERE i.id = ANY($1) AND i.id = t.id
               AND i.status = CASE WHEN t.id IS NOT NULL THEN 'queued' END",
            &ids,
            i32::try_from(max_attempts).unwrap_or(i32::MAX),
            kind.as_str(),
            reclaim_message(kind),
        )
        .execute(&self.pool)
        .await
        .context("count attempts of unstarted items")?
        .rows_affected())
    }

    /// Records attempts' outcomes, fenced by each claim's token, in one durable statement.
    /// A `Retry` on an item's last allowed attempt fails it instead.
    pub async fn finish_items(
        &self,
        worker: WorkerId,
        finishes: &[Finish],
        max_attempts: u32,
    ) -> Result<FinishReport> {
        if finishes.is_empty() {
            return Ok(FinishReport::default());
        }
        // The connection first, as in `start_items_begun`: `ran_us` is measured just before
        // the statement goes out.
        let mut conn = self.pool.acquire().await.context("finish items")?;
        let n = finishes.len();
        let mut ids = Vec::with_capacity(n);
        let mut tokens = Vec::with_capacity(n);
        let mut outcomes = Vec::with_capacity(n);
        let mut bumps = Vec::with_capacity(n);
        let mut attempts = Vec::with_capacity(n);
        let mut ran_us = Vec::with_capacity(n);
        let mut summaries = Vec::with_capacity(n);
        let mut titles = Vec::with_capacity(n);
        let mut metas = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut messages = Vec::with_capacity(n);
        let mut delays_ms = Vec::with_capacity(n);
        for Finish {
            item: id,
            token,
            outcome,
            started,
            attempt,
            began,
        } in finishes
        {
            ids.push(id.0);
            tokens.push(token.0);
            // An item that was never marked running gets its attempt counted here.
            bumps.push(i32::from(!*started));
            attempts.push(*attempt);
            ran_us.push(i64::try_from(began.elapsed().as_micros()).unwrap_or(i64::MAX));
            outcomes.push(outcome.name());
            let (title, meta) = match outcome {
                Outcome::Succeeded { title, meta, .. } => (
                    title.as_deref().map(clean).unwrap_or_default(),
                    clean_json(meta),
                ),
                _ => (String::new(), serde_json::Value::Null),
            };
            titles.push(title);
            metas.push(meta);
            let (summary, kind, message, delay) = match outcome {
                Outcome::Succeeded { summary, .. } => (clean(summary), "", String::new(), 0),
                Outcome::Failed { kind, message } | Outcome::Cancelled { kind, message } => {
                    (String::new(), kind.as_str(), clean(message), 0)
                }
                Outcome::Retry {
                    kind,
                    message,
                    delay,
                }
                | Outcome::Defer {
                    kind,
                    message,
                    delay,
                } => (
                    String::new(),
                    kind.as_str(),
                    clean(message),
                    i64::try_from(delay.min(&LONGEST_DELAY).as_millis()).unwrap_or(i64::MAX),
                ),
                Outcome::Release => (String::new(), "", String::new(), 0),
            };
            summaries.push(summary);
            kinds.push(kind.to_owned());
            messages.push(message);
            delays_ms.push(delay);
        }
        let outcomes: Vec<String> = outcomes.into_iter().map(str::to_owned).collect();
        // The outcome decides the new status; a retry on the last allowed attempt fails.
        // `a` is the attempt being finished: the stored count, plus one for an item that
        // finishes without having been marked running (`bump`).
        let rows = sqlx::query!(
            r#"WITH done AS (
                   UPDATE items i SET
                       status = CASE
                           WHEN t.outcome IN ('succeeded', 'failed', 'cancelled') THEN t.outcome
                           WHEN t.outcome = 'retry' AND item_gives_up(i.attempts + t.bump, $8) THEN 'failed'
                           ELSE 'queued' END,
                       summary = CASE WHEN t.outcome = 'succeeded' THEN t.summary ELSE i.summary END,
                       result_meta = CASE WHEN t.outcome = 'succeeded' THEN t.meta ELSE i.result_meta END,
                       title = coalesce(i.title, nullif(t.title, '')),
                       error_kind = CASE
                           WHEN t.outcome IN ('failed', 'retry', 'defer', 'cancelled') THEN t.error_kind
                           WHEN t.outcome = 'succeeded' THEN NULL
                           ELSE i.error_kind END,
                       error_message = CASE
                           WHEN t.outcome = 'retry' AND item_gives_up(i.attempts + t.bump, $8)
                               THEN item_gave_up_message(i.attempts + t.bump, t.error_message)
                           WHEN t.outcome IN ('failed', 'retry', 'defer', 'cancelled') THEN t.error_message
                           WHEN t.outcome = 'succeeded' THEN NULL
                           ELSE i.error_message END,
                       attempts = CASE
                           WHEN t.outcome = 'release' THEN greatest(i.attempts - 1, 0)
                           WHEN t.outcome IN ('defer', 'cancelled') THEN greatest(i.attempts + t.bump - 1, 0)
                           ELSE i.attempts + t.bump END,
                       lease_token = CASE
                           WHEN t.outcome IN ('succeeded', 'failed', 'cancelled') THEN t.token
                           WHEN t.outcome = 'retry' AND item_gives_up(i.attempts + t.bump, $8) THEN t.token
                           ELSE NULL END,
                       worker_id = CASE WHEN t.bump = 1 THEN $11 ELSE i.worker_id END,
                       started_at = CASE WHEN t.bump = 1 THEN now() - t.ran_us * interval '1 microsecond'
                                         ELSE i.started_at END,
                       finished_at = CASE
                           WHEN t.outcome IN ('succeeded', 'failed', 'cancelled') THEN now()
                           WHEN t.outcome = 'retry' AND item_gives_up(i.attempts + t.bump, $8) THEN now()
                           ELSE NULL END,
                       queued_at = CASE
                           WHEN t.outcome IN ('release', 'defer') THEN now()
                           WHEN t.outcome = 'retry' AND NOT item_gives_up(i.attempts + t.bump, $8) THEN now()
                           ELSE i.queued_at END,
                       available_at = CASE
                           WHEN t.outcome = 'retry' AND NOT item_gives_up(i.attempts + t.bump, $8) AND t.delay_ms > 0
                               THEN now() + t.delay_ms * interval '1 millisecond'
                           WHEN t.outcome = 'defer' AND t.delay_ms > 0
                               THEN now() + t.delay_ms * interval '1 millisecond'
                           ELSE NULL END
                   FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                               $6::text[], $7::bigint[], $9::text[], $10::jsonb[], $12::int4[],
                               $13::bigint[], $14::int4[])
                            AS t(id, token, outcome, summary, error_kind, error_message, delay_ms,
                                 title, meta, bump, ran_us, attempt)
                   WHERE i.id = ANY($1) AND i.id = t.id
                     AND i.status = CASE t.bump WHEN 0 THEN 'running' WHEN 1 THEN 'queued' END
                     AND (CASE t.bump WHEN 0 THEN i.lease_token = t.token
                                      ELSE i.attempts = t.attempt - 1 END)
                     AND NOT EXISTS (SELECT 1 FROM worker_sessions s
                                     WHERE s.id = $11 AND s.stopped_at IS NOT NULL)
                   RETURNING i.id, i.batch_id, i.position, i.status, i.available_at
               ),
               -- Mark the batch running if this is its first outcome. SKIP LOCKED: this
               -- statement already holds item locks, and a cancel locks the batch row before
               -- its items; waiting here could deadlock. A skipped flip is done by the cancel
               -- (the batch ends cancelled) or by the other statement holding the row.
               flipped AS (
                   UPDATE batches SET status = 'running', started_at = now()
                   WHERE id IN (SELECT id FROM batches
                                WHERE id = ANY(ARRAY(SELECT DISTINCT batch_id FROM done))
                                  AND status = 'pending'
                                FOR UPDATE SKIP LOCKED)
               )
               SELECT d.id AS "id!", d.batch_id AS "batch_id!", d.position AS "position!",
                      d.status AS "status!: ItemStatus", d.available_at
               FROM done d"#,
            &ids,
            &tokens,
            &outcomes,
            &summaries,
            &kinds,
            &messages,
            &delays_ms,
            i32::try_from(max_attempts).unwrap_or(i32::MAX),
            &titles,
            &metas,
            worker.0,
            &bumps,
            &ran_us,
            &attempts,
        )
        .fetch_all(&mut *conn)
        .await
        .context("finish items")?;
        let accepted: Vec<Finished> = rows
            .into_iter()
            .map(|r| Finished {
                id: ItemId(r.id),
                batch_id: BatchId(r.batch_id),
                position: r.position,
                status: r.status,
                available_at: r.available_at,
            })
            .collect();
        let rejected = if accepted.len() == n {
            Vec::new()
        } else {
            self.record_fenced(worker, finishes, &accepted).await?
        };
        Ok(FinishReport { accepted, rejected })
    }

    /// Records the writes of `finishes` that are not in `accepted` in `fenced_writes`, with
    /// the status each item was found in.
    async fn record_fenced(
        &self,
        worker: WorkerId,
        finishes: &[Finish],
        accepted: &[Finished],
    ) -> Result<Vec<(ItemId, LeaseToken, ItemStatus)>> {
        let accepted: std::collections::HashSet<ItemId> = accepted.iter().map(|f| f.id).collect();
        let refused: Vec<&Finish> = finishes
            .iter()
            .filter(|f| !accepted.contains(&f.item))
            .collect();
        let ids: Vec<i64> = refused.iter().map(|f| f.item.0).collect();
        let tokens: Vec<i64> = refused.iter().map(|f| f.token.0).collect();
        let attempted: Vec<String> = refused
            .iter()
            .map(|f| f.outcome.name().to_owned())
            .collect();
        let rows = sqlx::query!(
            r#"INSERT INTO fenced_writes (item_id, worker_id, lease_token, attempted, found)
               SELECT t.id, $3, t.token, t.attempted, coalesce(i.status, 'missing')
               FROM unnest($1::bigint[], $2::bigint[], $4::text[]) AS t(id, token, attempted)
               LEFT JOIN items i ON i.id = t.id
               RETURNING item_id, lease_token, found"#,
            &ids,
            &tokens,
            worker.0,
            &attempted,
        )
        .fetch_all(&self.pool)
        .await
        .context("record fenced writes")?;
        rows.into_iter()
            .map(|r| {
                // `missing`: the item was deleted (its batch pruned) under the writer.
                let found = match r.found.as_str() {
                    "missing" => ItemStatus::Cancelled,
                    other => other.parse().map_err(|e| StoreError::Query {
                        context: "record fenced writes",
                        cause: sqlx::Error::Decode(Box::new(e)),
                    })?,
                };
                Ok((ItemId(r.item_id), LeaseToken(r.lease_token), found))
            })
            .collect()
    }

    /// Takes items back from claims whose holder is gone (lease expired, or found without a
    /// lease by the reconciler): `running` with that token → `queued`, or `failed` with `kind`
    /// if that was the last allowed attempt. Returns where every claimed item now stands,
    /// including ones that never started (still `queued`), so the caller can requeue them.
    pub async fn reclaim(
        &self,
        claims: &[(ItemId, LeaseToken)],
        max_attempts: u32,
        kind: &ErrorKind,
    ) -> Result<Reclaimed> {
        if claims.is_empty() {
            return Ok(Reclaimed::default());
        }
        let ids: Vec<i64> = claims.iter().map(|(id, _)| id.0).collect();
        let tokens: Vec<i64> = claims.iter().map(|(_, t)| t.0).collect();
        let reclaimed = sqlx::query_scalar!(
            "UPDATE items i SET
                 status = CASE WHEN item_gives_up(i.attempts, $3) THEN 'failed' ELSE 'queued' END,
                 lease_token = CASE WHEN item_gives_up(i.attempts, $3) THEN i.lease_token ELSE NULL END,
                 error_kind = CASE WHEN item_gives_up(i.attempts, $3) THEN $4 ELSE i.error_kind END,
                 error_message = CASE WHEN item_gives_up(i.attempts, $3)
                     THEN item_gave_up_message(i.attempts, $5)
                     ELSE i.error_message END,
                 finished_at = CASE WHEN item_gives_up(i.attempts, $3) THEN now() ELSE NULL END,
                 queued_at = now(), available_at = NULL
             FROM unnest($1::bigint[], $2::bigint[]) AS t(id, token)
             WHERE i.id = ANY($1) AND i.id = t.id AND i.lease_token = t.token
               AND i.status = CASE WHEN t.token IS NOT NULL THEN 'running' END
             RETURNING i.id",
            &ids,
            &tokens,
            i32::try_from(max_attempts).unwrap_or(i32::MAX),
            kind.as_str(),
            reclaim_message(kind),
        )
        .fetch_all(&self.pool)
        .await
        .context("reclaim items")?;
        Ok(Reclaimed {
            reclaimed: reclaimed.len() as u64,
            ids: reclaimed.into_iter().map(ItemId).collect(),
            items: self.item_refs(&ids).await?,
        })
    }

    /// Takes back every item a dead worker held, whatever the token (the session is buried,
    /// so none of its claims is current). Same rules as [`Store::reclaim`].
    pub async fn reclaim_worker_items(
        &self,
        worker: WorkerId,
        max_attempts: u32,
    ) -> Result<Reclaimed> {
        let kind = ErrorKind::WORKER_DIED;
        let ids = sqlx::query_scalar!(
            "UPDATE items i SET
                 status = CASE WHEN item_gives_up(i.attempts, $2) THEN 'failed' ELSE 'queued' END,
                 lease_token = CASE WHEN item_gives_up(i.attempts, $2) THEN i.lease_token ELSE NULL END,
                 error_kind = CASE WHEN item_gives_up(i.attempts, $2) THEN $3 ELSE i.error_kind END,
                 error_message = CASE WHEN item_gives_up(i.attempts, $2)
                     THEN item_gave_up_message(i.attempts, $4)
                     ELSE i.error_message END,
                 finished_at = CASE WHEN item_gives_up(i.attempts, $2) THEN now() ELSE NULL END,
                 queued_at = now(), available_at = NULL
             WHERE i.worker_id = $1 AND i.status = 'running'
             RETURNING i.id",
            worker.0,
            i32::try_from(max_attempts).unwrap_or(i32::MAX),
            kind.as_str(),
            reclaim_message(&kind),
        )
        .fetch_all(&self.pool)
        .await
        .context("reclaim a dead worker's items")?;
        Ok(Reclaimed {
            reclaimed: ids.len() as u64,
            ids: ids.iter().copied().map(ItemId).collect(),
            items: self.item_refs(&ids).await?,
        })
    }

    /// Where these items stand now.
    pub async fn item_refs(&self, ids: &[i64]) -> Result<Vec<ItemRef>> {
        let rows = sqlx::query!(
            r#"SELECT i.id, i.batch_id, b.priority AS "priority: Priority", i.position,
                      i.status AS "status: ItemStatus", i.available_at
               FROM items i JOIN batches b ON b.id = i.batch_id
               WHERE i.id = ANY($1)"#,
            ids
        )
        .fetch_all(&self.pool)
        .await
        .context("read item states")?;
        Ok(rows
            .into_iter()
            .map(|r| ItemRef {
                id: ItemId(r.id),
                batch_id: BatchId(r.batch_id),
                priority: r.priority,
                position: r.position,
                status: r.status,
                available_at: r.available_at,
            })
            .collect())
    }
}

fn reclaim_message(kind: &ErrorKind) -> &'static str {
    if *kind == ErrorKind::WORKER_DIED {
        "its worker stopped heartbeating while holding it"
    } else if *kind == ErrorKind::LEASE_EXPIRED {
        "its lease expired without being renewed"
    } else {
        "it was found running with no live lease"
    }
}

/// The longest wait a write stores: `now() + delay` must stay far inside Postgres's
/// `interval` and `timestamptz`, whatever a caller passes (the worker caps waits far lower).
const LONGEST_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
