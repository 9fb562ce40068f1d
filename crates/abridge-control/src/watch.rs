//! The fleet at a glance, for people: what `abridge top` shows at each refresh.

use std::collections::HashMap;
use std::time::Duration;

use abridge_core::BatchId;
use abridge_queue::Queue;
use abridge_store::{BatchHeader, Counts, Store};
use serde::Serialize;

use crate::{ControlError, FleetStats};

/// One refresh.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub stats: FleetStats,
    /// Items that succeeded or failed in the last minute.
    pub finished_last_minute: i64,
    /// The newest batches, newest first.
    pub batches: Vec<BatchProgress>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BatchProgress {
    #[serde(flatten)]
    pub batch: BatchHeader,
    pub counts: Counts,
}

/// Reads [`Overview`]s of one queue, remembering the counts of finished batches (they never
/// change, and counting a big batch at every refresh would cost more than all the rest).
#[derive(Debug)]
pub struct FleetWatch {
    store: Store,
    queue: Queue,
    queue_name: String,
    finished_counts: HashMap<BatchId, Counts>,
}

impl FleetWatch {
    pub fn new(store: Store, queue: Queue, queue_name: &str) -> Self {
        Self {
            store,
            queue,
            queue_name: queue_name.to_owned(),
            finished_counts: HashMap::new(),
        }
    }

    pub async fn read(&mut self, recent_batches: i64) -> Result<Overview, ControlError> {
        let stats = crate::stats(&self.store, &self.queue, &self.queue_name).await?;
        let finished_last_minute = self
            .store
            .finished_within(&self.queue_name, Duration::from_secs(60))
            .await?;
        let headers = self
            .store
            .recent_batch_headers(&self.queue_name, recent_batches)
            .await?;
        let mut batches = Vec::with_capacity(headers.len());
        for batch in headers {
            let counts = match self.finished_counts.get(&batch.id) {
                Some(counts) => *counts,
                None => {
                    let counts = self.store.counts(batch.id).await?;
                    if batch.status.is_finished() {
                        self.finished_counts.insert(batch.id, counts);
                    }
                    counts
                }
            };
            batches.push(BatchProgress { batch, counts });
        }
        self.finished_counts
            .retain(|id, _| batches.iter().any(|b| b.batch.id == *id));
        Ok(Overview {
            stats,
            finished_last_minute,
            batches,
        })
    }
}
