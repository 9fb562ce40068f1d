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

use abridge_core::Settings;
use abridge_queue::Queue;
use abridge_store::Store;

pub use abridge_processor::{Fence, Held, Job, JobOutput, Processor};
pub use session::{RunReport, run};
pub use starter::{StartHandle, StartResult};

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
