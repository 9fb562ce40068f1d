//! Pub/sub: progress notices to API processes, and cancel notices to workers.

use abridge_core::BatchId;
use futures::{Stream, StreamExt};

use crate::{Context, Queue, Result};

impl Queue {
    /// Tells API processes that items of these batches changed state (started, finished,
    /// cancelled, retried): one PUBLISH of space-separated ids, whatever the number of items.
    /// A notice carries no state; listeners read it from Postgres. Pub/sub is lossy, so
    /// listeners also re-read now and then.
    pub async fn publish_progress(&self, batches: &[BatchId]) -> Result<()> {
        if batches.is_empty() {
            return Ok(());
        }
        let message = batches
            .iter()
            .map(BatchId::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let mut conn = self.conn("publish progress").await?;
        redis::cmd("PUBLISH")
            .arg(&self.keys.progress)
            .arg(message)
            .query_async::<i64>(&mut conn)
            .await
            .context("publish progress")?;
        Ok(())
    }

    /// A stream of progress notices (the batches each one names), from the moment it is
    /// subscribed. Ends when the connection drops; the caller re-subscribes and re-reads.
    pub async fn progress_notices(&self) -> Result<impl Stream<Item = Vec<BatchId>> + use<>> {
        let mut pubsub = self
            .connector
            .client()
            .await
            .context("subscribe to progress")?
            .get_async_pubsub()
            .await
            .context("subscribe to progress")?;
        pubsub
            .subscribe(&self.keys.progress)
            .await
            .context("subscribe to progress")?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move {
            let payload: String = msg.get_payload().ok()?;
            Some(
                payload
                    .split_ascii_whitespace()
                    .filter_map(|id| id.parse().ok())
                    .collect(),
            )
        }))
    }

    /// A stream of cancelled batch ids, from the moment it is subscribed. Ends when the
    /// connection drops; the caller re-subscribes (renewals catch what was missed).
    pub async fn cancellations(&self) -> Result<impl Stream<Item = BatchId> + use<>> {
        let mut pubsub = self
            .connector
            .client()
            .await
            .context("subscribe to cancellations")?
            .get_async_pubsub()
            .await
            .context("subscribe to cancellations")?;
        pubsub
            .subscribe(&self.keys.events)
            .await
            .context("subscribe to cancellations")?;
        Ok(pubsub.into_on_message().filter_map(|msg| async move {
            let payload: String = msg.get_payload().ok()?;
            payload.strip_prefix("cancel ")?.parse().ok()
        }))
    }
}
