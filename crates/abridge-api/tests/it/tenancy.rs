//! Tenant isolation: another tenant's batch answers exactly like one that does not exist.

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn another_tenants_batch_is_a_404_everywhere_and_never_its_data() {
    let app = App::start(&[]).await;
    let acme = app.token("acme").await;
    let globex = app.token("globex").await;
    let id = app
        .create(
            &acme,
            json!({"name": "acme secret plans", "urls": video_ids('t', 3)}),
        )
        .await;
    // A batch made with the CLI belongs to no tenant.
    let settings = app.env.settings(&[]);
    let cli_batch = abridge_control::enqueue(
        &app.store,
        &app.env.queue(&settings),
        &settings.queue,
        BatchInput::from_lines("u0000000001\n"),
        EnqueueRequest::default(),
    )
    .await
    .unwrap()
    .batch_id;

    let nobody = uuid::Uuid::now_v7();
    for (token, batch) in [
        (&globex, id.to_string()),
        (&acme, cli_batch.to_string()),
        (&acme, nobody.to_string()),
    ] {
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
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert_eq!(status, 404, "{method} {path}: {text}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error"]["code"], "not_found");
            assert_eq!(
                v["error"]["message"],
                format!("no batch {batch}"),
                "the same answer as for no batch"
            );
            assert!(!text.contains("secret plans"));
        }
    }
    let (_, list) = app.get(&globex, "/v1/batches").await;
    assert_eq!(list["batches"].as_array().unwrap().len(), 0);

    // The owner still sees it, untouched by the other tenant's cancel.
    let (status, b) = app.get(&acme, &format!("/v1/batches/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(b["status"], "pending");
    assert_eq!(b["name"], "acme secret plans");
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_token_stops_working_and_others_keep_working() {
    let app = App::start(&[]).await;
    let made = abridge_api::auth::create_token(&app.store, Some("acme"))
        .await
        .unwrap();
    let second = app.token("acme").await;
    let (status, _) = app.get(&made.token, "/v1/batches").await;
    assert_eq!(status, 200);
    // Only the hash is stored.
    let listed = app.store.list_tokens(Some("acme")).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        abridge_api::auth::revoke_token(&app.store, &made.id.to_string())
            .await
            .unwrap()
    );
    let (status, v) = app.get(&made.token, "/v1/batches").await;
    assert_eq!(status, 401, "{v}");
    let (status, _) = app.get(&second, "/v1/batches").await;
    assert_eq!(status, 200);
    assert!(
        !abridge_api::auth::revoke_token(&app.store, &made.token)
            .await
            .unwrap(),
        "already revoked"
    );
    assert!(matches!(
        abridge_api::auth::create_token(&app.store, Some("bad name!")).await,
        Err(abridge_api::auth::TokenError::BadTenant(_))
    ));
    app.stop().await;
}
