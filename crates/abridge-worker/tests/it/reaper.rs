//! The reaper: expired leases and dead sessions give their items back; lease expiries count
//! as attempts, so a poison item ends failed; several reapers at once do each thing once.

use std::time::Duration;

use abridge_core::{ItemStatus, Priority, WorkerId};
use abridge_store::{Claim, NewSession};
use abridge_worker::reaper::reap_once;

use crate::support::*;

#[tokio::test]
async fn expired_leases_are_requeued_and_count_as_attempts() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |s| s.max_attempts = 2).await;
    let batch = enqueue(&w, &video_lines('e', 3), Priority::Normal)
        .await
        .batch_id;
    let ghost = WorkerId::new();
    let lease = Duration::from_millis(300);

    for round in 1..=2 {
        // A worker claims and starts everything, then vanishes without renewing.
        let claim = w.queue.claim(ghost, lease, 10).await.unwrap();
        assert_eq!(
            claim.items.len(),
            3,
            "round {round}: every item claimable again"
        );
        let claims: Vec<_> = claim
            .items
            .iter()
            .map(|l| Claim {
                item: l.item,
                token: l.token,
                attempt: round,
            })
            .collect();
        assert_eq!(w.store.start_items(ghost, &claims).await.unwrap().len(), 3);
        assert_eq!(
            reap_once(&w).await.unwrap().expired_leases,
            0,
            "not expired yet"
        );
        tokio::time::sleep(lease + Duration::from_millis(100)).await;

        // Several reapers race; each lease is handled once.
        let reports = futures::future::join_all((0..4).map(|_| reap_once(&w))).await;
        let reports: Vec<_> = reports.into_iter().map(Result::unwrap).collect();
        assert_eq!(reports.iter().map(|r| r.expired_leases).sum::<u64>(), 3);
        assert_eq!(reports.iter().map(|r| r.reclaimed_expired).sum::<u64>(), 3);
    }
    // Two expired attempts with max_attempts = 2: the poison items have failed.
    let view = w.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.counts.failed, 3);
    assert_eq!(view.status, abridge_core::BatchStatus::Completed);
    for item in w.store.items_of(batch, None, 0, 10).await.unwrap() {
        assert_eq!(item.attempts, 2);
        assert_eq!(item.error_kind.as_deref(), Some("lease_expired"));
    }
}

#[tokio::test]
async fn a_dead_sessions_items_are_requeued_without_waiting_for_their_leases() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |s| {
        s.session_ttl = Duration::from_millis(500)
    })
    .await;
    let batch = enqueue(&w, &video_lines('s', 4), Priority::Normal)
        .await
        .batch_id;
    let dead = WorkerId::new();
    w.store
        .register_session(NewSession {
            id: dead,
            queue: "default",
            host: "gone",
            pid: 1,
            concurrency: 4,
            version: "test",
        })
        .await
        .unwrap();
    // It claims four items with long leases, starts three, then stops heartbeating.
    let claim = w
        .queue
        .claim(dead, Duration::from_secs(600), 4)
        .await
        .unwrap();
    let claims: Vec<_> = claim
        .items
        .iter()
        .map(|l| Claim::first(l.item, l.token))
        .collect();
    w.store.start_items(dead, &claims[..3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let report = reap_once(&w).await.unwrap();
    assert_eq!(report.dead_sessions, vec![dead]);
    assert_eq!(report.reclaimed_from_dead, 3);
    assert_eq!(
        report.requeued, 4,
        "started and merely claimed items are both back"
    );
    assert!(
        reap_once(&w).await.unwrap().dead_sessions.is_empty(),
        "buried once"
    );
    let reason = w.store.session_stop_reason(dead).await.unwrap().unwrap();
    assert!(reason.starts_with("dead: no heartbeat for"), "{reason}");
    // They come back spread over at most two seconds (so a poison item among them does not
    // take the same neighbours down again), not after the ten-minute leases.
    let stats = w.queue.stats().await.unwrap();
    assert_eq!((stats.leased, stats.ready[1] + stats.delayed), (0, 4));
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let claim = w
        .queue
        .claim(WorkerId::new(), Duration::from_secs(30), 10)
        .await
        .unwrap();
    assert_eq!(claim.items.len(), 4);
    for item in w.store.items_of(batch, None, 0, 10).await.unwrap() {
        assert_eq!(item.status, ItemStatus::Queued);
    }
    // And the dead worker, should it wake, cannot write.
    let report = w
        .store
        .finish_items(
            dead,
            &[abridge_store::Finish {
                item: claims[0].item,
                token: claims[0].token,
                attempt: 1,
                outcome: abridge_store::Outcome::Release,
                started: true,
                began: std::time::Instant::now(),
            }],
            5,
        )
        .await
        .unwrap();
    assert_eq!(report.rejected.len(), 1);
}
