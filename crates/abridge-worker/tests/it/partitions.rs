//! `items` by id range: a new batch's items go to the newest partition (never into the room
//! old partitions have), partitions are made ahead of the ids on every way items are
//! written, and the pruner drops the partitions retention emptied, and no other.

use abridge_core::{BatchId, Priority};
use abridge_worker::Worker;

use crate::support::*;

/// The partitions holding a batch's items.
async fn partitions_of(w: &Worker, batch: BatchId) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT tableoid::regclass::text FROM items WHERE batch_id = $1 ORDER BY 1",
    )
    .bind(batch.0)
    .fetch_all(w.store.pool())
    .await
    .unwrap()
}

/// Partitions 1,000 ids wide from id 2,000,000 on (past the ones the migration made), so a
/// test's few thousand items span several.
async fn narrow_partitions(w: &Worker) {
    sql(w, "SELECT setval('items_id_seq', 2000000)").await;
    sql(w, "UPDATE items_partitioning SET width = 1000").await;
}

#[tokio::test]
async fn new_items_go_to_the_newest_partition_never_into_old_room() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |s| {
        s.retention.prune_every = None
    })
    .await;
    narrow_partitions(&w).await;

    // A large batch (ids drawn, then copied) spans two partitions made for it.
    let big = enqueue(&w, &video_lines('a', 1_500), Priority::Normal).await;
    assert_eq!(
        partitions_of(&w, big.batch_id).await,
        ["items_2000000", "items_2001000"]
    );
    // Small batches take their ids from the sequence's default; partitions stay ahead of
    // them: half a width past the highest id, after every write.
    for prefix in ['b', 'c', 'd'] {
        enqueue(&w, &video_lines(prefix, 400), Priority::Normal).await;
        let ahead = scalar(
            &w,
            "SELECT (SELECT covered_to FROM items_partitioning) - (SELECT max(id) FROM items)",
        )
        .await;
        assert!(
            ahead >= 500,
            "partitions reach {ahead} ids past the last item"
        );
    }

    // Room in an old partition: most of the big batch's first partition deleted and vacuumed.
    sql(&w, "DELETE FROM items WHERE id BETWEEN 2000001 AND 2000900").await;
    sql(&w, "VACUUM items_2000000").await;
    let fresh = enqueue(&w, &video_lines('e', 300), Priority::Normal).await;
    let parts = partitions_of(&w, fresh.batch_id).await;
    assert!(
        !parts.contains(&"items_2000000".to_owned()),
        "a new batch's items fill no old partition's room: {parts:?}"
    );
}

#[tokio::test]
async fn the_pruner_drops_the_partitions_retention_emptied_and_no_other() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |s| {
        s.retention.prune_every = None
    })
    .await;
    narrow_partitions(&w).await;
    // `old` fills items_2000000 and half of items_2001000; `kept` the rest.
    let old = enqueue(&w, &video_lines('o', 1_500), Priority::Normal)
        .await
        .batch_id;
    let kept = enqueue(&w, &video_lines('k', 1_500), Priority::Normal)
        .await
        .batch_id;
    for b in [old, kept] {
        abridge_control::cancel(&w.store, &w.queue, b)
            .await
            .unwrap();
    }
    sql(
        &w,
        &format!("UPDATE batches SET finished_at = now() - interval '400 days' WHERE id = '{old}'"),
    )
    .await;
    let ahead_before = scalar(
        &w,
        "SELECT count(*) FROM item_partitions WHERE hi > (SELECT max(id) FROM items)",
    )
    .await;
    assert!(ahead_before >= 1, "partitions reach past the ids");

    let report = prune_pass(&w).await;
    assert_eq!(report.counts.items, 1_500);
    // items_2000000, emptied, and the migration's two below it, never used in this test.
    assert_eq!(report.counts.item_partitions, 3, "{report:?}");
    let names: Vec<String> = w
        .store
        .item_partitions()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _, _)| name)
        .collect();
    for gone in ["items_0", "items_1000000", "items_2000000"] {
        assert!(
            !names.contains(&gone.to_owned()),
            "{gone} dropped: {names:?}"
        );
    }
    assert!(
        names.contains(&"items_2001000".to_owned()),
        "a partition that still holds kept items stays: {names:?}"
    );
    assert_eq!(
        scalar(
            &w,
            "SELECT count(*) FROM pg_class WHERE relname = 'items_2000000'"
        )
        .await,
        0,
        "the table is gone"
    );
    assert_eq!(
        scalar(
            &w,
            &format!("SELECT count(*) FROM items WHERE batch_id = '{kept}'")
        )
        .await,
        1_500
    );
    assert_eq!(
        scalar(
            &w,
            "SELECT count(*) FROM item_partitions WHERE hi > (SELECT max(id) FROM items)",
        )
        .await,
        ahead_before,
        "the partitions at the top of the ids stay"
    );
    // Enqueueing goes on as before.
    let next = enqueue(&w, &video_lines('n', 1_200), Priority::Normal).await;
    assert_eq!(next.accepted, 1_200);
}
