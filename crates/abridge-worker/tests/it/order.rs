//! Claim order: strict priorities, round-robin between batches of one priority, input order
//! within a batch; claims are atomic and exclusive; keys share one hash tag.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use abridge_core::{BatchId, Priority, WorkerId};
use abridge_queue::LeaseRef;

use crate::support::*;

async fn drain(worker: &abridge_worker::Worker, n: usize) -> Vec<Vec<LeaseRef>> {
    let me = WorkerId::new();
    let mut claims = Vec::new();
    loop {
        let claim = worker
            .queue
            .claim(me, Duration::from_secs(30), n)
            .await
            .unwrap();
        if claim.items.is_empty() {
            return claims;
        }
        claims.push(claim.items);
    }
}

#[tokio::test]
async fn priorities_are_strict_batches_share_round_robin_items_keep_input_order() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let big = enqueue(&w, &video_lines('b', 10_000), Priority::Normal)
        .await
        .batch_id;
    let small = enqueue(&w, &video_lines('s', 5), Priority::Normal)
        .await
        .batch_id;
    let low = enqueue(&w, &video_lines('l', 3), Priority::Low)
        .await
        .batch_id;
    let high = enqueue(&w, &video_lines('h', 4), Priority::High)
        .await
        .batch_id;

    let claims = drain(&w, 8).await;
    let order: Vec<&LeaseRef> = claims.iter().flatten().collect();
    assert_eq!(order.len(), 10_000 + 5 + 3 + 4);

    // Strict priority: every high item, then every normal one, then every low one.
    let ranks: Vec<Priority> = order.iter().map(|l| l.priority).collect();
    assert!(
        ranks.windows(2).all(|w| w[0] <= w[1]),
        "priorities out of order"
    );
    assert!(order[..4].iter().all(|l| l.batch == high));
    assert!(order[order.len() - 3..].iter().all(|l| l.batch == low));

    // Round-robin, at least 8 items a visit (or what the claim has room for): the 5-item
    // batch, enqueued after the 10,000-item one, waits for one visit to the big one (the
    // first claim that reaches normal priority), and is done within the next claim.
    let first_normal = claims
        .iter()
        .position(|c| c.iter().any(|l| l.priority == Priority::Normal))
        .unwrap();
    assert!(
        claims[first_normal + 1].iter().any(|l| l.batch == small),
        "small batch waited behind the big one"
    );
    let small_done = claims
        .iter()
        .rposition(|c| c.iter().any(|l| l.batch == small))
        .unwrap();
    assert!(
        small_done <= first_normal + 1,
        "small batch spread over {} claims",
        small_done - first_normal + 1
    );

    // Input order within each batch.
    let mut last: HashMap<BatchId, i32> = HashMap::new();
    for l in &order {
        if let Some(prev) = last.insert(l.batch, l.position) {
            assert!(
                l.position > prev,
                "batch {} went from position {prev} to {}",
                l.batch,
                l.position
            );
        }
    }
    assert_eq!(last[&big], 9_999);
}

#[tokio::test]
async fn concurrent_claims_never_hand_out_an_item_twice() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    enqueue(&w, &video_lines('c', 3_000), Priority::Normal).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let w = w.clone();
        tasks.push(tokio::spawn(async move { drain(&w, 7).await }));
    }
    let mut seen = HashSet::new();
    let mut tokens = HashSet::new();
    for t in tasks {
        for claim in t.await.unwrap() {
            assert!(
                tokens.insert(claim[0].token),
                "a lease token was reused across claims"
            );
            assert!(claim.iter().all(|l| l.token == claim[0].token));
            for l in claim {
                assert!(seen.insert(l.item), "item {} claimed twice", l.item);
            }
        }
    }
    assert_eq!(seen.len(), 3_000);
    let stats = w.queue.stats().await.unwrap();
    assert_eq!(stats.leased, 3_000);
    assert_eq!(stats.ready, [0, 0, 0]);
}

#[tokio::test]
async fn every_key_lives_under_the_prefix_and_the_queue_hash_tag() {
    let (env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let batch = enqueue(&w, &video_lines('k', 20), Priority::Low)
        .await
        .batch_id;
    w.queue
        .claim(WorkerId::new(), Duration::from_secs(30), 3)
        .await
        .unwrap();
    abridge_control::cancel(&w.store, &w.queue, batch)
        .await
        .unwrap();
    w.queue.mark_epoch().await.unwrap();

    let mut conn = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", env.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 4, "{keys:?}");
    let tag = format!("{}:{{default}}:", env.redis_prefix);
    assert!(keys.iter().all(|k| k.starts_with(&tag)), "{keys:?}");
}

/// A writer of the pause copy that read an older state (a reconcile pass that read "running"
/// just before an operator paused) cannot undo the newer one; claims obey the copy.
#[tokio::test]
async fn an_older_pause_state_never_overwrites_a_newer_one() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    enqueue(&w, &video_lines('z', 3), Priority::Normal).await;
    let claim = |n| {
        let queue = w.queue.clone();
        async move {
            queue
                .claim(WorkerId::new(), Duration::from_secs(30), n)
                .await
                .unwrap()
                .items
                .len()
        }
    };
    // The operator pauses (generation 2); the reconcile pass writes what it read (1): refused.
    assert!(w.queue.set_paused(true, 2).await.unwrap());
    assert!(!w.queue.set_paused(false, 1).await.unwrap());
    assert_eq!(claim(1).await, 0, "still paused");
    // Through the real path: a resume moves the generation on, and claims take items again.
    let resumed = abridge_control::resume(&w.store, &w.queue, &w.settings.queue)
        .await
        .unwrap();
    assert!(!resumed.paused);
    let paused = abridge_control::pause(&w.store, &w.queue, &w.settings.queue, "test")
        .await
        .unwrap();
    assert!(paused.paused);
    assert_eq!(claim(1).await, 0);
    abridge_control::resume(&w.store, &w.queue, &w.settings.queue)
        .await
        .unwrap();
    assert_eq!(claim(3).await, 3);
}
