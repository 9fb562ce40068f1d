//! The claim loop: take permits, claim that many items from Redis, start them in Postgres
//! under the claim's token, and run each started item in its own task.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use abridge_core::backoff::Doubling;
use abridge_core::{BatchId, ErrorKind, ItemError, ItemId, LeaseToken, WorkerId};
use abridge_queue::{AfterAck, LeaseRef};
use abridge_store::{Finish, Outcome, StartedItem};
use abridge_telemetry::trace::{self, KeyValue};
use futures::{FutureExt, StreamExt};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::attempt::{AttemptEnd, RetryPolicy, panic_message};
use crate::finisher::Finisher;
use crate::holdings::{Holdings, StopReason, StopSignal};
use crate::starter::{StartHandle, StartResult, Starter};
use crate::tally::Tally;
use crate::{Job, Worker};

/// How long an idle worker blocks waiting for a wake-up before claiming anyway (which also
/// promotes retries that have come due).
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// What the claim loop and the item tasks it spawns share.
pub(crate) struct ClaimCtx {
    pub id: WorkerId,
    pub holdings: Arc<Holdings>,
    /// One permit per item being worked on, from its claim until its outcome is handed to
    /// the writers. An item waiting for its write holds no permit, so the next claim need not
    /// wait for the last group's commit; the finish channel (one concurrency's worth) and one
    /// group per writer bound those waiting items to three times the concurrency.
    pub permits: Arc<Semaphore>,
    pub finisher: Finisher,
    pub starter: Starter,
    /// Item and start tasks, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Asks the reconciler for a pass now (a claim found Redis's data gone).
    pub reconcile_now: Arc<Notify>,
    pub tally: Arc<Tally>,
}

pub(crate) async fn run(worker: Worker, ctx: Arc<ClaimCtx>, stop: CancellationToken) {
    let mut error_waits = Doubling::WHILE_AWAY;
    let mut redis = worker.queue.claim_connection();
    // Set after a claim came back empty: the next claim first waits this long for a wake-up.
    let mut idle_wait: Option<Duration> = None;
    loop {
        let first = tokio::select! {
            p = ctx.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let mut permit = first;
        // Under load, permits come back in bursts as the writers finish groups of items: give
        // a burst a moment to arrive so that one claim (and one start statement) covers it.
        // When the worker is idle every permit is already free and nothing waits.
        let worth_claiming = (worker.settings.claim_batch / 4).clamp(1, 64);
        for _ in 0..16 {
            if ctx.permits.available_permits() + 1 >= worth_claiming {
                break;
            }
            tokio::task::yield_now().await;
        }
        let extra = ctx
            .permits
            .available_permits()
            .min(worker.settings.claim_batch.saturating_sub(1));
        if extra > 0
            && let Ok(more) = ctx.permits.clone().try_acquire_many_owned(extra as u32)
        {
            permit.merge(more);
        }
        let want = permit.num_permits();
        let sent_at = Instant::now();
        let sent_at_wall = SystemTime::now();
        let claiming = redis.claim(ctx.id, worker.settings.lease, want, idle_wait.take());
        tokio::pin!(claiming);
        let claim = tokio::select! {
            c = &mut claiming => c,
            _ = stop.cancelled() => {
                // A claim behind a wait runs when the wait ends (within `wait`): let it, and
                // give back whatever it took.
                if let Ok(late) = claiming.await {
                    give_back(&worker, late.items).await;
                }
                return;
            }
        };
        match claim {
            Err(e) => {
                drop(permit);
                warn!(error = %e, "claim failed; backing off");
                metrics::counter!("abridge_claim_errors_total").increment(1);
                tokio::select! {
                    _ = tokio::time::sleep(error_waits.next_wait()) => {}
                    _ = stop.cancelled() => return,
                }
            }
            Ok(claim) => {
                error_waits.reset();
                if !claim.epoch_present {
                    ctx.reconcile_now.notify_one();
                }
                if claim.items.is_empty() {
                    drop(permit);
                    let wait = claim.next_due.map_or(IDLE_WAIT, |d| d.min(IDLE_WAIT));
                    // At most a tenth of the lease: a claim that follows a wait counts its
                    // lease from when the wait began (`sent_at`), so a long wait would eat
                    // into the time the worker believes it holds the items.
                    idle_wait = Some(wait.min(worker.settings.lease / 10));
                    continue;
                }
                ctx.tally
                    .claims
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.tally.claimed.fetch_add(
                    claim.items.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                metrics::histogram!("abridge_claim_size").record(claim.items.len() as f64);
                let valid_until = sent_at + worker.settings.lease - worker.lease_margin();
                let mut held = Vec::with_capacity(claim.items.len());
                for lease in claim.items {
                    let Some(one) = permit.split(1) else { break };
                    let signal = ctx.holdings.add(lease.clone(), valid_until);
                    held.push((lease, signal, one));
                }
                drop(permit); // permits beyond what was claimed go back
                let w = worker.clone();
                let c = ctx.clone();
                ctx.tasks.spawn(start_claimed(w, c, held, sent_at_wall));
            }
        }
    }
}

/// Hands claimed items straight back to the ready queue, untouched: a claim that landed as
/// the worker stopped, or items whose rows cannot be read.
async fn give_back(worker: &Worker, items: Vec<LeaseRef>) {
    if items.is_empty() {
        return;
    }
    let acks: Vec<(LeaseRef, AfterAck)> = items.into_iter().map(|l| (l, AfterAck::Ready)).collect();
    if let Err(e) = worker.queue.ack(&acks, &[]).await {
        warn!(error = %e, "cannot give claimed items back; their leases will expire");
    }
}

type Held = (LeaseRef, StopSignal, OwnedSemaphorePermit);

/// Reads claimed items from Postgres and runs each one that is still queued there. The others
/// (cancelled, finished, or taken by another claim meanwhile) are let go in Redis.
/// `claim_sent` is when the claim was sent, for the item's trace.
async fn start_claimed(
    worker: Worker,
    ctx: Arc<ClaimCtx>,
    held: Vec<Held>,
    claim_sent: SystemTime,
) {
    let claims: Vec<(ItemId, LeaseToken)> =
        held.iter().map(|(l, _, _)| (l.item, l.token)).collect();
    let mut waits = Doubling::new(Duration::from_millis(50), Duration::from_secs(2));
    let started = loop {
        match worker.store.read_claimed(&claims).await {
            Ok(started) => break started,
            Err(e) => {
                // Postgres is down or failing: hold on while the leases are kept (the keeper
                // renews them meanwhile), then give the items back to Redis untouched
                // (Postgres still says queued).
                let now = Instant::now();
                let all_gone = held
                    .iter()
                    .all(|(l, s, _)| s.reason().is_some() || !ctx.holdings.valid(l.item, now));
                warn!(error = %e, items = claims.len(), "cannot read claimed items; retrying");
                if all_gone || !e.is_unavailable() {
                    give_back(&worker, held.iter().map(|(l, _, _)| l.clone()).collect()).await;
                    for (l, _, _) in &held {
                        ctx.holdings.remove(l.item);
                    }
                    return;
                }
                tokio::time::sleep(waits.next_wait()).await;
            }
        }
    };
    // The fencing rule for unstarted items rests on this read: the attempt count it saw is
    // the claim's fence, so the read must have run while the claim still held its lease (a
    // take-over counts an attempt, but only after the lease expired). A read that came back
    // after the local deadline may have seen a taken-over count: let those items go.
    let now = Instant::now();
    let (started, late): (Vec<StartedItem>, Vec<StartedItem>) = started
        .into_iter()
        .partition(|s| ctx.holdings.valid(s.id, now));
    if !late.is_empty() {
        warn!(
            items = late.len(),
            "claimed items were read after their lease could have expired; giving them back"
        );
    }
    let late: HashSet<ItemId> = late.iter().map(|s| s.id).collect();
    let started_at = SystemTime::now();
    // A batch's first items flip it to `running`, beside their work rather than before it.
    let pending: HashSet<BatchId> = started
        .iter()
        .filter(|s| s.batch_pending)
        .map(|s| s.batch_id)
        .collect();
    if !pending.is_empty() {
        let store = worker.store.clone();
        let pending: Vec<BatchId> = pending.into_iter().collect();
        tokio::spawn(async move {
            if let Err(e) = store.mark_batches_running(&pending).await {
                debug!(error = %e, "cannot mark batches running; their first outcome will");
            }
        });
    }
    let mut started: HashMap<ItemId, StartedItem> =
        started.into_iter().map(|s| (s.id, s)).collect();
    let mut dropped = Vec::new();
    for (lease, signal, permit) in held {
        match started.remove(&lease.item) {
            Some(item) => {
                let span = info_span!(
                    "item",
                    batch = %item.batch_id,
                    item = %item.id,
                    video = %item.video_id,
                    attempt = item.attempt
                );
                trace_item_start(&span, &item, claim_sent, started_at);
                ctx.holdings.set_span(item.id, span.clone());
                let lag = (chrono::Utc::now() - item.queued_at)
                    .to_std()
                    .unwrap_or_default();
                metrics::histogram!("abridge_enqueue_to_start_seconds").record(lag.as_secs_f64());
                // Boxed: the item's future is large, and spawning moves a future by value
                // several times; a box is moved instead.
                ctx.tasks.spawn(
                    Box::pin(run_item(
                        worker.clone(),
                        ctx.clone(),
                        item,
                        lease,
                        signal,
                        permit,
                    ))
                    .instrument(span),
                );
            }
            None if late.contains(&lease.item) => {
                // Given back untouched: placed again only if this claim still holds it.
                ctx.holdings.remove(lease.item);
                dropped.push((lease, AfterAck::Ready));
            }
            None => {
                debug!(item = %lease.item, "claimed item was not queued any more; dropping it");
                ctx.holdings.remove(lease.item);
                dropped.push((lease, AfterAck::Drop));
            }
        }
    }
    if !dropped.is_empty()
        && let Err(e) = worker.queue.ack(&dropped, &[]).await
    {
        warn!(error = %e, "cannot drop stale claims; their leases will expire");
    }
}

/// Continues the trace the item was enqueued in: the item's span becomes a child of the enqueue
/// span, next to two spans recorded after the fact, the wait in the queue (from when the item
/// became ready to the claim) and the claim (until the item was read from Postgres). The wait starts on
/// Postgres's clock and ends on this host's, so skew can shorten it, never make it negative.
fn trace_item_start(
    span: &tracing::Span,
    item: &StartedItem,
    claim_sent: SystemTime,
    started_at: SystemTime,
) {
    let Some(traceparent) = item.traceparent.as_deref() else {
        return;
    };
    trace::continue_trace(span, Some(traceparent));
    let parent = trace::context_from(traceparent);
    let attributes = || {
        vec![
            KeyValue::new("abridge.batch", item.batch_id.to_string()),
            KeyValue::new("abridge.item", item.id.0),
            KeyValue::new("abridge.attempt", i64::from(item.attempt)),
        ]
    };
    trace::record_span(
        "queue wait",
        &parent,
        SystemTime::from(item.queued_at).min(claim_sent),
        claim_sent,
        attributes(),
    );
    trace::record_span("claim", &parent, claim_sent, started_at, attributes());
}

/// Runs one claimed item to an outcome and has it written.
///
/// The item is marked `running` in Postgres only once it has run for `start_after` (a
/// deferred start): an item that finishes sooner is written once, straight from `queued` to
/// its outcome. A start that Postgres refuses means another claim owns the item: the work
/// stops and nothing is written.
async fn run_item(
    worker: Worker,
    ctx: Arc<ClaimCtx>,
    item: StartedItem,
    lease: LeaseRef,
    signal: StopSignal,
    permit: OwnedSemaphorePermit,
) {
    let claim_attempt = item.attempt;
    let attempt = u32::try_from(claim_attempt).unwrap_or(1);
    let began = std::time::Instant::now();
    let start = StartHandle::new(&ctx.starter, &lease, item.attempt, began);
    // Checked at enqueue; a stored value this build cannot read fails the item, whatever the
    // processor.
    let (options, unreadable) = match serde_json::from_value(item.options) {
        Ok(options) => (options, None),
        Err(e) => (
            abridge_core::BatchOptions::default(),
            Some(ItemError::permanent(
                ErrorKind::from_static("invalid_options"),
                format!("the batch's options cannot be read: {e}"),
            )),
        ),
    };
    let job = Job {
        item_id: item.id,
        batch_id: item.batch_id,
        attempt,
        lease_token: item.token,
        worker: ctx.id,
        video_id: item.video_id,
        url: item.url,
        title: item.title,
        transcript: item.transcript,
        options,
        priority: lease.priority,
        tenant: item.tenant,
        fence: Arc::new(start.clone()),
    };
    let (processor, job_ref) = (&worker.processor, &job);
    let process = async move {
        match unreadable {
            Some(e) => Err(e),
            None => processor.process(job_ref).await,
        }
    };
    let mut work = Box::pin(
        AssertUnwindSafe(tokio::time::timeout(worker.settings.item_timeout, process))
            .catch_unwind(),
    );
    let mut start_due = std::pin::pin!(tokio::time::sleep(worker.settings.start_after));
    let mut starting: Option<futures::future::BoxFuture<'static, StartResult>> = None;
    let mut result = loop {
        tokio::select! {
            biased;
            reason = signal.stopped() => break Err(reason),
            r = &mut work => break Ok(r),
            _ = &mut start_due, if starting.is_none() && start.result().is_none() => {
                let start = start.clone();
                starting = Some(Box::pin(async move { start.ensure().await }));
            }
            r = async { starting.as_mut().expect("guarded").await }, if starting.is_some() => {
                starting = None;
                if r == StartResult::Refused {
                    signal.stop(StopReason::Lost);
                }
            }
        }
    };
    // The work ended while its start was being written: the start's fate decides the write.
    // (So does a start the processor asked for itself.)
    if let Some(pending) = starting.take() {
        pending.await;
    }
    if start.result() == Some(StartResult::Refused) {
        result = Err(StopReason::Lost);
    }
    let started = start.result() == Some(StartResult::Started);
    drop(work);
    let end = match result {
        Ok(Ok(Ok(returned))) => AttemptEnd::Returned(returned),
        Ok(Ok(Err(_elapsed))) => AttemptEnd::TimedOut,
        Ok(Err(panic)) => AttemptEnd::Panicked(panic_message(panic.as_ref())),
        Err(reason) => AttemptEnd::Stopped(reason),
    };
    let jitter = abridge_core::backoff::jitter();
    let outcome = RetryPolicy::from_settings(&worker.settings).outcome(end, attempt, jitter);
    log_outcome(outcome.as_ref());
    let took = began.elapsed();
    metrics::histogram!("abridge_item_duration_seconds", "stage" => "process")
        .record(took.as_secs_f64());
    // The Redis calls of the rare arms below are boxed: inline, they would make every item's
    // future several times larger, and it is copied into its box for every item.
    match outcome {
        // Giving back an item that was never marked running needs no Postgres write: it is
        // still `queued` there. Put it back in Redis.
        Some(Outcome::Release) if !started => {
            if let Err(e) =
                Box::pin(worker.queue.ack(&[(lease.clone(), AfterAck::Ready)], &[])).await
            {
                debug!(error = %e, "cannot give the item back; its lease will expire");
            }
            ctx.tally
                .released
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics::counter!("abridge_items_total", "outcome" => "released").increment(1);
        }
        Some(outcome) => {
            let write = info_span!("write outcome", outcome = outcome.name());
            ctx.finisher
                .submit(
                    Finish {
                        item: lease.item,
                        token: lease.token,
                        outcome,
                        started,
                        attempt: claim_attempt,
                        began,
                    },
                    lease.clone(),
                    permit,
                )
                .instrument(write)
                .await
        }
        None => {
            if let Err(e) =
                Box::pin(worker.queue.ack(&[(lease.clone(), AfterAck::Drop)], &[])).await
            {
                debug!(error = %e, "cannot drop lease; it will expire");
            }
        }
    }
    ctx.holdings.remove(lease.item);
}

/// Stops held items of cancelled batches as soon as the cancel is published. Renewals catch
/// any cancel missed while disconnected.
pub(crate) async fn listen_for_cancellations(
    worker: Worker,
    holdings: Arc<Holdings>,
    stop: CancellationToken,
) {
    let cancels = abridge_queue::resubscribing("cancel notices", || {
        let queue = worker.queue.clone();
        async move { queue.cancellations().await }
    });
    let mut cancels = std::pin::pin!(cancels);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = cancels.next() => match next {
                Some(abridge_queue::Subscribed::Notice(batch)) => {
                    let n = holdings.stop_batch(batch, StopReason::Cancelled);
                    if n > 0 {
                        info!(%batch, items = n, "batch cancelled: stopping its items");
                    }
                }
                Some(abridge_queue::Subscribed::Again) => {}
                None => return,
            },
        }
    }
}

/// One line per attempt that did not succeed, at the level its end deserves (a timeout or a
/// panic is the processor's fault, so a warning).
fn log_outcome(outcome: Option<&Outcome>) {
    use abridge_core::ErrorKind;
    match outcome {
        None => info!("stopped working on the item; writing nothing for it"),
        Some(Outcome::Succeeded { .. } | Outcome::Release) => {}
        Some(Outcome::Defer { kind, message, .. }) => {
            info!(error = %format_args!("{kind}: {message}"), "not attempted now; waiting without using up an attempt")
        }
        Some(Outcome::Cancelled { kind, message }) => {
            info!(error = %format_args!("{kind}: {message}"), "item not attempted; it ends cancelled")
        }
        Some(Outcome::Retry { kind, message, .. })
            if *kind == ErrorKind::TIMEOUT || *kind == ErrorKind::INTERNAL =>
        {
            warn!(error = %format_args!("{kind}: {message}"), "attempt failed; will retry")
        }
        Some(Outcome::Retry { kind, message, .. }) => {
            info!(error = %format_args!("{kind}: {message}"), "attempt failed; will retry")
        }
        Some(Outcome::Failed { kind, message }) => {
            info!(error = %format_args!("{kind}: {message}"), "item failed permanently")
        }
    }
}
