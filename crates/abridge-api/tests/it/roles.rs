//! Tenants and the operator: what a tenant token may see and ask for, and what only the
//! operator's token reaches (the fleet's figures, workers, every tenant's batches).

use std::time::Duration;

use abridge_core::Backend;
use abridge_store::tenants::TenantPolicy;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn the_noop_drill_backend_is_refused_unless_the_operator_turned_drills_on() {
    let app = App::start(&[
        ("ABRIDGE_DRILLS", "0"),
        ("ABRIDGE_SUMMARIZER", "extractive"),
    ])
    .await;
    let token = app.token("acme").await;
    let (status, body) = app
        .post(
            &token,
            "/v1/batches",
            json!({"urls": video_ids('d', 2), "summarizer": {"backend": "noop"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("summarizer.backend"), "{message}");
    assert!(message.contains("ABRIDGE_DRILLS=1"), "{message}");
    // Nothing of the refused batch was stored.
    let (_, page) = app.get(&token, "/v1/batches").await;
    assert_eq!(page["batches"].as_array().unwrap().len(), 0, "{page}");
    // An unknown backend is refused at enqueue too, not left for a worker to fail.
    let (status, body) = app
        .post(
            &token,
            "/v1/batches",
            json!({"urls": video_ids('d', 1), "summarizer": {"backend": "gpt"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown backend")
    );
}

#[tokio::test]
async fn a_tenant_uses_only_the_backends_and_models_the_operator_allows() {
    let app = App::start(&[]).await;
    let token = app.token("acme").await;
    let create = |summarizer: serde_json::Value| json!({"urls": video_ids('p', 1), "summarizer": summarizer});
    // Default policy: the fleet's backend (noop in tests), no model of its own choosing.
    let (status, body) = app
        .post(&token, "/v1/batches", create(json!({"backend": "openai"})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "option_not_allowed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"openai\" is not allowed for this tenant; allowed: noop"),
        "{body}"
    );
    let (status, body) = app
        .post(&token, "/v1/batches", create(json!({"model": "gpt-5-pro"})))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("summarizer.model")
    );
    let (status, _) = app.post(&token, "/v1/batches", create(json!({}))).await;
    assert_eq!(status, 201);

    // The operator opens openai with one model.
    let policy = TenantPolicy {
        backends: Some(vec![Backend::Noop, Backend::Openai]),
        models: Some(vec!["gpt-4.1-mini".into()]),
        weight: 1,
        ..TenantPolicy::default()
    };
    assert!(app.store.set_tenant_policy("acme", &policy).await.unwrap());
    let (status, body) = app
        .post(
            &token,
            "/v1/batches",
            create(json!({"backend": "openai", "model": "gpt-4.1-mini"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post(
            &token,
            "/v1/batches",
            create(json!({"backend": "anthropic"})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed: noop, openai"),
        "{body}"
    );
}

#[tokio::test]
async fn a_tenant_sees_its_own_figures_and_the_operator_sees_the_fleet() {
    let mut app = App::start(&[]).await;
    app.start_worker(2);
    let acme = app.token("acme").await;
    let globex = app.token("globex").await;
    let operator = app.operator_token().await;
    let a = app.create(&acme, json!({"urls": video_ids('a', 3)})).await;
    let g = app
        .create(&globex, json!({"urls": video_ids('g', 5)}))
        .await;
    app.wait_finished(&acme, a, Duration::from_secs(20)).await;
    app.wait_finished(&globex, g, Duration::from_secs(20)).await;

    let (status, stats) = app.get(&acme, "/v1/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["scope"], "tenant");
    assert_eq!(stats["tenant"], "acme");
    assert_eq!(stats["items"]["succeeded"], 3, "{stats}");
    assert!(
        stats.get("workers").is_none(),
        "no workers for a tenant: {stats}"
    );
    assert!(
        stats.get("depth").is_none(),
        "no fleet depth for a tenant: {stats}"
    );
    assert!(stats["throughput_per_minute"].as_f64().unwrap() > 0.0);
    let text = stats.to_string();
    assert!(!text.contains("globex") && !text.contains(&std::process::id().to_string()));

    let (_, history) = app.get(&acme, "/v1/history?minutes=5").await;
    let minutes = history["minutes"].as_array().unwrap();
    let finished: i64 = minutes
        .iter()
        .map(|m| m["succeeded"].as_i64().unwrap())
        .sum();
    assert_eq!(finished, 3, "only acme's own throughput: {history}");
    assert!(minutes.iter().all(|m| m["ready"].is_null()), "{history}");

    let (status, fleet) = app.get(&operator, "/v1/stats").await;
    assert_eq!(status, 200, "{fleet}");
    assert_eq!(fleet["scope"], "fleet");
    assert!(!fleet["workers"].as_array().unwrap().is_empty(), "{fleet}");
    let (_, history) = app.get(&operator, "/v1/history?minutes=5").await;
    let finished: i64 = history["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["succeeded"].as_i64().unwrap())
        .sum();
    assert_eq!(finished, 8, "{history}");

    // The operator sees every tenant's batches; a tenant its own.
    let (_, all) = app.get(&operator, "/v1/batches").await;
    assert_eq!(all["batches"].as_array().unwrap().len(), 2, "{all}");
    let (_, own) = app.get(&acme, "/v1/batches").await;
    assert_eq!(own["batches"].as_array().unwrap().len(), 1, "{own}");
    let (status, _) = app.get(&operator, &format!("/v1/batches/{g}")).await;
    assert_eq!(status, 200);
    let (status, _) = app.get(&acme, &format!("/v1/batches/{g}")).await;
    assert_eq!(status, 404);

    // The API's port serves no metrics: they are the operator's, on a listener of their own.
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn a_tenant_reads_a_stable_error_message_and_the_operator_the_full_one() {
    let mut app = App::start(&[]).await;
    let leaky = abridge_testkit::processor(|_job: abridge_worker::Job| async move {
        Err::<abridge_worker::JobOutput, _>(abridge_core::ItemError::permanent(
            abridge_core::ErrorKind::new("llm_auth_failed"),
            "401 from https://api.openai.com/v1/chat/completions: org-SECRETORG42 key sk-...9f",
        ))
    });
    app.start_worker_with(leaky, 2);
    let acme = app.token("acme").await;
    let operator = app.operator_token().await;
    let id = app.create(&acme, json!({"urls": video_ids('e', 1)})).await;
    app.wait_finished(&acme, id, Duration::from_secs(20)).await;

    let (_, items) = app.get(&acme, &format!("/v1/batches/{id}/items")).await;
    let item = &items["items"][0];
    assert_eq!(item["error_kind"], "llm_auth_failed");
    let shown = item["error_message"].as_str().unwrap();
    assert!(
        !shown.contains("SECRETORG") && !shown.contains("openai.com"),
        "{shown}"
    );
    assert!(shown.contains("refused the request"), "{shown}");
    let (_, failed) = app.get(&acme, "/v1/failed").await;
    assert!(!failed.to_string().contains("SECRETORG"), "{failed}");
    let zip = app
        .http
        .get(app.url(&format!("/v1/batches/{id}/export")))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let text = unzip_text(zip.to_vec()).await;
    assert!(
        !text.contains("SECRETORG"),
        "export keeps the operator's text out"
    );

    let (_, items) = app.get(&operator, &format!("/v1/batches/{id}/items")).await;
    assert!(
        items["items"][0]["error_message"]
            .as_str()
            .unwrap()
            .contains("SECRETORG42"),
        "the operator reads the full message"
    );
}

/// Every entry of a ZIP archive, inflated and concatenated (for "does it contain").
async fn unzip_text(bytes: Vec<u8>) -> String {
    use futures::AsyncReadExt as _;
    let zip = async_zip::base::read::mem::ZipFileReader::new(bytes)
        .await
        .unwrap();
    let mut all = String::new();
    for i in 0..zip.file().entries().len() {
        let mut reader = zip.reader_without_entry(i).await.unwrap();
        reader.read_to_string(&mut all).await.unwrap();
    }
    all
}

#[tokio::test]
async fn an_event_stream_ends_when_its_token_is_revoked_and_streams_are_capped() {
    let app = App::start(&[
        ("ABRIDGE_API_EVENTS_REFRESH_MS", "300"),
        ("ABRIDGE_API_MAX_STREAMS_PER_TENANT", "2"),
    ])
    .await;
    let acme = app.token("acme").await;
    // No worker: the batch never finishes, so only a revocation can end its stream.
    let id = app.create(&acme, json!({"urls": video_ids('r', 2)})).await;
    let (status, first) = EventReader::open(&app.server.base, &acme, id, None).await;
    assert_eq!(status, 200);
    let (_, second) = EventReader::open(&app.server.base, &acme, id, None).await;
    let (status, _) = EventReader::open(&app.server.base, &acme, id, None).await;
    assert_eq!(status, 429, "the third stream is over the cap");
    // Another tenant's streams are counted apart.
    let globex = app.token("globex").await;
    let other = app
        .create(&globex, json!({"urls": video_ids('o', 1)}))
        .await;
    let (status, _) = EventReader::open(&app.server.base, &globex, other, None).await;
    assert_eq!(status, 200);

    // Closing one frees its slot.
    drop(second);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, third) = EventReader::open(&app.server.base, &acme, id, None).await;
    assert_eq!(status, 200);

    let mut first = first.unwrap();
    assert_eq!(first.next().await.unwrap().0, "progress");
    assert!(
        abridge_api::auth::revoke_token(&app.store, &acme)
            .await
            .unwrap()
    );
    let rest = first.collect(Duration::from_secs(5)).await;
    assert!(
        rest.is_empty(),
        "nothing more after the revocation: {rest:?}"
    );
    third.unwrap().collect(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn only_the_operator_reads_and_sets_tenants_settings() {
    let app = App::start(&[]).await;
    let acme = app.token("acme").await;
    let operator = app.operator_token().await;
    for path in ["/v1/tenants", "/v1/tenants/acme"] {
        let (status, body) = app.get(&acme, path).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "operator_only");
    }
    let put = |token: String, name: &'static str, body: serde_json::Value| {
        let app = &app;
        async move {
            let r = app
                .http
                .put(app.url(&format!("/v1/tenants/{name}")))
                .bearer_auth(token)
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
    let (status, _) = put(acme.clone(), "acme", json!({"weight": 5})).await;
    assert_eq!(status, 403, "a tenant cannot raise its own limits");

    let (status, body) = put(
        operator.clone(),
        "acme",
        json!({"weight": 2, "backends": ["noop", "openai"], "max_queued": 100}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["weight"], 2);
    assert_eq!(body["settings"]["backends"], json!(["noop", "openai"]));
    let stored = app.store.tenant("acme").await.unwrap().unwrap().policy;
    assert_eq!(stored.backends, Some(vec![Backend::Noop, Backend::Openai]));
    assert_eq!(stored.max_queued, Some(100));
    // The new policy applies to acme's next create.
    let (status, body) = app
        .post(
            &acme,
            "/v1/batches",
            json!({"urls": video_ids('t', 1), "summarizer": {"backend": "openai"}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = put(operator.clone(), "acme", json!({"weight": 0})).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("weight")
    );
    let (status, _) = put(operator.clone(), "acme", json!({"wieght": 2})).await;
    assert_eq!(status, 422);
    let (status, _) = put(operator.clone(), "nobody", json!({})).await;
    assert_eq!(status, 404);
    let (status, list) = app.get(&operator, "/v1/tenants").await;
    assert_eq!(status, 200);
    assert_eq!(list["tenants"][0]["name"], "acme");
}

#[tokio::test]
async fn the_operator_caps_the_priority_a_tenant_may_ask_for() {
    let app = App::start(&[]).await;
    let acme = app.token("acme").await;
    let policy = TenantPolicy {
        max_priority: Some(abridge_core::Priority::Normal),
        ..TenantPolicy::default()
    };
    assert!(app.store.set_tenant_policy("acme", &policy).await.unwrap());
    let (status, body) = app
        .post(
            &acme,
            "/v1/batches",
            json!({"urls": video_ids('h', 1), "priority": "high"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "option_not_allowed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allowed: normal, low"),
        "{body}"
    );
    for priority in ["normal", "low"] {
        let (status, body) = app
            .post(
                &acme,
                "/v1/batches",
                json!({"urls": video_ids('n', 1), "priority": priority, "name": priority}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

#[tokio::test]
async fn only_the_operator_pauses_and_resumes_the_queue() {
    let app = App::start(&[]).await;
    let acme = app.token("acme").await;
    let operator = app.operator_token().await;
    for path in ["/v1/queue/pause", "/v1/queue/resume"] {
        let (status, body) = app.post(&acme, path, json!({})).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "operator_only");
    }
    let (status, body) = app.post(&operator, "/v1/queue/pause", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], true);
    let since = body["paused_at"].as_str().unwrap().to_owned();
    // Pausing again changes nothing; the fleet's figures say since when.
    let (_, again) = app.post(&operator, "/v1/queue/pause", json!({})).await;
    assert_eq!(again["paused_at"], since.as_str());
    let (_, stats) = app.get(&operator, "/v1/stats").await;
    assert_eq!(stats["paused_at"], since.as_str());
    // Batches are still accepted while paused.
    let (status, created) = app
        .post(&acme, "/v1/batches", json!({"urls": ["dQw4w9WgXcQ"]}))
        .await;
    assert_eq!(status, 201, "{created}");
    let (status, body) = app.post(&operator, "/v1/queue/resume", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["paused"], false);
    let (_, stats) = app.get(&operator, "/v1/stats").await;
    assert!(stats["paused_at"].is_null(), "{stats}");
}

#[tokio::test]
async fn the_form_learns_what_a_caller_may_pick_and_what_a_text_holds() {
    let app = App::start(&[]).await;
    let acme = app.token("acme").await;
    let operator = app.operator_token().await;
    // A tenant may use the fleet's backend only (until the operator says otherwise), and the
    // fleet's configured model; the operator anything offered.
    let (status, o) = app.get(&acme, "/v1/options").await;
    assert_eq!(status, 200, "{o}");
    assert_eq!(
        o["backends"],
        json!([o["default_backend"].as_str().unwrap()])
    );
    assert_eq!(o["models"], json!([]));
    let (_, o) = app.get(&operator, "/v1/options").await;
    assert!(o["backends"].as_array().unwrap().len() >= 3, "{o}");
    assert!(o["models"].is_null(), "{o}");

    // The check reads a text as `abridge enqueue` reads a file, and creates nothing.
    let (status, checked) = app
        .post(
            &acme,
            "/v1/batches/check",
            json!({"text": "dQw4w9WgXcQ\n# a comment\nhttps://www.youtube.com/@chan\n{\"url\": \"jNQXAC9IVRw\", \"title\": \"T\"}\ndQw4w9WgXcQ\nhttps://www.youtube.com/@chan/shorts\n"}),
        )
        .await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["items"][0]["line"], 1);
    assert_eq!(checked["items"][1]["line"], 4);
    assert_eq!(checked["items"][1]["title"], "T");
    assert_eq!(checked["duplicates"], 1);
    // A channel is kept for the create to read (the check reads no list); a tab that is not
    // its videos is rejected with its reason.
    assert_eq!(checked["lists"][0]["line"], 3, "{checked}");
    assert_eq!(checked["lists"][0]["list"], "channel @chan", "{checked}");
    assert_eq!(checked["rejected"][0]["line"], 6, "{checked}");
    let (_, page) = app.get(&acme, "/v1/batches").await;
    assert_eq!(page["batches"], json!([]), "nothing was created");
    let (status, err) = app
        .post(
            &acme,
            "/v1/batches/check",
            json!({"text": "title,link\nx,y\n", "format": "csv"}),
        )
        .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no `url` column"),
        "{err}"
    );
}

#[tokio::test]
async fn a_batch_shows_its_cost_and_only_the_operator_reads_a_tenants_spend() {
    let app = App::start(&[]).await;
    let token = app.token("acme").await;
    let operator = app.operator_token().await;
    for bad in [json!(0), json!(-1), json!(1e7), json!("5")] {
        let (status, body) = app
            .post(
                &token,
                "/v1/batches",
                json!({"urls": video_ids('c', 1), "summarizer": {"max_cost_usd": bad}}),
            )
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("max_cost_usd"),
            "{body}"
        );
    }
    let id = app
        .create(
            &token,
            json!({"urls": video_ids('c', 4), "summarizer": {"max_cost_usd": 2.5}}),
        )
        .await;
    // Three answers charged to the batch (a worker does this as they arrive); the last from a
    // worker without a price for the model: counted, and the priced ones' cost kept.
    for (model, cost) in [
        ("gpt-4.1-mini", Some(0.25)),
        ("gpt-4.1-mini", Some(0.5)),
        ("gpt-4.1-mini", None),
    ] {
        app.store
            .charge(&abridge_store::cost::Charge {
                batch: id,
                tenant: Some("acme"),
                provider: "openai",
                model,
                requests: 1,
                input_tokens: 1000,
                output_tokens: 100,
                cost_usd: cost,
            })
            .await
            .unwrap();
    }
    let (status, view) = app.get(&token, &format!("/v1/batches/{id}")).await;
    assert_eq!(status, 200, "{view}");
    let cost = &view["cost"];
    assert_eq!(cost["spent_usd"], 0.75, "{view}");
    assert_eq!(cost["max_cost_usd"], 2.5);
    assert_eq!(cost["requests"], 3);
    assert_eq!(cost["input_tokens"], 3000);
    assert_eq!(cost["unpriced"], true);
    // No item has finished yet: no estimate.
    assert!(cost["estimate_rest_usd"].is_null(), "{view}");
    let (_, page) = app.get(&token, "/v1/batches").await;
    assert_eq!(page["batches"][0]["cost"]["spent_usd"], 0.75, "{page}");

    let path = "/v1/tenants/acme/costs?days=7";
    let (status, body) = app.get(&token, path).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = app.get(&operator, path).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total_usd"], 0.75);
    assert_eq!(body["days"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        body["days"][0]["day"],
        chrono::Utc::now().date_naive().to_string()
    );
    assert_eq!(body["days"][0]["requests"], 3);
    for bad in ["days=0", "days=367", "days=x"] {
        let (status, body) = app
            .get(&operator, &format!("/v1/tenants/acme/costs?{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = app.get(&operator, "/v1/tenants/nobody/costs").await;
    assert_eq!(status, 404);
}
