//! The reconciler rebuilds Redis from Postgres: lost queued items come back, orphaned running
//! items are taken back after two passes, and nothing is queued twice.

use std::time::Duration;

use abridge_core::{Priority, WorkerId};
use abridge_worker::reconciler::{Suspects, reconcile_once};

use crate::support::*;

async fn wipe_redis(env: &abridge_testkit::TestEnv) {
    let mut conn = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn lost_redis_state_is_rebuilt_from_postgres() {
    let (env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let big = enqueue(&w, &video_lines('g', 500), Priority::Normal)
        .await
        .batch_id;
    let urgent = enqueue(&w, &video_lines('u', 5), Priority::High)
        .await
        .batch_id;
    let mut suspects = Suspects::new();
    let first = reconcile_once(&w, &mut suspects).await.unwrap();
    assert!(first.redis_was_empty, "first pass ever sets the epoch");
    assert_eq!(first.drift, 0);

    wipe_redis(&env).await;
    let report = reconcile_once(&w, &mut suspects).await.unwrap();
    assert!(report.redis_was_empty);
    assert_eq!((report.drift, report.requeued), (505, 505));
    let again = reconcile_once(&w, &mut suspects).await.unwrap();
    assert_eq!(
        again.drift, 0,
        "a second pass finds nothing missing and queues nothing twice"
    );

    // Rebuilt in order: high first, then the big batch from position 0.
    let claim = w
        .queue
        .claim(WorkerId::new(), Duration::from_secs(30), 7)
        .await
        .unwrap();
    assert!(claim.epoch_present);
    assert!(claim.items[..5].iter().all(|l| l.batch == urgent));
    assert_eq!((claim.items[5].batch, claim.items[5].position), (big, 0));
    assert_eq!(w.queue.stats().await.unwrap().ready[1], 498);
}

#[tokio::test]
async fn running_items_without_a_lease_are_taken_back_on_the_second_pass() {
    let (env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let batch = enqueue(&w, &video_lines('o', 2), Priority::Normal)
        .await
        .batch_id;
    let gone = WorkerId::new();
    let claim = w
        .queue
        .claim(gone, Duration::from_secs(600), 2)
        .await
        .unwrap();
    let claims: Vec<_> = claim
        .items
        .iter()
        .map(|l| abridge_store::Claim::first(l.item, l.token))
        .collect();
    w.store.start_items(gone, &claims).await.unwrap();
    wipe_redis(&env).await; // the leases vanish; Postgres still says running

    let mut suspects = Suspects::new();
    let pass1 = reconcile_once(&w, &mut suspects).await.unwrap();
    assert_eq!(
        pass1.reclaimed, 0,
        "a live worker gets a heartbeat's time to re-create its lease"
    );
    assert_eq!(suspects.len(), 2);
    let pass2 = reconcile_once(&w, &mut suspects).await.unwrap();
    assert_eq!(pass2.reclaimed, 2);
    let view = w.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.counts.queued, 2);
    assert_eq!(w.queue.stats().await.unwrap().ready[1], 2);
}

#[tokio::test]
async fn a_worker_recovers_by_itself_after_redis_loses_everything() {
    let p = processor(|_| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        ok("x")
    });
    let (env, w) = env_and_worker(p, |_| {}).await;
    let batch = enqueue(&w, &video_lines('f', 200), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 8);
    eventually(Duration::from_secs(20), "some items done", || async {
        w.store
            .batch(batch)
            .await
            .unwrap()
            .unwrap()
            .counts
            .succeeded
            >= 20
    })
    .await;
    let open = 200
        - w.store
            .batch(batch)
            .await
            .unwrap()
            .unwrap()
            .counts
            .succeeded;
    wipe_redis(&env).await;
    wait_batch_finished(&w, batch, Duration::from_secs(60)).await;
    let report = running.stop().await;
    let view = w.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.counts.succeeded, 200);
    assert_eq!(report.succeeded, 200, "every item written exactly once");
    // What Redis lost came back through the reconciler, and nothing more than was open.
    assert!(
        report.restored > 0 && report.restored <= open as u64,
        "restored {} of {open} open items",
        report.restored
    );
}
