//! Graceful shutdown: stop claiming, let in-flight items finish within the grace period,
//! release the rest to the queue at once (attempt refunded), close the session.

use std::time::Duration;

use abridge_core::{BatchStatus, Priority};

use crate::support::*;

#[tokio::test]
async fn shutdown_finishes_what_it_can_and_releases_the_rest() {
    let p = processor(|job| async move {
        if job.video_id.starts_with('q') {
            tokio::time::sleep(Duration::from_millis(300)).await;
            ok("quick")
        } else {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            ok("never")
        }
    });
    let (_env, w) = env_and_worker(p, |s| s.shutdown_grace = Duration::from_millis(1500)).await;
    let quick = enqueue(&w, &video_lines('q', 2), Priority::High)
        .await
        .batch_id;
    let slow = enqueue(&w, &video_lines('w', 2), Priority::High)
        .await
        .batch_id;
    let backlog = enqueue(&w, &video_lines('b', 20), Priority::Low)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 4);
    eventually(Duration::from_secs(10), "four items running", || async {
        let q = w.store.batch(quick).await.unwrap().unwrap().counts.running;
        let s = w.store.batch(slow).await.unwrap().unwrap().counts.running;
        q + s == 4
    })
    .await;

    let sessions = w.store.live_sessions("default").await.unwrap();
    assert_eq!(sessions.len(), 1);
    let session = sessions[0].id;
    let began = std::time::Instant::now();
    let report = running.stop().await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(1_400) && took < Duration::from_secs(10),
        "shutdown took {took:?}"
    );
    assert_eq!(report.succeeded, 2);
    assert_eq!(report.released, 2);

    let q = w.store.batch(quick).await.unwrap().unwrap();
    assert_eq!((q.status, q.counts.succeeded), (BatchStatus::Completed, 2));
    let s = w.store.batch(slow).await.unwrap().unwrap();
    assert_eq!(s.counts.queued, 2, "unfinished items go back to the queue");
    for item in w.store.items_of(slow, None, 0, 10).await.unwrap() {
        assert_eq!(item.attempts, 0, "a release refunds the attempt");
    }
    // Nothing of the backlog was started after shutdown began, and Redis holds every queued item.
    assert_eq!(
        w.store.batch(backlog).await.unwrap().unwrap().counts.queued,
        20
    );
    let stats = w.queue.stats().await.unwrap();
    assert_eq!(stats.leased, 0);
    assert_eq!(stats.ready, [2, 0, 20]);
    assert_eq!(
        w.store
            .session_stop_reason(session)
            .await
            .unwrap()
            .as_deref(),
        Some("shutdown")
    );
    assert!(w.store.live_sessions("default").await.unwrap().is_empty());
}

/// An idle worker's claim waits in Redis behind its blocking pop, and runs the moment a
/// wake-up arrives. One that arrives while the worker stops is still claimed, then given back:
/// nothing stays leased to a worker that has gone.
#[tokio::test]
async fn an_idle_worker_starts_work_at_once_and_leaves_nothing_leased_when_it_stops() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let running = Running::start(w.clone(), 4);
    // Idle: blocked in its pipelined wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = enqueue(&w, &video_lines('i', 1), Priority::Normal).await;
    wait_batch_finished(&w, first.batch_id, Duration::from_secs(10)).await;

    // Stop while idle, and enqueue within the worker's last wait.
    let late = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        enqueue(&w, &video_lines('j', 1), Priority::Normal).await
    };
    let (_report, late) = tokio::join!(running.stop(), late);
    let stats = w.queue.stats().await.unwrap();
    assert_eq!(
        (stats.ready[1], stats.leased),
        (1, 0),
        "the item enqueued during shutdown is ready, not leased"
    );
    let counts = w.store.counts(late.batch_id).await.unwrap();
    assert_eq!(counts.queued, 1);
}
