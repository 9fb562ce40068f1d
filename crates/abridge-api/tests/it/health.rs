//! Health, readiness and the OpenAPI document.

use abridge_api::{ApiSettings, ApiState};
use abridge_core::settings::{Secret, SettingsSource};
use abridge_queue::Queue;
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn health_readiness_and_openapi() {
    let app = App::start(&[]).await;
    let r = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["postgres"].as_str(), v["redis"].as_str()),
        (Some("ok"), Some("ok"))
    );

    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/batches", "post"),
        ("/v1/batches", "get"),
        ("/v1/batches/{id}", "get"),
        ("/v1/batches/{id}/items", "get"),
        ("/v1/batches/{id}/cancel", "post"),
        ("/v1/batches/{id}/retry", "post"),
        ("/v1/batches/{id}/export", "get"),
        ("/v1/batches/{id}/events", "get"),
        ("/v1/stats", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} documented"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let create = &doc["components"]["schemas"]["CreateBatch"]["properties"];
    for field in [
        "name",
        "priority",
        "urls",
        "items",
        "summarizer",
        "webhook_url",
    ] {
        assert!(
            create.get(field).is_some(),
            "CreateBatch.{field} documented: {create}"
        );
    }
    assert!(
        doc["components"]["schemas"]["BatchStatusView"]["properties"]["eta_seconds"].is_object()
    );

    // /v1/stats, for the dashboard (the fleet's figures: an operator token).
    let token = app.operator_token().await;
    let (status, stats) = app.get(&token, "/v1/stats").await;
    assert_eq!(status, 200);
    assert!(
        stats["depth"]["normal"].is_i64() && stats["workers"].is_array(),
        "{stats}"
    );
    app.stop().await;
}

#[tokio::test]
async fn readyz_is_503_when_redis_is_unreachable() {
    let env = abridge_testkit::TestEnv::new().await;
    let settings = env.settings(&[]);
    let queue = Queue::connect(&Secret::new("redis://127.0.0.1:1/"), "t", "default", 1).unwrap();
    let api = ApiSettings::from_source(&SettingsSource::from_vars([])).unwrap();
    let state = ApiState::new(env.store(), queue, &settings, api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(axum::serve(listener, abridge_api::router(state)).into_future());
    let r = crate::support::http()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["postgres"].as_str(), v["redis"].as_str()),
        (Some("ok"), Some("unreachable"))
    );
    server.abort();
}
