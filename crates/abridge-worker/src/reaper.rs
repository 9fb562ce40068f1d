//! The reaper: takes back items whose holder is gone. Runs in every worker every `reap_ms`;
//! `abridge reap` runs one pass. Every step is a compare-and-set, so any number of reapers
//! can run at once: Redis hands each expired lease to one of them, Postgres buries each dead
//! session once, and an item is reclaimed only if it is still running under the same claim.

use std::collections::HashSet;
use std::time::Duration;

use abridge_core::{ErrorKind, ItemStatus, WorkerId};
use abridge_queue::Placement;
use abridge_store::ItemRef;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Worker;

/// What one reaper pass did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReapReport {
    /// Expired leases taken from Redis.
    pub expired_leases: u64,
    /// Items taken back from expired leases (were running in Postgres under that claim).
    pub reclaimed_expired: u64,
    /// Sessions declared dead.
    pub dead_sessions: Vec<WorkerId>,
    /// Items taken back from dead sessions.
    pub reclaimed_from_dead: u64,
    /// Items that ran out of attempts and failed.
    pub failed: u64,
    /// Items put back in the Redis queue.
    pub requeued: u64,
}

pub(crate) async fn run(worker: Worker, stop: CancellationToken) {
    let mut tick = tokio::time::interval(worker.settings.reap_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match reap_once(&worker).await {
            Ok(r) if r != ReapReport::default() => info!(
                expired_leases = r.expired_leases,
                reclaimed_expired = r.reclaimed_expired,
                dead_sessions = r.dead_sessions.len(),
                reclaimed_from_dead = r.reclaimed_from_dead,
                failed = r.failed,
                requeued = r.requeued,
                "reaped"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "reaper pass failed"),
        }
    }
}

/// One pass: expired leases, then dead sessions.
pub async fn reap_once(worker: &Worker) -> anyhow::Result<ReapReport> {
    let s = &worker.settings;
    let mut report = ReapReport::default();
    const BATCH: usize = 1_000;
    loop {
        let taken = worker.queue.take_expired(BATCH).await?;
        if taken.is_empty() {
            break;
        }
        report.expired_leases += taken.len() as u64;
        let claims: Vec<_> = taken
            .iter()
            .map(|t| (t.lease.item, t.lease.token))
            .collect();
        let reclaimed = worker
            .store
            .reclaim(&claims, s.max_attempts, &ErrorKind::LEASE_EXPIRED)
            .await?;
        report.reclaimed_expired += reclaimed.reclaimed;
        metrics::counter!("abridge_reclaimed_total", "reason" => "lease_expired")
            .increment(reclaimed.reclaimed);
        settle(worker, &reclaimed.items, &mut report).await?;
        if taken.len() < BATCH {
            break;
        }
    }
    for dead in worker
        .store
        .bury_dead_sessions(&s.queue, s.session_ttl)
        .await?
    {
        warn!(worker = %dead, "worker session missed its heartbeats: declared dead, requeueing its items");
        report.dead_sessions.push(dead);
        let reclaimed = worker
            .store
            .reclaim_worker_items(dead, s.max_attempts)
            .await?;
        report.reclaimed_from_dead += reclaimed.reclaimed;
        metrics::counter!("abridge_reclaimed_total", "reason" => "session_dead")
            .increment(reclaimed.reclaimed);
        let mut items = reclaimed.items;
        // Items it had claimed in Redis but not yet started are still queued in Postgres.
        let known: HashSet<_> = items.iter().map(|i| i.id).collect();
        let leftover: Vec<i64> = worker
            .queue
            .take_worker_leases(dead)
            .await?
            .into_iter()
            .filter(|t| !known.contains(&t.lease.item))
            .map(|t| t.lease.item.0)
            .collect();
        if !leftover.is_empty() {
            // Claimed but not yet marked running when it died: the attempt still counts.
            let unstarted: Vec<_> = leftover.iter().map(|i| abridge_core::ItemId(*i)).collect();
            worker
                .store
                .count_unstarted_attempts(&unstarted, s.max_attempts, &ErrorKind::WORKER_DIED)
                .await?;
            items.extend(worker.store.item_refs(&leftover).await?);
        }
        stagger(&mut items);
        settle(worker, &items, &mut report).await?;
    }
    Ok(report)
}

/// Requeues the items Postgres now says are queued, and completes batches whose last items
/// just failed.
pub(crate) async fn settle(
    worker: &Worker,
    items: &[ItemRef],
    report: &mut ReapReport,
) -> anyhow::Result<()> {
    let placements: Vec<Placement> = items
        .iter()
        .filter(|i| i.status == ItemStatus::Queued)
        .map(placement)
        .collect();
    if !placements.is_empty() {
        report.requeued += worker.queue.requeue(&placements).await? as u64;
    }
    let failed: HashSet<_> = items
        .iter()
        .filter(|i| i.status == ItemStatus::Failed)
        .map(|i| i.batch_id)
        .collect();
    report.failed += items
        .iter()
        .filter(|i| i.status == ItemStatus::Failed)
        .count() as u64;
    if !failed.is_empty() {
        let batches: Vec<_> = failed.into_iter().collect();
        worker.store.complete_batches_if_done(&batches).await?;
    }
    Ok(())
}

/// A dead worker's items come back a little apart, in random order, rather than all at once
/// at the head of their batch: if one of them killed the worker (a poison item), the others
/// are then unlikely to be claimed together with it again and die with it a second time.
fn stagger(items: &mut [ItemRef]) {
    use rand::seq::SliceRandom;
    const SPREAD: Duration = Duration::from_secs(2);
    const MAX_GAP: Duration = Duration::from_millis(100);
    let mut queued: Vec<&mut ItemRef> = items
        .iter_mut()
        .filter(|i| i.status == ItemStatus::Queued)
        .collect();
    if queued.len() < 2 {
        return;
    }
    queued.shuffle(&mut rand::rng());
    let gap = MAX_GAP.min(SPREAD / queued.len() as u32);
    let now = chrono::Utc::now();
    for (k, item) in queued.into_iter().enumerate() {
        let due = now + gap * k as u32;
        item.available_at = Some(item.available_at.map_or(due, |a| a.max(due)));
    }
}

pub(crate) fn placement(i: &ItemRef) -> Placement {
    Placement {
        item: i.id,
        batch: i.batch_id,
        priority: i.priority,
        position: i.position,
        due: i.available_at,
    }
}

/// At shutdown: give back anything Postgres still says this session is running (a start
/// whose reply never arrived). Nothing of the session runs any more, so none of it is current.
pub(crate) async fn reclaim_own(worker: &Worker, id: WorkerId) {
    let result = async {
        let reclaimed = worker
            .store
            .reclaim_worker_items(id, worker.settings.max_attempts.saturating_add(1))
            .await?;
        let mut report = ReapReport::default();
        settle(worker, &reclaimed.items, &mut report).await?;
        anyhow::Ok(reclaimed.reclaimed)
    };
    match tokio::time::timeout(Duration::from_secs(10), result).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => info!(items = n, "gave back items left running under this session"),
        Ok(Err(e)) => warn!(error = %e, "cannot give back leftover items; the reconciler will"),
        Err(_) => warn!("timed out giving back leftover items; the reconciler will"),
    }
}
