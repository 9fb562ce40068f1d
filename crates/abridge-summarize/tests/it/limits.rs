//! Fleet-wide limits in Redis, and fenced checkpoints in Postgres.

use std::time::Duration;

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;
use abridge_core::{Backend, LeaseToken, Priority, WorkerId};
use abridge_store::Outcome;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn the_token_bucket_is_shared_and_refills_on_redis_time() {
    let s = Setup::new(vec![], &[]).await;
    let a = s.worker().queue;
    let b = s.worker().queue; // another worker's connection pool, same fleet
    // 10 per second, a burst of 2.
    assert_eq!(
        a.take_budget("t", 10.0, 2.0, 1.0, None).await.unwrap(),
        None
    );
    assert_eq!(
        b.take_budget("t", 10.0, 2.0, 1.0, None).await.unwrap(),
        None
    );
    let wait = a
        .take_budget("t", 10.0, 2.0, 1.0, None)
        .await
        .unwrap()
        .expect("the burst is spent");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    assert_eq!(
        b.take_budget("t", 10.0, 2.0, 1.0, None).await.unwrap(),
        None
    );
    // Another bucket is independent.
    assert_eq!(
        a.take_budget("other", 10.0, 2.0, 1.0, None).await.unwrap(),
        None
    );
    // A cost above the capacity goes through once the bucket is full, leaving a debt.
    assert_eq!(
        a.take_budget("big", 100.0, 50.0, 120.0, None)
            .await
            .unwrap(),
        None
    );
    let wait = a
        .take_budget("big", 100.0, 50.0, 1.0, None)
        .await
        .unwrap()
        .expect("in debt");
    assert!(
        wait >= Duration::from_millis(600),
        "70 tokens of debt at 100/s: {wait:?}"
    );
}

#[tokio::test]
async fn owners_share_a_contended_budget_equally_and_one_alone_may_use_it_all() {
    let s = Setup::new(vec![], &[]).await;
    let q = s.worker().queue;
    // 2 per second, a burst of 10 (refilled in 5 s).
    let take = |owner: &'static str| {
        let q = q.clone();
        async move {
            q.take_budget("f", 2.0, 10.0, 1.0, Some(owner))
                .await
                .unwrap()
        }
    };
    // Tenant A alone: nobody else is waiting, so it may spend the whole burst.
    for _ in 0..10 {
        assert_eq!(take("a").await, None);
    }
    // Tenant B arrives to an empty bucket and waits for the next token.
    let wait = take("b").await.expect("the burst is spent");
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    // A asks first for that token, but it has used far more than an equal share while B
    // waits: it waits too, and B gets the token.
    assert!(
        take("a").await.is_some(),
        "A is held to its share while B waits"
    );
    assert_eq!(take("b").await, None, "B gets the refilled token");
    // B is served and waits no more: A alone may take the next token again.
    let wait = take("a").await.expect("nothing left yet");
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert_eq!(take("a").await, None);
}

#[tokio::test]
async fn the_circuit_breaker_opens_half_opens_and_closes() {
    let s = Setup::new(vec![], &[]).await;
    let q = s.worker().queue;
    let open_for = Duration::from_millis(300);
    let decay = Duration::from_secs(60);
    let probe = Duration::from_secs(5);
    assert_eq!(
        q.breaker_pass("p", probe).await.unwrap(),
        None,
        "closed at first"
    );
    assert!(
        !q.breaker_report("p", false, 3, open_for, decay)
            .await
            .unwrap()
    );
    // A success in between resets the count.
    q.breaker_report("p", true, 3, open_for, decay)
        .await
        .unwrap();
    assert!(
        !q.breaker_report("p", false, 3, open_for, decay)
            .await
            .unwrap()
    );
    assert!(
        !q.breaker_report("p", false, 3, open_for, decay)
            .await
            .unwrap()
    );
    assert!(
        q.breaker_report("p", false, 3, open_for, decay)
            .await
            .unwrap(),
        "third failure in a row opens it"
    );
    let wait = q.breaker_pass("p", probe).await.unwrap().expect("open");
    assert!(wait <= open_for);
    tokio::time::sleep(open_for + Duration::from_millis(20)).await;
    assert_eq!(
        q.breaker_pass("p", probe).await.unwrap(),
        None,
        "one probe goes through"
    );
    assert!(
        q.breaker_pass("p", probe).await.unwrap().is_some(),
        "others wait for the probe"
    );
    // A failed probe re-opens it at once.
    assert!(
        q.breaker_report("p", false, 3, open_for, decay)
            .await
            .unwrap()
    );
    tokio::time::sleep(open_for + Duration::from_millis(20)).await;
    assert_eq!(q.breaker_pass("p", probe).await.unwrap(), None);
    q.breaker_report("p", true, 3, open_for, decay)
        .await
        .unwrap();
    assert_eq!(
        q.breaker_pass("p", probe).await.unwrap(),
        None,
        "closed after a good probe"
    );
    assert_eq!(q.breaker_pass("p", probe).await.unwrap(), None);
}

#[tokio::test]
async fn an_open_breaker_stops_requests_to_the_backend() {
    let video = "vid_Breaker";
    let s = Setup::new(
        vec![normal_video(video, "B")],
        &[
            ("ABRIDGE_BREAKER_FAILURES", "2"),
            ("ABRIDGE_BREAKER_OPEN_MS", "1500"),
            ("ABRIDGE_LLM_MAX_RETRIES", "1"),
            ("ABRIDGE_MAX_ATTEMPTS", "2"),
        ],
    )
    .await;
    for _ in 0..2 {
        s.openai.push_failure(abridge_standins::llm::Failure::new(
            abridge_standins::llm::Provider::OpenAi,
            500,
            "down",
        ));
    }
    let (batch, items) = s
        .run_batch(
            &format!("{video}\n"),
            abridge_core::BatchOptions {
                backend: Some(Backend::Openai),
                ..Default::default()
            },
        )
        .await;
    // Attempt 1: two 500s open the breaker. While it is open the item is deferred without a
    // request and without using up an attempt (max_attempts is 2); once it half-opens, one
    // probe goes through and the item succeeds on attempt 2.
    assert_eq!(s.openai.requests(), 3);
    assert_eq!(batch.counts.succeeded, 1, "{:?}", items[0].error_message);
    assert_eq!(items[0].attempts, 2);
}

#[tokio::test]
async fn checkpoints_are_fenced_by_the_lease_token() {
    let s = Setup::new(vec![], &[]).await;
    let w = s.worker();
    let done = abridge_control::enqueue(
        &w.store,
        &w.queue,
        &w.settings.queue,
        BatchInput::from_lines("vid_Fenced1\n"),
        EnqueueRequest {
            name: None,
            priority: Priority::Normal,
            options: Default::default(),
            offer: abridge_control::Offer::from(&*w.settings),
        },
    )
    .await
    .unwrap();
    let worker = WorkerId::new();
    let claim = w
        .queue
        .claim(worker, Duration::from_secs(30), 1)
        .await
        .unwrap();
    let started = w
        .store
        .start_items(
            worker,
            &[abridge_store::Claim::first(
                claim.items[0].item,
                claim.token,
            )],
        )
        .await
        .unwrap();
    let item = started[0];
    let data = json!({"language": "en"});

    assert!(
        w.store
            .write_checkpoint(item, claim.token, "transcript", &data, worker)
            .await
            .unwrap()
    );
    assert!(
        !w.store
            .write_checkpoint(
                item,
                LeaseToken(claim.token.0 ^ 1),
                "map:x:0:0",
                &data,
                worker,
            )
            .await
            .unwrap(),
        "a stale token is refused"
    );
    let report = w
        .store
        .finish_items(
            worker,
            &[abridge_store::Finish {
                item,
                token: claim.token,
                outcome: Outcome::Succeeded {
                    summary: "s".into(),
                    title: None,
                    meta: json!({}),
                },
                started: true,
                attempt: 1,
                began: std::time::Instant::now(),
            }],
            5,
        )
        .await
        .unwrap();
    assert_eq!(report.accepted.len(), 1);
    assert!(
        !w.store
            .write_checkpoint(item, claim.token, "map:x:0:1", &data, worker)
            .await
            .unwrap(),
        "a finished item takes no checkpoint"
    );
    let stages: Vec<String> = w
        .store
        .checkpoints(item)
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(stages, ["transcript"]);
    let _ = done;
}
