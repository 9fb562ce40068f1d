//! Cancel: once `cancel` returns, no item of the batch starts; running ones stop promptly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use abridge_control::ControlError;
use abridge_core::{BatchStatus, Priority};

use crate::support::*;

#[tokio::test]
async fn cancel_stops_running_items_and_starts_no_more() {
    let starts = Arc::new(AtomicUsize::new(0));
    let stops = Arc::new(AtomicUsize::new(0));
    let (s, d) = (starts.clone(), stops.clone());
    let p = processor(move |_| {
        s.fetch_add(1, Ordering::SeqCst);
        struct Count(Arc<AtomicUsize>);
        impl Drop for Count {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = Count(d.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            ok("never")
        }
    });
    // Long heartbeat: the stop must come from the cancel notification, not a renewal.
    let (_env, w) = env_and_worker(p, |s| {
        s.lease = Duration::from_millis(60000);
        s.heartbeat = Duration::from_millis(30000);
    })
    .await;
    let batch = enqueue(&w, &video_lines('c', 10), Priority::Normal)
        .await
        .batch_id;
    let other = enqueue(
        &w,
        "{\"url\": \"o0000000000\", \"transcript\": \"x\"}",
        Priority::Low,
    )
    .await
    .batch_id;
    let running = Running::start(w.clone(), 3);
    eventually(Duration::from_secs(10), "three items running", || async {
        starts.load(Ordering::SeqCst) == 3
    })
    .await;

    let cancelled = abridge_control::cancel(&w.store, &w.queue, batch)
        .await
        .unwrap();
    assert_eq!(cancelled, 10);
    eventually(Duration::from_secs(3), "running items stopped", || async {
        stops.load(Ordering::SeqCst) == 3
    })
    .await;

    // The low-priority batch is now the only work: it starts, and nothing of the cancelled one does.
    eventually(Duration::from_secs(10), "other batch started", || async {
        starts.load(Ordering::SeqCst) == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        starts.load(Ordering::SeqCst),
        4,
        "an item of the cancelled batch started"
    );

    let view = w.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.status, BatchStatus::Cancelled);
    assert_eq!(view.counts.cancelled, 10);
    assert!(view.finished_at.is_some());
    abridge_control::cancel(&w.store, &w.queue, other)
        .await
        .unwrap();
    let report = running.stop().await;
    assert_eq!(
        report.succeeded + report.failed + report.fenced,
        0,
        "stopped items wrote nothing"
    );

    match abridge_control::cancel(&w.store, &w.queue, batch).await {
        Err(ControlError::AlreadyFinished { status, .. }) => assert_eq!(status, "cancelled"),
        other => panic!("expected AlreadyFinished, got {other:?}"),
    }
    match abridge_control::cancel(&w.store, &w.queue, abridge_core::BatchId::new()).await {
        Err(ControlError::NotFound(_)) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

/// Cancel costs the batch's own items: another batch's delayed retries are neither read nor
/// touched (cancel.lua once read every delayed item of every batch, HGETALL on `delayed-places`).
#[tokio::test]
async fn cancel_costs_the_batchs_items_not_every_delayed_retry() {
    let env = abridge_testkit::TestEnv::with_own_servers().await;
    let w = env.worker(processor(|_| async { ok("never") }), &[]);
    let batch = enqueue(&w, &video_lines('k', 3), Priority::Normal)
        .await
        .batch_id;
    let items = w.store.items_of(batch, None, 0, 10).await.unwrap();
    let keys = w.queue.keys().clone();
    let mut r = env.redis().await;
    // Two of the batch's items wait to retry; another batch has 20,000 waiting.
    let mut pipe = redis::pipe();
    for item in &items[..2] {
        pipe.zrem(keys.ready(batch), item.id.0)
            .zadd(&keys.delayed, item.id.0, 9_000_000_000_000i64)
            .hset(
                &keys.delayed_places,
                item.id.0,
                format!("{batch}|1|{}", item.position),
            );
    }
    let other = abridge_core::BatchId::new();
    for i in 0..20_000i64 {
        pipe.zadd(&keys.delayed, 1_000_000_000 + i, 9_000_000_000_000i64)
            .hset(
                &keys.delayed_places,
                1_000_000_000 + i,
                format!("{other}|1|{i}"),
            );
    }
    let () = pipe.query_async(&mut r).await.unwrap();
    let () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut r)
        .await
        .unwrap();

    assert_eq!(
        abridge_control::cancel(&w.store, &w.queue, batch)
            .await
            .unwrap(),
        3
    );

    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(
        !stats.contains("cmdstat_hgetall"),
        "cancel read the whole delayed-places hash: {stats}"
    );
    let delayed: i64 = redis::cmd("ZCARD")
        .arg(&keys.delayed)
        .query_async(&mut r)
        .await
        .unwrap();
    let refs: i64 = redis::cmd("HLEN")
        .arg(&keys.delayed_places)
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(
        (delayed, refs),
        (20_000, 20_000),
        "only the cancelled batch's retries go"
    );
}
