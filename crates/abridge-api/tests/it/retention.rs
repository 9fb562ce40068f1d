//! Retention through the API: a pruned batch answers exactly like one that never existed, and
//! the operator sets a tenant's own retention.

use std::time::Duration;

use abridge_core::WorkerId;
use abridge_worker::pruner::{PruneOptions, prune_once};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::support::*;

#[tokio::test]
async fn a_pruned_batch_is_a_404_like_one_that_never_existed() {
    let app = App::start(&[]).await;
    let acme = app.token("acme").await;
    let body = json!({"name": "old plans", "urls": video_ids('p', 2)});
    let create = || {
        app.http
            .post(app.url("/v1/batches"))
            .bearer_auth(&acme)
            .header("Idempotency-Key", "nightly-1")
            .json(&body)
            .send()
    };
    let first: serde_json::Value = create().await.unwrap().json().await.unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post(&acme, &format!("/v1/batches/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);

    // A pass that keeps finished batches for no time at all (`abridge prune --older-than 0s`).
    let mut options = PruneOptions::from_settings(&app.env.settings(&[]).retention);
    options.ages.batches = Some(Duration::ZERO);
    let report = prune_once(
        &app.store,
        &options,
        WorkerId::new(),
        None,
        &CancellationToken::new(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        (
            report.counts.batches,
            report.counts.items,
            report.counts.idempotency_keys
        ),
        (1, 2, 1)
    );

    let never = uuid::Uuid::now_v7().to_string();
    for batch in [&id, &never] {
        for (method, path) in [
            ("GET", format!("/v1/batches/{batch}")),
            ("GET", format!("/v1/batches/{batch}/items")),
            ("GET", format!("/v1/batches/{batch}/export")),
            ("GET", format!("/v1/batches/{batch}/events")),
            ("POST", format!("/v1/batches/{batch}/cancel")),
            ("POST", format!("/v1/batches/{batch}/retry")),
        ] {
            let response = app
                .http
                .request(method.parse().unwrap(), app.url(&path))
                .bearer_auth(&acme)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 404, "{method} {path}");
            let v: serde_json::Value = response.json().await.unwrap();
            assert_eq!(v["error"]["code"], "not_found");
            assert_eq!(v["error"]["message"], format!("no batch {batch}"));
        }
    }
    let (_, list) = app.get(&acme, "/v1/batches").await;
    assert_eq!(list["batches"], json!([]));
    // Its idempotency key went with it: the same key makes a new batch.
    let again: serde_json::Value = create().await.unwrap().json().await.unwrap();
    assert_ne!(again["id"], first["id"], "{again}");
    app.stop().await;
}

#[tokio::test]
async fn the_operator_sets_a_tenants_retention() {
    let app = App::start(&[]).await;
    app.token("acme").await;
    let operator = app.operator_token().await;
    let put = |body: serde_json::Value| {
        let (app, operator) = (&app, &operator);
        async move {
            let r = app
                .http
                .put(app.url("/v1/tenants/acme"))
                .bearer_auth(operator)
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };

    let (status, body) = put(json!({"retention_days": 7})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["retention_days"], 7);
    let stored = app.store.tenant("acme").await.unwrap().unwrap().policy;
    assert_eq!(stored.retention_days, Some(7));
    let (_, shown) = app.get(&operator, "/v1/tenants/acme").await;
    assert_eq!(shown["settings"]["retention_days"], 7);

    for bad in [
        json!({"retention_days": 0}),
        json!({"retention_days": 36501}),
    ] {
        let (status, body) = put(bad).await;
        assert_eq!(status, 422, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("retention_days"),
            "{body}"
        );
    }
    // PUT replaces every setting: absent, it is the fleet's again.
    let (status, body) = put(json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(body["settings"]["retention_days"], serde_json::Value::Null);
    app.stop().await;
}
