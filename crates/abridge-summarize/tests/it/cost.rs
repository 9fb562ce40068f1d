//! What model requests cost: each answer charged to its batch from the price table, a batch's
//! `max_cost_usd` stopping its remaining items, a tenant's spend per day.

use abridge_core::{Backend, BatchOptions, BatchStatus, ItemStatus};

use crate::support::*;

/// A price high enough that one item costs tens of cents: a small budget runs out fast.
const PRICES: &str = "gpt-4.1-mini=1000/1000";

#[tokio::test]
async fn a_batch_stops_starting_model_items_once_its_budget_is_spent() {
    let ids: Vec<String> = (0..12).map(|i| format!("vid_Cost{i:03}")).collect();
    let videos = ids
        .iter()
        .map(|id| normal_video(id, "Ownership in Rust"))
        .collect();
    let s = Setup::new(videos, &[("ABRIDGE_LLM_PRICES", PRICES)]).await;
    let options = BatchOptions {
        backend: Some(Backend::Openai),
        max_cost_usd: Some(0.5),
        ..BatchOptions::default()
    };
    let (batch, items) = s
        .run_batch_as(Some("acme"), &(ids.join("\n") + "\n"), options)
        .await;

    // The batch completes: the items the budget stopped are cancelled, not failed.
    assert_eq!(batch.status, BatchStatus::Completed, "{:?}", batch.counts);
    let succeeded: Vec<_> = items
        .iter()
        .filter(|i| i.status == ItemStatus::Succeeded)
        .collect();
    let cancelled: Vec<_> = items
        .iter()
        .filter(|i| i.status == ItemStatus::Cancelled)
        .collect();
    assert_eq!(succeeded.len() + cancelled.len(), ids.len(), "{items:?}");
    // Four run at once (the worker's concurrency) before any answer is charged; after that,
    // the spend is over the budget and nothing more starts.
    assert!(
        (1..=4).contains(&succeeded.len()),
        "{} succeeded",
        succeeded.len()
    );
    for item in &cancelled {
        assert_eq!(
            item.error_kind.as_deref(),
            Some("budget_reached"),
            "{item:?}"
        );
        assert!(
            item.error_message
                .as_deref()
                .unwrap()
                .contains("max_cost_usd")
        );
        assert_eq!(item.attempts, 0, "a stopped item used no attempt");
    }
    // No request was made for a stopped item.
    assert_eq!(s.openai.received().len(), succeeded.len());

    // Each answer was charged at the table's price, and the batch's spend is their sum.
    let mut total = 0.0;
    for item in &succeeded {
        let meta = item.result_meta.as_ref().unwrap();
        let (input, output) = (
            meta["input_tokens"].as_f64().unwrap(),
            meta["output_tokens"].as_f64().unwrap(),
        );
        let cost = meta["cost_usd"].as_f64().unwrap();
        assert!(
            (cost - (input + output) * 1000.0 / 1e6).abs() < 1e-9,
            "{meta}"
        );
        total += cost;
    }
    assert!(total >= 0.5, "the budget was spent: {total}");
    let spend = batch.spend;
    assert!(
        (spend.cost_usd - total).abs() < 1e-6,
        "{spend:?} vs {total}"
    );
    assert_eq!(spend.requests, succeeded.len() as i64);
    assert!(!spend.unpriced);

    // The operator reads the tenant's spend for today; another tenant's is its own.
    let store = s.env.store();
    let days = store.tenant_spend(Some("acme"), 1).await.unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].day, chrono::Utc::now().date_naive());
    assert!((days[0].spend.cost_usd - total).abs() < 1e-6);
    assert!(
        store
            .tenant_spend(Some("other"), 30)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.tenant_spend(None, 30).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_model_without_a_price_is_counted_and_cannot_be_held_to_a_budget() {
    let video = "vid_CostNop";
    let s = Setup::new(vec![normal_video(video, "Ownership in Rust")], &[]).await;
    let unpriced = BatchOptions {
        backend: Some(Backend::Anthropic),
        model: Some("claude-test-1".into()),
        ..BatchOptions::default()
    };
    let (batch, items) = s.run_batch(&format!("{video}\n"), unpriced.clone()).await;
    assert_eq!(items[0].status, ItemStatus::Succeeded, "{items:?}");
    assert!(items[0].result_meta.as_ref().unwrap()["cost_usd"].is_null());
    assert!(
        batch.spend.unpriced && batch.spend.cost_usd == 0.0,
        "{:?}",
        batch.spend
    );
    assert_eq!(batch.spend.requests, 1);

    // With a budget, the item fails before any request: the limit could not be kept.
    let (_, items) = s
        .run_batch(
            &format!("{video}\n"),
            BatchOptions {
                max_cost_usd: Some(1.0),
                length: Some(abridge_core::SummaryLength::Short),
                ..unpriced
            },
        )
        .await;
    assert_eq!(items[0].status, ItemStatus::Failed);
    assert_eq!(items[0].error_kind.as_deref(), Some("unpriced_model"));
    assert_eq!(s.anthropic.received().len(), 1, "no second request");
}
