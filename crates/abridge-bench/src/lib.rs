//! `abridge bench`: how many items an hour a fleet gets through, how quickly a new item
//! starts, and what each item costs in Redis and Postgres. Every scenario runs against real
//! servers (the configured ones, or throwaway ones started here) and real `abridge worker`
//! processes with the `noop` summarizer, so the queue alone is measured.
//!
//! - [`servers`]: servers and worker processes.
//! - [`burndown`], [`enqueue`], [`latency`], [`scale`]: the scenarios; [`ceiling`]: the
//!   burn-down's Postgres statements alone, the bound the burn-down cannot pass;
//!   [`retention`]: the burn-down against a big `items` table, and while the pruner runs;
//!   [`transcripts`]: requests to YouTube per video, with the real summarizer against the
//!   YouTube stand-in.
//! - [`report`]: one JSON line per scenario result, and a table against the targets.

pub mod burndown;
pub mod ceiling;
pub mod enqueue;
pub mod latency;
pub mod report;
pub mod retention;
pub mod scale;
pub mod servers;
pub mod transcripts;

use std::path::PathBuf;

use abridge_core::settings::Secret;

pub use report::Record;

/// Which scenarios to run and how big.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub scenarios: Vec<Scenario>,
    /// Items pre-filled for the burn-down.
    pub items: usize,
    /// Batches the burn-down's items are split across (at least 1).
    pub batches: usize,
    /// Whether each of those batches belongs to a tenant of its own (else to none), to
    /// measure the claim's fair share across tenants against the one across batches.
    pub tenants: bool,
    /// Worker processes.
    pub workers: usize,
    /// Items per worker at once.
    pub concurrency: usize,
    /// Lines in the enqueue scenario's batch.
    pub enqueue_items: usize,
    /// Open-loop arrival rates (items/s) for the latency scenario.
    pub rates: Vec<u32>,
    /// Seconds each arrival rate runs.
    pub rate_seconds: f64,
    /// Items in the big backlog of the scale scenario.
    pub backlog: usize,
    /// Finished items the retention scenario puts in `items` before its second burn-down.
    pub retention_rows: usize,
    /// Of those, how many are past their retention (the pruner's work).
    pub retention_prune: usize,
    /// The pruner's chunk settings (`ABRIDGE_PRUNE_*`).
    pub retention: abridge_core::settings::Retention,
    /// The `abridge` executable, for worker processes and `abridge enqueue`.
    pub exe: PathBuf,
    /// Use these servers instead of throwaway ones.
    pub database_url: Option<Secret>,
    pub redis_url: Option<Secret>,
    /// Start a throwaway Redis Cluster (three masters) instead of one server.
    pub redis_cluster: bool,
    /// `ABRIDGE_QUEUE_SHARDS` for the benchmark's queues.
    pub queue_shards: usize,
    /// The worker processes' `RUST_LOG` (`info` shows each worker's claim and write tallies
    /// at exit).
    pub worker_log: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Burndown,
    Enqueue,
    Latency,
    Scale,
    Ceiling,
    Retention,
    Transcripts,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Self::Burndown,
        Self::Enqueue,
        Self::Latency,
        Self::Scale,
        Self::Ceiling,
        Self::Retention,
        Self::Transcripts,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Burndown => "burndown",
            Self::Enqueue => "enqueue",
            Self::Latency => "latency",
            Self::Scale => "scale",
            Self::Ceiling => "ceiling",
            Self::Retention => "retention",
            Self::Transcripts => "transcripts",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {s:?}: expected burndown, enqueue, latency, scale, ceiling, retention or transcripts"
                )
            })
    }
}

/// Runs the chosen scenarios, handing each result to `emit` as soon as it is known.
pub async fn run(
    opts: &BenchOptions,
    mut emit: impl FnMut(&Record),
) -> anyhow::Result<Vec<Record>> {
    let servers = servers::Servers::start(
        opts.database_url.clone(),
        opts.redis_url.clone(),
        opts.redis_cluster,
        opts.worker_log.clone(),
        opts.queue_shards,
    )
    .await?;
    let mut all = Vec::new();
    for scenario in &opts.scenarios {
        let records = match scenario {
            Scenario::Burndown => burndown::run(opts, &servers).await?,
            Scenario::Enqueue => enqueue::run(opts, &servers).await?,
            Scenario::Latency => latency::run(opts, &servers).await?,
            Scenario::Scale => scale::run(opts, &servers).await?,
            Scenario::Ceiling => ceiling::run(opts, &servers).await?,
            Scenario::Retention => retention::run(opts, &servers).await?,
            Scenario::Transcripts => transcripts::run(opts, &servers).await?,
        };
        for r in records {
            emit(&r);
            all.push(r);
        }
    }
    Ok(all)
}
