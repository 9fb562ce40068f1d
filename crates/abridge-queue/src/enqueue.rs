//! Making a batch's items ready (`enqueue.lua`), or staging them first and making them ready
//! once Postgres has them (`activate.lua`).

use std::time::Duration;

use abridge_core::{BatchId, ItemId, Priority};

use crate::{Context, Queue, Result, Share, millis, scripts};

/// A staged batch lives this long without being activated. Far longer than writing any batch
/// takes; if it expires first anyway, activation finds it gone and the items are enqueued.
const STAGED_TTL: Duration = Duration::from_secs(3600);

/// Item ids per command when a batch's items are pushed or staged: big enough that 100,000
/// items take five commands, small enough that no single command holds Redis for long.
const PUSH_CHUNK: usize = 20_000;

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
        let mut conn = self.conn("enqueue items").await?;
        for (chunk_no, chunk) in item_ids.chunks(PUSH_CHUNK).enumerate() {
            let mut inv = scripts::ENQUEUE.prepare_invoke();
            inv.key(self.keys.rotation_for(priority))
                .key(self.keys.ready(batch))
                .key(&self.keys.wake)
                .key(self.keys.cancelled(batch))
                .arg(batch.to_string());
            self.share_args(&mut inv, priority, share);
            for (i, id) in chunk.iter().enumerate() {
                inv.arg(chunk_no * PUSH_CHUNK + i).arg(id.0);
            }
            inv.invoke_async::<i64>(&mut conn)
                .await
                .context("enqueue items")?;
        }
        Ok(())
    }

    /// Writes a large new batch's items (`item_ids[i]` has position `i`) where no claim sees
    /// them, while Postgres writes their rows; [`Queue::activate`] makes them ready once the
    /// rows are committed. The staged set expires after `STAGED_TTL` if that never happens
    /// (the enqueuer died: the reconciler queues a committed batch's items).
    pub async fn stage(&self, batch: BatchId, item_ids: &[ItemId]) -> Result<()> {
        let key = self.keys.staged(batch);
        let mut conn = self.conn("stage items").await?;
        let mut pipe = redis::pipe();
        for (chunk_no, chunk) in item_ids.chunks(PUSH_CHUNK).enumerate() {
            let cmd = pipe.cmd("ZADD").arg(&key);
            for (i, id) in chunk.iter().enumerate() {
                cmd.arg(chunk_no * PUSH_CHUNK + i).arg(id.0);
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
        let mut inv = scripts::ACTIVATE.prepare_invoke();
        inv.key(self.keys.rotation_for(priority))
            .key(self.keys.ready(batch))
            .key(&self.keys.wake)
            .key(self.keys.cancelled(batch))
            .key(self.keys.staged(batch))
            .arg(batch.to_string());
        self.share_args(&mut inv, priority, share);
        let n: i64 = inv
            .invoke_async(&mut conn)
            .await
            .context("activate items")?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The arguments every script that records a batch's owner takes after the batch id:
    /// PREFIX, rank, owner, weight, limit on items in flight (0: none).
    pub(crate) fn share_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        priority: Priority,
        share: Share<'_>,
    ) {
        inv.arg(&self.keys.prefix)
            .arg(priority.rank())
            .arg(share.owner())
            .arg(share.weight)
            .arg(share.max_in_flight.unwrap_or(0));
    }

    /// Drops a staged batch whose rows were not written.
    pub async fn unstage(&self, batch: BatchId) -> Result<()> {
        let mut conn = self.conn("unstage items").await?;
        redis::cmd("DEL")
            .arg(self.keys.staged(batch))
            .query_async::<()>(&mut conn)
            .await
            .context("unstage items")?;
        Ok(())
    }
}
