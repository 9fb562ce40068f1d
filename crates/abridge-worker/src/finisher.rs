//! Outcome writes. Item tasks submit outcomes; a writer task takes whatever has queued up,
//! writes it in one fenced statement (group commit), then acknowledges the leases in Redis
//! in one script call. Under load, batches grow by themselves; when idle, a lone outcome is
//! written at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use abridge_core::backoff::Doubling;
use abridge_core::{ItemStatus, LeaseToken, WorkerId};
use abridge_queue::{AfterAck, LeaseRef};
use abridge_store::{Finish, FinishReport, Outcome};
use tokio::sync::{Mutex, OwnedSemaphorePermit, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::tally::Tally;
use crate::{Worker, batching, progress};

/// Writer tasks per process: while one writes, the other gathers the next group (two beat one
/// and three in the burn-down; BENCHMARKS.md has the figures).
pub(crate) const WRITERS: usize = 2;

/// How long a writer keeps trying to acknowledge written outcomes while Redis is away.
const ACK_PATIENCE: Duration = Duration::from_secs(300);
pub(crate) struct FinishOp {
    finish: Finish,
    waiter: Waiter,
}

/// What a writer keeps of an outcome beside the write: the lease to let go, and the item
/// task to tell.
struct Waiter {
    lease: LeaseRef,
    done: oneshot::Sender<()>,
    /// The submitting item's span: what the writer logs about the item goes there, so the
    /// line carries the item's batch, video and attempt.
    span: tracing::Span,
}

/// Where item tasks hand their outcomes to the writers.
#[derive(Clone)]
pub(crate) struct Finisher {
    tx: mpsc::Sender<FinishOp>,
}

impl Finisher {
    /// The handle, and the receiving end for the writers ([`run`]). `room`: outcomes that may
    /// wait for a writer before a submitter waits.
    pub(crate) fn channel(room: usize) -> (Self, mpsc::Receiver<FinishOp>) {
        let (tx, rx) = mpsc::channel(room.max(1));
        (Self { tx }, rx)
    }

    /// Hands an outcome to the writers and waits until it is written (or refused). The
    /// item's `permit` goes back once the writers have taken the outcome, before it is
    /// written.
    pub(crate) async fn submit(
        &self,
        finish: Finish,
        lease: LeaseRef,
        permit: OwnedSemaphorePermit,
    ) {
        let (done, written) = oneshot::channel();
        if self
            .tx
            .send(FinishOp {
                finish,
                waiter: Waiter {
                    lease,
                    done,
                    span: tracing::Span::current(),
                },
            })
            .await
            .is_ok()
        {
            drop(permit);
            let _ = written.await;
        }
    }
}

/// A writer: writes the outcomes of session `id` as they come, until `stop`.
pub(crate) async fn run(
    worker: Worker,
    id: WorkerId,
    tally: Arc<Tally>,
    rx: Arc<Mutex<mpsc::Receiver<FinishOp>>>,
    stop: CancellationToken,
) {
    while let Some(ops) = batching::next_batch(&rx, &stop).await {
        write(&worker, id, &tally, ops).await;
    }
}

async fn write(worker: &Worker, id: WorkerId, tally: &Tally, ops: Vec<FinishOp>) {
    // Taken apart rather than cloned: an outcome carries its summary and metadata.
    let (finishes, waiters): (Vec<Finish>, Vec<Waiter>) =
        ops.into_iter().map(|op| (op.finish, op.waiter)).unzip();
    let started = std::time::Instant::now();
    let report = match write_group(worker, id, &finishes).await {
        Ok(report) => report,
        Err(e) if finishes.len() > 1 => {
            // One bad outcome must not discard the others written with it: write each alone.
            warn!(error = %e, outcomes = finishes.len(), "cannot write a group of outcomes; writing them one by one");
            let mut report = FinishReport::default();
            for (finish, waiter) in finishes.iter().zip(&waiters) {
                match write_group(worker, id, std::slice::from_ref(finish)).await {
                    Ok(one) => {
                        report.accepted.extend(one.accepted);
                        report.rejected.extend(one.rejected);
                    }
                    Err(e) => waiter.span.in_scope(|| log_unwritable(&e)),
                }
            }
            report
        }
        Err(e) => {
            log_unwritable(&e);
            FinishReport::default()
        }
    };
    metrics::histogram!("abridge_item_duration_seconds", "stage" => "store")
        .record(started.elapsed().as_secs_f64());
    metrics::histogram!("abridge_write_size").record(finishes.len() as f64);
    tally.writes.fetch_add(1, Ordering::Relaxed);
    tally
        .written
        .fetch_add(finishes.len() as u64, Ordering::Relaxed);
    acknowledge(worker, tally, &waiters, &finishes, &report).await;
    for w in waiters {
        let _ = w.done.send(());
    }
}

/// Writes outcomes in one fenced statement. A finished result is never thrown away while it
/// can still be written: while Postgres is unavailable the write is retried (it is fenced, so
/// trying again later is always safe); any other error is returned.
async fn write_group(
    worker: &Worker,
    id: WorkerId,
    finishes: &[Finish],
) -> Result<FinishReport, abridge_store::StoreError> {
    let mut waits = Doubling::WHILE_AWAY;
    loop {
        match worker
            .store
            .finish_items(id, finishes, worker.settings.max_attempts)
            .await
        {
            Err(e) if e.is_unavailable() => {
                warn!(error = %e, outcomes = finishes.len(), "cannot write outcomes; holding them and retrying");
                tokio::time::sleep(waits.next_wait()).await;
            }
            result => return result,
        }
    }
}

/// An outcome Postgres refused to take (not a fence: an error). Its lease is let go below;
/// the item stays as Postgres has it and the reaper or reconciler takes it from there.
fn log_unwritable(e: &abridge_store::StoreError) {
    warn!(error = %e, "cannot write an outcome; the item will be retried");
}

/// Lets go of the leases in Redis, places retried and released items, completes batches.
/// `waiters[i]` is the waiter of `finishes[i]`.
async fn acknowledge(
    worker: &Worker,
    tally: &Tally,
    waiters: &[Waiter],
    finishes: &[Finish],
    report: &FinishReport,
) {
    let mut acks = Vec::with_capacity(waiters.len());
    let mut finished_batches = HashSet::new();
    let touched: HashSet<_> = report.accepted.iter().map(|f| f.batch_id).collect();
    let accepted: std::collections::HashMap<_, _> =
        report.accepted.iter().map(|f| (f.id, f)).collect();
    for (w, finish) in waiters.iter().zip(finishes) {
        let Some(f) = accepted.get(&w.lease.item) else {
            acks.push((w.lease.clone(), AfterAck::Drop));
            continue;
        };
        let after = match (f.status, &finish.outcome) {
            (ItemStatus::Queued, Outcome::Retry { delay, .. }) => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("abridge_items_total", "outcome" => "retried").increment(1);
                AfterAck::Delay(*delay)
            }
            (ItemStatus::Queued, Outcome::Defer { delay, .. }) => {
                metrics::counter!("abridge_items_total", "outcome" => "deferred").increment(1);
                AfterAck::Delay(*delay)
            }
            (ItemStatus::Queued, _) => {
                tally.released.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("abridge_items_total", "outcome" => "released").increment(1);
                AfterAck::Ready
            }
            (status, _) => {
                match status {
                    ItemStatus::Succeeded => &tally.succeeded,
                    ItemStatus::Failed => &tally.failed,
                    _ => &tally.cancelled,
                }
                .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("abridge_items_total", "outcome" => status.as_str()).increment(1);
                finished_batches.insert(f.batch_id);
                AfterAck::Drop
            }
        };
        acks.push((w.lease.clone(), after));
    }
    if !report.rejected.is_empty() {
        tally
            .fenced
            .fetch_add(report.rejected.len() as u64, Ordering::Relaxed);
        metrics::counter!("abridge_stale_writes_rejected_total")
            .increment(report.rejected.len() as u64);
        for (item, token, found) in &report.rejected {
            match waiters.iter().find(|w| w.lease.item == *item) {
                Some(w) => w.span.in_scope(|| log_fenced(*item, *token, *found)),
                None => log_fenced(*item, *token, *found),
            }
        }
    }
    let batches: Vec<_> = finished_batches.into_iter().collect();
    // Retried while Redis is away: a lease left behind would expire and be taken as a lost
    // claim (an attempt counted for an item whose outcome was written). Reapers wait a lease
    // period after an outage before taking anything, so an acknowledgement that lands within
    // it is in time.
    let mut waits = Doubling::WHILE_AWAY;
    let gave_up_at = std::time::Instant::now() + ACK_PATIENCE;
    let ready = loop {
        match worker.queue.ack(&acks, &batches).await {
            Ok(acked) => break acked.ready,
            Err(e) if e.is_unavailable() && std::time::Instant::now() < gave_up_at => {
                warn!(error = %e, leases = acks.len(), "cannot acknowledge leases; retrying");
                tokio::time::sleep(waits.next_wait()).await;
            }
            Err(e) => {
                warn!(error = %e, "cannot acknowledge leases; they will expire and the reaper will settle them");
                break vec![0; batches.len()];
            }
        }
    };
    // A batch with items still ready in Redis cannot be complete: check the others only.
    let candidates: Vec<_> = batches
        .into_iter()
        .zip(ready)
        .filter(|(_, ready)| *ready == 0)
        .map(|(b, _)| b)
        .collect();
    if !candidates.is_empty() {
        match worker.store.complete_batches_if_done(&candidates).await {
            Ok(done) => {
                for b in done {
                    info!(batch = %b, "batch completed");
                }
            }
            Err(e) => debug!(error = %e, "cannot complete batches now; the reconciler will"),
        }
    }
    progress::notify(&worker.queue, touched.into_iter().collect());
}

fn log_fenced(item: abridge_core::ItemId, token: LeaseToken, found: ItemStatus) {
    warn!(
        %item,
        %token,
        found = found.as_str(),
        "outcome refused: this worker no longer holds the item (its lease was taken over or its batch cancelled)"
    );
}
