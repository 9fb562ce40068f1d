//! Exactly-once terminal state: the Postgres write is fenced by the claim's token.

use std::time::Duration;

use abridge_core::{ErrorKind, ItemId, ItemStatus, LeaseToken, Priority, WorkerId};
use abridge_store::{Finish, Outcome};

use crate::support::*;

fn succeeded(item: ItemId, token: LeaseToken, started: bool, summary: &str) -> Finish {
    Finish {
        item,
        token,
        outcome: Outcome::Succeeded {
            summary: summary.into(),
            title: None,
            meta: serde_json::json!({}),
        },
        started,
        began: std::time::Instant::now(),
    }
}

#[tokio::test]
async fn a_zombie_cannot_overwrite_and_its_refused_write_is_recorded() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), &[]).await;
    let batch = enqueue(&w, &video_lines('z', 1), Priority::Normal)
        .await
        .batch_id;
    let (zombie, fresh) = (WorkerId::new(), WorkerId::new());
    let store = &w.store;

    let first = w
        .queue
        .claim(zombie, Duration::from_secs(30), 1)
        .await
        .unwrap();
    let item = first.items[0].item;
    let t1 = first.token;
    assert_eq!(
        store
            .start_items(zombie, &[(item, t1)])
            .await
            .unwrap()
            .len(),
        1
    );
    // The zombie stops; its claim is taken back and the item starts again under a new token.
    let reclaimed = store
        .reclaim(&[(item, t1)], 5, &ErrorKind::LEASE_EXPIRED)
        .await
        .unwrap();
    assert_eq!(reclaimed.reclaimed, 1);
    let t2 = LeaseToken::random();
    assert_eq!(
        store.start_items(fresh, &[(item, t2)]).await.unwrap(),
        vec![item]
    );

    // The zombie wakes up and tries to write: refused, and recorded.
    let report = store
        .finish_items(zombie, &[succeeded(item, t1, true, "stale")], 5)
        .await
        .unwrap();
    assert!(report.accepted.is_empty());
    assert_eq!(report.rejected, vec![(item, t1, ItemStatus::Running)]);

    // The current holder writes once; a second write of the same claim is refused too.
    let report = store
        .finish_items(fresh, &[succeeded(item, t2, true, "fresh")], 5)
        .await
        .unwrap();
    assert_eq!(report.accepted.len(), 1);
    let again = store
        .finish_items(fresh, &[succeeded(item, t2, true, "again")], 5)
        .await
        .unwrap();
    assert_eq!(again.rejected, vec![(item, t2, ItemStatus::Succeeded)]);

    // A start under an old claim is refused as well.
    assert!(
        store
            .start_items(zombie, &[(item, t1)])
            .await
            .unwrap()
            .is_empty()
    );

    let view = store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.counts.succeeded, 1);
    assert_eq!(view.counts.total(), 1);
    assert_eq!(store.fenced_write_counts(&[item]).await.unwrap()[&item], 2);
    assert_eq!(view.status, abridge_core::BatchStatus::Running); // completion is the finisher's job
    assert_eq!(
        store.complete_batches_if_done(&[batch]).await.unwrap(),
        vec![batch]
    );
}

#[tokio::test]
async fn items_finished_before_their_start_was_written_are_fenced_too() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), &[]).await;
    let batch = enqueue(&w, &video_lines('u', 2), Priority::Normal)
        .await
        .batch_id;
    let (a, b) = (WorkerId::new(), WorkerId::new());
    let store = &w.store;
    let claim = w.queue.claim(a, Duration::from_secs(30), 2).await.unwrap();
    let (x, y) = (claim.items[0].item, claim.items[1].item);
    let ta = claim.token;
    let tb = LeaseToken::random();

    // x: two claims race without either marking it running; the first write wins, once.
    let first = store
        .finish_items(b, &[succeeded(x, tb, false, "by b")], 5)
        .await
        .unwrap();
    assert_eq!(first.accepted.len(), 1);
    let late = store
        .finish_items(a, &[succeeded(x, ta, false, "by a")], 5)
        .await
        .unwrap();
    assert_eq!(late.rejected, vec![(x, ta, ItemStatus::Succeeded)]);
    // y: one claim marked it running; the other, unstarted, cannot finish it from `queued`.
    assert_eq!(store.start_items(b, &[(y, tb)]).await.unwrap(), vec![y]);
    let refused = store
        .finish_items(a, &[succeeded(y, ta, false, "by a")], 5)
        .await
        .unwrap();
    assert_eq!(refused.rejected, vec![(y, ta, ItemStatus::Running)]);
    assert!(
        store.start_items(a, &[(y, ta)]).await.unwrap().is_empty(),
        "a second start is refused"
    );

    let items = store.items_of(batch, None, 0, 10).await.unwrap();
    let done = items.iter().find(|i| i.id == x).unwrap();
    // The unstarted finish counted the attempt and recorded who ran it.
    assert_eq!(
        (done.attempts, done.summary.as_deref(), done.worker_id),
        (1, Some("by b"), Some(b.0))
    );
    assert!(done.started_at.is_some() && done.started_at <= done.finished_at);
    assert_eq!(
        store
            .fenced_write_counts(&[x, y])
            .await
            .unwrap()
            .values()
            .sum::<i64>(),
        2
    );
}

#[tokio::test]
async fn counts_always_equal_the_rows_under_concurrent_workers() {
    let p = processor(|job| async move {
        tokio::time::sleep(Duration::from_millis((job.item_id.0 % 3) as u64)).await;
        ok(format!("summary of {}", job.video_id))
    });
    let (_env, w) = env_and_worker(p, &[]).await;
    let batch = enqueue(&w, &video_lines('n', 600), Priority::Normal)
        .await
        .batch_id;
    let workers: Vec<_> = (0..3).map(|_| Running::start(w.clone(), 16)).collect();
    wait_batch_finished(&w, batch, Duration::from_secs(60)).await;
    let mut succeeded = 0;
    for r in workers {
        succeeded += r.stop().await.succeeded;
    }
    let view = w.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.status, abridge_core::BatchStatus::Completed);
    assert_eq!(view.counts.succeeded, 600);
    assert_eq!(
        succeeded, 600,
        "workers reported more or fewer successes than rows"
    );
    assert!(view.finished_at.is_some() && view.started_at.is_some());
}
