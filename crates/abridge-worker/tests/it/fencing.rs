//! Exactly-once terminal state with real workers: fenced writes under concurrency, take-overs
//! by the reaper, a buried session, cache fills. (The fenced statements alone are tested in
//! `abridge-store`.)

use std::time::Duration;

use abridge_core::{ErrorKind, ItemStatus, LeaseToken, Priority, WorkerId};
use abridge_store::{Claim, Finish, Outcome};

use abridge_testkit::succeeded;

use crate::support::*;

#[tokio::test]
async fn counts_always_equal_the_rows_under_concurrent_workers() {
    let p = processor(|job| async move {
        tokio::time::sleep(Duration::from_millis((job.item_id.0 % 3) as u64)).await;
        ok(format!("summary of {}", job.video_id))
    });
    let (_env, w) = env_and_worker(p, |_| {}).await;
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

#[tokio::test]
async fn an_unstarted_claim_that_was_taken_over_cannot_start_or_finish() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let batch = enqueue(&w, &video_lines('o', 1), Priority::Normal)
        .await
        .batch_id;
    let (zombie, live) = (WorkerId::new(), WorkerId::new());
    let store = &w.store;

    // The zombie claims and reads the item, then stops before its start is due.
    let first = w
        .queue
        .claim(zombie, Duration::from_millis(200), 1)
        .await
        .unwrap();
    let item = first.items[0].item;
    let read = store.read_claimed(&[(item, first.token)]).await.unwrap();
    assert_eq!(read[0].attempt, 1);
    // Its lease expires; a reaper takes the claim over (counting the attempt) and another
    // worker claims the item.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let reaped = abridge_worker::reaper::reap_once(&w).await.unwrap();
    assert_eq!((reaped.expired_leases, reaped.counted_unstarted), (1, 1));
    let second = w
        .queue
        .claim(live, Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(second.items[0].item, item);
    let read = store.read_claimed(&[(item, second.token)]).await.unwrap();
    assert_eq!(read[0].attempt, 2);

    // The zombie resumes first: its outcome and its start are refused, and recorded.
    let stale = store
        .finish_items(zombie, &[succeeded(item, first.token, false, "stale")], 5)
        .await
        .unwrap();
    assert!(stale.accepted.is_empty());
    assert_eq!(
        stale.rejected,
        vec![(item, first.token, ItemStatus::Queued)]
    );
    let zombie_claim = Claim::first(item, first.token);
    assert!(
        store
            .start_items(zombie, &[zombie_claim])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.fenced_write_counts(&[item]).await.unwrap()[&item], 1);

    // The live holder's write is taken.
    let mut live_write = succeeded(item, second.token, false, "live");
    live_write.attempt = 2;
    let report = store.finish_items(live, &[live_write], 5).await.unwrap();
    assert_eq!(report.accepted.len(), 1);
    let done = store.items_of(batch, None, 0, 1).await.unwrap().remove(0);
    assert_eq!((done.summary.as_deref(), done.attempts), (Some("live"), 2));
}

#[tokio::test]
async fn a_worker_whose_session_was_buried_writes_nothing() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    enqueue(&w, &video_lines('b', 2), Priority::Normal).await;
    let buried = WorkerId::new();
    let store = &w.store;
    store
        .register_session(abridge_store::NewSession {
            id: buried,
            queue: "default",
            host: "test",
            pid: 1,
            concurrency: 2,
            version: "test",
        })
        .await
        .unwrap();
    let claim = w
        .queue
        .claim(buried, Duration::from_secs(30), 2)
        .await
        .unwrap();
    let (x, y) = (claim.items[0].item, claim.items[1].item);
    store.close_session(buried, "dead: test").await.unwrap();

    // Nothing else took the items yet, but the session is gone: no start, no outcome.
    assert!(
        store
            .start_items(buried, &[Claim::first(x, claim.token)])
            .await
            .unwrap()
            .is_empty()
    );
    let report = store
        .finish_items(buried, &[succeeded(y, claim.token, false, "late")], 5)
        .await
        .unwrap();
    assert_eq!(report.rejected, vec![(y, claim.token, ItemStatus::Queued)]);
}

#[tokio::test]
async fn a_cache_fill_from_a_claim_that_was_taken_over_is_refused_and_recorded() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    enqueue(&w, &video_lines('c', 1), Priority::Normal).await;
    let (zombie, live) = (WorkerId::new(), WorkerId::new());
    let store = &w.store;
    let claim = w
        .queue
        .claim(zombie, Duration::from_secs(30), 1)
        .await
        .unwrap();
    let item = claim.items[0].item;
    let transcript = abridge_store::CachedTranscript {
        video_id: "c0000000000".into(),
        language: "en".into(),
        kind: "manual".into(),
        title: Some("T".into()),
        channel: None,
        duration_s: Some(60),
        segments: serde_json::json!([]),
        tracks: serde_json::json!([]),
        fetched_at: chrono::Utc::now(),
    };
    // Taken over: a reclaim after its start by another claim.
    let stale = Claim::first(item, claim.token);
    assert_eq!(
        store
            .start_items(live, &[Claim::first(item, LeaseToken(42))])
            .await
            .unwrap(),
        vec![item]
    );
    assert!(
        !store
            .save_transcript(&transcript, &stale, zombie)
            .await
            .unwrap()
    );
    assert!(
        store
            .cached_transcripts("c0000000000")
            .await
            .unwrap()
            .is_empty()
    );
    let fresh = Claim {
        item,
        token: LeaseToken(42),
        attempt: 1,
    };
    assert!(
        store
            .save_transcript(&transcript, &fresh, live)
            .await
            .unwrap()
    );
    assert_eq!(
        store.cached_transcripts("c0000000000").await.unwrap().len(),
        1
    );
    assert_eq!(store.fenced_write_counts(&[item]).await.unwrap()[&item], 1);
}

#[tokio::test]
async fn one_outcome_with_an_absurd_wait_does_not_discard_its_group() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let batch = enqueue(&w, &video_lines('w', 2), Priority::Normal)
        .await
        .batch_id;
    let worker = WorkerId::new();
    let claim = w
        .queue
        .claim(worker, Duration::from_secs(30), 2)
        .await
        .unwrap();
    let (x, y) = (claim.items[0].item, claim.items[1].item);
    let parked = Finish {
        outcome: Outcome::Retry {
            kind: ErrorKind::from_static("rate_limited"),
            message: "retry-after: forever".into(),
            delay: Duration::MAX,
        },
        ..succeeded(x, claim.token, false, "")
    };
    let report = w
        .store
        .finish_items(
            worker,
            &[parked, succeeded(y, claim.token, false, "fine")],
            5,
        )
        .await
        .expect("a huge delay is stored within bounds, not an error for the group");
    assert_eq!(report.accepted.len(), 2);
    let items = w.store.items_of(batch, None, 0, 2).await.unwrap();
    assert!(items.iter().any(|i| i.summary.as_deref() == Some("fine")));
}
