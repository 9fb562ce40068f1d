//! The pruner: deletes what retention allows (see `abridge_store::retention` for what goes
//! when). Every worker runs [`run`]; a lease row in Postgres lets one of them at a time run a
//! pass, and at most one pass per `prune_interval_ms` fleet-wide. `abridge prune` runs
//! [`prune_once`] by hand.
//!
//! A pass deletes in chunks, each one short statement in its own transaction: no statement
//! holds row locks for long, and nothing is held between statements. Chunk sizes follow the
//! measured statement time ([`ChunkSizer`]): a chunk of multi-megabyte items is smaller than
//! one of small rows. After each statement the pass pauses as long as the statement took, so
//! it takes at most about half of one Postgres backend from the fleet's work.

use std::time::{Duration, Instant};

use abridge_core::settings::Retention;
use abridge_core::{BatchId, WorkerId};
use abridge_store::retention::{ItemRange, PRUNE_TASK};
use abridge_store::{PruneAges, PruneCounts, PruneKind, Store, StoreError};
use abridge_telemetry::metrics::PRUNED;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Worker;

/// A pass holds the lease this long past its last renewal; a pruner that dies mid-pass
/// delays the next pass by at most this.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// A running pass renews its lease when this much has passed since the last renewal.
const RENEW_AFTER: Duration = Duration::from_secs(10);
/// Finished batches taken up at once (their items are deleted in chunks of position ranges,
/// then their rows), and the most batch rows one statement deletes.
const BATCH_PAGE: u64 = 100;

/// How one pass runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneOptions {
    pub ages: PruneAges,
    /// Count what would go, delete nothing.
    pub dry_run: bool,
    /// What one statement should take (chunks adapt to it).
    pub statement_target: Duration,
    /// The most rows one statement deletes.
    pub max_chunk: u64,
}

impl PruneOptions {
    pub fn from_settings(r: &Retention) -> Self {
        Self {
            ages: PruneAges {
                batches: r.batches,
                caches: r.caches,
                idempotency_keys: r.idempotency_keys,
                sessions: r.sessions,
                fenced_writes: r.fenced_writes,
            },
            dry_run: false,
            statement_target: r.prune_statement_target,
            max_chunk: r.prune_max_chunk,
        }
    }
}

/// What one pass did (or, dry, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    /// Rows per kind deleted (or that would be deleted).
    pub counts: PruneCounts,
    /// Delete statements run.
    pub statements: u64,
    /// The most rows one delete statement took.
    pub largest_chunk: u64,
    pub took_ms: u64,
    /// The pass stopped before it was done: asked to stop, or its lease was lost.
    pub interrupted: bool,
}

/// Sizes chunks so that each delete statement takes about `target`: the next chunk is this
/// one scaled by target / measured time, at most doubled or halved per step, within
/// `1..=max`. A short chunk (the last of its kind) says nothing about the rate, so it never
/// grows the size.
#[derive(Clone, Debug)]
pub struct ChunkSizer {
    size: u64,
    max: u64,
    target: Duration,
}

impl ChunkSizer {
    /// Starts small (100 rows, or `max`): the first statement measures the rows' cost.
    pub fn new(target: Duration, max: u64) -> Self {
        Self::starting_at(100, target, max)
    }

    pub fn starting_at(start: u64, target: Duration, max: u64) -> Self {
        Self {
            size: start.min(max).max(1),
            max: max.max(1),
            target,
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Records that a chunk of `rows` (asked: `self.size()`) took `took`.
    pub fn record(&mut self, rows: u64, took: Duration) {
        let ratio = (self.target.as_secs_f64() / took.as_secs_f64().max(1e-6)).clamp(0.5, 2.0);
        if ratio > 1.0 && rows < self.size {
            return;
        }
        self.size = ((self.size as f64 * ratio).round() as u64).clamp(1, self.max);
    }
}

/// The pass's running totals and how it talks to the world (metrics, the stop signal).
struct Pass<'a> {
    store: &'a Store,
    options: &'a PruneOptions,
    report: PruneReport,
    holder: WorkerId,
    stop: &'a CancellationToken,
    renewed_at: Instant,
}

impl Pass<'_> {
    /// Counts a statement's deletions, records the metric, and pauses as long as it took.
    /// False when the pass should stop (asked to, or the lease is gone).
    async fn after_statement(&mut self, deleted: PruneCounts, chunk: u64, took: Duration) -> bool {
        self.report.statements += 1;
        self.report.largest_chunk = self.report.largest_chunk.max(chunk);
        for kind in PruneKind::ALL {
            let n = deleted.get(kind);
            if n > 0 {
                self.report.counts.add(kind, n);
                metrics::counter!(PRUNED, "kind" => kind.as_str()).increment(n);
            }
        }
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(took) => {}
        }
        if self.stop.is_cancelled() {
            self.report.interrupted = true;
            return false;
        }
        if self.renewed_at.elapsed() >= RENEW_AFTER {
            match self
                .store
                .renew_lease(PRUNE_TASK, self.holder, LEASE_TTL)
                .await
            {
                Ok(true) => self.renewed_at = Instant::now(),
                Ok(false) => {
                    warn!(
                        "the pruner's lease was taken over (this pass stalled past it); stopping the pass"
                    );
                    self.report.interrupted = true;
                    return false;
                }
                Err(e) => {
                    warn!(error = %e, "cannot renew the pruner's lease; stopping the pass");
                    self.report.interrupted = true;
                    return false;
                }
            }
        }
        true
    }

    /// Finished batches due for deletion: their items in chunks of position ranges, then
    /// each emptied batch row (in chunks of their own: checking that a batch has no item left
    /// walks the index entries of the items just deleted).
    async fn batches(&mut self) -> Result<bool, StoreError> {
        let age = self.options.ages.batches;
        let target = self.options.statement_target;
        let mut items = ChunkSizer::new(target, self.options.max_chunk);
        let mut rows = ChunkSizer::starting_at(10, target, BATCH_PAGE.min(self.options.max_chunk));
        loop {
            let due = self.store.prunable_batches(age, BATCH_PAGE as i64).await?;
            if due.is_empty() {
                return Ok(true);
            }
            let mut progress = false;
            let (mut next, mut from) = (0, 0);
            let mut emptied: Vec<BatchId> = Vec::new();
            while next < due.len() || !emptied.is_empty() {
                let n = items.size();
                let mut ranges = Vec::new();
                let mut planned = 0u64;
                while planned < n && next < due.len() {
                    let b = due[next];
                    let to =
                        (i64::from(from) + (n - planned) as i64).min(i64::from(b.total)) as i32;
                    if to > from {
                        ranges.push(ItemRange {
                            batch: b.id,
                            from,
                            to,
                        });
                        planned += (to - from) as u64;
                    }
                    if to >= b.total {
                        emptied.push(b.id);
                        (next, from) = (next + 1, 0);
                    } else {
                        from = to;
                    }
                }
                if !ranges.is_empty() {
                    let started = Instant::now();
                    let deleted = self.store.prune_batch_items(&ranges, age).await?;
                    let took = started.elapsed();
                    items.record(deleted.items, took);
                    progress |= deleted.items > 0;
                    debug!(
                        items = deleted.items,
                        planned,
                        took_ms = took.as_millis() as u64,
                        "pruned a chunk of items"
                    );
                    if !self.after_statement(deleted, deleted.items, took).await {
                        return Ok(false);
                    }
                }
                while emptied.len() as u64 >= rows.size()
                    || (next == due.len() && !emptied.is_empty())
                {
                    let take = (rows.size() as usize).min(emptied.len());
                    let chunk: Vec<BatchId> = emptied.drain(..take).collect();
                    let started = Instant::now();
                    let deleted = self.store.prune_empty_batches(&chunk, age).await?;
                    let took = started.elapsed();
                    rows.record(chunk.len() as u64, took);
                    progress |= deleted.batches > 0;
                    if !self
                        .after_statement(deleted, chunk.len() as u64, took)
                        .await
                    {
                        return Ok(false);
                    }
                }
            }
            if !progress {
                // Candidates that cannot go (an item not terminal): leave them to a later pass.
                return Ok(true);
            }
        }
    }

    /// Rows that go by age alone.
    async fn by_age(&mut self) -> Result<bool, StoreError> {
        let ages = self.options.ages;
        for (kind, age) in [
            (PruneKind::IdempotencyKeys, ages.idempotency_keys),
            (PruneKind::FencedWrites, ages.fenced_writes),
            (PruneKind::WorkerSessions, ages.sessions),
            (PruneKind::Transcripts, ages.caches),
            (PruneKind::Summaries, ages.caches),
        ] {
            let Some(age) = age else { continue };
            let mut sizer = ChunkSizer::new(self.options.statement_target, self.options.max_chunk);
            loop {
                let n = sizer.size();
                let started = Instant::now();
                let deleted = self.store.prune_by_age(kind, age, n as i64).await?;
                let took = started.elapsed();
                sizer.record(deleted, took);
                let mut counts = PruneCounts::default();
                counts.add(kind, deleted);
                if !self.after_statement(counts, deleted, took).await {
                    return Ok(false);
                }
                if deleted < n {
                    break;
                }
            }
        }
        Ok(true)
    }

    /// Drops the partitions of `items` that the deletes emptied (one statement each; a
    /// partition whose lock is busy waits for the next pass).
    async fn partitions(&mut self) -> Result<bool, StoreError> {
        for name in self.store.empty_item_partitions().await? {
            let started = Instant::now();
            let dropped = self.store.drop_item_partition(&name).await?;
            if dropped {
                info!(partition = %name, "dropped an emptied partition of items");
            }
            let mut counts = PruneCounts::default();
            counts.add(PruneKind::ItemPartitions, u64::from(dropped));
            if !self
                .after_statement(counts, u64::from(dropped), started.elapsed())
                .await
            {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Runs one pass if this holder can take the pruner's lease (with `min_gap`: only if the last
/// pass ended at least that long ago). `Ok(None)`: someone else holds it (or ran recently).
/// A dry run takes no lease and only counts.
pub async fn prune_once(
    store: &Store,
    options: &PruneOptions,
    holder: WorkerId,
    min_gap: Option<Duration>,
    stop: &CancellationToken,
) -> Result<Option<PruneReport>, StoreError> {
    let started = Instant::now();
    if options.dry_run {
        let counts = store.count_prunable(&options.ages).await?;
        return Ok(Some(PruneReport {
            dry_run: true,
            counts,
            took_ms: started.elapsed().as_millis() as u64,
            ..PruneReport::default()
        }));
    }
    if !store
        .try_take_lease(PRUNE_TASK, holder, LEASE_TTL, min_gap)
        .await?
    {
        return Ok(None);
    }
    let mut pass = Pass {
        store,
        options,
        report: PruneReport::default(),
        holder,
        stop,
        renewed_at: Instant::now(),
    };
    let result = async {
        if pass.batches().await? && pass.by_age().await? {
            pass.partitions().await?;
        }
        Ok::<_, StoreError>(())
    }
    .await;
    let completed = result.is_ok() && !pass.report.interrupted;
    if let Err(e) = store.release_lease(PRUNE_TASK, holder, completed).await {
        warn!(error = %e, "cannot release the pruner's lease; it expires by itself");
    }
    result?;
    let mut report = pass.report;
    report.took_ms = started.elapsed().as_millis() as u64;
    Ok(Some(report))
}

/// Logs a pass that deleted something (one line, a field per kind).
pub fn log_report(report: &PruneReport) {
    let c = &report.counts;
    if c.total() == 0 {
        return;
    }
    info!(
        batches = c.batches,
        items = c.items,
        checkpoints = c.checkpoints,
        webhook_deliveries = c.webhook_deliveries,
        idempotency_keys = c.idempotency_keys,
        fenced_writes = c.fenced_writes,
        worker_sessions = c.worker_sessions,
        transcripts = c.transcripts,
        summaries = c.summaries,
        item_partitions = c.item_partitions,
        statements = report.statements,
        largest_chunk = report.largest_chunk,
        took_ms = report.took_ms,
        interrupted = report.interrupted,
        "pruned what retention allows"
    );
}

/// The worker's pruner task: tries a pass at start and every `prune_interval_ms`; the lease
/// lets one worker of the fleet run it, once per interval.
pub(crate) async fn run(worker: Worker, holder: WorkerId, stop: CancellationToken) {
    let Some(every) = worker.settings.retention.prune_every else {
        return;
    };
    let options = PruneOptions::from_settings(&worker.settings.retention);
    loop {
        match prune_once(
            &worker.store,
            &options,
            holder,
            Some(every.mul_f64(0.9)),
            &stop,
        )
        .await
        {
            Ok(Some(report)) => log_report(&report),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "prune pass failed; the next one retries"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_statement_time_within_bounds() {
        let ms = Duration::from_millis;
        let mut s = ChunkSizer::new(ms(50), 5_000);
        assert_eq!(s.size(), 100, "starts small");
        s.record(100, ms(10));
        assert_eq!(s.size(), 200, "fast: at most doubles");
        s.record(200, ms(40));
        assert_eq!(s.size(), 250, "close to the target: scaled");
        s.record(250, ms(500));
        assert_eq!(s.size(), 125, "slow: at most halves");
        s.record(10, ms(1));
        assert_eq!(s.size(), 125, "a short chunk does not grow it");
        for _ in 0..20 {
            let n = s.size();
            s.record(n, ms(1));
        }
        assert_eq!(s.size(), 5_000, "never above max");
        for _ in 0..20 {
            let n = s.size();
            s.record(n, ms(10_000));
        }
        assert_eq!(s.size(), 1, "never below one row");
        assert_eq!(ChunkSizer::new(ms(50), 10).size(), 10);
    }
}
