//! Creating batches: the same validation as `abridge enqueue`, idempotent retries, lists.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn create_normalizes_dedups_and_reports_every_reject() {
    let app = App::start(&[]).await;
    let token = app.token("acme").await;
    let response = app
        .http
        .post(app.url("/v1/batches"))
        .bearer_auth(&token)
        .json(&json!({
            "name": "demo",
            "priority": "high",
            "urls": [
                "https://www.youtube.com/watch?v=aaaaaaaaaaa&t=42s",
                "https://www.youtube.com/playlist?list=PLabc",
                "youtu.be/bbbbbbbbbbb?si=xyz",
                "https://youtu.be/aaaaaaaaaaa",
            ],
            "items": [
                {"url": "ccccccccccc", "title": "  A talk  ", "transcript": "Hello world. More."},
                {"url": "https://vimeo.com/1234"},
                {"url": "https://www.youtube.com/shorts/bbbbbbbbbbb"},
            ],
            "summarizer": {"backend": "noop", "length": "short"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let v: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/batches/{}", v["id"].as_str().unwrap())
    );
    assert_eq!(v["status"], "pending");
    assert_eq!(
        (v["accepted"].as_u64(), v["total"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(v["duplicates"], 2);
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{v}");
    assert_eq!(
        (rejected[0]["field"].as_str(), rejected[0]["index"].as_u64()),
        (Some("urls"), Some(1))
    );
    assert!(rejected[0]["reason"].as_str().unwrap().contains("playlist"));
    assert_eq!(
        (rejected[1]["field"].as_str(), rejected[1]["index"].as_u64()),
        (Some("items"), Some(1))
    );
    assert_eq!(rejected[1]["input"], "https://vimeo.com/1234");

    let (status, b) = app.get(&token, &location).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            b["name"].as_str(),
            b["priority"].as_str(),
            b["total"].as_i64()
        ),
        (Some("demo"), Some("high"), Some(3))
    );
    assert_eq!(b["counts"]["queued"], 3);
    assert_eq!(b["progress_percent"], 0.0);
    assert_eq!(
        b["summarizer"],
        json!({"backend": "noop", "length": "short"})
    );

    let (status, items) = app.get(&token, &format!("{location}/items")).await;
    assert_eq!(status, 200);
    let items = items["items"].as_array().unwrap();
    let urls: Vec<&str> = items.iter().map(|i| i["url"].as_str().unwrap()).collect();
    assert_eq!(
        urls,
        [
            "https://www.youtube.com/watch?v=aaaaaaaaaaa",
            "https://www.youtube.com/watch?v=bbbbbbbbbbb",
            "https://www.youtube.com/watch?v=ccccccccccc",
        ]
    );
    assert_eq!(items[2]["title"], "A talk");
    assert_eq!(items[2]["status"], "queued");
    app.stop().await;
}

#[tokio::test]
async fn a_request_with_no_valid_url_is_422_with_every_reason() {
    let app = App::start(&[]).await;
    let token = app.token("acme").await;
    let (status, v) = app
        .post(
            &token,
            "/v1/batches",
            json!({"urls": ["https://www.youtube.com/@veritasium", "nope", "https://example.com/watch?v=aaaaaaaaaaa"]}),
        )
        .await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["error"]["code"], "no_valid_input");
    let reasons = v["error"]["details"]["rejected"].as_array().unwrap();
    assert_eq!(reasons.len(), 3);
    assert!(
        reasons[0]["reason"].as_str().unwrap().contains("channel"),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("urls[1]"),
        "{v}"
    );
    let (_, list) = app.get(&token, "/v1/batches").await;
    assert_eq!(list["batches"].as_array().unwrap().len(), 0);
    app.stop().await;
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_returns_the_first_batch() {
    let app = App::start(&[]).await;
    let token = app.token("acme").await;
    let body = json!({"urls": video_ids('a', 5), "name": "once"});
    let send = |key: &'static str, body: serde_json::Value| {
        app.http
            .post(app.url("/v1/batches"))
            .bearer_auth(&token)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    // Two concurrent first tries and a later retry: one batch.
    let (a, b) = tokio::join!(send("key-1", body.clone()), send("key-1", body.clone()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (201, 201));
    let replays = [&a, &b]
        .iter()
        .filter(|r| r.headers().get("idempotent-replayed").is_some())
        .count();
    assert_eq!(
        replays, 1,
        "exactly one of two concurrent requests creates the batch"
    );
    let a: serde_json::Value = a.json().await.unwrap();
    let b: serde_json::Value = b.json().await.unwrap();
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["accepted"], 5);
    assert_eq!(b["accepted"], 5);
    let c = send("key-1", body.clone()).await.unwrap();
    assert_eq!(c.headers()["idempotent-replayed"], "true");
    let c: serde_json::Value = c.json().await.unwrap();
    assert_eq!(c["id"], a["id"]);

    // The same key with another body is refused, not silently replayed.
    let d = send("key-1", json!({"urls": video_ids('b', 2)}))
        .await
        .unwrap();
    assert_eq!(d.status(), 422);
    let d: serde_json::Value = d.json().await.unwrap();
    assert_eq!(d["error"]["code"], "idempotency_key_reused");

    // Another tenant's identical key is its own.
    let other = app.token("globex").await;
    let (status, e) = app
        .http
        .post(app.url("/v1/batches"))
        .bearer_auth(&other)
        .header("Idempotency-Key", "key-1")
        .json(&body)
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 201);
    let e: serde_json::Value = e.json().await.unwrap();
    assert_ne!(e["id"], a["id"]);

    let (_, list) = app.get(&token, "/v1/batches").await;
    assert_eq!(list["batches"].as_array().unwrap().len(), 1, "{list}");
    app.stop().await;
}

#[tokio::test]
async fn lists_page_with_cursors_newest_first_and_filter_by_status() {
    let mut app = App::start(&[]).await;
    let token = app.token("acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.create(
                &token,
                json!({"urls": [format!("{}{:010}", (b'a' + i) as char, i)]}),
            )
            .await,
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/batches?limit=2&cursor={c}"),
            None => "/v1/batches?limit=2".to_owned(),
        };
        let (status, page) = app.get(&token, &path).await;
        assert_eq!(status, 200, "{page}");
        let batches = page["batches"].as_array().unwrap();
        assert!(batches.len() <= 2);
        seen.extend(batches.iter().map(|b| b["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let newest_first: Vec<String> = ids.iter().rev().map(|i| i.to_string()).collect();
    assert_eq!(seen, newest_first);

    // Complete the first batch only, then filter.
    let (status, _) = app
        .post(&token, &format!("/v1/batches/{}/cancel", ids[1]), json!({}))
        .await;
    assert_eq!(status, 200);
    let (_, cancelled) = app.get(&token, "/v1/batches?status=cancelled").await;
    let cancelled: Vec<&str> = cancelled["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(cancelled, [ids[1].to_string()]);

    // Items page too.
    let id = app.create(&token, json!({"urls": video_ids('z', 7)})).await;
    app.start_worker(8);
    app.wait_finished(&token, id, std::time::Duration::from_secs(20))
        .await;
    let (_, first) = app
        .get(&token, &format!("/v1/batches/{id}/items?limit=4"))
        .await;
    let (_, second) = app
        .get(
            &token,
            &format!(
                "/v1/batches/{id}/items?limit=4&cursor={}",
                first["next_cursor"].as_str().unwrap()
            ),
        )
        .await;
    let positions: Vec<i64> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["items"].as_array().unwrap())
        .map(|i| i["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [0, 1, 2, 3, 4, 5, 6]);
    assert!(second["next_cursor"].is_null());
    assert!(
        second["items"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("z0000000004")
    );
    let (_, succeeded) = app
        .get(
            &token,
            &format!("/v1/batches/{id}/items?status=succeeded&limit=1000"),
        )
        .await;
    assert_eq!(succeeded["items"].as_array().unwrap().len(), 7);
    app.stop().await;
}
