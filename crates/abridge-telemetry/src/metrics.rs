//! Prometheus metrics: the recorder behind the `metrics` facade, and the catalogue of every
//! metric abridge exposes.
//!
//! Two kinds of metric, from two kinds of place:
//!
//! - **Process metrics** ([`Scope::Process`]) count what one process did: items it finished,
//!   its stage durations, its renewal failures, its summarizer calls. The code records them
//!   through the `metrics` facade (`metrics::counter!(...)`); [`install`] routes them to a
//!   Prometheus recorder that `/metrics` renders. Summed over processes they give the fleet's
//!   totals, so every worker reporting its own is right.
//! - **Fleet metrics** ([`Scope::Fleet`]) describe the queue itself: depth, leases, the oldest
//!   waiting item, live workers, drift. They are read from Redis and Postgres at scrape time by
//!   one process (`abridge exporter`), never recorded by workers, so N workers do not report N
//!   stale copies (see `abridge_control::gauges`).
//!
//! [`CATALOGUE`] lists both, with their label names and the label values known in advance;
//! tests check that `/metrics` matches it and that dashboards and alerts only use names from it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Where a metric comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Recorded by each process (workers, the API).
    Process,
    /// Computed from Redis and Postgres at scrape time by `abridge exporter`.
    Fleet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric family.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub scope: Scope,
    pub help: &'static str,
    /// Label names, in the order they are written.
    pub labels: &'static [&'static str],
}

pub const ITEMS_TOTAL: &str = "abridge_items_total";
pub const ITEM_DURATION: &str = "abridge_item_duration_seconds";
pub const ENQUEUE_TO_START: &str = "abridge_enqueue_to_start_seconds";
pub const LEASE_RENEW_FAILURES: &str = "abridge_lease_renew_failures_total";
pub const RECLAIMED: &str = "abridge_reclaimed_total";
pub const STALE_WRITES_REJECTED: &str = "abridge_stale_writes_rejected_total";
pub const CLAIM_ERRORS: &str = "abridge_claim_errors_total";
pub const SUMMARIZER_REQUESTS: &str = "abridge_summarizer_requests_total";
pub const SUMMARIZER_TOKENS: &str = "abridge_summarizer_tokens_total";
pub const YOUTUBE_REQUESTS: &str = "abridge_youtube_requests_total";
pub const YOUTUBE_BLOCKS: &str = "abridge_youtube_blocks_total";
pub const YOUTUBE_EGRESS_QUARANTINED: &str = "abridge_youtube_egress_quarantined";
pub const YOUTUBE_REQUESTS_PER_VIDEO: &str = "abridge_youtube_requests_per_video";
pub const WORKER_ITEMS_IN_HAND: &str = "abridge_worker_items_in_hand";
pub const WORKER_CONCURRENCY: &str = "abridge_worker_concurrency";
pub const BUILD_INFO: &str = "abridge_build_info";
pub const CLAIM_SIZE: &str = "abridge_claim_size";
pub const WRITE_SIZE: &str = "abridge_write_size";
pub const PRUNED: &str = "abridge_pruned_total";

pub const QUEUE_DEPTH: &str = "abridge_queue_depth";
pub const QUEUE_DELAYED: &str = "abridge_queue_delayed";
pub const LEASES_ACTIVE: &str = "abridge_leases_active";
pub const OLDEST_ITEM_AGE: &str = "abridge_oldest_item_age_seconds";
pub const WORKERS_ALIVE: &str = "abridge_workers_alive";
pub const BATCH_ITEMS: &str = "abridge_batch_items";
pub const BATCHES_OPEN: &str = "abridge_batches_open";
pub const DRIFT: &str = "abridge_redis_postgres_drift";
pub const RECONCILE_LAST_RUN: &str = "abridge_reconcile_last_run_timestamp_seconds";
pub const FLEET_SOURCE_UP: &str = "abridge_fleet_source_up";

/// Outcomes of `abridge_items_total`.
pub const OUTCOMES: &[&str] = &["succeeded", "failed", "retried", "released", "deferred"];
/// Stages of `abridge_item_duration_seconds`: `process` is the whole processor call;
/// summarizers record `transcript` and `summarize` inside it; `store` is the outcome write.
pub const STAGES: &[&str] = &["process", "transcript", "summarize", "store"];
/// Reasons of `abridge_reclaimed_total`.
pub const RECLAIM_REASONS: &[&str] = &["lease_expired", "session_dead", "reconciled"];
/// Outcomes of `abridge_summarizer_requests_total` (a backend may add its own, such as
/// `rate_limited` or `timeout`).
pub const SUMMARIZER_OUTCOMES: &[&str] = &["ok", "error"];
/// Kinds of `abridge_pruned_total` (`abridge_store::PruneKind`).
pub const PRUNED_KINDS: &[&str] = &[
    "batches",
    "items",
    "checkpoints",
    "webhook_deliveries",
    "idempotency_keys",
    "fenced_writes",
    "worker_sessions",
    "transcripts",
    "summaries",
];
/// Directions of `abridge_summarizer_tokens_total`.
pub const TOKEN_DIRECTIONS: &[&str] = &["input", "output"];

use Kind::{Counter, Gauge, Histogram};
use Scope::{Fleet, Process};

pub const CATALOGUE: &[MetricDef] = &[
    MetricDef {
        name: ITEMS_TOTAL,
        kind: Counter,
        scope: Process,
        help: "Attempt outcomes this process wrote: succeeded, failed, retried, released (handed back at shutdown), deferred (waiting without using an attempt).",
        labels: &["outcome"],
    },
    MetricDef {
        name: ITEM_DURATION,
        kind: Histogram,
        scope: Process,
        help: "Seconds per stage of an attempt: process (the whole summarizer call), transcript, summarize, store (the outcome write).",
        labels: &["stage"],
    },
    MetricDef {
        name: ENQUEUE_TO_START,
        kind: Histogram,
        scope: Process,
        help: "Seconds from an item becoming ready (enqueue, or requeue) to a worker starting it.",
        labels: &[],
    },
    MetricDef {
        name: LEASE_RENEW_FAILURES,
        kind: Counter,
        scope: Process,
        help: "Leases this worker failed to renew (Redis unreachable or slow).",
        labels: &[],
    },
    MetricDef {
        name: RECLAIMED,
        kind: Counter,
        scope: Process,
        help: "Running items this process's reaper or reconciler took back from their holder.",
        labels: &["reason"],
    },
    MetricDef {
        name: STALE_WRITES_REJECTED,
        kind: Counter,
        scope: Process,
        help: "Outcome writes refused because this worker no longer held the item (fencing at work).",
        labels: &[],
    },
    MetricDef {
        name: CLAIM_ERRORS,
        kind: Counter,
        scope: Process,
        help: "Claims that failed (Redis unreachable or erroring).",
        labels: &[],
    },
    MetricDef {
        name: SUMMARIZER_REQUESTS,
        kind: Counter,
        scope: Process,
        help: "Requests to a summarizer backend (each LLM call), by outcome.",
        labels: &["backend", "outcome"],
    },
    MetricDef {
        name: SUMMARIZER_TOKENS,
        kind: Counter,
        scope: Process,
        help: "Tokens sent to (input) and received from (output) a summarizer backend.",
        labels: &["backend", "direction"],
    },
    MetricDef {
        name: YOUTUBE_REQUESTS,
        kind: Counter,
        scope: Process,
        help: "Requests to YouTube, by way out (direct, or a proxy of the pool).",
        labels: &["egress"],
    },
    MetricDef {
        name: YOUTUBE_BLOCKS,
        kind: Counter,
        scope: Process,
        help: "Blocks (429, bot check, captcha, unreachable) that quarantined a proxy of the pool.",
        labels: &["egress"],
    },
    MetricDef {
        name: YOUTUBE_EGRESS_QUARANTINED,
        kind: Gauge,
        scope: Process,
        help: "1 while a proxy of the pool is quarantined, as this worker last saw it.",
        labels: &["egress"],
    },
    MetricDef {
        name: YOUTUBE_REQUESTS_PER_VIDEO,
        kind: Histogram,
        scope: Process,
        help: "Requests to YouTube one transcript fetch took (2 on the common path).",
        labels: &[],
    },
    MetricDef {
        name: WORKER_ITEMS_IN_HAND,
        kind: Gauge,
        scope: Process,
        help: "Items this worker holds right now, from claim to written outcome.",
        labels: &[],
    },
    MetricDef {
        name: WORKER_CONCURRENCY,
        kind: Gauge,
        scope: Process,
        help: "Items this worker may hold at once.",
        labels: &[],
    },
    MetricDef {
        name: BUILD_INFO,
        kind: Gauge,
        scope: Process,
        help: "Always 1; the version label says which abridge this process runs.",
        labels: &["version"],
    },
    MetricDef {
        name: CLAIM_SIZE,
        kind: Histogram,
        scope: Process,
        help: "Items per claim (one Redis call); small claims under load mean the worker is starved of permits.",
        labels: &[],
    },
    MetricDef {
        name: WRITE_SIZE,
        kind: Histogram,
        scope: Process,
        help: "Outcomes per write (one Postgres statement): the writers' group commit at work.",
        labels: &[],
    },
    MetricDef {
        name: PRUNED,
        kind: Counter,
        scope: Process,
        help: "Rows this process's pruner deleted because their retention ran out, by kind (batches, items, checkpoints, caches, ...).",
        labels: &["kind"],
    },
    MetricDef {
        name: QUEUE_DEPTH,
        kind: Gauge,
        scope: Fleet,
        help: "Items ready to be claimed, per priority (Redis).",
        labels: &["queue", "priority"],
    },
    MetricDef {
        name: QUEUE_DELAYED,
        kind: Gauge,
        scope: Fleet,
        help: "Items waiting for their retry time (Redis).",
        labels: &["queue"],
    },
    MetricDef {
        name: LEASES_ACTIVE,
        kind: Gauge,
        scope: Fleet,
        help: "Items claimed by workers right now (Redis leases).",
        labels: &["queue"],
    },
    MetricDef {
        name: OLDEST_ITEM_AGE,
        kind: Gauge,
        scope: Fleet,
        help: "Seconds the longest-waiting ready item has waited (Postgres); 0 when none waits.",
        labels: &["queue"],
    },
    MetricDef {
        name: WORKERS_ALIVE,
        kind: Gauge,
        scope: Fleet,
        help: "Worker sessions that heartbeated within the session TTL (Postgres).",
        labels: &["queue"],
    },
    MetricDef {
        name: BATCH_ITEMS,
        kind: Gauge,
        scope: Fleet,
        help: "Items of unfinished batches, per item state (Postgres).",
        labels: &["queue", "state"],
    },
    MetricDef {
        name: BATCHES_OPEN,
        kind: Gauge,
        scope: Fleet,
        help: "Unfinished batches, per batch state (Postgres).",
        labels: &["queue", "state"],
    },
    MetricDef {
        name: DRIFT,
        kind: Gauge,
        scope: Fleet,
        help: "Items Postgres says are queued that Redis did not hold, at the last reconcile pass (which put them back).",
        labels: &["queue"],
    },
    MetricDef {
        name: RECONCILE_LAST_RUN,
        kind: Gauge,
        scope: Fleet,
        help: "Unix time of the last reconcile pass (0 if none is recorded since Redis last lost its data).",
        labels: &["queue"],
    },
    MetricDef {
        name: FLEET_SOURCE_UP,
        kind: Gauge,
        scope: Fleet,
        help: "1 if the fleet gauges could be read from this source at this scrape, else 0.",
        labels: &["source"],
    },
];

/// The catalogue entry for `name`.
pub fn def(name: &str) -> Option<&'static MetricDef> {
    CATALOGUE.iter().find(|d| d.name == name)
}

/// Bucket bounds for stage durations: 5 ms to 10 minutes (the default item timeout).
const STAGE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Bucket bounds for group sizes (claims, writes): powers of two up to the largest claim.
const SIZE_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// Bucket bounds for queue waits: 10 ms to a day (a big batch drains for hours).
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
    21600.0, 86400.0,
];

/// Bucket bounds for requests per transcript fetch: 2 is the common path, 3 renews the
/// session, more means consent pages or blocked proxies.
const FETCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the `metrics` facade's global recorder (once per
/// process; later calls return the same handle) and describes every process metric.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(ITEM_DURATION.into()), STAGE_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(ENQUEUE_TO_START.into()), WAIT_BUCKETS)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(CLAIM_SIZE.into()), SIZE_BUCKETS))
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(WRITE_SIZE.into()), SIZE_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(YOUTUBE_REQUESTS_PER_VIDEO.into()),
                        FETCH_BUCKETS,
                    )
                })
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will not show this process's metrics");
            }
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Histogram samples wait in buffers until a scrape drains them; drain them even
            // when nobody scrapes, so memory stays flat.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

/// The installed recorder's handle, if [`install`] ran.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE.get()
}

fn describe() {
    for d in CATALOGUE.iter().filter(|d| d.scope == Scope::Process) {
        match d.kind {
            Kind::Counter => metrics::describe_counter!(d.name, d.help),
            Kind::Gauge => metrics::describe_gauge!(d.name, d.help),
            Kind::Histogram => metrics::describe_histogram!(d.name, d.help),
        }
    }
}

/// Makes a worker's metrics visible from its first scrape, at zero, with every label value
/// known in advance: a counter that appears only at its first increment breaks `rate()` and
/// alerts on absence. `backend` is the worker's summarizer backend.
pub fn preregister_worker(backend: &str, concurrency: usize) {
    for outcome in OUTCOMES {
        metrics::counter!(ITEMS_TOTAL, "outcome" => *outcome).absolute(0);
    }
    for reason in RECLAIM_REASONS {
        metrics::counter!(RECLAIMED, "reason" => *reason).absolute(0);
    }
    for kind in PRUNED_KINDS {
        metrics::counter!(PRUNED, "kind" => *kind).absolute(0);
    }
    for name in [LEASE_RENEW_FAILURES, STALE_WRITES_REJECTED, CLAIM_ERRORS] {
        metrics::counter!(name).absolute(0);
    }
    for stage in STAGES {
        let _ = metrics::histogram!(ITEM_DURATION, "stage" => *stage);
    }
    let _ = metrics::histogram!(ENQUEUE_TO_START);
    let _ = metrics::histogram!(CLAIM_SIZE);
    let _ = metrics::histogram!(WRITE_SIZE);
    for outcome in SUMMARIZER_OUTCOMES {
        metrics::counter!(SUMMARIZER_REQUESTS, "backend" => backend.to_owned(), "outcome" => *outcome)
            .absolute(0);
    }
    for direction in TOKEN_DIRECTIONS {
        metrics::counter!(SUMMARIZER_TOKENS, "backend" => backend.to_owned(), "direction" => *direction)
            .absolute(0);
    }
    metrics::gauge!(WORKER_ITEMS_IN_HAND).set(0.0);
    metrics::gauge!(WORKER_CONCURRENCY).set(concurrency as f64);
}

/// Records how long one stage of an attempt took (`transcript`, `summarize`; the worker
/// records `process` and `store` itself).
pub fn record_stage(stage: &'static str, took: Duration) {
    metrics::histogram!(ITEM_DURATION, "stage" => stage).record(took.as_secs_f64());
}

/// Counts one request to a summarizer backend; `outcome` is `ok`, `error`, or a more precise
/// word the backend documents (`rate_limited`, `timeout`).
pub fn summarizer_request(backend: &str, outcome: &'static str) {
    metrics::counter!(SUMMARIZER_REQUESTS, "backend" => backend.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Counts one request to YouTube through `egress`.
pub fn youtube_request(egress: &str) {
    metrics::counter!(YOUTUBE_REQUESTS, "egress" => egress.to_owned()).increment(1);
}

/// Records a proxy's state: quarantined (after a block, `blocked`) or usable.
pub fn youtube_egress(egress: &str, quarantined: bool, blocked: bool) {
    if blocked {
        metrics::counter!(YOUTUBE_BLOCKS, "egress" => egress.to_owned()).increment(1);
    }
    metrics::gauge!(YOUTUBE_EGRESS_QUARANTINED, "egress" => egress.to_owned())
        .set(if quarantined { 1.0 } else { 0.0 });
}

/// Makes a summarizing worker's YouTube families exist from the first scrape: requests per
/// way out, and for a proxy pool its blocks and quarantine states.
pub fn preregister_youtube(egress: &[String], pool: bool) {
    for e in egress {
        metrics::counter!(YOUTUBE_REQUESTS, "egress" => e.clone()).absolute(0);
        if pool {
            metrics::counter!(YOUTUBE_BLOCKS, "egress" => e.clone()).absolute(0);
            metrics::gauge!(YOUTUBE_EGRESS_QUARANTINED, "egress" => e.clone()).set(0.0);
        }
    }
    let _ = metrics::histogram!(YOUTUBE_REQUESTS_PER_VIDEO);
}

/// Records how many requests one transcript fetch took.
pub fn youtube_fetch(requests: u32) {
    metrics::histogram!(YOUTUBE_REQUESTS_PER_VIDEO).record(f64::from(requests));
}

/// Counts the tokens of one summarizer request.
pub fn summarizer_tokens(backend: &str, input: u64, output: u64) {
    metrics::counter!(SUMMARIZER_TOKENS, "backend" => backend.to_owned(), "direction" => "input")
        .increment(input);
    metrics::counter!(SUMMARIZER_TOKENS, "backend" => backend.to_owned(), "direction" => "output")
        .increment(output);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for d in CATALOGUE {
            assert!(seen.insert(d.name), "{} listed twice", d.name);
            assert!(d.name.starts_with("abridge_"), "{}", d.name);
            assert!(
                d.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                d.name
            );
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                d.name
            );
            assert!(!d.help.is_empty() && !d.help.contains('\n'));
        }
        for required in [
            QUEUE_DEPTH,
            OLDEST_ITEM_AGE,
            ITEMS_TOTAL,
            ITEM_DURATION,
            ENQUEUE_TO_START,
            LEASES_ACTIVE,
            LEASE_RENEW_FAILURES,
            RECLAIMED,
            STALE_WRITES_REJECTED,
            WORKERS_ALIVE,
            SUMMARIZER_REQUESTS,
            SUMMARIZER_TOKENS,
            DRIFT,
        ] {
            assert!(def(required).is_some(), "{required} is required by issue 5");
        }
    }
}
