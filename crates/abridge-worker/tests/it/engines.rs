//! The fleet on a real Redis Cluster (3 masters, started here): pointed at a node that does
//! not own the queue's slot, it enqueues, claims, finishes and cancels as on one server.

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
    let settings = env.settings(&[]);
    let queue = Queue::connect(
        &Secret::new(group.url()),
        &settings.redis_prefix,
        &settings.queue,
        8,
    )
    .unwrap();
    let worker = Worker {
        queue,
        store: env.store(),
        settings: Arc::new(settings),
        // Slow enough that the batch is still running well after the failover.
        processor: processor(|job: abridge_worker::Job| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ok(format!("Summary of {}.", job.video_id))
        }),
    };
    let first_master = group.master_port().expect("a master");
    let done = enqueue(&worker, &video_lines('s', 2000), Priority::Normal).await;
    let running = Running::start(worker.clone(), 16);
    eventually(Duration::from_secs(30), "a quarter done", || async {
        worker
            .store
            .counts(done.batch_id)
            .await
            .is_ok_and(|c| c.succeeded >= 300)
    })
    .await;

    // The master steps down to a replica: its writes answer READONLY until the workers'
    // connections find the new master.
    group.failover().unwrap();
    let promoted = std::time::Instant::now();
    eventually(Duration::from_secs(30), "a new master", || async {
        group.master_port().is_some_and(|p| p != first_master)
    })
    .await;
    let before = worker.store.counts(done.batch_id).await.unwrap().succeeded;
    eventually(
        Duration::from_secs(10),
        "claims again after the failover",
        || async {
            worker
                .store
                .counts(done.batch_id)
                .await
                .is_ok_and(|c| c.succeeded > before + 100)
        },
    )
    .await;
    let resumed = promoted.elapsed();
    wait_batch_finished(&worker, done.batch_id, Duration::from_secs(120)).await;
    let counts = worker.store.counts(done.batch_id).await.unwrap();
    assert_eq!(counts.succeeded, 2000, "{counts:?}");
    let report = running.stop().await;
    eprintln!("sentinel failover: resumed {resumed:?} after the failover began");
    assert!(resumed < Duration::from_secs(10), "{resumed:?}");
    // Every item ended once: no outcome written twice, none refused for a lost lease.
    assert_eq!(report.succeeded, 2000, "{report:?}");
}

#[tokio::test]
async fn a_fleet_rides_out_a_cluster_master_dying() {
    let mut cluster = tokio::task::spawn_blocking(|| LocalRedisCluster::start(3, 1))
        .await
        .unwrap()
        .expect("3 masters with a replica each");
    let env = TestEnv::new().await;
    let settings = env.settings(&[]);
    let slot_key = format!("{}:{{{}}}:x", settings.redis_prefix, settings.queue);
    let url = Secret::new(cluster.url(&cluster.ports()));
    let queue = Queue::connect(&url, &settings.redis_prefix, &settings.queue, 8).unwrap();
    let worker = Worker {
        queue,
        store: env.store(),
        settings: Arc::new(settings),
        // Slow enough that the batch is still running well after the failover.
        processor: processor(|job: abridge_worker::Job| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            ok(format!("Summary of {}.", job.video_id))
        }),
    };
    let done = enqueue(&worker, &video_lines('m', 2000), Priority::Normal).await;
    let running = Running::start(worker.clone(), 16);
    eventually(Duration::from_secs(30), "some done", || async {
        worker
            .store
            .counts(done.batch_id)
            .await
            .is_ok_and(|c| c.succeeded >= 300)
    })
    .await;

    // SIGKILL the master that holds the queue's slot; its replica is promoted.
    let dead = cluster.master_of(&slot_key).expect("a master");
    cluster.kill(dead);
    eventually(Duration::from_secs(30), "the replica promoted", || async {
        cluster.master_of(&slot_key).is_some_and(|p| p != dead)
    })
    .await;
    let promoted = std::time::Instant::now();
    let before = worker.store.counts(done.batch_id).await.unwrap().succeeded;
    eventually(
        Duration::from_secs(10),
        "claims again after the promotion",
        || async {
            worker
                .store
                .counts(done.batch_id)
                .await
                .is_ok_and(|c| c.succeeded > before + 100)
        },
    )
    .await;
    let resumed = promoted.elapsed();
    wait_batch_finished(&worker, done.batch_id, Duration::from_secs(120)).await;
    let counts = worker.store.counts(done.batch_id).await.unwrap();
    assert_eq!(counts.succeeded, 2000, "{counts:?}");
    let report = running.stop().await;
    eprintln!(
        "cluster failover: claims resumed {resumed:?} after the promotion; {} outcomes, {} refused",
        report.succeeded, report.fenced
    );
    assert!(resumed < Duration::from_secs(10), "{resumed:?}");
    assert_eq!(report.succeeded, 2000, "{report:?}");
}

#[tokio::test]
async fn a_fleet_follows_its_slot_to_another_master() {
    let cluster = tokio::task::spawn_blocking(|| LocalRedisCluster::start(3, 0))
        .await
        .unwrap()
        .expect("a 3-master cluster");
    let env = TestEnv::new().await;
    let settings = env.settings(&[]);
    let slot_key = format!("{}:{{{}}}:x", settings.redis_prefix, settings.queue);
    let url = Secret::new(cluster.url(&cluster.ports()));
    let queue = Queue::connect(&url, &settings.redis_prefix, &settings.queue, 8).unwrap();
    let worker = Worker {
        queue,
        store: env.store(),
        settings: Arc::new(settings),
        processor: processor(|job: abridge_worker::Job| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            ok(format!("Summary of {}.", job.video_id))
        }),
    };
    let done = enqueue(&worker, &video_lines('r', 2000), Priority::Normal).await;
    let running = Running::start(worker.clone(), 16);
    eventually(Duration::from_secs(30), "some done", || async {
        worker
            .store
            .counts(done.batch_id)
            .await
            .is_ok_and(|c| c.succeeded >= 200)
    })
    .await;

    // Move the queue's slot, keys and all, while the work runs (ASK, then MOVED).
    let from = cluster.master_of(&slot_key).unwrap();
    let to = cluster.ports().into_iter().find(|p| *p != from).unwrap();
    let key = slot_key.clone();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.migrate_slot(&key, to).expect("the slot moves");
        cluster
    })
    .await
    .unwrap();
    assert_eq!(cluster.master_of(&slot_key), Some(to));
    let mid = worker.store.counts(done.batch_id).await.unwrap().succeeded;
    assert!(
        mid < 2000,
        "the batch was still running when the slot moved"
    );
    wait_batch_finished(&worker, done.batch_id, Duration::from_secs(120)).await;
    let counts = worker.store.counts(done.batch_id).await.unwrap();
    assert_eq!(counts.succeeded, 2000, "{counts:?}");
    let report = running.stop().await;
    assert_eq!(report.succeeded, 2000, "{report:?}");
}
