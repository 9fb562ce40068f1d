//! Scale: claim cost with a backlog of 10 items and of a million (it must be flat), Redis
//! memory per queued item, and a worker's memory at concurrency 256.

use std::time::{Duration, Instant};

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;
use abridge_core::settings::Secret;
use abridge_core::{BatchId, ItemId, Priority, WorkerId};
use abridge_local::LocalRedis;
use abridge_queue::{AfterAck, Queue};

use crate::burndown::round;
use crate::report::quantile;
use crate::servers::{Servers, Workers, fresh_queue, rss_bytes, video_lines, wait_batch_done};
use crate::{BenchOptions, Record};

pub async fn run(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Vec<Record>> {
    // Redis alone, on a server of its own so that its memory reading is ours only.
    let redis = tokio::task::spawn_blocking(LocalRedis::start).await??;
    let url = Secret::new(redis.url());
    let small = Queue::connect(&url, "abridge-bench", "scale-small", 4)?;
    let big = Queue::connect(&url, "abridge-bench", "scale-big", 4)?;

    fill(&small, 10).await?;
    let before = big.server_stats().await?.used_memory;
    fill(&big, opts.backlog).await?;
    let after = big.server_stats().await?.used_memory;
    let bytes_per_item = (after - before) as f64 / opts.backlog as f64;

    let (small_1, small_100) = (
        claim_cost(&small, 1, 2_000).await?,
        claim_cost(&small, 10, 500).await?,
    );
    let (big_1, big_100) = (
        claim_cost(&big, 1, 2_000).await?,
        claim_cost(&big, 100, 500).await?,
    );
    drop(redis);

    let rss = worker_rss(opts, servers).await?;
    Ok(vec![
        Record::new("scale")
            .set("backlog", opts.backlog)
            .set("redis_bytes_per_item", round(bytes_per_item, 1))
            .set("claim1_p50_us_backlog_10", round(small_1.0, 1))
            .set("claim1_p99_us_backlog_10", round(small_1.1, 1))
            .set("claim1_p50_us_backlog_big", round(big_1.0, 1))
            .set("claim1_p99_us_backlog_big", round(big_1.1, 1))
            .set("claim10_p50_us_backlog_10", round(small_100.0, 1))
            .set("claim100_p50_us_backlog_big", round(big_100.0, 1))
            .set("claim_cost_ratio", round(big_1.0 / small_1.0, 2))
            .set("worker_concurrency", 256)
            .set("worker_rss_mb", round(rss as f64 / 1_048_576.0, 1)),
    ])
}

/// Makes `n` items ready in one batch (ids only: Redis holds nothing else).
async fn fill(queue: &Queue, n: usize) -> anyhow::Result<()> {
    let ids: Vec<ItemId> = (1..=n as i64).map(|i| ItemId(1_000_000_000 + i)).collect();
    queue
        .enqueue(
            BatchId::new(),
            Priority::Normal,
            abridge_queue::Share::NO_TENANT,
            &ids,
        )
        .await?;
    Ok(())
}

/// (p50, p99) microseconds of a claim of `n` items, measured at the client; each claim is put
/// back so the backlog stays the same size.
async fn claim_cost(queue: &Queue, n: usize, rounds: usize) -> anyhow::Result<(f64, f64)> {
    let worker = WorkerId::new();
    let mut us = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let claim = queue.claim(worker, Duration::from_secs(60), n).await?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(
            claim.items.len() == n,
            "claimed {} of {n}",
            claim.items.len()
        );
        let back: Vec<_> = claim
            .items
            .into_iter()
            .map(|l| (l, AfterAck::Ready))
            .collect();
        queue.ack(&back, &[]).await?;
    }
    us.sort_by(f64::total_cmp);
    Ok((quantile(&us, 0.5), quantile(&us, 0.99)))
}

/// Peak resident memory of one worker process holding 256 items at once.
async fn worker_rss(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<u64> {
    let queue_name = fresh_queue("rss");
    let store = servers.store(4)?;
    let queue = servers.queue(&queue_name)?;
    let n = 2_048;
    let batch = abridge_control::enqueue(
        &store,
        &queue,
        &queue_name,
        BatchInput::from_lines(&video_lines('m', n)),
        EnqueueRequest::default(),
    )
    .await?
    .batch_id;
    let workers = Workers::spawn(&opts.exe, servers, &queue_name, 1, 256, 250)?;
    let pid = workers.pids()[0];
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !wait_batch_done(&store, batch, n as i64, Duration::ZERO).await?
        && Instant::now() < deadline
    {
        if let Some((_, hwm)) = rss_bytes(pid) {
            peak = peak.max(hwm);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some((_, hwm)) = rss_bytes(pid) {
        peak = peak.max(hwm);
    }
    workers.stop().await;
    Ok(peak)
}
