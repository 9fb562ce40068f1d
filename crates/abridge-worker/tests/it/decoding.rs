//! Statuses and priorities come out of Postgres typed: a value this build does not know (a
//! newer schema's, a hand edit) is an error naming it, never read as some default.

use abridge_core::Priority;

use crate::support::*;

#[tokio::test]
async fn a_status_this_build_does_not_know_is_an_error_not_a_default() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let enqueued = enqueue(&w, &video_lines('u', 3), Priority::Normal).await;
    let batch = enqueued.batch_id;
    sql(
        &w,
        "ALTER TABLE batches DROP CONSTRAINT batches_status_check",
    )
    .await;
    sql(&w, "ALTER TABLE items DROP CONSTRAINT items_status_check").await;
    sql(
        &w,
        &format!("UPDATE batches SET status = 'archived' WHERE id = '{batch}'"),
    )
    .await;
    let e = w.store.batch(batch).await.unwrap_err();
    assert!(e.to_string().contains("archived"), "{e}");
    assert!(!e.is_unavailable(), "{e}");

    let item: i64 = scalar(
        &w,
        &format!("SELECT min(id) FROM items WHERE batch_id = '{batch}'"),
    )
    .await;
    sql(
        &w,
        &format!("UPDATE items SET status = 'parked' WHERE id = {item}"),
    )
    .await;
    let e = w.store.item_refs(&[item]).await.unwrap_err();
    assert!(e.to_string().contains("parked"), "{e}");
}
