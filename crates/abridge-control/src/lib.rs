//! The control plane: what producers and operators do to batches, shared by the `abridge` CLI
//! and the HTTP API so both behave the same. Each operation writes Postgres first (the truth),
//! then Redis (the fast path); if the Redis step fails after the commit, the reconciler
//! finishes it.
//!
//! - [`gauges`]: the fleet gauges (queue depth, leases, the oldest waiting item, live workers,
//!   drift), read from Redis and Postgres at scrape time by `abridge exporter`.
//! - [`watch`]: the fleet at a glance for people (`abridge top`).

use abridge_core::input::{BatchInput, Rejected};
use abridge_core::{Allowed, Backend, BatchId, BatchOptions, ItemId, Priority, Settings};
use abridge_queue::{Placement, Share};
use abridge_queue::{Queue, QueueError, QueueStats};
use abridge_store::batches::{CancelOutcome, RetryOutcome, SMALL_BATCH};
use abridge_store::tenants::TenantPolicy;
use abridge_store::{
    BatchView, CreateOnce, CreatedBatch, IdempotencyKey, NewBatch, SessionView, Store, StoreError,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

pub mod gauges;
pub mod watch;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no batch {0}")]
    NotFound(BatchId),
    #[error("batch {id} is already {status}")]
    AlreadyFinished { id: BatchId, status: String },
    #[error("no valid input: every line was rejected")]
    NothingToEnqueue { rejected: Vec<Rejected> },
    #[error("batch {0} is cancelled: its items cannot be retried")]
    Cancelled(BatchId),
    /// The batch's options ask for what this fleet or this tenant does not offer; the message
    /// names the field and what is allowed.
    #[error("{0}")]
    OptionsRefused(String),
    /// Over a tenant's limit on queued items; nothing was stored.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Over a tenant's batches per minute; `retry_after` is in seconds.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    #[error("read the first result of an idempotency key: {0}")]
    StoredResult(String),
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
    /// What the enqueuing process offers a batch.
    pub offer: Offer,
}

/// What a fleet offers a batch: its default backend, and whether drills are on
/// (`ABRIDGE_DRILLS`: only then may a batch ask for `noop`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Offer {
    pub drills: bool,
    pub default_backend: Backend,
}

impl From<&Settings> for Offer {
    fn from(s: &Settings) -> Self {
        Self {
            drills: s.drills,
            default_backend: s.summarizer,
        }
    }
}

/// The result of an enqueue, as `abridge enqueue --json` prints it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Enqueued {
    pub batch_id: BatchId,
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: Vec<Rejected>,
}

/// Creates a batch from validated input (one Postgres transaction), then makes its items ready
/// in Redis. Rejected inputs are reported, not fatal; no valid input at all is an error.
pub async fn enqueue(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    input: BatchInput,
    request: EnqueueRequest<'_>,
) -> Result<Enqueued, ControlError> {
    match enqueue_once(store, queue, queue_name, input, request, None).await? {
        EnqueueOnce::Created(done) | EnqueueOnce::Replayed { done, .. } => Ok(done),
    }
}

/// Who owns an API batch, and what the API records with it.
#[derive(Clone, Debug)]
pub struct Owner<'a> {
    /// `None` for the operator (the batch has no tenant, like the CLI's).
    pub tenant: Option<&'a str>,
    /// The operator's policy for the tenant: what its batches may ask for, and its quotas.
    /// `None` for the operator, whom nothing restricts.
    pub policy: Option<&'a TenantPolicy>,
    /// POSTed the final status when the batch finishes (already checked by the caller).
    pub webhook_url: Option<&'a str>,
    /// The request's `Idempotency-Key` and the SHA-256 of its canonical body.
    pub idempotency: Option<(&'a str, &'a [u8])>,
}

/// What `enqueue_once` did.
#[derive(Clone, Debug)]
pub enum EnqueueOnce {
    Created(Enqueued),
    /// The owner had used this idempotency key before: this is the first result, and
    /// nothing new was created. `same_request` is false if the key came with another body.
    Replayed {
        done: Enqueued,
        same_request: bool,
    },
}

/// [`enqueue`] for the API: the batch belongs to `owner`'s tenant, and an idempotency key,
/// if given, makes a retried request return the first batch instead of creating another.
///
/// Runs in an `enqueue` span, child of the caller's (the API request's, the CLI command's).
/// When traces are exported, that span's context is stored with the batch, and every item's
/// work continues the trace from it.
pub async fn enqueue_once(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    input: BatchInput,
    request: EnqueueRequest<'_>,
    owner: Option<Owner<'_>>,
) -> Result<EnqueueOnce, ControlError> {
    let span = tracing::info_span!(
        "enqueue",
        queue = queue_name,
        items = input.items.len(),
        batch = tracing::field::Empty
    );
    enqueue_in_span(store, queue, queue_name, input, request, owner)
        .instrument(span)
        .await
}

async fn enqueue_in_span(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    input: BatchInput,
    request: EnqueueRequest<'_>,
    owner: Option<Owner<'_>>,
) -> Result<EnqueueOnce, ControlError> {
    if input.items.is_empty() {
        return Err(ControlError::NothingToEnqueue {
            rejected: input.rejected,
        });
    }
    let policy = owner.as_ref().and_then(|o| o.policy);
    let allowed = policy.map_or_else(Allowed::anything, |p| {
        p.allowed(request.offer.default_backend)
    });
    request
        .options
        .admit(
            request.offer.drills,
            request.offer.default_backend,
            &allowed,
        )
        .map_err(ControlError::OptionsRefused)?;
    if let Some(max) = policy.and_then(|p| p.max_priority)
        && request.priority.rank() < max.rank()
    {
        let allowed: Vec<&str> = Priority::ALL
            .iter()
            .filter(|p| p.rank() >= max.rank())
            .map(|p| p.as_str())
            .collect();
        return Err(ControlError::OptionsRefused(format!(
            "priority: {:?} is not allowed for this tenant; allowed: {}",
            request.priority.as_str(),
            allowed.join(", ")
        )));
    }
    if let (Some(policy), Some(tenant)) = (policy, owner.as_ref().and_then(|o| o.tenant)) {
        check_quotas(store, tenant, policy, input.items.len()).await?;
    }
    let options = serde_json::to_value(&request.options).expect("options serialize");
    let id = BatchId::new();
    let done = Enqueued {
        batch_id: id,
        accepted: input.items.len(),
        duplicates: input.duplicates,
        rejected: input.rejected,
    };
    let idempotency = owner
        .as_ref()
        .and_then(|o| o.idempotency)
        .map(|(key, request_hash)| IdempotencyKey {
            key,
            request_hash,
            response: serde_json::to_value(&done).expect("enqueue result serializes"),
        });
    let traceparent = abridge_telemetry::trace::current_traceparent();
    let batch = NewBatch {
        id,
        queue: queue_name,
        name: request.name,
        priority: request.priority,
        options,
        tenant: owner.as_ref().and_then(|o| o.tenant),
        webhook_url: owner.as_ref().and_then(|o| o.webhook_url),
        traceparent: traceparent.as_deref(),
    };
    // A large batch draws its ids first and stages its items in Redis while Postgres writes
    // them: the two writes overlap instead of following each other. Staged items are out of
    // every claim's sight until the batch is committed and activated.
    let (outcome, staged) = if input.items.len() > SMALL_BATCH {
        let ids = store.draw_item_ids(input.items.len()).await?;
        let (outcome, staged) = futures::join!(
            store.create_batch_once(batch, &input.items, Some(&ids), idempotency),
            queue.stage(id, &ids)
        );
        if let Err(e) = &staged {
            tracing::warn!(batch = %id, error = %e, "could not stage the batch's items in Redis");
        }
        (outcome, staged.is_ok())
    } else {
        let outcome = store
            .create_batch_once(batch, &input.items, None, idempotency)
            .await;
        (outcome, false)
    };
    let created = match outcome {
        Ok(CreateOnce::Created(created)) => created,
        Ok(CreateOnce::Existing {
            same_request,
            response,
            ..
        }) => {
            unstage(queue, id, staged).await;
            let done = serde_json::from_value(response)
                .map_err(|e| ControlError::StoredResult(e.to_string()))?;
            return Ok(EnqueueOnce::Replayed { done, same_request });
        }
        Err(e) => {
            unstage(queue, id, staged).await;
            return Err(e.into());
        }
    };
    tracing::Span::current().record("batch", tracing::field::display(created.id));
    // The batch is committed: from here on a Redis failure only delays it (the reconciler
    // pushes what Redis is missing), so report it without failing the enqueue.
    let share = Share {
        tenant: owner.as_ref().and_then(|o| o.tenant),
        weight: policy.map_or(1, |p| p.weight),
        max_in_flight: policy.and_then(|p| p.max_in_flight),
    };
    if let Err(e) = make_ready(queue, &created, staged, share).await {
        tracing::warn!(batch = %created.id, error = %e, "batch saved but not yet queued in Redis; the reconciler will queue it");
    }
    Ok(EnqueueOnce::Created(done))
}

/// Sets tenant `name`'s policy (false: no such tenant), and its weight and limit on items in
/// flight where claims read them, so they apply to its queued batches at once (the
/// reconciler records them again on its passes if Redis is away now).
pub async fn set_tenant_policy(
    store: &Store,
    queue: &Queue,
    name: &str,
    policy: &TenantPolicy,
) -> Result<bool, ControlError> {
    if !store.set_tenant_policy(name, policy).await? {
        return Ok(false);
    }
    if let Err(e) = queue
        .set_limits(name, policy.weight, policy.max_in_flight)
        .await
    {
        tracing::warn!(tenant = %name, error = %e, "tenant policy saved; Redis will have its limits at the tenant's next enqueue");
    }
    Ok(true)
}

/// Refuses a batch that would take `tenant` over its queued-items limit or its batches per
/// minute. Checked before anything is stored, so a refused batch leaves nothing behind; two
/// creates of one tenant racing each other may both pass.
async fn check_quotas(
    store: &Store,
    tenant: &str,
    policy: &TenantPolicy,
    items: usize,
) -> Result<(), ControlError> {
    check_rate(store, tenant, policy).await?;
    if let Some(limit) = policy.max_queued {
        let queued = store.tenant_queued_items(tenant).await?;
        let items = i64::try_from(items).unwrap_or(i64::MAX);
        if queued.saturating_add(items) > limit {
            return Err(ControlError::QuotaExceeded(format!(
                "tenant {tenant:?} may have {limit} items queued (max_queued): {queued} are queued and this batch has {items}"
            )));
        }
    }
    Ok(())
}

/// Refuses a create that would take `tenant` over its batches per minute. The API asks this
/// before it reads a batch's playlists and channels too, so a tenant over its rate spends no
/// YouTube requests.
pub async fn check_rate(
    store: &Store,
    tenant: &str,
    policy: &TenantPolicy,
) -> Result<(), ControlError> {
    if let Some(limit) = policy.max_batches_per_minute {
        let recent = store.tenant_batches_within(tenant, 60).await?;
        if recent.count >= i64::from(limit) {
            return Err(ControlError::RateLimited {
                message: format!(
                    "tenant {tenant:?} may create {limit} batches per minute (max_batches_per_minute); try again in {} s",
                    recent.retry_after_s
                ),
                retry_after: recent.retry_after_s,
            });
        }
    }
    Ok(())
}

/// Makes a committed batch's items ready: activates what was staged, and enqueues the items
/// if the staging was incomplete (or there was none).
async fn make_ready(
    queue: &Queue,
    created: &CreatedBatch,
    staged: bool,
    share: Share<'_>,
) -> Result<(), QueueError> {
    if staged
        && queue.activate(created.id, created.priority, share).await? == created.item_ids.len()
    {
        return Ok(());
    }
    queue
        .enqueue(created.id, created.priority, share, &created.item_ids)
        .await
}

/// Drops the staged items of a batch that was not created (best effort: they expire).
async fn unstage(queue: &Queue, batch: BatchId, staged: bool) {
    if staged && let Err(e) = queue.unstage(batch).await {
        tracing::warn!(%batch, error = %e, "could not drop the staged items of a batch that was not created");
    }
}

/// Cancels a batch: no item of it starts after this returns; running items stop.
pub async fn cancel(store: &Store, queue: &Queue, id: BatchId) -> Result<u64, ControlError> {
    match store.cancel_batch(id).await? {
        CancelOutcome::Cancelled { items, priority } => {
            if let Err(e) = queue.cancel_batch(id, priority, &items).await {
                // Postgres already refuses to start or finish its items; workers holding some
                // will find out when their next write or renewal is refused.
                tracing::warn!(batch = %id, error = %e, "batch cancelled in Postgres but Redis could not be told");
            }
            queue.notify_progress(&[id]).await;
            Ok(items.len() as u64)
        }
        CancelOutcome::AlreadyFinished(status) => Err(ControlError::AlreadyFinished {
            id,
            status: status.to_string(),
        }),
        CancelOutcome::NotFound => Err(ControlError::NotFound(id)),
    }
}

/// Whether a queue is paused, and since when.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PauseState {
    pub queue: String,
    pub paused: bool,
    /// RFC 3339; `null` while the queue runs.
    pub paused_at: Option<String>,
}

impl PauseState {
    fn new(queue: &str, since: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        Self {
            queue: queue.to_owned(),
            paused: since.is_some(),
            paused_at: since.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        }
    }
}

/// Pauses a queue: no claim takes an item afterwards (items in hand finish; enqueues are
/// still accepted). Postgres holds the pause; Redis's copy is what claims obey, and the
/// reconciler puts it back if Redis loses it. `by` says who paused it (`cli`, `api`).
pub async fn pause(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    by: &str,
) -> Result<PauseState, ControlError> {
    let row = store.pause_queue(queue_name, by).await?;
    queue.set_paused(true, row.generation).await?;
    Ok(PauseState::new(queue_name, row.paused_at))
}

/// Resumes a paused queue (a running one: no change) and wakes the workers.
pub async fn resume(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
) -> Result<PauseState, ControlError> {
    let row = store.resume_queue(queue_name).await?;
    queue.set_paused(false, row.generation).await?;
    Ok(PauseState::new(queue_name, row.paused_at))
}

/// Puts a batch's failed items back in the queue (attempts reset) and reopens the batch if it
/// had completed; returns how many items were requeued. A cancelled batch cannot be retried.
pub async fn retry_failed(
    store: &Store,
    queue: &Queue,
    id: BatchId,
    only: Option<ItemId>,
) -> Result<usize, ControlError> {
    let items = match store.retry_failed(id, only).await? {
        RetryOutcome::Retried(items) => items,
        RetryOutcome::Cancelled => return Err(ControlError::Cancelled(id)),
        RetryOutcome::NotFound => return Err(ControlError::NotFound(id)),
    };
    if items.is_empty() {
        return Ok(0);
    }
    let placements: Vec<Placement> = items
        .iter()
        .map(|i| Placement {
            item: i.id,
            batch: i.batch_id,
            priority: i.priority,
            position: i.position,
            due: None,
        })
        .collect();
    // Committed in Postgres: if Redis cannot take them now, the reconciler will.
    if let Err(e) = queue.requeue(&placements).await {
        tracing::warn!(batch = %id, error = %e, "failed items requeued in Postgres but not yet in Redis; the reconciler will queue them");
    }
    queue.notify_progress(&[id]).await;
    Ok(items.len())
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
    /// Since when an operator has the queue paused (RFC 3339); `null` while it runs.
    pub paused_at: Option<String>,
    pub workers: Vec<SessionView>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Depth {
    pub high: i64,
    pub normal: i64,
    pub low: i64,
}

/// A tenant's own figures, as `/v1/stats` shows them to a tenant token. The fleet's depth,
/// failures and workers are the operator's.
#[derive(Clone, Debug, Serialize)]
pub struct TenantStats {
    pub tenant: String,
    /// Its items by status (an item that has not run long enough to be marked running
    /// counts as queued).
    pub items: abridge_store::batches::Counts,
    /// Its items finished per minute over the last five minutes.
    pub throughput_per_minute: f64,
    /// Its queued items as a share of every queued item (0 to 1), from the API's latest
    /// depth sample; `null` without a recent one.
    pub queue_share: Option<f64>,
}

pub async fn tenant_stats(
    store: &Store,
    queue_name: &str,
    tenant: &str,
) -> Result<TenantStats, ControlError> {
    let (items, minutes, queued_fleet) = futures::try_join!(
        async {
            store
                .tenant_counts(tenant)
                .await
                .map_err(ControlError::from)
        },
        async {
            store
                .throughput_per_minute(queue_name, 5, Some(tenant))
                .await
                .map_err(ControlError::from)
        },
        async {
            store
                .latest_queued(queue_name)
                .await
                .map_err(ControlError::from)
        },
    )?;
    let finished: i64 = minutes.iter().map(|m| m.succeeded + m.failed).sum();
    Ok(TenantStats {
        tenant: tenant.to_owned(),
        throughput_per_minute: finished as f64 / 5.0,
        queue_share: queued_fleet.map(|all| {
            if all > 0 {
                (items.queued as f64 / all as f64).min(1.0)
            } else {
                0.0
            }
        }),
        items,
    })
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
        paused_at: PauseState::new(queue_name, store.queue_pause(queue_name).await?.paused_at)
            .paused_at,
        workers,
    })
}
