//! Retention: what a big `items` table and a running pruner cost the burn-down.
//!
//! 1. A burn-down (the `burndown` scenario) on the table as it is, after `VACUUM ANALYZE`
//!    and a `CHECKPOINT` as before the second: the baseline.
//! 2. `retention_rows` finished items are written straight into Postgres (SQL
//!    `generate_series`, batches of up to 10,000 items with a 300-byte summary each):
//!    `retention_prune` of them finished ten years ago, the rest a day ago; then `VACUUM
//!    ANALYZE`, as autovacuum would in time. A second burn-down runs against that table.
//! 3. A pruner pass (the workers' code, in this process) deletes the ten-year-old rows; a
//!    third burn-down runs while it does. Its rate against the second one's is what pruning
//!    costs the fleet; the pass's rows per second is the pruner's rate.
//!
//! The pass deletes finished batches older than 3,000 days (and a tenant's past its own
//! retention, as the fleet's pruner would) and nothing else: against configured servers, it
//! touches nothing a fleet's own pruner would keep.

use std::time::{Duration, Instant};

use abridge_core::WorkerId;
use abridge_store::{PruneAges, Store};
use abridge_worker::pruner::{PruneOptions, prune_once};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::burndown::{self, round};
use crate::servers::{Servers, fresh_queue};
use crate::{BenchOptions, Record};

const DAY: Duration = Duration::from_secs(86_400);
/// Items per generated batch (fewer if the scenario is small).
const ITEMS_PER_BATCH: usize = 10_000;
/// Rows per generating statement.
const ROWS_PER_STATEMENT: usize = 200_000;

pub async fn run(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Vec<Record>> {
    let store = servers.store(4)?;
    let queue = fresh_queue("retention");
    let rows_before = store.item_rows().await?;
    // Both burn-downs start from a vacuumed table and a fresh checkpoint, so that the first
    // change to each page after it (a full page image in the WAL) is paid in both.
    store.vacuum_analyze().await?;
    let empty = burn(opts, servers).await?;

    let started = Instant::now();
    let recent = opts.retention_rows - opts.retention_prune.min(opts.retention_rows);
    fill(&store, &queue, opts.retention_prune, DAY * 3_650).await?;
    fill(&store, &queue, recent, DAY).await?;
    store.vacuum_analyze().await?;
    let fill_seconds = started.elapsed().as_secs_f64();
    let table_rows = store.item_rows().await?;
    let full = burn(opts, servers).await?;

    let options = PruneOptions {
        ages: PruneAges {
            batches: Some(DAY * 3_000),
            ..PruneAges::default()
        },
        dry_run: false,
        statement_target: opts.retention.prune_statement_target,
        max_chunk: opts.retention.prune_max_chunk,
    };
    let pruner = {
        let (store, options) = (store.clone(), options.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let report = prune_once(
                &store,
                &options,
                WorkerId::new(),
                None,
                &CancellationToken::new(),
            )
            .await;
            (report, started.elapsed())
        })
    };
    // The pass is under way (its first chunks sized) before the burn-down begins.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = burn(opts, servers).await?;
    let overlapped = !pruner.is_finished();
    let (report, took) = pruner.await?;
    let report = report?.context("another pruner held the lease")?;
    let prune_seconds = took.as_secs_f64();
    // What a pass would still delete: nothing, if the pass deleted (and counted) it all.
    let left = store
        .count_prunable(&options.ages)
        .await
        .context("count what the pass left")?;

    Ok(vec![
        Record::new("retention-table")
            .set("items_table_rows_before", rows_before)
            .set("items_table_rows", table_rows)
            .set("fill_seconds", round(fill_seconds, 1))
            .set("burndown_items", opts.items)
            .set("burndown_items_per_s_small_table", round(empty, 0))
            .set("burndown_items_per_s_big_table", round(full, 0))
            .set("big_vs_small", round(full / empty, 3)),
        Record::new("retention-prune")
            .set("pruned_items", report.counts.items)
            .set("pruned_batches", report.counts.batches)
            .set("items_left_due", left.items)
            .set("statements", report.statements)
            .set("largest_chunk", report.largest_chunk)
            .set("prune_seconds", round(prune_seconds, 2))
            .set(
                "prune_rows_per_s",
                round(report.counts.items as f64 / prune_seconds, 0),
            )
            .set("burndown_items_per_s_without_pruning", round(full, 0))
            .set("burndown_items_per_s_while_pruning", round(during, 0))
            .set("while_pruning_vs_without", round(during / full, 3))
            .set("prune_overlapped_the_burndown", overlapped),
    ])
}

/// One burn-down (the `burndown` scenario's), returning its items per second.
async fn burn(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<f64> {
    burndown::run(opts, servers)
        .await?
        .first()
        .and_then(|r| r.get("items_per_s"))
        .context("the burn-down reported no rate")
}

/// `rows` finished items in batches of up to `ITEMS_PER_BATCH`, finished `ago` ago.
async fn fill(store: &Store, queue: &str, rows: usize, ago: Duration) -> anyhow::Result<()> {
    let per_batch = ITEMS_PER_BATCH.min(rows.max(1));
    let mut left = rows;
    while left > 0 {
        let whole = left / per_batch;
        let (batches, items) = if whole > 0 {
            ((ROWS_PER_STATEMENT / per_batch).clamp(1, whole), per_batch)
        } else {
            (1, left)
        };
        store
            .fill_finished_batches(queue, batches as i64, items as i32, ago, 300)
            .await?;
        left -= batches * items;
    }
    Ok(())
}
