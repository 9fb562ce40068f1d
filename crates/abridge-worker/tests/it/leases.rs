//! Leases: renewed while an item runs; a lost lease stops the work and writes nothing; and a
//! store outage (Redis paused past the lease, Postgres stopped past the session TTL) charges no
//! attempt and buries nobody. (The scripts' races, a renewal or a give-back after a take-over,
//! are tested in `abridge-queue`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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
    let (_env, w) = env_and_worker(p, |s| {
        s.lease = Duration::from_millis(1000);
        s.heartbeat = Duration::from_millis(200);
    })
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
    let (_env, w) = env_and_worker(p, |s| {
        s.lease = Duration::from_millis(2000);
        s.heartbeat = Duration::from_millis(200);
    })
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
async fn a_redis_pause_longer_than_the_lease_costs_no_attempt() {
    let mut env = TestEnv::with_own_servers().await;
    let p = processor(|_| async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        ok("after the outage")
    });
    // Both items are marked running at once, so Postgres shows them held throughout.
    let w = env.worker(p, &[("ABRIDGE_START_AFTER_MS", "0")]);
    let batch = enqueue(&w, &video_lines('u', 2), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 2);
    eventually(Duration::from_secs(10), "items running", || async {
        w.store.batch(batch).await.unwrap().unwrap().counts.running == 2
    })
    .await;

    // Redis stops answering for longer than the lease (3 s), then comes back as it was.
    env.own().redis.signal(nix::sys::signal::Signal::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(5)).await;
    env.own().redis.signal(nix::sys::signal::Signal::SIGCONT);

    wait_batch_finished(&w, batch, Duration::from_secs(40)).await;
    let report = running.stop().await;
    assert_eq!((report.succeeded, report.fenced), (2, 0));
    for item in w.store.items_of(batch, None, 0, 2).await.unwrap() {
        assert_eq!(
            (item.status, item.attempts),
            (abridge_core::ItemStatus::Succeeded, 1),
            "no attempt is charged for Redis being away"
        );
    }
}

#[tokio::test]
async fn a_postgres_outage_longer_than_the_session_ttl_buries_nobody() {
    let mut env = TestEnv::with_own_servers().await;
    let p = processor(|_| async {
        tokio::time::sleep(Duration::from_secs(7)).await;
        ok("after the outage")
    });
    // One worker marks its items running at once, the other defers the start past the
    // outage, so both kinds of held item ride it out.
    let started = env.worker(p.clone(), &[("ABRIDGE_START_AFTER_MS", "0")]);
    let unstarted = env.worker(p, &[("ABRIDGE_START_AFTER_MS", "60000")]);
    let batch = enqueue(&started, &video_lines('v', 4), Priority::Normal)
        .await
        .batch_id;
    let a = Running::start(started.clone(), 2);
    let b = Running::start(unstarted.clone(), 2);
    eventually(Duration::from_secs(10), "all four held", || async {
        started.queue.stats().await.unwrap().leased == 4
    })
    .await;

    // Postgres is away for longer than the session TTL (2 s).
    env.own().postgres.stop();
    tokio::time::sleep(Duration::from_secs(5)).await;
    env.own().postgres.start_again().unwrap();

    wait_batch_finished(&started, batch, Duration::from_secs(60)).await;
    let (ra, rb) = (a.stop().await, b.stop().await);
    assert_eq!(ra.sessions + rb.sessions, 2, "no session was buried");
    assert_eq!(ra.succeeded + rb.succeeded, 4);
    assert_eq!(ra.fenced + rb.fenced, 0);
    for item in started.store.items_of(batch, None, 0, 4).await.unwrap() {
        assert_eq!(
            (item.status, item.attempts),
            (abridge_core::ItemStatus::Succeeded, 1),
            "no attempt is charged for Postgres being away"
        );
    }
}
