//! Making a batch's items ready (`enqueue.lua`), or staging them first and making them ready
//! once Postgres has them (`activate.lua`).

use std::time::Duration;

use abridge_core::{BatchId, ItemId, Priority};

use crate::shards::wake_key;
use crate::{Context, Keys, Queue, Result, ShardId, Share, millis, scripts};

/// A staged batch lives this long without being activated. Far longer than writing any batch
/// takes; if it expires first anyway, activation finds it gone and the items are enqueued.
const STAGED_TTL: Duration = Duration::from_secs(3600);

/// Item ids per command when a batch's items are pushed or staged: big enough that 100,000
/// items take five commands, small enough that no single command holds Redis for long.
const PUSH_CHUNK: usize = 20_000;

/// A batch's items dealt out to the shards: per shard, `(position, item)` in position order.
fn by_shard(
    queue: &Queue,
    batch: BatchId,
    item_ids: &[ItemId],
) -> Vec<(ShardId, Vec<(usize, i64)>)> {
    let mut out: Vec<(ShardId, Vec<(usize, i64)>)> =
        queue.layout().iter().map(|s| (*s, Vec::new())).collect();
    for (position, id) in item_ids.iter().enumerate() {
        let shard = queue.placement_shard(batch, position as i32);
        if let Some((_, items)) = out.iter_mut().find(|(s, _)| *s == shard) {
            items.push((position, id.0));
        }
    }
    out.retain(|(_, items)| !items.is_empty());
    out
}

impl Queue {
    /// Makes a new batch's items ready, in input order (`item_ids[i]` has position `i`), in
    /// `share`'s turn.
    pub async fn enqueue(
        &self,
        batch: BatchId,
        priority: Priority,
        share: Share<'_>,
        item_ids: &[ItemId],
    ) -> Result<()> {
        self.ensure_recorded().await?;
        let mut conn = self.conn("enqueue items").await?;
        for (shard, items) in by_shard(self, batch, item_ids) {
            let keys = self.shard_keys(shard);
            for chunk in items.chunks(PUSH_CHUNK) {
                let mut inv = scripts::ENQUEUE.prepare_invoke();
                inv.key(keys.rotation_for(priority))
                    .key(keys.ready(batch))
                    .key(keys.cancelled(batch));
                wake_key(&mut inv, &keys, shard);
                inv.arg(batch.to_string());
                self.share_args(&mut inv, &keys, priority, share);
                for (position, id) in chunk {
                    inv.arg(position).arg(id);
                }
                let added = inv
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .context("enqueue items")?;
                self.wake_for(&mut conn, shard, added).await?;
            }
        }
        Ok(())
    }

    /// Writes a large new batch's items (`item_ids[i]` has position `i`) where no claim sees
    /// them, while Postgres writes their rows; [`Queue::activate`] makes them ready once the
    /// rows are committed. The staged sets expire after `STAGED_TTL` if that never happens
    /// (the enqueuer died: the reconciler queues a committed batch's items).
    pub async fn stage(&self, batch: BatchId, item_ids: &[ItemId]) -> Result<()> {
        self.ensure_recorded().await?;
        let mut conn = self.conn("stage items").await?;
        for (shard, items) in by_shard(self, batch, item_ids) {
            let key = self.shard_keys(shard).staged(batch);
            let mut pipe = redis::pipe();
            for chunk in items.chunks(PUSH_CHUNK) {
                let cmd = pipe.cmd("ZADD").arg(&key);
                for (position, id) in chunk {
                    cmd.arg(position).arg(id);
                }
                cmd.ignore();
            }
            pipe.cmd("PEXPIRE")
                .arg(&key)
                .arg(millis(STAGED_TTL))
                .ignore();
            pipe.query_async::<()>(&mut conn)
                .await
                .context("stage items")?;
        }
        Ok(())
    }

    /// Makes a staged batch's items ready (see `lua/activate.lua`). Returns how many were
    /// staged; fewer than the batch has means the staging was lost, and the caller enqueues
    /// the items with [`Queue::enqueue`].
    pub async fn activate(
        &self,
        batch: BatchId,
        priority: Priority,
        share: Share<'_>,
    ) -> Result<usize> {
        let mut conn = self.conn("activate items").await?;
        let mut total = 0;
        for &shard in self.layout() {
            let keys = self.shard_keys(shard);
            let mut inv = scripts::ACTIVATE.prepare_invoke();
            inv.key(keys.rotation_for(priority))
                .key(keys.ready(batch))
                .key(keys.cancelled(batch))
                .key(keys.staged(batch));
            wake_key(&mut inv, &keys, shard);
            inv.arg(batch.to_string());
            self.share_args(&mut inv, &keys, priority, share);
            let n: i64 = inv
                .invoke_async(&mut conn)
                .await
                .context("activate items")?;
            self.wake_for(&mut conn, shard, n).await?;
            total += usize::try_from(n).unwrap_or(0);
        }
        Ok(total)
    }

    /// The arguments every script that records a batch's owner takes after the batch id:
    /// the shard's PREFIX, rank, owner, weight, limit on items in flight (0: none). A limit
    /// holds per shard: each gets an equal part of it, rounded up, so the fleet-wide total
    /// may exceed it by less than the number of shards.
    pub(crate) fn share_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        keys: &Keys,
        priority: Priority,
        share: Share<'_>,
    ) {
        inv.arg(&keys.prefix)
            .arg(priority.rank())
            .arg(share.owner())
            .arg(share.weight)
            .arg(self.shard_cap(share.max_in_flight));
    }

    /// A shard's part of a limit on items in flight (0: none): an equal part, rounded up.
    pub(crate) fn shard_cap(&self, max_in_flight: Option<i32>) -> i32 {
        let shards = i32::try_from(self.layout().len()).unwrap_or(1).max(1);
        // Rounded up without `cap + shards - 1`, which a cap near i32::MAX would overflow.
        max_in_flight.map_or(0, |cap| cap / shards + i32::from(cap % shards > 0))
    }

    /// Drops a staged batch whose rows were not written.
    pub async fn unstage(&self, batch: BatchId) -> Result<()> {
        let mut conn = self.conn("unstage items").await?;
        for &shard in self.layout() {
            redis::cmd("DEL")
                .arg(self.shard_keys(shard).staged(batch))
                .query_async::<()>(&mut conn)
                .await
                .context("unstage items")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abridge_core::settings::Secret;

    #[test]
    fn a_shards_part_of_a_cap_is_rounded_up_and_never_overflows() {
        let queue = |n| {
            Queue::connect(&Secret::new("redis://127.0.0.1:1/"), "t", "q", 1)
                .unwrap()
                .with_shards(n)
        };
        assert_eq!(queue(1).shard_cap(Some(i32::MAX)), i32::MAX);
        assert_eq!(queue(3).shard_cap(Some(i32::MAX)), i32::MAX / 3 + 1);
        assert_eq!(queue(3).shard_cap(Some(3)), 1);
        assert_eq!(queue(3).shard_cap(Some(4)), 2);
        assert_eq!(queue(3).shard_cap(Some(1)), 1);
        assert_eq!(queue(3).shard_cap(None), 0);
    }
}
