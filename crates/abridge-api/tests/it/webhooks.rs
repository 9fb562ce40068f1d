//! Webhooks: signed, retried until a 2xx, recorded; and the SSRF guard.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// A webhook receiver on 127.0.0.1 that records every request and fails the first
/// `fail_first` with a 500.
#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(HeaderMap, Bytes)>>>,
    fail_first: usize,
}

impl Receiver {
    async fn start(fail_first: usize) -> (Self, String) {
        let receiver = Receiver {
            fail_first,
            ..Receiver::default()
        };
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.requests.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut requests = r.requests.lock().unwrap();
    requests.push((headers, body));
    if requests.len() <= r.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

#[tokio::test]
async fn completion_webhook_is_signed_retried_until_2xx_and_recorded() {
    let mut app = App::start(&[]).await;
    let (receiver, hook) = Receiver::start(2).await;
    let made = abridge_api::auth::create_token(&app.store, Some("acme"))
        .await
        .unwrap();
    let secret = made.tenant.unwrap().webhook_secret.clone();
    app.start_worker(4);
    let id = app
        .create(
            &made.token,
            json!({"urls": video_ids('w', 3), "webhook_url": hook}),
        )
        .await;
    app.wait_finished(&made.token, id, Duration::from_secs(20))
        .await;
    eventually(Duration::from_secs(20), "webhook delivered", || async {
        app.store
            .webhook_delivery(id)
            .await
            .unwrap()
            .unwrap()
            .delivered_at
            .is_some()
    })
    .await;

    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "two 500s, then a 2xx, then nothing more");
    let now = chrono::Utc::now().timestamp();
    let mut event_ids = Vec::new();
    for (headers, body) in &requests {
        let signature = headers["abridge-signature"].to_str().unwrap();
        assert!(
            abridge_api::webhooks::verify_signature(
                &secret,
                signature,
                body,
                now,
                Duration::from_secs(300)
            ),
            "signature {signature} verifies with the tenant's secret"
        );
        assert!(
            !abridge_api::webhooks::verify_signature(
                "whsec_other",
                signature,
                body,
                now,
                Duration::from_secs(300)
            ),
            "and not with another"
        );
        // Independently of the helper: HMAC-SHA256 over "t.body".
        let t = signature
            .split(',')
            .next()
            .unwrap()
            .strip_prefix("t=")
            .unwrap();
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        assert!(signature.ends_with(&hex::encode(mac.finalize().into_bytes())));
        assert_eq!(headers["abridge-event"], "batch.completed");
        assert_eq!(headers["content-type"], "application/json");
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["type"], "batch.completed");
        assert_eq!(v["data"]["id"], id.to_string());
        assert_eq!(v["data"]["status"], "completed");
        assert_eq!(v["data"]["counts"]["succeeded"], 3);
        event_ids.push(v["id"].as_str().unwrap().to_owned());
    }
    event_ids.dedup();
    assert_eq!(
        event_ids.len(),
        1,
        "retries carry the same event id, for de-duplication"
    );
    let delivery = app.store.webhook_delivery(id).await.unwrap().unwrap();
    assert_eq!(delivery.attempts, 3);
    assert_eq!(delivery.last_status, Some(204));
    assert!(delivery.last_error.is_none());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.requests().len(), 3, "delivered once it succeeded");
    app.stop().await;
}

#[tokio::test]
async fn cancellation_sends_a_cancelled_webhook() {
    let app = App::start(&[]).await;
    let (receiver, hook) = Receiver::start(0).await;
    let token = app.token("acme").await;
    let id = app
        .create(
            &token,
            json!({"urls": video_ids('x', 3), "webhook_url": hook}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.requests().is_empty(),
        "no webhook before the batch finishes"
    );
    let (status, _) = app
        .post(&token, &format!("/v1/batches/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(10), "cancel webhook", || async {
        !receiver.requests().is_empty()
    })
    .await;
    let (headers, body) = &receiver.requests()[0];
    assert_eq!(headers["abridge-event"], "batch.cancelled");
    let v: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["data"]["counts"]["cancelled"], 3);
    app.stop().await;
}

#[tokio::test]
async fn webhook_urls_to_internal_addresses_are_refused_unless_allowed() {
    let env = abridge_testkit::TestEnv::new().await;
    let strict = Server::start(&env, &[]).await;
    let store = env.store();
    let token = abridge_api::auth::create_token(&store, Some("acme"))
        .await
        .unwrap()
        .token;
    let http = crate::support::http();
    let create = |base: String, hook: &'static str| {
        let http = http.clone();
        let token = token.clone();
        async move {
            let r = http
                .post(format!("{base}/v1/batches"))
                .bearer_auth(&token)
                .json(&json!({"urls": ["aaaaaaaaaaa"], "webhook_url": hook}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    for hook in [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.5/hook",
        "http://192.168.1.10/hook",
        "http://172.16.3.4/hook",
        "http://[::1]/hook",
        "http://[fd00:ec2::254]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0x7f000001/hook",
        "http://0.0.0.0/hook",
        "http://100.64.1.1/hook",
    ] {
        let (status, v) = create(strict.base.clone(), hook).await;
        assert_eq!(status, 422, "{hook}: {v}");
        assert_eq!(v["error"]["code"], "webhook_url_refused", "{hook}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ABRIDGE_WEBHOOK_ALLOW_PRIVATE"),
            "{v}"
        );
    }
    let (_, list) = {
        let r = http
            .get(format!("{}/v1/batches", strict.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        list["batches"].as_array().unwrap().len(),
        0,
        "nothing was created"
    );

    // An allow-list opens just the networks it names.
    let allowing = Server::start(&env, &[("ABRIDGE_WEBHOOK_ALLOW_CIDRS", "127.0.0.0/8")]).await;
    let (status, v) = create(allowing.base.clone(), "http://127.0.0.1:9/hook").await;
    assert_eq!(status, 201, "{v}");
    let (status, _) = create(allowing.base.clone(), "http://10.0.0.5/hook").await;
    assert_eq!(status, 422);
    strict.stop().await;
    allowing.stop().await;
}

/// A receiver whose every request hangs for `hang` before answering 500.
async fn hanging_receiver(hang: Duration) -> (Arc<Mutex<usize>>, String) {
    let seen: Arc<Mutex<usize>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let s = s.clone();
            async move {
                *s.lock().unwrap() += 1;
                tokio::time::sleep(hang).await;
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (seen, url)
}

/// One tenant's dead endpoint holds one attempt at a time, and never delays another tenant's
/// delivery by more than that one slot; a delivery that keeps failing gives up after the
/// bound, records that, and the API shows it.
#[tokio::test]
async fn a_dead_endpoint_delays_no_other_tenant_and_gives_up_after_the_bound() {
    let mut app = App::start(&[
        ("ABRIDGE_WEBHOOK_TIMEOUT_MS", "3000"),
        ("ABRIDGE_WEBHOOK_RETRY_BASE_MS", "100"),
        ("ABRIDGE_WEBHOOK_RETRY_MAX_MS", "200"),
        ("ABRIDGE_WEBHOOK_GIVE_UP_MS", "4000"),
    ])
    .await;
    app.start_worker(4);
    let (dead_hits, dead) = hanging_receiver(Duration::from_secs(30)).await;
    let (receiver, good) = Receiver::start(0).await;
    let acme = app.token("acme").await;
    let globex = app.token("globex").await;

    let mut acme_batches = Vec::new();
    for i in 0..4 {
        let prefix = char::from(b'a' + i);
        let id = app
            .create(
                &acme,
                json!({"urls": video_ids(prefix, 1), "webhook_url": dead}),
            )
            .await;
        app.wait_finished(&acme, id, Duration::from_secs(20)).await;
        acme_batches.push(id);
    }
    // Acme's first attempt is under way (and will hang until its timeout).
    eventually(Duration::from_secs(5), "acme's first attempt", || async {
        *dead_hits.lock().unwrap() >= 1
    })
    .await;
    let started = std::time::Instant::now();
    let id = app
        .create(
            &globex,
            json!({"urls": video_ids('g', 1), "webhook_url": good}),
        )
        .await;
    app.wait_finished(&globex, id, Duration::from_secs(20))
        .await;
    eventually(Duration::from_secs(10), "globex's delivery", || async {
        !receiver.requests().is_empty()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "globex's webhook waited {:?} behind acme's dead endpoint",
        started.elapsed()
    );
    assert_eq!(
        *dead_hits.lock().unwrap(),
        1,
        "one attempt of acme's at a time, not one per batch"
    );

    // Every acme delivery gives up after the bound (4 s from its first attempt).
    let (_, view) = app
        .get(&acme, &format!("/v1/batches/{}", acme_batches[0]))
        .await;
    assert!(
        matches!(
            view["webhook"]["state"].as_str(),
            Some("sending" | "retrying")
        ),
        "{view}"
    );
    eventually(
        Duration::from_secs(40),
        "acme's deliveries give up",
        || async {
            let mut all = true;
            for b in &acme_batches {
                let d = app.store.webhook_delivery(*b).await.unwrap().unwrap();
                all &= d.gave_up_at.is_some() && d.delivered_at.is_none();
            }
            all
        },
    )
    .await;
    let (_, view) = app
        .get(&acme, &format!("/v1/batches/{}", acme_batches[0]))
        .await;
    assert_eq!(view["webhook"]["state"], "gave_up", "{view}");
    assert!(view["webhook"]["gave_up_at"].is_string());
    assert!(view["webhook"]["next_attempt_at"].is_null());
    let attempts = *dead_hits.lock().unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        *dead_hits.lock().unwrap(),
        attempts,
        "no attempt after giving up"
    );
    let (_, view) = app.get(&globex, &format!("/v1/batches/{id}")).await;
    assert_eq!(view["webhook"]["state"], "delivered", "{view}");
    app.stop().await;
}
