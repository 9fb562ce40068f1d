//! Search over finished items: `websearch_to_tsquery` (quoted phrases, `or`, `-word`) against
//! the words of an item's title, summary and error kind and its video id, in the `simple`
//! configuration (no stemming: summaries come in every language).
//!
//! The index (`item_search`, migration 0012) is filled off the outcome path by
//! [`Store::index_for_search`], in order of `finished_at`: an item becomes findable a moment
//! after it finished, and the workers' writes pay nothing for search. An entry counts only
//! while its `finished_at` is the item's (a retried item's old entry is ignored until the
//! indexer replaces it).
//!
//! Searches are not prepared statements (`persistent(false)`): a generic plan cannot tell how
//! many entries are the caller's, and might read other tenants' entries for a common word; a
//! plan made for the values starts from the tenant's own.

use abridge_core::{BatchId, ItemStatus};

use crate::batches::{ItemRow, ItemView};
use crate::{Context, Result, Store};

/// The join that keeps only current entries, and the match; `$1` is the query text, `$2` the
/// tenant. A tenant's query names its tenant plainly (no `$2 IS NULL OR`), so that its plan can
/// start from the tenant's own entries and cost what the tenant's own items cost.
macro_rules! found {
    (tenant) => {
        found!("s.tenant = $2")
    };
    (any) => {
        found!("$2::text IS NULL")
    };
    ($owner:literal) => {
        concat!(
            "FROM item_search s
             JOIN items i ON i.id = s.item_id AND i.finished_at = s.finished_at
             JOIN batches b ON b.id = s.batch_id
             WHERE s.doc @@ websearch_to_tsquery('simple', $1)
               AND ",
            $owner,
            " AND i.status IN ('succeeded', 'failed', 'cancelled')"
        )
    };
}

/// The same statement for a tenant (`$2` its name) or for every batch (`$2` NULL).
macro_rules! owned {
    ($tenant:expr, $($part:tt)*) => {
        if $tenant.is_some() {
            owned!(@ tenant, $($part)*)
        } else {
            owned!(@ any, $($part)*)
        }
    };
    (@ $who:ident, $head:literal, found, $tail:literal) => {
        concat!($head, found!($who), $tail)
    };
}

/// One found item, with its batch's name.
#[derive(Clone, Debug)]
pub struct SearchHit {
    pub item: ItemView,
    pub batch_name: Option<String>,
}

/// How many found items a bulk action would touch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SearchCounts {
    /// Found items that failed (a bulk retry's).
    pub failed: i64,
    /// Batches, still open, holding a found item (a bulk cancel's).
    pub open_batches: i64,
}

impl Store {
    /// Copies up to `limit` items finished since the cursor into the search index, in order
    /// of (`finished_at`, id), and moves the cursor past them; returns how many. Items are
    /// taken only up to the start of the oldest transaction still open: `finished_at` is its
    /// writer's `now()`, so no item can still commit below that line, and none is skipped.
    /// One indexer at a time (a transaction-scoped advisory lock); another returns 0.
    pub async fn index_for_search(&self, limit: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await.context("begin search indexing")?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext('abridge.item_search'))")
                .fetch_one(&mut *tx)
                .await
                .context("take the search indexer's turn")?;
        if !locked {
            return Ok(0);
        }
        // The horizon first, in a statement of its own: the copy's snapshot, taken after it,
        // then sees every transaction that had started before the horizon and has committed.
        let horizon: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity
             WHERE datname = current_database() AND backend_type = 'client backend'
               AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
        )
        .persistent(false)
        .fetch_one(&mut *tx)
        .await
        .context("find the search indexer's horizon")?;
        let done: (i64,) = sqlx::query_as(
            "WITH cursor AS (SELECT at, item_id FROM search_cursor),
                  taken AS (
                      SELECT i.id, i.batch_id, b.tenant, i.finished_at,
                             to_tsvector('simple', coalesce(i.title, '') || ' ' || coalesce(i.summary, '')
                                 || ' ' || coalesce(i.error_kind, '') || ' ' || i.video_id) AS doc
                      FROM items i JOIN batches b ON b.id = i.batch_id, cursor c
                      WHERE i.finished_at IS NOT NULL
                        AND (i.finished_at, i.id) > (c.at, c.item_id)
                        AND i.finished_at < coalesce($2, clock_timestamp())
                      ORDER BY i.finished_at, i.id
                      LIMIT $1),
                  written AS (
                      INSERT INTO item_search (item_id, batch_id, tenant, finished_at, doc)
                      SELECT id, batch_id, tenant, finished_at, doc FROM taken
                      ON CONFLICT (item_id) DO UPDATE
                          SET finished_at = EXCLUDED.finished_at, doc = EXCLUDED.doc
                      RETURNING 1),
                  moved AS (
                      UPDATE search_cursor SET (at, item_id) = (
                          SELECT finished_at, id FROM taken ORDER BY finished_at DESC, id DESC LIMIT 1)
                      WHERE EXISTS (SELECT 1 FROM taken)
                      RETURNING 1)
             SELECT (SELECT count(*) FROM written) + 0 * (SELECT count(*) FROM moved)",
        )
        .bind(limit)
        .bind(horizon)
        .fetch_one(&mut *tx)
        .await
        .context("index finished items for search")?;
        tx.commit().await.context("commit search indexing")?;
        Ok(done.0 as u64)
    }

    /// Finished items matching `query`, of `tenant`'s batches (every batch for `None`), newest
    /// first, from before item id `before`.
    pub async fn search_items(
        &self,
        tenant: Option<&str>,
        query: &str,
        status: Option<ItemStatus>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SearchHit>> {
        let rows = sqlx::query(owned!(
            tenant,
            "SELECT i.id, i.batch_id, i.position, i.url, i.video_id, i.title, i.status,
                    i.attempts, i.error_kind, i.error_message, i.summary, i.result_meta,
                    i.worker_id, i.queued_at, i.started_at, i.finished_at, b.name AS batch_name ",
            found,
            " AND ($3::text IS NULL OR i.status = $3)
              AND ($4::bigint IS NULL OR i.id < $4)
             ORDER BY i.id DESC
             LIMIT $5"
        ))
        .persistent(false)
        .bind(query)
        .bind(tenant)
        .bind(status.map(|s| s.as_str()))
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("search items")?;
        use sqlx::Row as _;
        rows.into_iter()
            .map(|r| {
                let item = ItemRow {
                    id: r.try_get("id")?,
                    batch_id: r.try_get("batch_id")?,
                    position: r.try_get("position")?,
                    url: r.try_get("url")?,
                    video_id: r.try_get("video_id")?,
                    title: r.try_get("title")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    error_kind: r.try_get("error_kind")?,
                    error_message: r.try_get("error_message")?,
                    summary: r.try_get("summary")?,
                    result_meta: r.try_get("result_meta")?,
                    worker_id: r.try_get("worker_id")?,
                    queued_at: r.try_get("queued_at")?,
                    started_at: r.try_get("started_at")?,
                    finished_at: r.try_get("finished_at")?,
                };
                Ok(SearchHit {
                    item: item.into(),
                    batch_name: r.try_get("batch_name")?,
                })
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .context("read found items")
    }

    /// What a bulk action on `query`'s items would touch.
    pub async fn search_counts(&self, tenant: Option<&str>, query: &str) -> Result<SearchCounts> {
        use sqlx::Row as _;
        let row = sqlx::query(owned!(
            tenant,
            "SELECT count(*) FILTER (WHERE i.status = 'failed') AS failed,
                    count(DISTINCT i.batch_id) FILTER (WHERE b.status IN ('pending', 'running'))
                        AS open_batches ",
            found,
            ""
        ))
        .persistent(false)
        .bind(query)
        .bind(tenant)
        .fetch_one(&self.pool)
        .await
        .context("count found items")?;
        Ok(SearchCounts {
            failed: row.try_get("failed").context("count found items")?,
            open_batches: row.try_get("open_batches").context("count found items")?,
        })
    }

    /// The failed items matching `query` (at most `limit`), with their batches: a bulk retry's.
    pub async fn search_failed(
        &self,
        tenant: Option<&str>,
        query: &str,
        limit: i64,
    ) -> Result<Vec<(BatchId, abridge_core::ItemId)>> {
        use sqlx::Row as _;
        let rows = sqlx::query(owned!(
            tenant,
            "SELECT i.batch_id, i.id ",
            found,
            " AND i.status = 'failed' ORDER BY i.id LIMIT $3"
        ))
        .persistent(false)
        .bind(query)
        .bind(tenant)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("find failed items")?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    BatchId(r.try_get("batch_id")?),
                    abridge_core::ItemId(r.try_get("id")?),
                ))
            })
            .collect::<std::result::Result<_, sqlx::Error>>()
            .context("find failed items")
    }

    /// The open batches holding an item matching `query`: a bulk cancel's.
    pub async fn search_open_batches(
        &self,
        tenant: Option<&str>,
        query: &str,
    ) -> Result<Vec<BatchId>> {
        use sqlx::Row as _;
        let rows = sqlx::query(owned!(
            tenant,
            "SELECT DISTINCT i.batch_id ",
            found,
            " AND b.status IN ('pending', 'running')"
        ))
        .persistent(false)
        .bind(query)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .context("find open batches")?;
        rows.into_iter()
            .map(|r| Ok(BatchId(r.try_get("batch_id")?)))
            .collect::<std::result::Result<_, sqlx::Error>>()
            .context("find open batches")
    }
}
