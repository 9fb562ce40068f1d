//! Exactly-once terminal state: the Postgres write is fenced by the claim's token (a start,
//! an outcome, with or without a start before it). Claims here are made up: what Redis would
//! hand out is a token, and Postgres must judge it alone.

use abridge_core::input::BatchInput;
use abridge_core::{BatchId, ErrorKind, ItemId, ItemStatus, LeaseToken, Priority, WorkerId};
use abridge_store::{Claim, NewBatch, Store};
use abridge_testkit::{TestEnv, succeeded};

/// A database of its own holding one queued batch of `n` items.
async fn batch_of(n: usize) -> (TestEnv, Store, BatchId, Vec<ItemId>) {
    let env = TestEnv::new().await;
    let store = env.store();
    let lines: String = (0..n).map(|i| format!("f{i:010}\n")).collect();
    let created = store
        .create_batch(
            NewBatch::plain("fencing", Priority::Normal),
            &BatchInput::from_lines(&lines).items,
        )
        .await
        .unwrap();
    (env, store, created.id, created.item_ids)
}

#[tokio::test]
async fn a_zombie_cannot_overwrite_and_its_refused_write_is_recorded() {
    let (_env, store, batch, items) = batch_of(1).await;
    let (zombie, fresh) = (WorkerId::new(), WorkerId::new());
    let store = &store;
    let item = items[0];
    let t1 = LeaseToken::random();
    assert_eq!(
        store
            .start_items(zombie, &[Claim::first(item, t1)])
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
        store
            .start_items(
                fresh,
                &[Claim {
                    item,
                    token: t2,
                    attempt: 2
                }]
            )
            .await
            .unwrap(),
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
            .start_items(zombie, &[Claim::first(item, t1)])
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
    let (_env, store, batch, items) = batch_of(2).await;
    let (a, b) = (WorkerId::new(), WorkerId::new());
    let store = &store;
    let (x, y) = (items[0], items[1]);
    let ta = LeaseToken::random();
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
    assert_eq!(
        store.start_items(b, &[Claim::first(y, tb)]).await.unwrap(),
        vec![y]
    );
    let refused = store
        .finish_items(a, &[succeeded(y, ta, false, "by a")], 5)
        .await
        .unwrap();
    assert_eq!(refused.rejected, vec![(y, ta, ItemStatus::Running)]);
    assert!(
        store
            .start_items(a, &[Claim::first(y, ta)])
            .await
            .unwrap()
            .is_empty(),
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
