//! The control plane: what producers and operators do to batches, shared by the `abridge` CLI
//! and the HTTP API so both behave the same. Each operation writes Postgres first (the truth),
//! then Redis (the fast path); if the Redis step fails after the commit, the reconciler
//! finishes it.
//!
//! - [`fleet`]: the fleet gauges (queue depth, leases, the oldest waiting item, live workers,
//!   drift), read from Redis and Postgres at scrape time by `abridge exporter`.
//! - [`watch`]: the fleet at a glance for people (`abridge top`).

use abridge_core::input::{BatchInput, Rejected};
use abridge_core::{BatchId, BatchOptions, Priority};
use abridge_queue::{Queue, QueueError, QueueStats};
use abridge_store::batches::CancelOutcome;
use abridge_store::{BatchView, NewBatch, SessionView, Store, StoreError};
use serde::Serialize;
use tracing::Instrument as _;

pub mod fleet;
pub mod watch;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no batch {0}")]
    NotFound(BatchId),
    #[error("batch {id} is already {status}")]
    AlreadyFinished { id: BatchId, status: String },
    #[error("no valid input: every line was rejected")]
    NothingToEnqueue { rejected: Vec<Rejected> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// What to enqueue besides the inputs.
#[derive(Clone, Debug, Default)]
pub struct EnqueueRequest<'a> {
    pub name: Option<&'a str>,
    pub priority: Priority,
    /// Processing options stored with the batch (summarizer backend, length, ...).
    pub options: BatchOptions,
}

/// The result of an enqueue, as `abridge enqueue --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct Enqueued {
    pub batch_id: BatchId,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

/// Creates a batch from validated input (one Postgres transaction), then makes its items ready
/// in Redis. Rejected inputs are reported, not fatal; no valid input at all is an error.
///
/// Runs in an `enqueue` span, child of the caller's (the API request's, the CLI command's).
/// When traces are exported, that span's context is stored with the batch, and every item's
/// work continues the trace from it.
pub async fn enqueue(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    input: BatchInput,
    request: EnqueueRequest<'_>,
) -> Result<Enqueued, ControlError> {
    let span = tracing::info_span!(
        "enqueue",
        queue = queue_name,
        items = input.items.len(),
        batch = tracing::field::Empty
    );
    enqueue_in_span(store, queue, queue_name, input, request)
        .instrument(span)
        .await
}

async fn enqueue_in_span(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    input: BatchInput,
    request: EnqueueRequest<'_>,
) -> Result<Enqueued, ControlError> {
    if input.items.is_empty() {
        return Err(ControlError::NothingToEnqueue {
            rejected: input.rejected,
        });
    }
    let options = serde_json::to_value(&request.options).expect("options serialize");
    let traceparent = abridge_telemetry::trace::current_traceparent();
    let created = store
        .create_batch(
            NewBatch {
                id: BatchId::new(),
                queue: queue_name,
                name: request.name,
                priority: request.priority,
                options,
                traceparent: traceparent.as_deref(),
            },
            &input.items,
        )
        .await?;
    tracing::Span::current().record("batch", tracing::field::display(created.id));
    // The batch is committed: from here on a Redis failure only delays it (the reconciler
    // pushes what Redis is missing), so report it without failing the enqueue.
    if let Err(e) = queue
        .enqueue(created.id, created.priority, &created.item_ids)
        .await
    {
        tracing::warn!(batch = %created.id, error = %e, "batch saved but not yet queued in Redis; the reconciler will queue it");
    }
    Ok(Enqueued {
        batch_id: created.id,
        accepted: created.item_ids.len(),
        duplicates: input.duplicates,
        rejected: input.rejected,
    })
}

/// Cancels a batch: no item of it starts after this returns; running items stop.
pub async fn cancel(store: &Store, queue: &Queue, id: BatchId) -> Result<u64, ControlError> {
    match store.cancel_batch(id).await? {
        CancelOutcome::Cancelled { items, priority } => {
            if let Err(e) = queue.cancel_batch(id, priority).await {
                // Postgres already refuses to start or finish its items; workers holding some
                // will find out when their next write or renewal is refused.
                tracing::warn!(batch = %id, error = %e, "batch cancelled in Postgres but Redis could not be told");
            }
            Ok(items)
        }
        CancelOutcome::AlreadyFinished(status) => Err(ControlError::AlreadyFinished {
            id,
            status: status.to_string(),
        }),
        CancelOutcome::NotFound => Err(ControlError::NotFound(id)),
    }
}

pub async fn status(store: &Store, id: BatchId) -> Result<BatchView, ControlError> {
    store.batch(id).await?.ok_or(ControlError::NotFound(id))
}

/// The fleet at a glance, as `abridge stats --json` prints it.
#[derive(Clone, Debug, Serialize)]
pub struct FleetStats {
    pub queue: String,
    /// Ready items per priority.
    pub depth: Depth,
    /// Items waiting to be retried.
    pub delayed: i64,
    /// Items claimed by workers right now.
    pub leased: i64,
    /// Failed items in unfinished batches.
    pub failed: i64,
    pub workers: Vec<SessionView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Depth {
    pub high: i64,
    pub normal: i64,
    pub low: i64,
}

pub async fn stats(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
) -> Result<FleetStats, ControlError> {
    let QueueStats {
        ready,
        leased,
        delayed,
        ..
    } = queue.stats().await?;
    // Items in hand come from the leases in Redis: Postgres only marks an item running once
    // it has run for a while (deferred starts), so its count would miss short items.
    let in_hand = queue.leases_by_worker().await?;
    let mut workers = store.live_sessions(queue_name).await?;
    for w in &mut workers {
        w.items_in_hand = in_hand.get(&w.id).copied().unwrap_or(0);
    }
    Ok(FleetStats {
        queue: queue_name.to_owned(),
        depth: Depth {
            high: ready[0],
            normal: ready[1],
            low: ready[2],
        },
        delayed,
        leased,
        failed: store.failed_in_open_batches(queue_name).await?,
        workers,
    })
}
