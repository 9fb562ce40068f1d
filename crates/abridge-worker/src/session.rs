//! One worker process: sessions, their tasks, and graceful shutdown.
//!
//! A session is one registration in `worker_sessions`. It normally lasts until shutdown; if
//! the process was paused long enough to be declared dead, the session's items have already
//! been taken back, so the worker lets go of everything and starts a new session.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use abridge_core::WorkerId;
use abridge_core::backoff::Doubling;
use abridge_store::NewSession;
use tokio::sync::{Mutex, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::claimer::ClaimCtx;
use crate::finisher::{self, Finisher};
use crate::holdings::{Holdings, StopReason};
use crate::starter::{self, Starter};
use crate::tally::Tally;
use crate::{Worker, claimer, keeper, pruner, reaper, reconciler};

/// What a worker process did, for logs and tests.
#[derive(Debug, Default)]
pub struct RunReport {
    pub sessions: u32,
    pub succeeded: u64,
    pub failed: u64,
    /// Items that ended `cancelled` without being attempted (their batch's budget was spent).
    pub cancelled: u64,
    pub retried: u64,
    pub released: u64,
    /// Outcome writes refused because this worker no longer held the item.
    pub fenced: u64,
    /// Claim calls that returned items, and the items they returned.
    pub claims: u64,
    pub claimed: u64,
    /// Outcome write statements, and the outcomes they carried.
    pub writes: u64,
    pub written: u64,
    /// Items this process's reconciler put back in Redis (lost from it, or orphaned there).
    pub restored: u64,
}

/// Runs a worker with `concurrency` items at a time until `shutdown` resolves; then stops
/// claiming, gives in-flight items `shutdown_grace` to finish, releases the rest to the queue,
/// closes the session and returns.
pub async fn run(
    worker: Worker,
    concurrency: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<RunReport> {
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
        });
    }
    let tally = Arc::new(Tally::default());
    let mut report = RunReport::default();
    let host = hostname();
    while !stop.is_cancelled() {
        let id = WorkerId::new();
        if !register(&worker, id, &host, concurrency, &stop).await {
            break;
        }
        report.sessions += 1;
        let span = info_span!("session", worker = %id);
        let buried = run_session(&worker, id, concurrency, &stop, tally.clone())
            .instrument(span)
            .await;
        if !buried {
            break;
        }
        warn!(worker = %id, "this worker was declared dead (paused or cut off past its session TTL); its items were requeued; starting a new session");
    }
    report.succeeded = tally.succeeded.load(Ordering::Relaxed);
    report.failed = tally.failed.load(Ordering::Relaxed);
    report.cancelled = tally.cancelled.load(Ordering::Relaxed);
    report.retried = tally.retried.load(Ordering::Relaxed);
    report.released = tally.released.load(Ordering::Relaxed);
    report.fenced = tally.fenced.load(Ordering::Relaxed);
    report.claims = tally.claims.load(Ordering::Relaxed);
    report.claimed = tally.claimed.load(Ordering::Relaxed);
    report.writes = tally.writes.load(Ordering::Relaxed);
    report.written = tally.written.load(Ordering::Relaxed);
    report.restored = tally.restored.load(Ordering::Relaxed);
    Ok(report)
}

/// Registers a session, retrying while Postgres is unavailable. False if stopped first.
async fn register(
    worker: &Worker,
    id: WorkerId,
    host: &str,
    concurrency: usize,
    stop: &CancellationToken,
) -> bool {
    let mut waits = Doubling::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let session = NewSession {
            id,
            queue: &worker.settings.queue,
            host,
            pid: std::process::id(),
            concurrency,
            version: env!("CARGO_PKG_VERSION"),
        };
        match worker.store.register_session(session).await {
            Ok(()) => {
                info!(worker = %id, concurrency, queue = %worker.settings.queue, summarizer = worker.processor.name(), "worker session started");
                return true;
            }
            Err(e) => warn!(error = %e, "cannot register worker session; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(waits.next_wait()) => {}
        }
    }
}

/// Runs one session until shutdown (returns false) or until it is found buried (true).
async fn run_session(
    worker: &Worker,
    id: WorkerId,
    concurrency: usize,
    stop: &CancellationToken,
    tally: Arc<Tally>,
) -> bool {
    // The session owns the channels and hands each task only what it uses.
    let (finisher, finish_rx) = Finisher::channel(concurrency);
    let (starter, start_rx) = Starter::channel(concurrency.max(16) * 2);
    let holdings = Arc::new(Holdings::default());
    let buried = CancellationToken::new();
    let reconcile_now = Arc::new(Notify::new());
    let ctx = Arc::new(ClaimCtx {
        id,
        holdings: holdings.clone(),
        permits: Arc::new(Semaphore::new(concurrency)),
        finisher,
        starter,
        tasks: TaskTracker::new(),
        reconcile_now: reconcile_now.clone(),
        tally: tally.clone(),
    });

    let background_stop = CancellationToken::new();
    let background = TaskTracker::new();
    background.spawn(keeper::run(
        worker.clone(),
        id,
        holdings.clone(),
        buried.clone(),
        background_stop.clone(),
    ));
    background.spawn(reaper::run(worker.clone(), background_stop.clone()));
    background.spawn(pruner::run(worker.clone(), id, background_stop.clone()));
    background.spawn(reconciler::run(
        worker.clone(),
        id,
        reconcile_now,
        tally.clone(),
        background_stop.clone(),
    ));
    background.spawn(claimer::listen_for_cancellations(
        worker.clone(),
        holdings.clone(),
        background_stop.clone(),
    ));
    // The shards' notices of urgent work, for the claim loop's rounds (a queue of one shard:
    // nothing to hear).
    let (queue, listening) = (worker.queue.clone(), background_stop.clone());
    background.spawn(async move {
        tokio::select! {
            _ = queue.hear_ready_ranks() => {}
            _ = listening.cancelled() => {}
        }
    });
    let finish_rx = Arc::new(Mutex::new(finish_rx));
    let finish_stop = CancellationToken::new();
    let finishers = TaskTracker::new();
    for _ in 0..finisher::WRITERS {
        finishers.spawn(finisher::run(
            worker.clone(),
            id,
            tally.clone(),
            finish_rx.clone(),
            finish_stop.clone(),
        ));
    }

    let start_rx = Arc::new(Mutex::new(start_rx));
    for _ in 0..2 {
        finishers.spawn(starter::run(
            worker.clone(),
            id,
            start_rx.clone(),
            finish_stop.clone(),
        ));
    }

    let stop_claiming = CancellationToken::new();
    let claim_loop = tokio::spawn(claimer::run(
        worker.clone(),
        ctx.clone(),
        stop_claiming.clone(),
    ));
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = buried.cancelled() => {}
    }
    stop_claiming.cancel();
    let _ = claim_loop.await;
    let buried = buried.is_cancelled();

    if buried {
        holdings.stop_all(StopReason::SessionBuried);
    } else {
        let held = holdings.len();
        if held > 0 {
            info!(
                held,
                grace_ms = worker.settings.shutdown_grace.as_millis() as u64,
                "shutting down: letting in-flight items finish"
            );
        }
        let finished_in_time =
            tokio::time::timeout(worker.settings.shutdown_grace, holdings.wait_empty())
                .await
                .is_ok();
        if !finished_in_time {
            info!(
                released = holdings.len(),
                "grace period over: releasing unfinished items to the queue"
            );
            holdings.stop_all(StopReason::Shutdown);
        }
    }
    ctx.tasks.close();
    ctx.tasks.wait().await;

    // Every item task waited for its outcome to be written, so the finishers are idle now.
    finish_stop.cancel();
    finishers.close();
    finishers.wait().await;
    background_stop.cancel();
    background.close();
    background.wait().await;

    if !buried {
        // Anything still marked running under this session (a start whose reply was lost) is
        // ours to give back: nothing of this session runs any more.
        reaper::reclaim_own(worker, id).await;
        if let Err(e) = worker.store.close_session(id, "shutdown").await {
            warn!(error = %e, "cannot close worker session; the reaper will bury it");
        } else {
            info!("worker session closed");
        }
    }
    buried
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
