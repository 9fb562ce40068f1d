//! The processor boundary: what the worker runtime hands a summarizer ([`Job`]), what it takes
//! back ([`JobOutput`]), the trait a summarizer implements ([`Processor`]), and the one thing a
//! summarizer asks of the runtime ([`Fence`]). It depends on `abridge-core` alone, so a new
//! backend learns this crate and nothing of how the runtime claims, starts or writes items.

use std::sync::Arc;

use abridge_core::{BatchId, Claim, ItemError, ItemId, LeaseToken, WorkerId};
use async_trait::async_trait;

/// One item handed to a processor.
#[derive(Clone)]
pub struct Job {
    pub item_id: ItemId,
    pub batch_id: BatchId,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// This attempt's claim token. Any write a processor makes for the item (a checkpoint,
    /// a cache fill) must be fenced by it ([`Job::claim`]), like the worker's own writes.
    pub lease_token: LeaseToken,
    /// The claiming worker's session: a refused write is recorded under it.
    pub worker: WorkerId,
    pub video_id: String,
    pub url: String,
    pub title: Option<String>,
    /// Supplied by the producer: summarise it instead of fetching one.
    pub transcript: Option<String>,
    /// The batch's processing options, as given at enqueue (backend, model, length, language).
    pub options: abridge_core::BatchOptions,
    /// The batch's priority (a `low` batch may be summarized through a provider's batch API).
    pub priority: abridge_core::Priority,
    /// The API tenant that owns the batch; `None` for the operator's (CLI) batches. Whatever
    /// the producer supplied is kept to this owner (the summary cache is scoped by it).
    pub tenant: Option<String>,
    /// Asked before any write fenced on the item running under this claim (a checkpoint).
    pub fence: Arc<dyn Fence>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("item_id", &self.item_id)
            .field("batch_id", &self.batch_id)
            .field("attempt", &self.attempt)
            .field("video_id", &self.video_id)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// The claim a fenced write of this attempt presents (the fencing rule, ARCHITECTURE.md).
    pub fn claim(&self) -> Claim {
        Claim {
            item: self.item_id,
            token: self.lease_token,
            attempt: i32::try_from(self.attempt).unwrap_or(i32::MAX),
        }
    }
}

/// A processor's result for one item.
#[derive(Clone, Debug, Default)]
pub struct JobOutput {
    /// The summary, in markdown.
    pub summary: String,
    /// The video's title, if the processor learned it (kept only when the item had none).
    pub title: Option<String>,
    /// How the summary was made (backend, model, tokens, durations), stored with the item.
    pub meta: serde_json::Value,
}

/// Turns an item into a summary. Implementations must be cancel-safe: when the lease is
/// lost, the batch cancelled or the worker stops, the future is dropped mid-flight.
#[async_trait]
pub trait Processor: Send + Sync + 'static {
    /// The backend's name, for logs and metrics.
    fn name(&self) -> &str;

    async fn process(&self, job: &Job) -> Result<JobOutput, ItemError>;
}

/// The runtime's promise behind a processor's own fenced writes. Writes fenced by the claim
/// alone (cache fills, [`Job::claim`]) need nothing from it; a write fenced on the item
/// *running* under this claim (a checkpoint) asks [`Fence::hold`] first.
#[async_trait]
pub trait Fence: Send + Sync {
    /// Ok once the item runs under this attempt's claim. An error means the write must not
    /// be made: the attempt lost the item (stop, the outcome would be refused too), or the
    /// store could not be reached. `what` names the write for the error's message.
    async fn hold(&self, what: &str) -> Result<(), ItemError>;
}

/// A fence that always holds: for tests and tools that run a processor outside a worker.
#[derive(Clone, Copy, Debug, Default)]
pub struct Held;

#[async_trait]
impl Fence for Held {
    async fn hold(&self, _what: &str) -> Result<(), ItemError> {
        Ok(())
    }
}
