//! After items were taken back (by the reaper, the reconciler, or at shutdown): put the ones
//! Postgres now says are queued back in Redis, and complete batches whose last items failed.

use std::collections::HashSet;

use abridge_core::ItemStatus;
use abridge_queue::Placement;
use abridge_store::ItemRef;

use crate::Worker;

/// What settling a set of items did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Items put back in the Redis queue.
    pub requeued: u64,
    /// Items that ran out of attempts and failed.
    pub failed: u64,
}

pub(crate) async fn settle(worker: &Worker, items: &[ItemRef]) -> anyhow::Result<Settled> {
    let mut settled = Settled::default();
    let placements: Vec<Placement> = items
        .iter()
        .filter(|i| i.status == ItemStatus::Queued)
        .map(placement)
        .collect();
    if !placements.is_empty() {
        settled.requeued = worker.queue.requeue(&placements).await? as u64;
    }
    let failed: Vec<&ItemRef> = items
        .iter()
        .filter(|i| i.status == ItemStatus::Failed)
        .collect();
    settled.failed = failed.len() as u64;
    let batches: HashSet<_> = failed.iter().map(|i| i.batch_id).collect();
    if !batches.is_empty() {
        let batches: Vec<_> = batches.into_iter().collect();
        worker.store.complete_batches_if_done(&batches).await?;
    }
    Ok(settled)
}

/// Where Redis should hold a queued item.
pub(crate) fn placement(i: &ItemRef) -> Placement {
    Placement {
        item: i.id,
        batch: i.batch_id,
        priority: i.priority,
        position: i.position,
        due: i.available_at,
    }
}
