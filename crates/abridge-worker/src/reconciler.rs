//! The reconciler: Postgres is the truth, Redis a fast copy that may lose anything. At worker
//! start, every `reconcile_ms` (one worker at a time), and at once when a claim finds Redis's
//! epoch marker gone, it puts back what Redis should hold:
//!
//! - queued items missing from Redis (after a FLUSHALL, a restart without persistence, a
//!   failover, or a crash between a Postgres commit and the Redis push);
//! - running items with no lease in Redis on two passes in a row under the same claim (a live
//!   worker re-creates a lost lease on its next renewal, so only orphans stay missing);
//! - batches whose items are all terminal but that were never marked completed;
//! - the pause, if an operator paused the queue (before any item is put back).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use abridge_core::{ErrorKind, ItemId, LeaseToken};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Worker;
use crate::settle::{placement, settle};
use crate::tally::Tally;

/// What one reconcile pass did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Redis had lost its epoch marker (it lost its data, or this is the first pass ever).
    pub redis_was_empty: bool,
    /// Queued items Postgres has that Redis did not hold (`abridge_redis_postgres_drift`).
    pub drift: u64,
    /// Of those, items put back.
    pub requeued: u64,
    /// Running items taken back because no lease was found for them twice.
    pub reclaimed: u64,
    /// Batches found finished and marked completed.
    pub completed_batches: u64,
}

/// Running items seen without a lease on the previous pass, with the claim they had.
pub type Suspects = HashMap<ItemId, LeaseToken>;

/// Reconciles at once, then every `reconcile_ms` when this session (`id`) gets the fleet's
/// turn, and at once whenever `now` is notified (a claim found Redis's epoch marker gone).
pub(crate) async fn run(
    worker: Worker,
    id: abridge_core::WorkerId,
    now: Arc<Notify>,
    tally: Arc<Tally>,
    stop: CancellationToken,
) {
    let mut suspects = Suspects::new();
    let every = worker.settings.reconcile_every;
    let mut forced = true; // at worker start
    loop {
        // Every worker, its turn or not: the shards it claims from and reaps are those of every
        // layout in the fleet (a change of ABRIDGE_QUEUE_SHARDS under way).
        if let Err(e) = worker.queue.refresh_shards().await {
            debug!(error = %e, "cannot refresh the queue's shards now");
        }
        let go = forced
            || worker
                .queue
                .try_reconcile_turn(id, every.mul_f64(0.9))
                .await
                .unwrap_or(false);
        if go {
            match reconcile_once(&worker, &mut suspects).await {
                Ok(r) => {
                    tally
                        .restored
                        .fetch_add(r.requeued + r.reclaimed, Ordering::Relaxed);
                    if r != ReconcileReport::default() {
                        info!(
                            redis_was_empty = r.redis_was_empty,
                            drift = r.drift,
                            requeued = r.requeued,
                            reclaimed = r.reclaimed,
                            completed_batches = r.completed_batches,
                            "reconciled Redis with Postgres"
                        );
                    }
                }
                Err(e) => warn!(error = %e, "reconcile pass failed"),
            }
        }
        forced = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
            _ = now.notified() => {
                forced = true;
                // Let a burst of "epoch missing" claims from this process settle into one pass.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One pass. `suspects` carries lease-less running items from one pass to the next.
pub async fn reconcile_once(
    worker: &Worker,
    suspects: &mut Suspects,
) -> anyhow::Result<ReconcileReport> {
    let s = &worker.settings;
    // The pause first: a Redis that lost its data gets it back before any item. (Written as of
    // the generation read: an operator's newer pause or resume is never undone by it.)
    let pause = worker.store.queue_pause(&s.queue).await?;
    worker
        .queue
        .set_paused(pause.paused_at.is_some(), pause.generation)
        .await?;
    let adopted = worker.queue.adopt_old_keys().await?;
    if adopted > 0 {
        info!(
            adopted,
            "moved entries from the key names of an older build"
        );
    }
    let retired = worker
        .queue
        .retire_empty_shards(2 * abridge_queue::RECORD_EVERY)
        .await?;
    if retired > 0 {
        info!(
            retired,
            "dropped emptied shards of an earlier ABRIDGE_QUEUE_SHARDS"
        );
    }
    let mut report = ReconcileReport {
        redis_was_empty: worker.queue.mark_epoch().await?,
        ..ReconcileReport::default()
    };

    // Queued items: compare per batch what Postgres says is unfinished (queued or running)
    // with what Redis holds (ready, delayed or leased), and look closer only where Redis has
    // fewer. Items in flight between the two are counted on both sides, and Redis is read
    // before Postgres, so items finished in between make Redis look fuller, never shorter.
    let ids = worker.store.open_batch_ids(&s.queue).await?;
    let counts = worker.queue.held_counts(&ids).await?;
    let batches = worker.store.open_batches(&s.queue).await?;
    for batch in &batches {
        if counts.get(&batch.id).copied().unwrap_or(0) >= batch.open {
            continue;
        }
        let items = worker.store.queued_items(batch.id).await?;
        let item_ids: Vec<_> = items.iter().map(|i| i.id).collect();
        let held = worker
            .queue
            .held(
                batch.id,
                batch.priority,
                abridge_queue::Share {
                    tenant: batch.tenant.as_deref(),
                    weight: batch.weight,
                    max_in_flight: batch.max_in_flight,
                },
                &item_ids,
            )
            .await?;
        let not_held: Vec<i64> = items
            .iter()
            .zip(held)
            .filter(|(_, held)| !held)
            .map(|(i, _)| i.id.0)
            .collect();
        if not_held.is_empty() {
            continue;
        }
        // Read Postgres again: an item claimed, finished and acknowledged between the first
        // read and the Redis check is no longer queued, and must not be put back.
        let missing: Vec<_> = worker
            .store
            .item_refs(&not_held)
            .await?
            .iter()
            .filter(|i| i.status == abridge_core::ItemStatus::Queued)
            .map(placement)
            .collect();
        report.drift += missing.len() as u64;
        if !missing.is_empty() {
            report.requeued += worker.queue.requeue(&missing).await? as u64;
        }
    }

    // The drift gauge is served by `abridge exporter` from this record, whichever worker ran
    // the pass: one source, never a stale copy per worker.
    let mark = abridge_queue::ReconcileMark {
        drift: report.drift,
        requeued: report.requeued,
        at_ms: chrono::Utc::now().timestamp_millis(),
    };
    if let Err(e) = worker.queue.record_reconcile(mark).await {
        warn!(error = %e, "cannot record the reconcile pass for the fleet gauges");
    }

    // Running items: a lease missing twice under the same claim means nobody holds it.
    let running = worker.store.running_items(&s.queue).await?;
    let running_ids: Vec<_> = running.iter().map(|r| r.id).collect();
    let leased = worker.queue.leased(&running_ids).await?;
    let mut next = Suspects::new();
    let mut orphans = Vec::new();
    for (item, has_lease) in running.iter().zip(leased) {
        if has_lease {
            continue;
        }
        if suspects.get(&item.id) == Some(&item.token) {
            orphans.push((item.id, item.token));
        } else {
            next.insert(item.id, item.token);
        }
    }
    *suspects = next;
    if !orphans.is_empty() {
        let reclaimed = worker
            .store
            .reclaim(&orphans, s.max_attempts, &ErrorKind::LEASE_LOST)
            .await?;
        report.reclaimed = reclaimed.reclaimed;
        metrics::counter!("abridge_reclaimed_total", "reason" => "reconciled")
            .increment(reclaimed.reclaimed);
        settle(worker, &reclaimed.items).await?;
    }

    let open = worker.store.open_batch_ids(&s.queue).await?;
    report.completed_batches = worker.store.complete_batches_if_done(&open).await?.len() as u64;
    Ok(report)
}
