//! Leases: renewed while an item runs; a lost lease stops the work and writes nothing; a worker
//! that cannot renew abandons the item before the lease can expire.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use abridge_core::{ErrorKind, Priority};
use abridge_queue::Placement;
use abridge_testkit::TestEnv;

use crate::support::*;

/// Sets its flag when dropped: tells a test that a processor's future was cancelled.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn renewals_keep_an_item_that_outlives_its_lease() {
    let p = processor(|_| async {
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        ok("slow but fine")
    });
    let (_env, w) = env_and_worker(
        p,
        &[
            ("ABRIDGE_LEASE_MS", "1000"),
            ("ABRIDGE_HEARTBEAT_MS", "200"),
        ],
    )
    .await;
    let batch = enqueue(&w, &video_lines('r', 2), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 4);
    wait_batch_finished(&w, batch, Duration::from_secs(30)).await;
    let report = running.stop().await;
    assert_eq!(report.succeeded, 2);
    let view = w.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.counts.succeeded, 2);
    // One attempt each: the leases never expired although each item ran 2.5 leases long.
    let stats = w.queue.stats().await.unwrap();
    assert_eq!(stats.leased, 0);
    assert_eq!(report.retried + report.fenced, 0);
}

#[tokio::test]
async fn a_lost_lease_stops_the_work_and_writes_nothing() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    // The first attempt hangs until it is stopped; the next one succeeds.
    let p = processor(move |job| {
        let guard = DropFlag(flag.clone());
        async move {
            if job.attempt > 1 {
                return ok(format!("attempt {}", job.attempt));
            }
            let _guard = guard;
            std::future::pending::<()>().await;
            ok("never")
        }
    });
    let (_env, w) = env_and_worker(
        p,
        &[
            ("ABRIDGE_LEASE_MS", "2000"),
            ("ABRIDGE_HEARTBEAT_MS", "200"),
        ],
    )
    .await;
    let batch = enqueue(&w, &video_lines('x', 1), Priority::Normal)
        .await
        .batch_id;
    let a = Running::start(w.clone(), 1);
    eventually(Duration::from_secs(10), "item running", || async {
        w.store.batch(batch).await.unwrap().unwrap().counts.running == 1
    })
    .await;

    // Someone else takes the item over: Postgres gives it back to the queue, Redis re-lists it.
    let held = w.store.running_items("default").await.unwrap();
    let item = held[0].clone();
    let refs = w
        .store
        .reclaim(&[(item.id, item.token)], 5, &ErrorKind::LEASE_EXPIRED)
        .await
        .unwrap();
    let r = &refs.items[0];
    w.queue
        .requeue(&[Placement {
            item: r.id,
            batch: r.batch_id,
            priority: r.priority,
            position: r.position,
            due: None,
        }])
        .await
        .unwrap();
    // (The queue skips items that still hold a lease; drop A's so the item is listed again.)
    let taken = w.queue.take_worker_leases(item.worker).await.unwrap();
    assert_eq!(taken.len(), 1);
    w.queue
        .requeue(&[Placement {
            item: r.id,
            batch: r.batch_id,
            priority: r.priority,
            position: r.position,
            due: None,
        }])
        .await
        .unwrap();

    eventually(
        Duration::from_secs(5),
        "worker A stops the item",
        || async { dropped.load(Ordering::SeqCst) },
    )
    .await;

    // The item is claimed again as a new attempt and succeeds; the lost attempt wrote nothing.
    wait_batch_finished(&w, batch, Duration::from_secs(20)).await;
    let report = a.stop().await;
    assert_eq!((report.succeeded, report.fenced, report.failed), (1, 0, 0));
    assert!(
        w.store
            .fenced_write_counts(&[item.id])
            .await
            .unwrap()
            .is_empty()
    );
    let done = w.store.items_of(batch, None, 0, 1).await.unwrap().remove(0);
    assert_eq!(
        (done.attempts, done.summary.as_deref()),
        (2, Some("attempt 2"))
    );
}

#[tokio::test]
async fn a_worker_that_cannot_renew_abandons_the_item_before_the_lease_expires() {
    let mut env = TestEnv::with_own_servers().await;
    let started_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let dropped_at = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (s, d) = (started_at.clone(), dropped_at.clone());
    let p = processor(move |_| {
        *s.lock().unwrap() = Some(Instant::now());
        let d = d.clone();
        async move {
            struct Stamp(Arc<std::sync::Mutex<Option<Instant>>>);
            impl Drop for Stamp {
                fn drop(&mut self) {
                    *self.0.lock().unwrap() = Some(Instant::now());
                }
            }
            let _stamp = Stamp(d);
            std::future::pending::<()>().await;
            ok("never")
        }
    });
    let lease = Duration::from_millis(3_000);
    let w = env.worker(
        p,
        &[
            ("ABRIDGE_LEASE_MS", "3000"),
            ("ABRIDGE_HEARTBEAT_MS", "500"),
        ],
    );
    let batch = enqueue(&w, &video_lines('d', 1), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 1);
    eventually(Duration::from_secs(10), "item started", || async {
        started_at.lock().unwrap().is_some()
    })
    .await;

    // Redis goes away: renewals fail from now on.
    let killed_at = Instant::now();
    env.own().redis.kill();
    eventually(Duration::from_secs(10), "item abandoned", || async {
        dropped_at.lock().unwrap().is_some()
    })
    .await;
    let started = started_at.lock().unwrap().unwrap();
    let dropped = dropped_at.lock().unwrap().unwrap();
    // The claim happened before `started`, so the lease expires (in Redis) no earlier than
    // `started - <claim-to-start time> + lease`; the worker must have let go before that.
    assert!(
        dropped < started + lease,
        "abandoned {:?} after start, lease is {lease:?}",
        dropped - started
    );
    assert!(dropped >= killed_at);

    // The abandon gave the item back in Postgres (the attempt counts).
    eventually(Duration::from_secs(10), "item queued again", || async {
        w.store.batch(batch).await.unwrap().unwrap().counts.queued == 1
    })
    .await;
    let running_items = w.store.running_items("default").await.unwrap();
    assert!(running_items.is_empty());
    env.own().redis.restart_empty().unwrap();
    let report = running.stop().await;
    assert_eq!(report.succeeded, 0);
}
