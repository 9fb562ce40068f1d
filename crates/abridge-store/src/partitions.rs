//! `items` is partitioned by id range (migration 0014), so a new batch's items share fresh
//! pages in the newest partition instead of filling the gaps of millions of old ones.
//!
//! Partitions are made ahead of the ids (`items_cover`, called by every writer of items) and
//! dropped by the pruner once retention has emptied them.

use std::sync::atomic::Ordering;

use abridge_core::ItemId;

use crate::{Context, Result, Store};

impl Store {
    /// Makes sure the partitions reach well past `max_id`, the highest id about to be
    /// inserted (or just inserted with an id from the sequence). Usually no round trip: the
    /// store remembers below which id the partitions were far enough ahead.
    pub(crate) async fn cover_items(&self, max_id: i64) -> Result<()> {
        if max_id < self.items_covered_below.load(Ordering::Relaxed) {
            return Ok(());
        }
        let below = sqlx::query_scalar!(r#"SELECT items_cover($1) AS "below!""#, max_id)
            .fetch_one(&self.pool)
            .await
            .context("make item partitions")?;
        self.items_covered_below.fetch_max(below, Ordering::Relaxed);
        Ok(())
    }

    /// After items took their ids from the sequence's default: partitions are made ahead of
    /// them for the next writer. The items are stored, so a failure here is only logged (the
    /// next writer, or the one after, makes them: they are made half a partition ahead).
    pub(crate) async fn cover_items_after(&self, ids: &[ItemId]) {
        let max = ids.iter().map(|i| i.0).max().unwrap_or(0);
        if let Err(e) = self.cover_items(max).await {
            tracing::warn!(error = %e, "cannot make item partitions ahead; the next enqueue tries again");
        }
    }

    /// Partitions that hold no rows and lie wholly a partition's width below the ids being
    /// drawn (so no writer still holds ids in them): the pruner drops these.
    pub async fn empty_item_partitions(&self) -> Result<Vec<String>> {
        sqlx::query_scalar!(r#"SELECT items_empty_partitions() AS "name!""#)
            .fetch_all(&self.pool)
            .await
            .context("list emptied item partitions")
    }

    /// Detaches and drops partition `name` if it still holds no rows. `false`: it had rows,
    /// or its lock on `items` was not free soon enough (see `items_drop_partition`).
    pub async fn drop_item_partition(&self, name: &str) -> Result<bool> {
        sqlx::query_scalar!(r#"SELECT items_drop_partition($1) AS "dropped!""#, name)
            .fetch_one(&self.pool)
            .await
            .context("drop an item partition")
    }
}
