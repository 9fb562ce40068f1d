//! Search over finished items and the bulk actions on what it finds: a tenant finds its own
//! items only, by a word of the summary, the title or the error kind, or by video id; a bulk
//! retry requeues exactly the failed items found, a bulk cancel exactly the open batches.

use std::time::Duration;

use abridge_core::{ErrorKind, ItemError};
use abridge_worker::JobOutput;
use serde_json::json;

use abridge_testkit::until;

use crate::support::*;

#[tokio::test]
async fn a_tenant_finds_its_own_items_and_acts_on_what_it_found() {
    let mut app = App::start(&[]).await;
    // "flaky" fails for good the first time, "slow" takes long; every summary names its video.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    app.start_worker_with(
        abridge_testkit::processor(move |job: abridge_worker::Job| {
            let seen = seen.clone();
            async move {
                match job.transcript.as_deref() {
                    Some("slow") => tokio::time::sleep(Duration::from_secs(30)).await,
                    Some("flaky") if seen.lock().unwrap().insert(job.video_id.clone()) => {
                        return Err(ItemError::permanent(
                            ErrorKind::new("members_only"),
                            "video is for members",
                        ));
                    }
                    _ => {}
                }
                Ok(JobOutput {
                    summary: format!("**TL;DR:** walrus facts about {}.", job.video_id),
                    ..JobOutput::default()
                })
            }
        }),
        4,
    );
    let acme = app.token("acme").await;
    let other = app.token("other").await;
    let done = app
        .create(
            &acme,
            json!({"name": "zoo", "items": [
                {"url": "s0000000001", "title": "Penguins at dawn", "transcript": "fine"},
                {"url": "s0000000002", "transcript": "flaky"},
                {"url": "s0000000003", "transcript": "flaky"},
            ]}),
        )
        .await;
    let theirs = app
        .create(
            &other,
            json!({"items": [{"url": "s0000000009", "transcript": "fine"}]}),
        )
        .await;
    app.wait_finished(&acme, done, Duration::from_secs(20))
        .await;
    app.wait_finished(&other, theirs, Duration::from_secs(20))
        .await;
    // A batch still running, with one item finished that matches.
    let open = app
        .create(
            &acme,
            json!({"name": "open", "items": [
                {"url": "s0000000004", "transcript": "fine"},
                {"url": "s0000000005", "transcript": "slow"},
            ]}),
        )
        .await;
    let search = |token: String, q: &'static str| {
        let app = &app;
        async move { app.get(&token, &format!("/v1/items?q={q}")).await }
    };
    until(
        Duration::from_secs(20),
        "the open batch's quick item",
        async || {
            search(acme.clone(), "s0000000004").await.1["items"]
                .as_array()
                .map(Vec::len)
        },
        |n| *n == Some(1),
    )
    .await;

    // A word of the summary: acme's four finished items, never the other tenant's.
    let (status, found) = search(acme.clone(), "walrus").await;
    assert_eq!(status, 200, "{found}");
    let ids: Vec<&str> = found["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["video_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["s0000000004", "s0000000001"],
        "newest first, succeeded: {found}"
    );
    assert_eq!(found["items"][1]["batch_name"], "zoo");
    let (_, theirs_found) = search(other.clone(), "walrus").await;
    assert_eq!(theirs_found["items"].as_array().unwrap().len(), 1);
    assert_eq!(theirs_found["items"][0]["video_id"], "s0000000009");
    // A word of the title, an error kind, a video id.
    let (_, by_title) = search(acme.clone(), "penguins").await;
    assert_eq!(by_title["items"][0]["video_id"], "s0000000001");
    let (_, by_error) = search(acme.clone(), "members_only").await;
    assert_eq!(by_error["items"].as_array().unwrap().len(), 2, "{by_error}");
    assert_eq!(by_error["failed"], 2);
    assert_eq!(by_error["open_batches"], 0);

    // Bulk retry takes exactly the failed items found; they succeed the second time.
    let (status, r) = app
        .post(&acme, "/v1/items/retry?q=members_only", json!({}))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["done"], 2, "{r}");
    // (Each item is requeued on its own, so the batch may complete in between: wait for all.)
    until(
        Duration::from_secs(20),
        "both retried items to succeed",
        async || app.get(&acme, &format!("/v1/batches/{done}")).await.1,
        |zoo| zoo["counts"]["succeeded"] == 3 && zoo["status"] == "completed",
    )
    .await;

    // Bulk cancel takes the open batch holding a found item, and only it.
    let (_, by_id) = search(acme.clone(), "s0000000004").await;
    assert_eq!(by_id["open_batches"], 1, "{by_id}");
    let (_, nothing) = app
        .post(&other, "/v1/batches/cancel?q=s0000000004", json!({}))
        .await;
    assert_eq!(
        nothing["done"], 0,
        "another tenant's batch is not found: {nothing}"
    );
    let (status, c) = app
        .post(&acme, "/v1/batches/cancel?q=s0000000004", json!({}))
        .await;
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["done"], 1, "{c}");
    let v = app
        .wait_finished(&acme, open, Duration::from_secs(20))
        .await;
    assert_eq!(v["status"], "cancelled");
    let (_, theirs_now) = app.get(&other, &format!("/v1/batches/{theirs}")).await;
    assert_eq!(theirs_now["status"], "completed");

    // A video id may start with `-`, which a web search reads as "without": it is found as
    // itself. A bulk action on a search of only words to leave out is refused.
    let dash = app
        .create(
            &acme,
            json!({"items": [{"url": "-d000000001", "transcript": "fine"}]}),
        )
        .await;
    app.wait_finished(&acme, dash, Duration::from_secs(20))
        .await;
    let found = until(
        Duration::from_secs(20),
        "the dashed id found",
        async || search(acme.clone(), "-d000000001").await.1,
        |f| f["items"].as_array().is_some_and(|i| !i.is_empty()),
    )
    .await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["items"][0]["video_id"], "-d000000001");
    let (status, refused) = app
        .post(&acme, "/v1/items/retry?q=-walrus", json!({}))
        .await;
    assert_eq!(status, 422, "{refused}");

    // A query that is not text gets a clear 400.
    let (status, bad) = app.get(&acme, "/v1/items?q=").await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]["message"].as_str().unwrap().contains("q"),
        "{bad}"
    );
}

/// The indexer's rule: it never moves its cursor past the start of a transaction still open,
/// so an item whose finish commits late (its `finished_at` is its transaction's start) is
/// indexed once it commits, not skipped.
#[tokio::test]
async fn an_item_whose_finish_commits_late_is_still_indexed() {
    let app = App::start(&[]).await;
    let acme = app.token("acme").await;
    let id = app
        .create(&acme, json!({"urls": ["l0000000001", "l0000000002"]}))
        .await;
    let pool = app.store.pool();
    // A slow writer: finishes item 1 in a transaction that stays open.
    let mut slow = pool.begin().await.unwrap();
    sqlx::query(
        "UPDATE items SET status = 'succeeded', summary = 'tardy armadillo', finished_at = now()
         WHERE batch_id = $1 AND position = 0",
    )
    .bind(id.0)
    .execute(&mut *slow)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A quick one finishes item 2 after it, and commits first.
    sqlx::query(
        "UPDATE items SET status = 'succeeded', summary = 'prompt armadillo', finished_at = now()
         WHERE batch_id = $1 AND position = 1",
    )
    .bind(id.0)
    .execute(pool)
    .await
    .unwrap();
    // The API's own indexer runs too; either way, nothing past the open transaction is taken.
    app.store.index_for_search(1_000).await.unwrap();
    let (_, found) = app.get(&acme, "/v1/items?q=armadillo").await;
    assert_eq!(
        found["items"].as_array().unwrap().len(),
        0,
        "indexed past a transaction still open: {found}"
    );
    slow.commit().await.unwrap();
    until(
        Duration::from_secs(10),
        "both items found",
        async || {
            let _ = app.store.index_for_search(1_000).await;
            app.get(&acme, "/v1/items?q=armadillo").await.1["items"]
                .as_array()
                .map(Vec::len)
        },
        |n| *n == Some(2),
    )
    .await;
}
