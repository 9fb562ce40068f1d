//! Concurrency: a worker never works on more items at once than its concurrency, and items
//! whose outcome waits for its write do not count against it (up to a bound).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use abridge_core::Priority;
use sqlx::Connection;

use crate::support::*;

const CONCURRENCY: usize = 4;

#[tokio::test]
async fn work_in_progress_is_bounded_and_a_stalled_write_does_not_stall_work() {
    let busy = Arc::new(AtomicUsize::new(0));
    let most_busy = Arc::new(AtomicUsize::new(0));
    let processed = Arc::new(AtomicUsize::new(0));
    let (b, m, n) = (busy.clone(), most_busy.clone(), processed.clone());
    let p = processor(move |_| {
        let (b, m, n) = (b.clone(), m.clone(), n.clone());
        async move {
            let now = b.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            b.fetch_sub(1, Ordering::SeqCst);
            n.fetch_add(1, Ordering::SeqCst);
            ok("done")
        }
    });
    let (env, w) = env_and_worker(p, |_| {}).await;
    let total = 40;
    let batch = enqueue(&w, &video_lines('c', total), Priority::Normal)
        .await
        .batch_id;

    // Another transaction locks every item row: reads still go through, the outcome writes
    // wait for the lock.
    let mut db = sqlx::PgConnection::connect(env.database_url.expose())
        .await
        .unwrap();
    let mut lock = db.begin().await.unwrap();
    sqlx::query("SELECT id FROM items WHERE batch_id = $1 FOR UPDATE")
        .bind(batch.0)
        .execute(&mut *lock)
        .await
        .unwrap();

    let running = Running::start(w.clone(), CONCURRENCY);
    // Work goes on while the first group's write waits: past one concurrency's worth...
    eventually(
        Duration::from_secs(30),
        "work beyond the stalled write",
        || {
            let processed = processed.clone();
            async move { processed.load(Ordering::SeqCst) > CONCURRENCY }
        },
    )
    .await;
    // ...but no further than the bound: the writers' groups and the finish channel, one
    // concurrency's worth each, then items stuck handing over their outcome.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let while_stalled = processed.load(Ordering::SeqCst);
    assert!(
        while_stalled <= 4 * CONCURRENCY,
        "{while_stalled} items processed while every write was stalled"
    );
    let view = w.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.counts.succeeded, 0, "the lock holds every write back");

    lock.rollback().await.unwrap();
    wait_batch_finished(&w, batch, Duration::from_secs(60)).await;
    let report = running.stop().await;
    assert_eq!(report.succeeded, total as u64);
    assert_eq!(
        processed.load(Ordering::SeqCst),
        total,
        "each item ran once"
    );
    assert_eq!(
        most_busy.load(Ordering::SeqCst),
        CONCURRENCY,
        "never more items in work than the concurrency, and that many when there is work"
    );
}
