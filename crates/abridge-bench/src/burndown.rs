//! Burn-down: pre-fill N items, start W worker processes, and measure items per second from
//! the first start to the last durable terminal write, with what each item cost.

use std::time::Duration;

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;

use crate::servers::{
    Servers, Workers, cpu_usec, fresh_queue, postgres_cpu_usec, video_lines, wait_batch_finished,
};
use crate::{BenchOptions, Record};

pub async fn run(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Vec<Record>> {
    let queue_name = fresh_queue("burndown");
    let store = servers.store(4)?;
    let queue = servers.queue(&queue_name)?;
    let batches = prefill(opts, &store, &queue, &queue_name).await?;

    let redis_before = queue.server_stats().await?;
    let commits_before = store.commit_count().await?;
    let pg_cpu_before = postgres_cpu_usec(&store).await?;
    let workers = Workers::spawn(
        &opts.exe,
        servers,
        &queue_name,
        opts.workers,
        opts.concurrency,
        0,
    )?;
    let timeout = Duration::from_secs(120 + opts.items as u64 / 1_000);
    let mut done = true;
    for batch in &batches {
        done &= wait_batch_finished(&store, *batch, timeout).await?;
    }
    let redis_after = queue.server_stats().await?;
    let pg_cpu = postgres_cpu_usec(&store)
        .await?
        .saturating_sub(pg_cpu_before);
    let worker_cpu: u64 = workers.pids().into_iter().filter_map(cpu_usec).sum();
    workers.stop().await;
    anyhow::ensure!(done, "burn-down did not finish within {timeout:?}");
    // Backends report their commit counts to pg_stat_database at most once a second (and at
    // exit): read it once the workers' connections are gone.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let commits_after = store.commit_count().await?;

    let (mut first, mut last) = (None, None);
    let mut succeeded = 0;
    for batch in &batches {
        let times = store.batch_times(*batch).await?;
        first = match (first, times.first_start) {
            (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
            (a, b) => a.or(b),
        };
        last = last.max(times.last_finish);
        succeeded += store.counts(*batch).await?.succeeded;
    }
    let (Some(first), Some(last)) = (first, last) else {
        anyhow::bail!("burn-down batch has no start or finish times");
    };
    let seconds = (last - first).num_microseconds().unwrap_or(1) as f64 / 1e6;
    let n = opts.items as f64;
    let commits = (commits_after - commits_before) as f64;
    // Each master's CPU per item, where there are several (a cluster): `port=usec ...`.
    let by_node: Vec<String> = redis_after
        .nodes
        .iter()
        .map(|(port, after)| {
            let before = redis_before
                .nodes
                .iter()
                .find(|(p, _)| p == port)
                .map_or(0.0, |(_, b)| b.cpu_seconds);
            format!("{port}={:.1}", (after.cpu_seconds - before) * 1e6 / n)
        })
        .collect();
    Ok(vec![
        Record::new("burndown")
            .set("items", opts.items)
            .set("batches", opts.batches)
            .set("tenants", opts.tenants)
            .set("workers", opts.workers)
            .set("concurrency", opts.concurrency)
            .set("succeeded", succeeded)
            .set("seconds", round(seconds, 3))
            .set("items_per_s", round(n / seconds, 0))
            .set(
                "redis_commands_per_item",
                round((redis_after.calls - redis_before.calls) as f64 / n, 3),
            )
            .set(
                "redis_script_usec_per_item",
                round(
                    (redis_after.script_usec - redis_before.script_usec) as f64 / n,
                    2,
                ),
            )
            .set(
                "redis_cpu_usec_per_item",
                round(
                    (redis_after.cpu_seconds - redis_before.cpu_seconds) * 1e6 / n,
                    2,
                ),
            )
            .set("redis_cpu_usec_per_item_by_node", by_node.join(" "))
            .set("queue_shards", servers.queue_shards)
            .set("worker_cpu_usec_per_item", round(worker_cpu as f64 / n, 2))
            .set("postgres_cpu_usec_per_item", round(pg_cpu as f64 / n, 2))
            .set("pg_commits", commits)
            .set("pg_commits_per_s", round(commits / seconds, 0))
            .set("items_per_commit", round(n / commits.max(1.0), 1)),
    ])
}

/// The burn-down's items, in `opts.batches` batches, each of a tenant of its own with
/// `opts.tenants` (else of none).
async fn prefill(
    opts: &BenchOptions,
    store: &abridge_store::Store,
    queue: &abridge_queue::Queue,
    queue_name: &str,
) -> anyhow::Result<Vec<abridge_core::BatchId>> {
    let lines = video_lines('b', opts.items);
    let lines: Vec<&str> = lines.lines().collect();
    let per = opts.items.div_ceil(opts.batches.max(1)).max(1);
    let policy = abridge_store::tenants::TenantPolicy {
        weight: 1,
        ..Default::default()
    };
    let mut batches = Vec::new();
    for (t, chunk) in lines.chunks(per).enumerate() {
        let tenant = format!("bench-{t}");
        if opts.tenants {
            store.ensure_tenant(&tenant, "whsec_bench").await?;
        }
        let done = abridge_control::enqueue_once(
            store,
            queue,
            queue_name,
            BatchInput::from_lines(&chunk.join("\n")),
            EnqueueRequest::default(),
            opts.tenants.then(|| abridge_control::Owner {
                tenant: Some(&tenant),
                policy: Some(&policy),
                webhook_url: None,
                idempotency: None,
            }),
        )
        .await?;
        let (abridge_control::EnqueueOnce::Created(done)
        | abridge_control::EnqueueOnce::Replayed { done, .. }) = done;
        batches.push(done.batch_id);
    }
    Ok(batches)
}

pub(crate) fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
