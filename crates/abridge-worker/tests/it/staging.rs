//! Large batches: their items are staged in Redis while Postgres writes their rows, out of
//! every claim's sight until activated; and items reference an existing batch, checked once
//! per statement (migration 0006) rather than by a per-row foreign key.

use std::time::Duration;

use abridge_control::{EnqueueOnce, EnqueueRequest};
use abridge_core::input::BatchInput;
use abridge_core::{BatchId, Priority, WorkerId};
use abridge_store::{CreateOnce, NewBatch};
use abridge_worker::reconciler::{Suspects, reconcile_once};
use sqlx::Connection as _;

use crate::support::*;

const LARGE: usize = 2_500;

/// Writes a batch's rows with ids drawn beforehand, as the enqueuer does for a large batch.
async fn create_rows(w: &abridge_worker::Worker, id: BatchId, ids: &[abridge_core::ItemId]) {
    let input = BatchInput::from_lines(&video_lines('s', ids.len()));
    let created = w
        .store
        .create_batch_once(
            NewBatch {
                id,
                ..NewBatch::plain(&w.settings.queue, Priority::Normal)
            },
            &input.items,
            Some(ids),
            None,
        )
        .await
        .unwrap();
    let CreateOnce::Created(created) = created else {
        panic!("no idempotency key: the batch is created");
    };
    assert_eq!(created.item_ids, ids, "rows carry the drawn ids, in order");
}

#[tokio::test]
async fn staged_items_are_out_of_sight_until_the_batch_is_activated() {
    let (env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let me = WorkerId::new();
    let lease = Duration::from_secs(30);
    let id = BatchId::new();
    let ids = w.store.draw_item_ids(LARGE).await.unwrap();
    assert!(ids.windows(2).all(|p| p[0].0 < p[1].0), "drawn in order");

    w.queue.stage(id, &ids).await.unwrap();
    let staged = w.queue.keys().staged(id);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&staged)
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    assert!(ttl > 0, "a staged set expires if nobody activates it");
    create_rows(&w, id, &ids).await;
    assert!(
        w.queue.claim(me, lease, 10).await.unwrap().items.is_empty(),
        "staged items are not claimable"
    );

    assert_eq!(
        w.queue
            .activate(id, Priority::Normal, abridge_queue::Share::NO_TENANT)
            .await
            .unwrap(),
        LARGE
    );
    let claim = w.queue.claim(me, lease, 10).await.unwrap();
    let positions: Vec<i32> = claim.items.iter().map(|l| l.position).collect();
    assert_eq!(positions, (0..10).collect::<Vec<_>>());
    assert_eq!(claim.items[0].item, ids[0]);
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&staged)
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    assert_eq!(exists, 0, "activation moves the staged set into place");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(w.queue.keys().ready(id))
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "a ready set never expires");
    assert_eq!(w.queue.stats().await.unwrap().ready[1], LARGE as i64 - 10);
}

#[tokio::test]
async fn activation_merges_with_what_the_reconciler_queued_and_skips_a_cancelled_batch() {
    let (env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let me = WorkerId::new();
    let lease = Duration::from_secs(30);

    // The enqueuer committed, then stalled before activating: the reconciler queued the
    // items meanwhile. Activation adds nothing twice.
    let id = BatchId::new();
    let ids = w.store.draw_item_ids(LARGE).await.unwrap();
    w.queue.stage(id, &ids).await.unwrap();
    create_rows(&w, id, &ids).await;
    let mut suspects = Suspects::new();
    let first = reconcile_once(&w, &mut suspects).await.unwrap();
    let second = reconcile_once(&w, &mut suspects).await.unwrap();
    assert_eq!(first.requeued + second.requeued, LARGE as u64);
    assert_eq!(
        w.queue
            .activate(id, Priority::Normal, abridge_queue::Share::NO_TENANT)
            .await
            .unwrap(),
        LARGE
    );
    assert_eq!(w.queue.stats().await.unwrap().ready[1], LARGE as i64);
    let mut seen = std::collections::HashSet::new();
    loop {
        let claim = w.queue.claim(me, lease, 500).await.unwrap();
        if claim.items.is_empty() {
            break;
        }
        for l in claim.items {
            assert!(seen.insert(l.item), "item {} claimed twice", l.item.0);
        }
    }
    assert_eq!(seen.len(), LARGE);

    // Cancelled before activation: the staging is dropped, nothing becomes ready.
    let id = BatchId::new();
    let ids = w.store.draw_item_ids(LARGE).await.unwrap();
    w.queue.stage(id, &ids).await.unwrap();
    create_rows(&w, id, &ids).await;
    w.queue
        .cancel_batch(id, Priority::Normal, &ids)
        .await
        .unwrap();
    assert_eq!(
        w.queue
            .activate(id, Priority::Normal, abridge_queue::Share::NO_TENANT)
            .await
            .unwrap(),
        0
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(w.queue.keys().staged(id))
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    assert_eq!(exists, 0);
    assert!(w.queue.claim(me, lease, 10).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn a_lost_staging_is_made_good_by_enqueueing_and_a_failed_batch_leaves_none() {
    let (env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;

    // The staged set is gone (it expired, or Redis lost it): activation reports it.
    let id = BatchId::new();
    let ids = w.store.draw_item_ids(LARGE).await.unwrap();
    w.queue.stage(id, &ids).await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(w.queue.keys().staged(id))
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    assert_eq!(
        w.queue
            .activate(id, Priority::Normal, abridge_queue::Share::NO_TENANT)
            .await
            .unwrap(),
        0
    );

    // A large batch through the enqueuer ends fully ready, with nothing left staged.
    let done = enqueue(&w, &video_lines('l', LARGE), Priority::Normal).await;
    assert_eq!(w.queue.stats().await.unwrap().ready[1], LARGE as i64);
    let running = Running::start(w.clone(), 64);
    wait_batch_finished(&w, done.batch_id, Duration::from_secs(60)).await;
    running.stop().await;
    assert_eq!(
        w.store.counts(done.batch_id).await.unwrap().succeeded,
        LARGE as i64
    );

    // A batch that is not created (its idempotency key was used: the first batch is
    // returned instead) leaves nothing staged.
    w.store.ensure_tenant("acme", "secret").await.unwrap();
    let owner = || abridge_control::Owner {
        tenant: Some("acme"),
        policy: None,
        webhook_url: None,
        idempotency: Some(("key-1", b"same body".as_slice())),
    };
    let request = || EnqueueRequest {
        name: None,
        priority: Priority::Normal,
        options: Default::default(),
        ..Default::default()
    };
    let once = |letter| {
        abridge_control::enqueue_once(
            &w.store,
            &w.queue,
            &w.settings.queue,
            BatchInput::from_lines(&video_lines(letter, LARGE)),
            request(),
            Some(owner()),
        )
    };
    let EnqueueOnce::Created(first) = once('k').await.unwrap() else {
        panic!("the key's first use creates a batch");
    };
    let EnqueueOnce::Replayed { done, .. } = once('m').await.unwrap() else {
        panic!("the key's second use replays the first batch");
    };
    assert_eq!(done.batch_id, first.batch_id);
    assert_eq!(w.queue.stats().await.unwrap().ready[1], LARGE as i64);
    let staged: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}staged:*", w.queue.keys().prefix))
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    assert!(staged.is_empty(), "left staged: {staged:?}");
}

#[tokio::test]
async fn items_must_belong_to_an_existing_batch_and_go_with_it() {
    let (env, w) = env_and_worker(processor(|_| async { ok("x") }), |_| {}).await;
    let done = enqueue(&w, &video_lines('r', LARGE), Priority::Normal).await;
    let other = enqueue(&w, &video_lines('o', 2), Priority::Normal).await;
    let mut db = sqlx::PgConnection::connect(env.database_url.expose())
        .await
        .unwrap();

    let code = |e: sqlx::Error| {
        e.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    };
    let orphan = sqlx::query(
        "INSERT INTO items (batch_id, position, url, video_id)
         VALUES (gen_random_uuid(), 0, 'https://www.youtube.com/watch?v=aaaaaaaaaaa', 'aaaaaaaaaaa')",
    )
    .execute(&mut db)
    .await
    .unwrap_err();
    assert_eq!(code(orphan).as_deref(), Some("23503"));
    let moved = sqlx::query("UPDATE items SET batch_id = $1 WHERE batch_id = $2")
        .bind(other.batch_id.0)
        .bind(done.batch_id.0)
        .execute(&mut db)
        .await
        .unwrap_err();
    assert_eq!(code(moved).as_deref(), Some("23503"));

    sqlx::query("DELETE FROM batches WHERE id = $1")
        .bind(done.batch_id.0)
        .execute(&mut db)
        .await
        .unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE batch_id = $1")
        .bind(done.batch_id.0)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(left, 0, "deleting a batch deletes its items");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM items WHERE batch_id = $1")
        .bind(other.batch_id.0)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(kept, 2);
}
