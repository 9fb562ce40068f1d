//! Latency: how long an item waits between being enqueued and being started, with workers
//! idle (200 single items, 5 ms apart, as the BullMQ reference measures it) and under open-loop
//! arrival at fixed rates.
//!
//! Two figures per item: **enqueue-to-start**, from the moment the enqueue has committed the
//! item in Postgres and pushes it to Redis, to the moment a worker starts it (`started_at`); and
//! **call-to-start**, from the start of the enqueue call, which adds the enqueue's own durable
//! Postgres commit (an fsync: about 3 ms on this class of disk).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use abridge_core::BatchId;
use abridge_core::input::BatchInput;
use abridge_queue::Queue;
use abridge_store::Store;
use chrono::{DateTime, Utc};

use crate::burndown::round;
use crate::report::quantile;
use crate::servers::{Servers, Workers, create_batch, fresh_queue};
use crate::{BenchOptions, Record};

/// One enqueue call's timestamps.
#[derive(Clone, Copy, Debug)]
struct Sent {
    batch: BatchId,
    call: DateTime<Utc>,
    push: DateTime<Utc>,
}

pub async fn run(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();

    // Idle: a fresh queue and workers that have gone idle (blocked on the wake-up list).
    let queue_name = fresh_queue("latency-idle");
    // The producers' side: 1,000 enqueues a second hold ~4 connections at a time. (A lazy
    // pool of 64 here opened ~70 backends in the first open-loop second.)
    let store = servers.warm_store(8).await?;
    let queue = servers.queue(&queue_name)?;
    let workers = Workers::spawn(
        &opts.exe,
        servers,
        &queue_name,
        opts.workers,
        opts.concurrency,
        0,
    )?;
    Workers::wait_registered(&store, &queue_name, opts.workers).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counter = Arc::new(AtomicUsize::new(0));
    let mut sent = Vec::new();
    for _ in 0..200 {
        sent.push(enqueue_items(&store, &queue, &queue_name, &counter, 1).await?);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = measure(&store, &queue_name, &sent, Duration::from_secs(10)).await?;
    records.push(stats.record("latency-idle").set("items", 200));
    workers.stop().await;

    // Open loop: arrivals on a fixed schedule, whether or not earlier ones have started.
    let mut max_ok = 0;
    for &rate in &opts.rates {
        let queue_name = fresh_queue(&format!("latency-{rate}"));
        let queue = servers.queue(&queue_name)?;
        let workers = Workers::spawn(
            &opts.exe,
            servers,
            &queue_name,
            opts.workers,
            opts.concurrency,
            0,
        )?;
        Workers::wait_registered(&store, &queue_name, opts.workers).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (sent, achieved) =
            open_loop(&store, &queue, &queue_name, rate, opts.rate_seconds).await?;
        let stats = measure(&store, &queue_name, &sent, Duration::from_secs(10)).await?;
        workers.stop().await;
        let ok = stats.flat && stats.p99_ms < 50.0;
        if ok {
            max_ok = max_ok.max(rate);
        }
        records.push(
            stats
                .record("latency-open")
                .set("rate", rate)
                .set("achieved_rate", round(achieved, 0))
                .set("p99_under_50ms", ok),
        );
        if !ok {
            break;
        }
    }
    records.push(
        Record::new("latency-max")
            .set("max_rate_p99_under_50ms", max_ok)
            .set("rates_tried", serde_json::to_value(&opts.rates)?),
    );
    Ok(records)
}

/// Enqueues `n` fresh items as one batch, recording when the call began and when the
/// committed items were pushed to Redis.
async fn enqueue_items(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    counter: &AtomicUsize,
    n: usize,
) -> anyhow::Result<Sent> {
    let first = counter.fetch_add(n, Ordering::Relaxed);
    let lines: String = (first..first + n).map(|i| format!("l{i:010}\n")).collect();
    let input = BatchInput::from_lines(&lines);
    let call = Utc::now();
    let created = create_batch(store, queue_name, None, &input.items).await?;
    let push = Utc::now();
    queue
        .enqueue(
            created.id,
            created.priority,
            abridge_queue::Share::NO_TENANT,
            &created.item_ids,
        )
        .await?;
    Ok(Sent {
        batch: created.id,
        call,
        push,
    })
}

/// Arrivals at `rate` items/s for `seconds`: every millisecond (or every 1/rate s when
/// slower) a batch of the items due. Returns the sends and the achieved rate.
async fn open_loop(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    rate: u32,
    seconds: f64,
) -> anyhow::Result<(Vec<Sent>, f64)> {
    let tick = if rate >= 1_000 {
        Duration::from_millis(1)
    } else {
        Duration::from_secs_f64(1.0 / f64::from(rate))
    };
    let per_tick = f64::from(rate) * tick.as_secs_f64();
    let ticks = (seconds / tick.as_secs_f64()).round() as usize;
    let counter = Arc::new(AtomicUsize::new(0));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut owed = 0.0;
    let began = Instant::now();
    for _ in 0..ticks {
        interval.tick().await;
        owed += per_tick;
        let n = owed.floor() as usize;
        if n == 0 {
            continue;
        }
        owed -= n as f64;
        let (store, queue, queue_name, counter) = (
            store.clone(),
            queue.clone(),
            queue_name.to_owned(),
            counter.clone(),
        );
        tasks.spawn(async move { enqueue_items(&store, &queue, &queue_name, &counter, n).await });
    }
    let mut sent = Vec::new();
    while let Some(r) = tasks.join_next().await {
        sent.push(r??);
    }
    let achieved = counter.load(Ordering::Relaxed) as f64 / began.elapsed().as_secs_f64();
    Ok((sent, achieved))
}

struct Stats {
    items: usize,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
    call_p50_ms: f64,
    call_p99_ms: f64,
    /// Every item started soon after the last arrival: the queue did not grow.
    flat: bool,
}

impl Stats {
    fn record(&self, scenario: &'static str) -> Record {
        Record::new(scenario)
            .set("items", self.items)
            .set("p50_ms", round(self.p50_ms, 3))
            .set("p99_ms", round(self.p99_ms, 3))
            .set("p999_ms", round(self.p999_ms, 3))
            .set("max_ms", round(self.max_ms, 3))
            .set("call_to_start_p50_ms", round(self.call_p50_ms, 3))
            .set("call_to_start_p99_ms", round(self.call_p99_ms, 3))
            .set("flat", self.flat)
    }
}

/// Waits (up to `grace`) for every sent item to start, then computes the latencies.
async fn measure(
    store: &Store,
    queue_name: &str,
    sent: &[Sent],
    grace: Duration,
) -> anyhow::Result<Stats> {
    let expected: usize = sent.len();
    let deadline = Instant::now() + grace;
    let starts = loop {
        let starts = store.queue_item_starts(queue_name).await?;
        let all_started = starts.iter().all(|(_, s)| s.is_some());
        if (all_started && starts.len() >= expected) || Instant::now() > deadline {
            break starts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_batch: HashMap<BatchId, &Sent> = sent.iter().map(|s| (s.batch, s)).collect();
    let last_push = sent.iter().map(|s| s.push).max();
    let mut push_ms = Vec::new();
    let mut call_ms = Vec::new();
    let mut flat = true;
    for (batch, start) in &starts {
        let Some(s) = by_batch.get(batch) else {
            continue;
        };
        match start {
            Some(t) => {
                push_ms.push(ms(*t - s.push));
                call_ms.push(ms(*t - s.call));
                if let Some(last) = last_push
                    && ms(*t - last) > 1_000.0
                {
                    flat = false;
                }
            }
            None => {
                flat = false;
                push_ms.push(f64::INFINITY);
                call_ms.push(f64::INFINITY);
            }
        }
    }
    push_ms.sort_by(f64::total_cmp);
    call_ms.sort_by(f64::total_cmp);
    Ok(Stats {
        items: push_ms.len(),
        p50_ms: quantile(&push_ms, 0.5),
        p99_ms: quantile(&push_ms, 0.99),
        p999_ms: quantile(&push_ms, 0.999),
        max_ms: push_ms.last().copied().unwrap_or(f64::NAN),
        call_p50_ms: quantile(&call_ms, 0.5),
        call_p99_ms: quantile(&call_ms, 0.99),
        flat,
    })
}

fn ms(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1_000.0
}
