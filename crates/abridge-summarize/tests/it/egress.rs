//! A pool of YouTube proxies inside the worker: a blocked proxy is quarantined fleet-wide and
//! the item moves to another without using up an attempt; with every proxy blocked, items wait.

use std::time::{Duration, Instant};

use abridge_core::{BatchOptions, ItemStatus};
use abridge_standins::youtube::YoutubeStandin;
use tokio::sync::oneshot;

use crate::support::*;

#[tokio::test]
async fn a_blocked_proxy_costs_no_attempt_and_a_blocked_pool_makes_items_wait() {
    let ids: Vec<String> = (0..6).map(|i| format!("vid_Proxy{i:02}")).collect();
    let videos = || {
        ids.iter()
            .map(|id| normal_video(id, "Ownership in Rust"))
            .collect::<Vec<_>>()
    };
    // Stand-ins act as the proxies (they serve the absolute-form requests themselves); the
    // base URL does not resolve, so every request went through the pool.
    let (blocking, open) = (
        YoutubeStandin::start(videos()),
        YoutubeStandin::start(videos()),
    );
    blocking.block(true);
    let pool = format!("{},{}", blocking.url(), open.url());
    let s = Setup::new(
        vec![],
        &[
            (
                "ABRIDGE_YOUTUBE_BASE_URL",
                "http://youtube.abridge-test.invalid",
            ),
            ("ABRIDGE_YOUTUBE_PROXIES", &pool),
            ("ABRIDGE_YOUTUBE_PROXY_QUARANTINE_MS", "1500"),
        ],
    )
    .await;
    let (batch, items) = s
        .run_batch(&(ids[..5].join("\n") + "\n"), BatchOptions::default())
        .await;
    assert_eq!(batch.counts.succeeded, 5, "{items:?}");
    assert!(items.iter().all(|i| i.attempts == 1), "{items:?}");
    // At most the items that ran at once met the block; then the proxy was left alone.
    assert!((1..=4).contains(&blocking.total()), "{}", blocking.total());
    let worker = s.worker();
    let blocked_id = abridge_youtube::egress_id(&blocking.url());
    let open_id = abridge_youtube::egress_id(&open.url());
    let q = worker
        .queue
        .egress_quarantines(&[&blocked_id, &open_id])
        .await
        .unwrap();
    assert!(q[0].is_some() && q[1].is_none(), "{q:?}");

    // Every proxy blocked: the item waits (deferred, no attempt used) instead of failing...
    open.block(true);
    let id = enqueue_as(
        &worker,
        None,
        &format!("{}\n", ids[5]),
        BatchOptions::default(),
        abridge_control::Offer::from(&*worker.settings),
    )
    .await
    .unwrap();
    let store = worker.store.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(abridge_worker::run(worker, 2, async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let items = store.items_of(id, None, 0, 10).await.unwrap();
        let item = &items[0];
        if item.error_kind.as_deref() == Some("egress_blocked") {
            assert_eq!(
                (item.status, item.attempts),
                (ItemStatus::Queued, 0),
                "{item:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never deferred: {item:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...and goes through once a proxy is back (its quarantine ends, YouTube lets it pass).
    open.block(false);
    let batch = wait_finished(&store, id, Duration::from_secs(30)).await;
    let items = store.items_of(id, None, 0, 10).await.unwrap();
    assert_eq!(batch.counts.succeeded, 1, "{items:?}");
    assert_eq!(items[0].attempts, 1);
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
