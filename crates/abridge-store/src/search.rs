//! Search over finished items: `websearch_to_tsquery` (quoted phrases, `or`, `-word`) against
//! the words of an item's title, summary and error kind and its video id, served by the
//! `items_search` index (migration 0012). Items that have not finished are not searched.

use abridge_core::{BatchId, ItemStatus};

use crate::batches::{ItemRow, ItemView};
use crate::{Context, Result, Store};

/// The search's text expression; it must match the index's exactly for the index to serve.
macro_rules! document {
    () => {
        "to_tsvector('simple', coalesce(i.title, '') || ' ' || coalesce(i.summary, '') || ' ' \
         || coalesce(i.error_kind, '') || ' ' || i.video_id)"
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
        let rows = sqlx::query(concat!(
            "SELECT i.id, i.batch_id, i.position, i.url, i.video_id, i.title, i.status,
                    i.attempts, i.error_kind, i.error_message, i.summary, i.result_meta,
                    i.worker_id, i.queued_at, i.started_at, i.finished_at, b.name AS batch_name
             FROM items i JOIN batches b ON b.id = i.batch_id
             WHERE i.status IN ('succeeded', 'failed', 'cancelled')
               AND ",
            document!(),
            " @@ websearch_to_tsquery('simple', $1)
               AND ($2::text IS NULL OR b.tenant = $2)
               AND ($3::text IS NULL OR i.status = $3)
               AND ($4::bigint IS NULL OR i.id < $4)
             ORDER BY i.id DESC
             LIMIT $5"
        ))
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
        let row = sqlx::query(concat!(
            "SELECT count(*) FILTER (WHERE i.status = 'failed') AS failed,
                    count(DISTINCT i.batch_id) FILTER (WHERE b.status IN ('pending', 'running'))
                        AS open_batches
             FROM items i JOIN batches b ON b.id = i.batch_id
             WHERE i.status IN ('succeeded', 'failed', 'cancelled')
               AND ",
            document!(),
            " @@ websearch_to_tsquery('simple', $1)
               AND ($2::text IS NULL OR b.tenant = $2)"
        ))
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
        let rows = sqlx::query(concat!(
            "SELECT i.batch_id, i.id FROM items i JOIN batches b ON b.id = i.batch_id
             WHERE i.status = 'failed' AND ",
            document!(),
            " @@ websearch_to_tsquery('simple', $1)
               AND ($2::text IS NULL OR b.tenant = $2)
             ORDER BY i.id LIMIT $3"
        ))
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
        let rows = sqlx::query(concat!(
            "SELECT DISTINCT i.batch_id FROM items i JOIN batches b ON b.id = i.batch_id
             WHERE i.status IN ('succeeded', 'failed', 'cancelled')
               AND b.status IN ('pending', 'running') AND ",
            document!(),
            " @@ websearch_to_tsquery('simple', $1)
               AND ($2::text IS NULL OR b.tenant = $2)"
        ))
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
