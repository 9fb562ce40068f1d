//! Counters a worker process's tasks share, summed into its [`RunReport`](crate::RunReport).

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
    pub retried: AtomicU64,
    pub released: AtomicU64,
    pub fenced: AtomicU64,
    pub claims: AtomicU64,
    pub claimed: AtomicU64,
    pub writes: AtomicU64,
    pub written: AtomicU64,
    pub restored: AtomicU64,
}
