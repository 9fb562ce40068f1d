//! Cancelling a batch (`cancel.lua`): its items leave the queue, and its holders are told.

use std::time::Duration;

use abridge_core::{BatchId, ItemId, Priority};

use crate::{Context, Queue, Result, ShardId, millis, scripts};

/// Cancel markers outlive any lease by far, so a worker always sees its batch cancelled.
const CANCEL_MARKER_TTL: Duration = Duration::from_secs(24 * 3600);

/// Item ids per cancel call: one script call stays short however large the batch.
const CANCEL_CHUNK: usize = 5_000;

impl Queue {
    /// Stops handing out a batch's items and tells the workers holding some to stop. `items`
    /// are the batch's unfinished items (those that may wait to retry): the cost is theirs,
    /// never the other batches' delayed retries.
    pub async fn cancel_batch(
        &self,
        batch: BatchId,
        priority: Priority,
        items: &[ItemId],
    ) -> Result<i64> {
        self.refresh_shards().await?;
        let mut conn = self.conn("cancel batch").await?;
        let mut dropped = 0;
        // Every shard may hold some of the batch (retries wait where their item was claimed):
        // each is given the whole list, which costs the batch's own items per shard.
        for shard in self.active_shards() {
            let keys = self.shard_keys(shard);
            let mut chunks = items.chunks(CANCEL_CHUNK);
            let mut first = true;
            loop {
                let chunk = chunks.next();
                if chunk.is_none() && !first {
                    break;
                }
                let mut inv = scripts::CANCEL.prepare_invoke();
                inv.key(keys.rotation_for(priority))
                    .key(keys.ready(batch))
                    .key(keys.cancelled(batch))
                    .key(&keys.delayed)
                    .key(&keys.delayed_places)
                    .arg(batch.to_string())
                    .arg(millis(CANCEL_MARKER_TTL))
                    // Holders are told once, by the first shard's call.
                    .arg(if shard == ShardId::FIRST {
                        self.keys.events.as_str()
                    } else {
                        ""
                    })
                    .arg(if first { "1" } else { "0" })
                    .arg(&keys.prefix)
                    .arg(priority.rank());
                for id in chunk.unwrap_or_default() {
                    inv.arg(id.0);
                }
                let n: i64 = inv.invoke_async(&mut conn).await.context("cancel batch")?;
                dropped += n;
                first = false;
            }
        }
        Ok(dropped)
    }
}
