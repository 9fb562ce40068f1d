//! Failures: transient errors retry with growing, jittered delays up to `max_attempts`;
//! permanent ones fail at once; timeouts and panics count as transient.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abridge_core::{BatchStatus, ErrorKind, ItemError, Priority};

use crate::support::*;

#[tokio::test]
async fn transient_errors_back_off_then_fail_after_max_attempts() {
    let calls = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let c = calls.clone();
    let p = processor(move |_| {
        c.lock().unwrap().push(Instant::now());
        async {
            Err(ItemError::transient(
                ErrorKind::new("rate_limited"),
                "429 from upstream",
            ))
        }
    });
    let (_env, w) = env_and_worker(p, |s| {
        s.max_attempts = 4;
        s.retry_base = Duration::from_millis(100);
        s.retry_max = Duration::from_millis(10000);
    })
    .await;
    let batch = enqueue(&w, &video_lines('t', 1), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 2);
    wait_batch_finished(&w, batch, Duration::from_secs(30)).await;
    let report = running.stop().await;

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 4, "one call per attempt");
    for (k, pair) in calls.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let floor = Duration::from_millis(100 * (1 << k) / 2); // base * 2^k, at least half after jitter
        assert!(
            gap >= floor,
            "retry {} came after {gap:?}, expected at least {floor:?}",
            k + 1
        );
    }
    assert_eq!(report.retried, 3);
    assert_eq!(report.failed, 1);
    let view = w.store.batch(batch).await.unwrap().unwrap();
    assert_eq!(view.status, BatchStatus::Completed);
    assert_eq!(view.counts.failed, 1);
    let detail = item_detail(&w, batch).await;
    assert_eq!(detail.0, 4);
    assert_eq!(detail.1.as_deref(), Some("rate_limited"));
    assert!(
        detail
            .2
            .unwrap()
            .starts_with("gave up after 4 attempts: 429")
    );
}

#[tokio::test]
async fn permanent_errors_fail_at_once_and_flaky_ones_recover() {
    let p = processor(|job| async move {
        if job.video_id.starts_with('p') {
            Err(ItemError::permanent(
                ErrorKind::new("video_unavailable"),
                "this video is private",
            ))
        } else if job.attempt <= 2 {
            Err(ItemError::transient(ErrorKind::new("upstream_5xx"), "502"))
        } else {
            ok("third time lucky")
        }
    });
    let (_env, w) = env_and_worker(p, |_| {}).await;
    let doomed = enqueue(&w, &video_lines('p', 1), Priority::Normal)
        .await
        .batch_id;
    let flaky = enqueue(&w, &video_lines('f', 1), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 2);
    wait_batch_finished(&w, doomed, Duration::from_secs(20)).await;
    wait_batch_finished(&w, flaky, Duration::from_secs(20)).await;
    running.stop().await;
    let (attempts, kind, message) = item_detail(&w, doomed).await;
    assert_eq!(
        (attempts, kind.as_deref(), message.as_deref()),
        (1, Some("video_unavailable"), Some("this video is private"))
    );
    let (attempts, kind, _) = item_detail(&w, flaky).await;
    assert_eq!((attempts, kind), (3, None));
    assert_eq!(
        w.store
            .batch(flaky)
            .await
            .unwrap()
            .unwrap()
            .counts
            .succeeded,
        1
    );
}

#[tokio::test]
async fn retry_after_hints_are_honoured_and_timeouts_and_panics_are_transient() {
    let calls = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let c = calls.clone();
    let p = processor(move |job| {
        c.lock()
            .unwrap()
            .push((job.video_id.clone(), Instant::now()));
        async move {
            match (job.video_id.chars().next(), job.attempt) {
                (Some('a'), 1) => Err(ItemError::Transient {
                    kind: ErrorKind::new("rate_limited"),
                    message: "slow down".into(),
                    retry_after: Some(Duration::from_millis(700)),
                }),
                (Some('s'), 1) => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    ok("too late")
                }
                (Some('x'), _) => panic!("processor bug"),
                _ => ok("fine"),
            }
        }
    });
    let (_env, w) = env_and_worker(p, |s| {
        s.item_timeout = Duration::from_millis(300);
        s.max_attempts = 2;
    })
    .await;
    let hinted = enqueue(&w, &video_lines('a', 1), Priority::Normal)
        .await
        .batch_id;
    let slow = enqueue(&w, &video_lines('s', 1), Priority::Normal)
        .await
        .batch_id;
    let buggy = enqueue(&w, &video_lines('x', 1), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 4);
    for b in [hinted, slow, buggy] {
        wait_batch_finished(&w, b, Duration::from_secs(30)).await;
    }
    running.stop().await;
    let calls = calls.lock().unwrap().clone();
    let hinted_calls: Vec<Instant> = calls
        .iter()
        .filter(|(v, _)| v.starts_with('a'))
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(hinted_calls.len(), 2);
    assert!(hinted_calls[1] - hinted_calls[0] >= Duration::from_millis(700));
    assert_eq!(item_detail(&w, slow).await.0, 2);
    assert_eq!(
        w.store.batch(slow).await.unwrap().unwrap().counts.succeeded,
        1
    );
    let (attempts, kind, message) = item_detail(&w, buggy).await;
    assert_eq!((attempts, kind.as_deref()), (2, Some("internal")));
    assert!(message.unwrap().contains("processor bug"));
}

/// (attempts, error_kind, error_message) of a one-item batch.
async fn item_detail(
    w: &abridge_worker::Worker,
    batch: abridge_core::BatchId,
) -> (i32, Option<String>, Option<String>) {
    let item = w
        .store
        .items_of(batch, None, 0, 10)
        .await
        .unwrap()
        .remove(0);
    (item.attempts, item.error_kind, item.error_message)
}

#[tokio::test]
async fn deferred_items_wait_without_using_up_attempts() {
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    let p = processor(move |_| {
        let n = {
            let mut n = c.lock().unwrap();
            *n += 1;
            *n
        };
        async move {
            if n <= 4 {
                Err(ItemError::deferred(
                    ErrorKind::new("circuit_open"),
                    "provider looks down",
                    Duration::from_millis(60),
                ))
            } else {
                ok("provider is back")
            }
        }
    });
    // Four deferrals with max_attempts = 2: the item must not fail for them.
    let (_env, w) = env_and_worker(p, |s| {
        s.max_attempts = 2;
        s.retry_base = Duration::from_millis(20);
    })
    .await;
    let batch = enqueue(&w, &video_lines('d', 1), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 1);
    wait_batch_finished(&w, batch, Duration::from_secs(20)).await;
    running.stop().await;
    assert_eq!(*calls.lock().unwrap(), 5);
    let (attempts, kind, _) = item_detail(&w, batch).await;
    assert_eq!((attempts, kind), (1, None), "deferrals used up attempts");
    assert_eq!(
        w.store
            .batch(batch)
            .await
            .unwrap()
            .unwrap()
            .counts
            .succeeded,
        1
    );
}

#[tokio::test]
async fn options_this_build_cannot_read_fail_the_item_without_calling_the_processor() {
    let called = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = called.clone();
    let p = processor(move |_| {
        seen.store(true, std::sync::atomic::Ordering::SeqCst);
        async { ok("x") }
    });
    let (_env, w) = env_and_worker(p, |_| {}).await;
    // Stored past the enqueue's checks (an older or newer build wrote them).
    let created = w
        .store
        .create_batch(
            abridge_store::NewBatch {
                options: serde_json::json!({"length": "epic"}),
                ..abridge_store::NewBatch::plain(&w.settings.queue, Priority::Normal)
            },
            &abridge_core::input::BatchInput::from_lines(&video_lines('o', 1)).items,
        )
        .await
        .unwrap();
    w.queue
        .enqueue(
            created.id,
            Priority::Normal,
            abridge_queue::Share::NO_TENANT,
            &created.item_ids,
        )
        .await
        .unwrap();
    let running = Running::start(w.clone(), 2);
    wait_batch_finished(&w, created.id, Duration::from_secs(20)).await;
    let report = running.stop().await;
    assert_eq!(report.failed, 1, "{report:?}");
    let item = w
        .store
        .items_of(created.id, None, 0, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(item.status, abridge_core::ItemStatus::Failed);
    assert_eq!(item.error_kind.as_deref(), Some("invalid_options"));
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
}
