//! Cancelling a batch mid-way and retrying failed items.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abridge_core::{ErrorKind, ItemError};
use abridge_worker::JobOutput;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn cancel_mid_batch_stops_it_and_ends_its_event_stream() {
    let mut app = App::start(&[]).await;
    let token = app.token("acme").await;
    let items: Vec<_> = video_ids('c', 20)
        .into_iter()
        .map(|id| json!({"url": id, "transcript": "abridge:sleep 400\nSlow."}))
        .collect();
    let id = app.create(&token, json!({"items": items})).await;
    let (_, reader) = EventReader::open(&app.server.base, &token, id, None).await;
    let mut reader = reader.unwrap();
    app.start_worker(2);
    eventually(Duration::from_secs(20), "an item succeeded", || async {
        let (_, b) = app.get(&token, &format!("/v1/batches/{id}")).await;
        b["counts"]["succeeded"].as_i64().unwrap() >= 1
    })
    .await;

    let (status, b) = app
        .post(&token, &format!("/v1/batches/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(b["status"], "cancelled");
    let c = &b["counts"];
    assert!(c["cancelled"].as_i64().unwrap() >= 10, "{b}");
    assert_eq!(c["queued"], 0);
    assert_eq!(c["running"], 0);
    assert_eq!(
        c["succeeded"].as_i64().unwrap()
            + c["failed"].as_i64().unwrap()
            + c["cancelled"].as_i64().unwrap(),
        20
    );

    let events = reader.collect(Duration::from_secs(10)).await;
    assert_eq!(events.last().unwrap().0, "cancelled", "{events:?}");

    // Nothing runs afterwards, and a second cancel says why it did nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (_, after) = app.get(&token, &format!("/v1/batches/{id}")).await;
    assert_eq!(after["counts"], b["counts"]);
    let (status, v) = app
        .post(&token, &format!("/v1/batches/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 409);
    assert_eq!(v["error"]["code"], "batch_finished");
    let (status, v) = app
        .post(&token, &format!("/v1/batches/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 409, "a cancelled batch cannot be retried: {v}");
    assert_eq!(v["error"]["code"], "batch_cancelled");
    app.stop().await;
}

#[tokio::test]
async fn retry_requeues_failed_items_and_the_batch_completes_again() {
    let mut app = App::start(&[]).await;
    // Items whose transcript says "flaky" fail permanently the first time they are seen.
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let processor = Arc::new(FnProcessor(move |job: abridge_worker::Job| {
        let seen = seen.clone();
        async move {
            let flaky = job.transcript.as_deref() == Some("flaky");
            if flaky && seen.lock().unwrap().insert(job.video_id.clone()) {
                return Err(ItemError::permanent(
                    ErrorKind::new("unavailable"),
                    "video is private",
                ));
            }
            Ok(JobOutput {
                summary: format!("Summary of {}.", job.video_id),
                ..JobOutput::default()
            })
        }
    }));
    app.start_worker_with(processor, 4);
    let token = app.token("acme").await;
    let items: Vec<_> = video_ids('f', 6)
        .into_iter()
        .enumerate()
        .map(|(i, id)| json!({"url": id, "transcript": if i % 2 == 0 { "flaky" } else { "fine" }}))
        .collect();
    let id = app.create(&token, json!({"items": items})).await;
    let b = app.wait_finished(&token, id, Duration::from_secs(20)).await;
    assert_eq!(b["status"], "completed");
    assert_eq!(
        (
            b["counts"]["succeeded"].as_i64(),
            b["counts"]["failed"].as_i64()
        ),
        (Some(3), Some(3))
    );
    let (_, failed) = app
        .get(&token, &format!("/v1/batches/{id}/items?status=failed"))
        .await;
    let failed = failed["items"].as_array().unwrap();
    assert_eq!(failed.len(), 3);
    assert_eq!(failed[0]["error_kind"], "unavailable");
    // A tenant reads the stable message of the error's kind, not the processor's text.
    assert_eq!(failed[0]["error_message"], "The item failed.");
    assert_eq!(failed[0]["attempts"], 1);

    let (status, r) = app
        .post(&token, &format!("/v1/batches/{id}/retry"), json!({}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["requeued"], 3);
    assert!(
        matches!(r["batch"]["status"].as_str(), Some("running" | "completed")),
        "{r}"
    );
    let b = app.wait_finished(&token, id, Duration::from_secs(20)).await;
    assert_eq!(b["status"], "completed");
    assert_eq!(
        (
            b["counts"]["succeeded"].as_i64(),
            b["counts"]["failed"].as_i64()
        ),
        (Some(6), Some(0))
    );
    let (_, items) = app.get(&token, &format!("/v1/batches/{id}/items")).await;
    for item in items["items"].as_array().unwrap() {
        assert_eq!(item["status"], "succeeded", "{item}");
        assert!(
            item["error_kind"].is_null(),
            "a success clears the error: {item}"
        );
    }
    // Nothing left to retry.
    let (status, r) = app
        .post(&token, &format!("/v1/batches/{id}/retry"), json!({}))
        .await;
    assert_eq!((status, r["requeued"].as_i64()), (200, Some(0)));
    app.stop().await;
}
