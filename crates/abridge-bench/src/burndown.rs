//! Burn-down: pre-fill N items, start W worker processes, and measure items per second from
//! the first start to the last durable terminal write, with what each item cost.

use std::time::Duration;

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;

use crate::fleet::{
    Servers, Workers, cpu_usec, fresh_queue, postgres_cpu_usec, video_lines, wait_batch_finished,
};
use crate::{BenchOptions, Record};

pub async fn run(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Vec<Record>> {
    let queue_name = fresh_queue("burndown");
    let store = servers.store(4)?;
    let queue = servers.queue(&queue_name)?;
    let input = BatchInput::from_lines(&video_lines('b', opts.items));
    let batch = abridge_control::enqueue(
        &store,
        &queue,
        &queue_name,
        input,
        EnqueueRequest::default(),
    )
    .await?
    .batch_id;

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
    let done = wait_batch_finished(&store, batch, timeout).await?;
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

    let times = store.batch_times(batch).await?;
    let (Some(first), Some(last)) = (times.first_start, times.last_finish) else {
        anyhow::bail!("burn-down batch has no start or finish times");
    };
    let seconds = (last - first).num_microseconds().unwrap_or(1) as f64 / 1e6;
    let n = opts.items as f64;
    let commits = (commits_after - commits_before) as f64;
    let counts = store.counts(batch).await?;
    Ok(vec![
        Record::new("burndown")
            .set("items", opts.items)
            .set("workers", opts.workers)
            .set("concurrency", opts.concurrency)
            .set("succeeded", counts.succeeded)
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
            .set("worker_cpu_usec_per_item", round(worker_cpu as f64 / n, 2))
            .set("postgres_cpu_usec_per_item", round(pg_cpu as f64 / n, 2))
            .set("pg_commits", commits)
            .set("pg_commits_per_s", round(commits / seconds, 0))
            .set("items_per_commit", round(n / commits.max(1.0), 1)),
    ])
}

pub(crate) fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}
