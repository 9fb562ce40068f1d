//! Bad input of every kind: each is answered 4xx, in the error shape, with a message that
//! names the problem; never a 500, never a crash.

use serde_json::{Value, json};

use crate::support::*;

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    /// `None`: send the good token; `Some(value)`: this Authorization header (empty: none).
    auth: Option<&'static str>,
    idempotency_key: Option<&'static str>,
    status: u16,
    code: &'static str,
    /// The message must contain this (it names the field or the limit).
    mentions: &'static str,
}

fn post_json(
    what: &'static str,
    body: Value,
    status: u16,
    code: &'static str,
    mentions: &'static str,
) -> Case {
    Case {
        what,
        method: "POST",
        path: "/v1/batches".into(),
        content_type: Some("application/json"),
        body: serde_json::to_vec(&body).unwrap(),
        auth: None,
        idempotency_key: None,
        status,
        code,
        mentions,
    }
}

fn raw(
    what: &'static str,
    body: &str,
    content_type: Option<&'static str>,
    status: u16,
    code: &'static str,
    mentions: &'static str,
) -> Case {
    Case {
        content_type,
        body: body.as_bytes().to_vec(),
        ..post_json(what, Value::Null, status, code, mentions)
    }
}

fn get(
    what: &'static str,
    path: String,
    status: u16,
    code: &'static str,
    mentions: &'static str,
) -> Case {
    Case {
        method: "GET",
        path,
        content_type: None,
        body: Vec::new(),
        ..post_json(what, Value::Null, status, code, mentions)
    }
}

#[tokio::test]
async fn every_kind_of_bad_input_is_a_4xx_with_a_message() {
    let app = App::start(&[
        ("ABRIDGE_API_MAX_ITEMS", "3"),
        ("ABRIDGE_API_MAX_BODY_BYTES", "4096"),
    ])
    .await;
    let token = app.token("acme").await;
    let revoked = app.token("acme").await;
    assert!(
        abridge_api::auth::revoke_token(&app.store, &revoked)
            .await
            .unwrap()
    );
    let id = app.create(&token, json!({"urls": ["aaaaaaaaaaa"]})).await;
    let ok = ["aaaaaaaaaaa"];

    let long_url = format!(
        "https://www.youtube.com/watch?v=aaaaaaaaaaa&x={}",
        "y".repeat(2100)
    );
    let cases = vec![
        raw(
            "malformed JSON",
            "{\"urls\": [",
            Some("application/json"),
            400,
            "malformed_json",
            "not valid JSON",
        ),
        raw(
            "empty body",
            "",
            Some("application/json"),
            400,
            "malformed_json",
            "not valid JSON",
        ),
        raw(
            "not JSON content",
            "urls=aaaaaaaaaaa",
            Some("application/x-www-form-urlencoded"),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        post_json(
            "array instead of object",
            json!(["aaaaaaaaaaa"]),
            422,
            "invalid_request",
            "request body",
        ),
        post_json(
            "urls of the wrong type",
            json!({"urls": "aaaaaaaaaaa"}),
            422,
            "invalid_request",
            "urls",
        ),
        post_json(
            "an item url of the wrong type",
            json!({"items": [{"url": "aaaaaaaaaaa"}, {"url": 3}]}),
            422,
            "invalid_request",
            "items[1].url",
        ),
        post_json(
            "unknown priority",
            json!({"urls": ok, "priority": "urgent"}),
            422,
            "invalid_request",
            "priority",
        ),
        post_json(
            "unknown field",
            json!({"urls": ok, "webhook": "https://example.com"}),
            422,
            "invalid_request",
            "webhook",
        ),
        post_json(
            "unknown item field",
            json!({"items": [{"url": "aaaaaaaaaaa", "titel": "x"}]}),
            422,
            "invalid_request",
            "titel",
        ),
        post_json(
            "unknown summary length",
            json!({"urls": ok, "summarizer": {"length": "epic"}}),
            422,
            "invalid_request",
            "summarizer.length",
        ),
        post_json(
            "bad summarizer language",
            json!({"urls": ok, "summarizer": {"language": "english please"}}),
            422,
            "invalid_request",
            "summarizer.language",
        ),
        post_json(
            "bad backend name",
            json!({"urls": ok, "summarizer": {"backend": "../x"}}),
            422,
            "invalid_request",
            "summarizer.backend",
        ),
        post_json(
            "name too long",
            json!({"urls": ok, "name": "n".repeat(201)}),
            422,
            "invalid_request",
            "name",
        ),
        post_json(
            "no inputs at all",
            json!({"name": "empty"}),
            422,
            "invalid_request",
            "urls",
        ),
        post_json(
            "empty arrays",
            json!({"urls": [], "items": []}),
            422,
            "invalid_request",
            "urls",
        ),
        post_json(
            "too many items",
            json!({"urls": video_ids('a', 4)}),
            413,
            "too_many_items",
            "ABRIDGE_API_MAX_ITEMS",
        ),
        post_json(
            "body too large",
            json!({"urls": ok, "name": "x".repeat(5000)}),
            413,
            "body_too_large",
            "4096",
        ),
        post_json(
            "an over-long URL",
            json!({"urls": [long_url]}),
            422,
            "no_valid_input",
            "longer than 2048",
        ),
        post_json(
            "webhook URL not a URL",
            json!({"urls": ok, "webhook_url": "not a url"}),
            422,
            "invalid_request",
            "webhook_url",
        ),
        post_json(
            "webhook URL with another scheme",
            json!({"urls": ok, "webhook_url": "ftp://example.com/x"}),
            422,
            "invalid_request",
            "webhook_url",
        ),
        post_json(
            "webhook URL with credentials",
            json!({"urls": ok, "webhook_url": "https://user:pw@example.com/x"}),
            422,
            "invalid_request",
            "credentials",
        ),
        post_json(
            "null byte in a URL",
            json!({"urls": ["aaaaaaaaaa\u{0}"]}),
            422,
            "no_valid_input",
            "urls[0]",
        ),
        Case {
            idempotency_key: Some("spaces are not allowed"),
            ..post_json(
                "bad Idempotency-Key",
                json!({"urls": ok}),
                400,
                "invalid_idempotency_key",
                "Idempotency-Key",
            )
        },
        Case {
            auth: Some(""),
            ..post_json(
                "no token",
                json!({"urls": ok}),
                401,
                "unauthorized",
                "bearer token",
            )
        },
        Case {
            auth: Some("Basic dXNlcjpwdw=="),
            ..post_json(
                "wrong scheme",
                json!({"urls": ok}),
                401,
                "unauthorized",
                "Bearer",
            )
        },
        Case {
            auth: Some("Bearer abr_nope"),
            ..post_json(
                "unknown token",
                json!({"urls": ok}),
                401,
                "unauthorized",
                "invalid or revoked",
            )
        },
        get(
            "bad batch id",
            "/v1/batches/not-a-uuid".into(),
            400,
            "invalid_batch_id",
            "not-a-uuid",
        ),
        get(
            "unknown batch",
            format!("/v1/batches/{}", uuid::Uuid::now_v7()),
            404,
            "not_found",
            "no batch",
        ),
        get(
            "bad limit",
            "/v1/batches?limit=0".into(),
            400,
            "invalid_query",
            "limit",
        ),
        get(
            "huge limit",
            format!("/v1/batches/{id}/items?limit=100000"),
            400,
            "invalid_query",
            "limit",
        ),
        get(
            "unknown batch status filter",
            "/v1/batches?status=done".into(),
            400,
            "invalid_query",
            "status",
        ),
        get(
            "unknown item status filter",
            format!("/v1/batches/{id}/items?status=ok"),
            400,
            "invalid_query",
            "status",
        ),
        get(
            "bad batch cursor",
            "/v1/batches?cursor=xyz".into(),
            400,
            "invalid_cursor",
            "cursor",
        ),
        get(
            "bad item cursor",
            format!("/v1/batches/{id}/items?cursor=-4"),
            400,
            "invalid_cursor",
            "cursor",
        ),
        get(
            "history minutes not a number",
            "/v1/history?minutes=lots".into(),
            400,
            "invalid_query",
            "minutes",
        ),
        get(
            "failed list limit",
            "/v1/failed?limit=-1".into(),
            400,
            "invalid_query",
            "limit",
        ),
        Case {
            method: "POST",
            ..get(
                "retry of an item that is not an id",
                format!("/v1/batches/{id}/retry?item=first"),
                400,
                "invalid_query",
                "item",
            )
        },
        get(
            "empty limit",
            "/v1/batches?limit=".into(),
            400,
            "invalid_query",
            "limit",
        ),
        get(
            "limit with a plus sign",
            "/v1/failed?limit=%2B5".into(),
            400,
            "invalid_query",
            "limit",
        ),
        get(
            "empty history minutes",
            "/v1/history?minutes=".into(),
            400,
            "invalid_query",
            "minutes",
        ),
        get(
            "history minutes over a day",
            "/v1/history?minutes=1441".into(),
            400,
            "invalid_query",
            "minutes",
        ),
        get(
            "empty cursor",
            "/v1/batches?cursor=".into(),
            400,
            "invalid_cursor",
            "cursor",
        ),
        get(
            "a status filter in capitals",
            "/v1/batches?status=RUNNING".into(),
            400,
            "invalid_query",
            "status",
        ),
        get(
            "a batch id that is a number, on the event stream",
            "/v1/batches/0/events".into(),
            400,
            "invalid_batch_id",
            "\"0\"",
        ),
        get(
            "a batch id without hyphens, on the export",
            format!("/v1/batches/{}/export", id.0.simple()),
            400,
            "invalid_batch_id",
            "not a batch id",
        ),
        Case {
            method: "POST",
            ..get(
                "cancel of a batch id that is not one",
                "/v1/batches/x/cancel".into(),
                400,
                "invalid_batch_id",
                "not a batch id",
            )
        },
        Case {
            method: "POST",
            ..get(
                "retry of a batch id that is not one",
                "/v1/batches/x/retry".into(),
                400,
                "invalid_batch_id",
                "not a batch id",
            )
        },
        get(
            "unknown endpoint",
            "/v1/nothing".into(),
            404,
            "not_found",
            "endpoint",
        ),
        Case {
            method: "DELETE",
            ..get(
                "wrong method",
                format!("/v1/batches/{id}"),
                405,
                "method_not_allowed",
                "method",
            )
        },
    ];
    // A revoked token is refused as well.
    let (status, v) = app.get(&revoked, "/v1/batches").await;
    assert_eq!(status, 401, "revoked token: {v}");

    for case in cases {
        let mut request = app
            .http
            .request(case.method.parse().unwrap(), app.url(&case.path))
            .body(case.body.clone());
        if let Some(ct) = case.content_type {
            request = request.header("content-type", ct);
        }
        match case.auth {
            None => request = request.bearer_auth(&token),
            Some("") => {}
            Some(value) => request = request.header("authorization", value),
        }
        if let Some(key) = case.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{}: answer is not JSON: {status} {text}", case.what));
        assert_eq!(status, case.status, "{}: {v}", case.what);
        assert_eq!(v["error"]["code"], case.code, "{}: {v}", case.what);
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(case.mentions),
            "{}: message {message:?} does not mention {:?}",
            case.what,
            case.mentions
        );
    }

    // Nothing above created a batch or hurt the server.
    let (status, list) = app.get(&token, "/v1/batches").await;
    assert_eq!(status, 200);
    assert_eq!(list["batches"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_over_long_url_is_a_rejected_input_not_an_error() {
    let app = App::start(&[]).await;
    let token = app.token("acme").await;
    let long_url = format!(
        "https://www.youtube.com/watch?v=aaaaaaaaaaa&x={}",
        "y".repeat(2100)
    );
    let (status, v) = app
        .post(
            &token,
            "/v1/batches",
            json!({"urls": ["bbbbbbbbbbb", long_url]}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["accepted"], 1);
    assert!(
        v["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("longer than 2048"),
        "{v}"
    );
    assert!(v["rejected"][0]["input"].as_str().unwrap().chars().count() <= 201);
    app.stop().await;
}

/// A NUL byte (which Postgres text and jsonb refuse) in a rejected input that is echoed into
/// the stored idempotent reply: a 201 (or the 422 of a batch with nothing valid), never a 500;
/// and the replay returns the same reply.
#[tokio::test]
async fn a_nul_byte_with_an_idempotency_key_is_stored_safely() {
    let app = App::start(&[]).await;
    let token = app.token("acme").await;
    let send = |key: &'static str, body: Value| {
        let app = &app;
        let token = token.clone();
        async move {
            let r = app
                .http
                .post(app.url("/v1/batches"))
                .bearer_auth(&token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"urls": ["bad\u{0}url", "aaaaaaaaaaa"], "items": [{"url": "bbbbbbbbbbb", "title": "x\u{0}y"}]});
    let (status, first) = send("nul-1", body.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["accepted"], 2);
    assert!(!first.to_string().contains("\\u0000"), "{first}");
    let (status, again) = send("nul-1", body).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["id"], first["id"]);
    let (status, none) = send("nul-2", json!({"urls": ["x\u{0}"]})).await;
    assert_eq!(status, 422, "{none}");
    assert_eq!(none["error"]["code"], "no_valid_input");
}
