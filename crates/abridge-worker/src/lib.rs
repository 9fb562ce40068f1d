//! The worker runtime. One worker process runs one [`run`]: it registers a session, claims
//! items from Redis, starts them in Postgres under the claim's token, hands each to a
//! [`Processor`], renews leases while they run, and writes outcomes in batches.
//!
//! - [`session`]: one session's tasks, wired together, and graceful shutdown.
//! - [`holdings`]: the items this process holds, with their leases and stop signals.
//! - [`claimer`]: the claim loop and the start of claimed items.
//! - [`attempt`]: how an attempt ended, and the retry policy that turns it into an outcome.
//! - [`starter`]: deferred, batched "running" marks for items that run a while.
//! - [`finisher`]: batched, fenced outcome writes, then Redis acknowledgements.
//! - [`keeper`]: lease renewal, the local lease deadline, and the session heartbeat.
//! - [`reaper`]: expired leases and dead sessions (`abridge reap` runs one pass).
//! - [`reconciler`]: repairs Redis from Postgres (after a FLUSHALL, a failover, a crash).
//! - `settle`: puts items that were taken back where Postgres says they are (reaper,
//!   reconciler).
//! - [`pruner`]: deletes what retention allows, one worker at a time (`abridge prune` runs
//!   one pass).
//! - [`noop`]: the `noop` processor, for benchmarks and fault drills.
//!
//! Architecture Invariant: the worker never holds a Postgres transaction or a lock across a
//! processor call; processors run with nothing held but a lease.

pub mod attempt;
pub mod backoff;
mod batching;
pub mod claimer;
pub mod finisher;
pub mod holdings;
pub mod keeper;
pub mod noop;
mod progress;
pub mod pruner;
pub mod reaper;
pub mod reconciler;
pub mod session;
mod settle;
pub mod starter;
mod tally;

use std::sync::Arc;
use std::time::Duration;

use abridge_core::{BatchId, ItemError, ItemId, LeaseToken, Settings, WorkerId};
use abridge_queue::Queue;
use abridge_store::Store;
use async_trait::async_trait;

pub use session::{RunReport, run};
pub use starter::{StartHandle, StartResult};

/// One item handed to a processor.
#[derive(Clone, Debug)]
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
    pub options: serde_json::Value,
    /// The batch's priority (a `low` batch may be summarized through a provider's batch API).
    pub priority: abridge_core::Priority,
    /// The API tenant that owns the batch; `None` for the operator's (CLI) batches. Whatever
    /// the producer supplied is kept to this owner (the summary cache is scoped by it).
    pub tenant: Option<String>,
    /// Marks the item `running` in Postgres. A processor that writes anything fenced on the
    /// item running (a checkpoint) must call `start.ensure()` first; otherwise the worker
    /// does it once the item has run for `start_after`.
    pub start: StartHandle,
}

impl Job {
    /// The claim a fenced write of this attempt presents (the fencing rule, ARCHITECTURE.md).
    pub fn claim(&self) -> abridge_store::Claim {
        abridge_store::Claim {
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

/// Everything one worker process needs.
#[derive(Clone)]
pub struct Worker {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub queue: Queue,
    pub processor: Arc<dyn Processor>,
}

impl Worker {
    /// The deadline margin: a claim is known to hold until this long before its lease could
    /// expire in Redis (clock drift, and the time between a renewal's send and its effect).
    pub(crate) fn lease_margin(&self) -> Duration {
        (self.settings.lease / 10).min(Duration::from_secs(1)) * 2 + self.settings.lease / 10
    }
}
