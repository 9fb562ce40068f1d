//! Ceiling: the burn-down's Postgres work alone. The same N items are read and finished with
//! the statements a worker runs (`read_claimed`, then `finish_items` with a success), in
//! groups the size the outcome writers reach in the burn-down, from enough connections to keep
//! both cores busy, and nothing else runs: no Redis, no worker processes, no summarizer. The fleet
//! does all of this and more on the same cores, so this rate bounds the burn-down; it is how
//! BENCHMARKS.md tells what the queue costs from what a durable row per item costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use abridge_core::input::BatchInput;
use abridge_core::{ItemId, LeaseToken, WorkerId};
use abridge_store::{Finish, Outcome, Store};

use crate::burndown::round;
use crate::servers::{Servers, create_batch, fresh_queue, postgres_cpu_usec, video_lines};
use crate::{BenchOptions, Record};

/// Items per statement: about the size of the burn-down's groups, since Postgres's CPU per
/// item falls as groups grow (BENCHMARKS.md, "What bounds each figure").
const GROUP: usize = 100;

/// Connections writing at once. Each waits for its commit's fsync before taking the next
/// group, so a few are needed to keep Postgres busy: on two cores, in groups of 40, 2 writers
/// reach ~23k items/s, 8 reach ~33k, and 16 no more than 8.
const WRITERS: usize = 8;

pub async fn run(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Vec<Record>> {
    let store = servers.store(WRITERS as u32 + 2)?;
    let queue_name = fresh_queue("ceiling");
    let input = BatchInput::from_lines(&video_lines('c', opts.items));
    let batch = create_batch(&store, &queue_name, Some("ceiling"), &input.items).await?;
    let ids = Arc::new(batch.item_ids);
    let next = Arc::new(AtomicUsize::new(0));

    let pg_cpu_before = postgres_cpu_usec(&store).await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (store, ids, next) = (store.clone(), ids.clone(), next.clone());
            tokio::spawn(async move { write_groups(&store, &ids, &next).await })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        written += t.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let pg_cpu = postgres_cpu_usec(&store)
        .await?
        .saturating_sub(pg_cpu_before);
    let counts = store.counts(batch.id).await?;
    anyhow::ensure!(
        counts.succeeded == opts.items as i64 && written == opts.items,
        "the ceiling run finished {} of {} items ({written} accepted)",
        counts.succeeded,
        opts.items
    );
    let n = opts.items as f64;
    Ok(vec![
        Record::new("ceiling")
            .set("items", opts.items)
            .set("writers", WRITERS)
            .set("group", GROUP)
            .set("seconds", round(seconds, 3))
            .set("items_per_s", round(n / seconds, 0))
            .set("postgres_cpu_usec_per_item", round(pg_cpu as f64 / n, 2)),
    ])
}

/// Takes groups of ids until none are left; reads and finishes each. Returns the items
/// Postgres accepted.
async fn write_groups(store: &Store, ids: &[ItemId], next: &AtomicUsize) -> anyhow::Result<usize> {
    let worker = WorkerId::new();
    let mut accepted = 0;
    loop {
        let from = next.fetch_add(GROUP, Ordering::Relaxed);
        if from >= ids.len() {
            return Ok(accepted);
        }
        let group = &ids[from..(from + GROUP).min(ids.len())];
        let claims: Vec<_> = group.iter().map(|&id| (id, LeaseToken(1))).collect();
        let began = Instant::now();
        let read = store.read_claimed(&claims).await?;
        let finishes: Vec<_> = read
            .iter()
            .map(|item| Finish {
                item: item.id,
                token: item.token,
                outcome: Outcome::Succeeded {
                    summary: format!("Video {} ({}).", item.video_id, item.url),
                    title: None,
                    meta: serde_json::json!({ "backend": "noop" }),
                },
                started: false,
                attempt: item.attempt,
                began,
            })
            .collect();
        accepted += store
            .finish_items(worker, &finishes, 3)
            .await?
            .accepted
            .len();
    }
}
