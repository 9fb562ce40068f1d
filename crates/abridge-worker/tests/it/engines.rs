//! The fleet on a real Redis Cluster (3 masters, started here): pointed at a node that does
//! not own the queue's slot, it enqueues, claims, finishes and cancels as on one server; with
//! the queue over three shards it works every master. And the failover drills: a Sentinel
//! failover, a cluster master killed (of the queue's one slot, and of one of three shards), a
//! slot migrated while work runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use abridge_core::settings::Secret;
use abridge_core::{BatchStatus, Priority};
use abridge_local::LocalRedisCluster;
use abridge_queue::Queue;
use abridge_testkit::TestEnv;
use abridge_worker::Worker;

use crate::support::*;

#[tokio::test]
async fn a_fleet_runs_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(|| LocalRedisCluster::start(3, 0))
        .await
        .unwrap()
        .expect("a 3-master cluster");
    let env = TestEnv::new().await;
    let settings = env.settings(&[("ABRIDGE_LEASE_MS", "60000")]);
    // Seed with a node that does not own the queue's slot: the client follows MOVED.
    let slot_key = format!("{}:{{{}}}:x", settings.redis_prefix, settings.queue);
    let owner = cluster
        .master_of(&slot_key)
        .expect("the queue's slot has a master");
    let seed: Vec<u16> = cluster
        .ports()
        .into_iter()
        .filter(|p| *p != owner)
        .collect();
    let url = Secret::new(cluster.url(&seed[..1]));
    let queue = Queue::connect(&url, &settings.redis_prefix, &settings.queue, 8).unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let worker = Worker {
        queue,
        store: env.store(),
        settings: Arc::new(settings),
        processor: processor(move |job: abridge_worker::Job| {
            s.fetch_add(1, Ordering::SeqCst);
            async move {
                if job.video_id.starts_with('h') {
                    // The cancelled batch's items hold on until the cancel stops them.
                    std::future::pending::<()>().await;
                }
                ok(format!("Summary of {}.", job.video_id))
            }
        }),
    };

    let done = enqueue(&worker, &video_lines('k', 500), Priority::Normal).await;
    assert_eq!(done.accepted, 500);
    let running = Running::start(worker.clone(), 32);
    wait_batch_finished(&worker, done.batch_id, Duration::from_secs(60)).await;
    let counts = worker.store.counts(done.batch_id).await.unwrap();
    assert_eq!(counts.succeeded, 500, "{counts:?}");

    // A cancel reaches the workers through pub/sub on the cluster: held items stop.
    let held = enqueue(&worker, &video_lines('h', 4), Priority::High).await;
    eventually(
        Duration::from_secs(10),
        "the held items running",
        || async { started.load(Ordering::SeqCst) >= 504 },
    )
    .await;
    abridge_control::cancel(&worker.store, &worker.queue, held.batch_id)
        .await
        .unwrap();
    let batch = worker.store.batch(held.batch_id).await.unwrap().unwrap();
    assert_eq!(batch.status, BatchStatus::Cancelled);
    eventually(Duration::from_secs(10), "nothing left in hand", || async {
        worker
            .queue
            .held_counts(&[held.batch_id])
            .await
            .is_ok_and(|h| h.values().all(|n| *n == 0))
    })
    .await;
    let report = running.stop().await;
    assert_eq!(report.succeeded, 500);
    // Every key of the queue lives on the slot's one master.
    assert!(cluster.master_of(&slot_key).is_some());
}

#[tokio::test]
async fn a_fleet_rides_out_a_sentinel_failover() {
    let group = tokio::task::spawn_blocking(abridge_local::LocalRedisSentinel::start)
        .await
        .unwrap()
        .expect("a master, a replica and three sentinels");
    let env = TestEnv::new().await;
    let (worker, _) = worker_on(&env, &group.url(), Duration::from_millis(100));
    let first_master = group.master_port().expect("a master");
    let done = enqueue(&worker, &video_lines('s', 2000), Priority::Normal).await;
    let running = Running::start(worker.clone(), 16);
    until_succeeded(&worker, done.batch_id, 300, "some done").await;

    // The master steps down to a replica: its writes answer READONLY until the workers'
    // connections find the new master.
    let open = 2000 - succeeded(&worker, done.batch_id).await;
    group.failover().unwrap();
    let began = std::time::Instant::now();
    eventually(Duration::from_secs(30), "a new master", || async {
        group.master_port().is_some_and(|p| p != first_master)
    })
    .await;
    time_to_resume(&worker, done.batch_id).await;
    let resumed = began.elapsed();
    let report = every_item_once(&worker, done.batch_id, running, open).await;
    eprintln!(
        "sentinel failover: resumed {resumed:?} after the failover began; the reconciler restored {} items",
        report.restored
    );
    assert!(resumed < Duration::from_secs(10), "{resumed:?}");
}

#[tokio::test]
async fn a_fleet_rides_out_a_cluster_master_dying() {
    let mut cluster = tokio::task::spawn_blocking(|| LocalRedisCluster::start(3, 1))
        .await
        .unwrap()
        .expect("3 masters with a replica each");
    let env = TestEnv::new().await;
    let (worker, slot_key) = worker_on(
        &env,
        &cluster.url(&cluster.ports()),
        Duration::from_millis(100),
    );
    let done = enqueue(&worker, &video_lines('m', 2000), Priority::Normal).await;
    let running = Running::start(worker.clone(), 16);
    until_succeeded(&worker, done.batch_id, 300, "some done").await;

    // SIGKILL the master that holds the queue's slot; its replica is promoted.
    kill_master_mid_batch(
        &mut cluster,
        &worker,
        done.batch_id,
        running,
        &slot_key,
        "cluster failover",
    )
    .await;
}

#[tokio::test]
async fn a_fleet_follows_its_slot_to_another_master() {
    let cluster = tokio::task::spawn_blocking(|| LocalRedisCluster::start(3, 0))
        .await
        .unwrap()
        .expect("a 3-master cluster");
    let env = TestEnv::new().await;
    let (worker, slot_key) = worker_on(
        &env,
        &cluster.url(&cluster.ports()),
        Duration::from_millis(50),
    );
    let done = enqueue(&worker, &video_lines('r', 2000), Priority::Normal).await;
    let running = Running::start(worker.clone(), 16);
    until_succeeded(&worker, done.batch_id, 200, "some done").await;

    // Move the queue's slot, keys and all, while the work runs (ASK, then MOVED).
    let from = cluster.master_of(&slot_key).unwrap();
    let to = cluster.ports().into_iter().find(|p| *p != from).unwrap();
    let open = 2000 - succeeded(&worker, done.batch_id).await;
    let key = slot_key.clone();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.migrate_slot(&key, to).expect("the slot moves");
        cluster
    })
    .await
    .unwrap();
    assert_eq!(cluster.master_of(&slot_key), Some(to));
    assert!(
        succeeded(&worker, done.batch_id).await < 2000,
        "the batch was still running when the slot moved"
    );
    let report = every_item_once(&worker, done.batch_id, running, open).await;
    eprintln!(
        "resharding: the reconciler restored {} items",
        report.restored
    );
}

#[tokio::test]
async fn a_queue_over_three_shards_works_every_master_and_rides_out_one_dying() {
    let mut cluster = tokio::task::spawn_blocking(|| LocalRedisCluster::start(3, 1))
        .await
        .unwrap()
        .expect("3 masters with a replica each");
    let env = TestEnv::new().await;
    let (worker, _) = worker_with_shards(
        &env,
        &cluster.url(&cluster.ports()),
        Duration::from_millis(100),
        3,
    );
    // The three shards' hash tags are on three masters.
    let shard_key = |s| format!("{}x", worker.queue.shard_keys(s).prefix);
    let layout = worker.queue.layout().to_vec();
    let mut masters: Vec<u16> = layout
        .iter()
        .map(|s| cluster.master_of(&shard_key(*s)).unwrap())
        .collect();
    masters.sort();
    masters.dedup();
    assert_eq!(masters.len(), 3, "one shard per master");

    let done = enqueue(&worker, &video_lines('z', 2000), Priority::Normal).await;
    let running = Running::start(worker.clone(), 16);
    until_succeeded(&worker, done.batch_id, 300, "some done").await;
    // Every master ran the queue's scripts: the work is spread, not parked on one slot.
    let stats = worker.queue.server_stats().await.unwrap();
    assert_eq!(stats.nodes.len(), 3, "{stats:?}");
    for (port, node) in &stats.nodes {
        assert!(
            node.script_usec > 0,
            "master {port} ran no script: {stats:?}"
        );
    }

    // SIGKILL the master of a shard other than the first; its replica is promoted.
    kill_master_mid_batch(
        &mut cluster,
        &worker,
        done.batch_id,
        running,
        &shard_key(layout[1]),
        "sharded cluster failover",
    )
    .await;
}

/// SIGKILLs the master that holds `key`'s slot while `batch` runs, waits for its replica's
/// promotion, and runs the batch to its end: claims resume within 10 s of the promotion and
/// every item ends once. Prints the figures under `what`.
async fn kill_master_mid_batch(
    cluster: &mut LocalRedisCluster,
    worker: &Worker,
    batch: abridge_core::BatchId,
    running: Running,
    key: &str,
    what: &str,
) {
    let dead = cluster.master_of(key).expect("a master");
    let open = 2000 - succeeded(worker, batch).await;
    cluster.kill(dead);
    eventually(Duration::from_secs(30), "the replica promoted", || async {
        cluster.master_of(key).is_some_and(|p| p != dead)
    })
    .await;
    let resumed = time_to_resume(worker, batch).await;
    let report = every_item_once(worker, batch, running, open).await;
    eprintln!(
        "{what}: claims resumed {resumed:?} after the promotion; {} refused; the reconciler restored {} items",
        report.fenced, report.restored
    );
    assert!(resumed < Duration::from_secs(10), "{resumed:?}");
}

/// A worker of the test's settings on the Redis at `url`, whose items take `delay` each
/// (slow enough that a batch is still running well after a failover); and the key of its
/// queue's slot.
fn worker_on(env: &TestEnv, url: &str, delay: Duration) -> (Worker, String) {
    worker_with_shards(env, url, delay, 1)
}

/// [`worker_on`] with the queue over `shards` shards.
fn worker_with_shards(
    env: &TestEnv,
    url: &str,
    delay: Duration,
    shards: usize,
) -> (Worker, String) {
    let mut settings = env.settings(&[]);
    settings.queue_shards = shards;
    let slot_key = format!("{}:{{{}}}:x", settings.redis_prefix, settings.queue);
    let queue = Queue::connect(
        &Secret::new(url.to_owned()),
        &settings.redis_prefix,
        &settings.queue,
        8,
    )
    .unwrap()
    .with_shards(shards);
    let worker = Worker {
        queue,
        store: env.store(),
        settings: Arc::new(settings),
        processor: processor(move |job: abridge_worker::Job| async move {
            tokio::time::sleep(delay).await;
            ok(format!("Summary of {}.", job.video_id))
        }),
    };
    (worker, slot_key)
}

/// Items of `batch` succeeded so far.
async fn succeeded(worker: &Worker, batch: abridge_core::BatchId) -> i64 {
    worker.store.counts(batch).await.map_or(0, |c| c.succeeded)
}

/// Waits for `n` items of `batch` to succeed.
async fn until_succeeded(worker: &Worker, batch: abridge_core::BatchId, n: i64, what: &str) {
    eventually(Duration::from_secs(30), what, || async {
        succeeded(worker, batch).await >= n
    })
    .await;
}

/// How long, from now, until 100 more items of `batch` succeed (at most 10 s).
async fn time_to_resume(worker: &Worker, batch: abridge_core::BatchId) -> Duration {
    let since = std::time::Instant::now();
    let before = succeeded(worker, batch).await;
    eventually(
        Duration::from_secs(10),
        "claims again after the failover",
        || async { succeeded(worker, batch).await > before + 100 },
    )
    .await;
    since.elapsed()
}

/// Runs `batch` to its end and checks every item ended once: 2,000 outcomes, none twice;
/// and that whatever the reconciler restored was among the `open` items (not yet finished
/// when the fault began): restoring more would have queued a finished item again.
async fn every_item_once(
    worker: &Worker,
    batch: abridge_core::BatchId,
    running: Running,
    open: i64,
) -> abridge_worker::RunReport {
    wait_batch_finished(worker, batch, Duration::from_secs(120)).await;
    assert_eq!(succeeded(worker, batch).await, 2000);
    let report = running.stop().await;
    assert_eq!(report.succeeded, 2000, "{report:?}");
    assert!(
        report.restored <= open as u64,
        "restored {} of {open} open items: {report:?}",
        report.restored
    );
    report
}
