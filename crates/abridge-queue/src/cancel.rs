//! Cancelling a batch (`cancel.lua`): its items leave the queue, and its holders are told.

use std::time::Duration;

use abridge_core::{BatchId, ItemId, Priority};

use crate::{Context, Queue, Result, millis, scripts};

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
        let mut conn = self.conn("cancel batch").await?;
        let mut dropped = 0;
        let mut chunks = items.chunks(CANCEL_CHUNK);
        let mut first = true;
        loop {
            let chunk = chunks.next();
            if chunk.is_none() && !first {
                return Ok(dropped);
            }
            let mut inv = scripts::CANCEL.prepare_invoke();
            inv.key(self.keys.rotation_for(priority))
                .key(self.keys.ready(batch))
                .key(self.keys.cancelled(batch))
                .key(&self.keys.delayed)
                .key(&self.keys.delayed_places)
                .arg(batch.to_string())
                .arg(millis(CANCEL_MARKER_TTL))
                .arg(&self.keys.events)
                .arg(if first { "1" } else { "0" })
                .arg(&self.keys.prefix)
                .arg(priority.rank());
            for id in chunk.unwrap_or_default() {
                inv.arg(id.0);
            }
            let n: i64 = inv.invoke_async(&mut conn).await.context("cancel batch")?;
            dropped += n;
            first = false;
        }
    }
}
