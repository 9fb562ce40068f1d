//! Provider batch APIs: `low`-priority batches on OpenAI or Anthropic wait in a provider batch
//! (deferred as `submitted`, no worker slot held) at half the price; a batch that expires falls
//! back to the ordinary request.

use std::time::{Duration, Instant};

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;
use abridge_core::{BatchId, BatchOptions, ItemStatus, Priority};
use abridge_store::ItemView;
use tokio::sync::oneshot;

use crate::support::*;

const PRICES: &str = "gpt-4.1-mini=1000/1000,claude-haiku-4-5=1000/1000";

fn setup_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("ABRIDGE_LLM_BATCH_API", "1"),
        ("ABRIDGE_LLM_BATCH_POLL_MS", "300"),
        ("ABRIDGE_LLM_PRICES", PRICES),
    ]
}

fn on(backend: &str) -> BatchOptions {
    BatchOptions {
        backend: Some(backend.parse().unwrap()),
        ..BatchOptions::default()
    }
}

/// Enqueues `ids` at `priority` with `options`, runs a worker until the batch ends, and
/// calls `watch` with the items every 50 ms meanwhile.
async fn run(
    s: &Setup,
    ids: &[&str],
    priority: Priority,
    options: BatchOptions,
    mut watch: impl FnMut(&[ItemView]),
) -> (BatchId, Vec<ItemView>) {
    let worker = s.worker();
    let store = worker.store.clone();
    let offer = abridge_control::Offer::from(&*worker.settings);
    let done = abridge_control::enqueue(
        &worker.store,
        &worker.queue,
        &worker.settings.queue,
        BatchInput::from_lines(&(ids.join("\n") + "\n")),
        EnqueueRequest {
            name: None,
            priority,
            options,
            offer,
        },
    )
    .await
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(abridge_worker::run(worker, 4, async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let items = store.items_of(done.batch_id, None, 0, 100).await.unwrap();
        watch(&items);
        if store
            .batch_status(done.batch_id)
            .await
            .unwrap()
            .is_some_and(|b| b.is_finished())
        {
            break;
        }
        assert!(Instant::now() < deadline, "{items:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    let items = store.items_of(done.batch_id, None, 0, 100).await.unwrap();
    (done.batch_id, items)
}

#[tokio::test]
async fn low_priority_items_wait_in_a_provider_batch_at_half_the_price() {
    let ids = ["vid_BatchA1", "vid_BatchA2", "vid_BatchA3"];
    let s = Setup::new(
        ids.iter().map(|id| normal_video(id, "Ownership")).collect(),
        &setup_vars(),
    )
    .await;
    // Each provider batch answers two polls "in progress" before it ends.
    s.openai.batch_polls(2);
    let mut seen_waiting = false;
    let (batch, items) = run(&s, &ids, Priority::Low, on("openai"), |items| {
        for i in items {
            if i.status == ItemStatus::Queued && i.error_kind.as_deref() == Some("submitted") {
                // Waiting without a worker slot or an attempt, the provider's batch in view.
                assert_eq!(i.attempts, 0, "{i:?}");
                let meta = i.result_meta.as_ref().unwrap();
                assert_eq!(meta["stage"], "submitted", "{meta}");
                assert!(
                    meta["provider_batch_id"]
                        .as_str()
                        .unwrap()
                        .starts_with("batch_")
                );
                seen_waiting = true;
            }
        }
    })
    .await;
    assert!(
        seen_waiting,
        "no item was seen waiting on its provider batch"
    );
    assert!(
        items.iter().all(|i| i.status == ItemStatus::Succeeded),
        "{items:?}"
    );
    assert_eq!(s.openai.requests(), 0, "no ordinary request was made");
    assert_eq!(s.openai.batch_counts().1, 3, "one provider batch per item");
    assert_eq!(
        s.openai.files_kept(),
        0,
        "no request or answer left with the provider"
    );
    let mut total = 0.0;
    for item in &items {
        assert_shape(
            item.summary.as_deref().unwrap(),
            &item.video_id,
            "Ownership",
        );
        let meta = item.result_meta.as_ref().unwrap();
        assert!(
            meta["provider_batch_id"]
                .as_str()
                .unwrap()
                .starts_with("batch_"),
            "{meta}"
        );
        let tokens =
            meta["input_tokens"].as_f64().unwrap() + meta["output_tokens"].as_f64().unwrap();
        let cost = meta["cost_usd"].as_f64().unwrap();
        assert!(
            (cost - tokens * 1000.0 / 1e6 * 0.5).abs() < 1e-9,
            "half price: {meta}"
        );
        total += cost;
    }
    let spent = s.env.store().batch_spend(&[batch]).await.unwrap()[0].1;
    assert!(
        (spent.cost_usd - total).abs() < 1e-6,
        "{spent:?} vs {total}"
    );

    // A normal-priority batch is not worth a day's wait: it is asked at once.
    let (_, items) = run(&s, &["vid_BatchA1"], Priority::Normal, on("openai"), |_| {}).await;
    assert!(items[0].result_meta.as_ref().unwrap()["provider_batch_id"].is_null());
    assert_eq!(s.openai.requests(), 0, "the summary cache answered it");

    // Anthropic's Message Batches, the same way.
    let (_, items) = run(&s, &["vid_BatchA2"], Priority::Low, on("anthropic"), |_| {}).await;
    let meta = items[0].result_meta.as_ref().unwrap();
    assert!(
        meta["provider_batch_id"]
            .as_str()
            .unwrap()
            .starts_with("msgbatch_"),
        "{meta}"
    );
    assert_eq!(s.anthropic.requests(), 0);
    // The structured answer came through the batch too (Anthropic's forced tool call).
    assert_eq!(meta["answer"], "json", "{meta}");
}

#[tokio::test]
async fn an_expired_provider_batch_falls_back_to_the_ordinary_request() {
    let ids = ["vid_BatchX1"];
    let s = Setup::new(
        ids.iter().map(|id| normal_video(id, "Ownership")).collect(),
        &setup_vars(),
    )
    .await;
    s.anthropic.expire_batches();
    let (_, items) = run(&s, &ids, Priority::Low, on("anthropic"), |_| {}).await;
    assert_eq!(items[0].status, ItemStatus::Succeeded, "{items:?}");
    let meta = items[0].result_meta.as_ref().unwrap();
    assert!(meta["provider_batch_id"].is_null(), "{meta}");
    assert_eq!(meta["llm_requests"], 1);
    assert_eq!(s.anthropic.requests(), 1, "asked the ordinary way");
    assert_eq!(s.anthropic.batch_counts().1, 1, "after one provider batch");
    let tokens = meta["input_tokens"].as_f64().unwrap() + meta["output_tokens"].as_f64().unwrap();
    assert!(
        (meta["cost_usd"].as_f64().unwrap() - tokens * 1000.0 / 1e6).abs() < 1e-9,
        "full price: {meta}"
    );
}

#[tokio::test]
async fn a_submission_counts_against_the_batch_budget_at_once_and_is_collected_whatever_comes_after()
 {
    let ids: Vec<String> = (0..8).map(|i| format!("vid_BatchB{i}")).collect();
    let s = Setup::new(
        ids.iter().map(|id| normal_video(id, "Ownership")).collect(),
        &setup_vars(),
    )
    .await;
    s.openai.batch_polls(3);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let options = BatchOptions {
        max_cost_usd: Some(0.5),
        ..on("openai")
    };
    let (batch, items) = run(&s, &refs, Priority::Low, options, |_| {}).await;
    let batch = s.env.store().batch(batch).await.unwrap().unwrap();
    let (_, provider_batches) = s.openai.batch_counts();
    let succeeded = items
        .iter()
        .filter(|i| i.status == ItemStatus::Succeeded)
        .count();
    // Only the submissions made before the estimates passed the limit went out (at most the
    // worker's concurrency), and every one of them was collected: none was cancelled while
    // its provider batch ran on.
    assert!((1..=4).contains(&provider_batches), "{provider_batches}");
    assert_eq!(succeeded, provider_batches, "{items:?}");
    for item in items.iter().filter(|i| i.status != ItemStatus::Succeeded) {
        assert_eq!(item.status, ItemStatus::Cancelled, "{item:?}");
        assert_eq!(item.error_kind.as_deref(), Some("budget_reached"));
    }
    // The estimates were corrected to what the answers used: the spend is their sum.
    let total: f64 = items
        .iter()
        .filter_map(|i| i.result_meta.as_ref()?["cost_usd"].as_f64())
        .sum();
    assert!(
        (batch.spend.cost_usd - total).abs() < 1e-6,
        "{:?} vs {total}",
        batch.spend
    );
    assert_eq!(batch.spend.requests, provider_batches as i64);
    assert_eq!(s.openai.requests(), 0);
}
