//! Retention: the pruner deletes finished batches past their retention with everything of
//! theirs, unused cache entries and old keys, sessions and fenced-write records; it never
//! touches open work or anything still within its retention; it deletes in bounded chunks;
//! one pruner runs at a time. Rows are made old with test-only SQL (their timestamps moved
//! back), since retention is counted in days.

use std::time::Duration;

use abridge_core::{BatchId, Priority, WorkerId};
use abridge_store::retention::PRUNE_TASK;
use abridge_store::tenants::TenantPolicy;
use abridge_store::{NewSession, PruneCounts, SummaryKey};
use abridge_worker::Worker;
use abridge_worker::pruner::{PruneOptions, prune_once};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// A batch of `n` items, cancelled at once (a finished batch, quickly).
async fn cancelled_batch(w: &Worker, prefix: char, n: usize) -> BatchId {
    let id = enqueue(w, &video_lines(prefix, n), Priority::Normal)
        .await
        .batch_id;
    abridge_control::cancel(&w.store, &w.queue, id)
        .await
        .unwrap();
    id
}

/// Moves a batch's finish `days` into the past.
async fn finished_days_ago(w: &Worker, batch: BatchId, days: u32) {
    sql(
        w,
        &format!(
            "UPDATE batches SET finished_at = now() - interval '{days} days' WHERE id = '{batch}'"
        ),
    )
    .await;
}

async fn items_of(w: &Worker, batch: BatchId) -> i64 {
    scalar(
        w,
        &format!("SELECT count(*) FROM items WHERE batch_id = '{batch}'"),
    )
    .await
}

/// No pruner of the worker runs by itself: the tests run passes by hand.
fn no_fleet_pruner(s: &mut abridge_core::Settings) {
    s.retention.prune_every = None;
}

#[tokio::test]
async fn finished_batches_past_retention_go_with_everything_of_theirs_and_open_work_stays() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("a summary") }), no_fleet_pruner).await;
    // An old completed batch with a summary per item, run by a real worker.
    let old = enqueue(&w, &video_lines('o', 3), Priority::Normal)
        .await
        .batch_id;
    let running = Running::start(w.clone(), 4);
    wait_batch_finished(&w, old, Duration::from_secs(20)).await;
    running.stop().await;
    finished_days_ago(&w, old, 31).await;
    let recent = cancelled_batch(&w, 'r', 2).await;
    finished_days_ago(&w, recent, 29).await;
    // Open work, however old: a running batch with an item started, and a queued one.
    let busy = enqueue(&w, &video_lines('b', 2), Priority::Normal)
        .await
        .batch_id;
    let ghost = WorkerId::new();
    let claim = w
        .queue
        .claim(ghost, Duration::from_secs(60), 1)
        .await
        .unwrap();
    let claims: Vec<_> = claim
        .items
        .iter()
        .map(|l| abridge_store::Claim::first(l.item, l.token))
        .collect();
    assert_eq!(w.store.start_items(ghost, &claims).await.unwrap().len(), 1);
    let queued = enqueue(&w, &video_lines('q', 2), Priority::Normal)
        .await
        .batch_id;
    sql(
        &w,
        "UPDATE batches SET created_at = now() - interval '90 days',
                            started_at = now() - interval '90 days'
         WHERE status IN ('pending', 'running')",
    )
    .await;
    // What hangs off the old batch: a checkpoint, a fenced-write record, a delivered
    // webhook and an idempotency key.
    w.store.ensure_tenant("acme", "secret").await.unwrap();
    sql(
        &w,
        &format!(
            "INSERT INTO item_checkpoints (item_id, stage, data, lease_token)
                 SELECT id, 'transcript', '{{}}', 1 FROM items WHERE batch_id = '{old}' LIMIT 1;
             INSERT INTO fenced_writes (item_id, worker_id, lease_token, attempted, found)
                 SELECT id, gen_random_uuid(), 1, 'succeeded', 'succeeded'
                 FROM items WHERE batch_id = '{old}' LIMIT 1;
             INSERT INTO webhook_deliveries (batch_id, url, event_id, delivered_at)
                 VALUES ('{old}', 'https://hooks.example.com/x', gen_random_uuid(), now());
             INSERT INTO idempotency_keys (tenant, key, request_hash, batch_id, response)
                 VALUES ('acme', 'k1', '\\x00', '{old}', '{{}}');"
        ),
    )
    .await;

    let report = prune_pass(&w).await;

    assert_eq!(
        report.counts,
        PruneCounts {
            batches: 1,
            items: 3,
            checkpoints: 1,
            webhook_deliveries: 1,
            idempotency_keys: 1,
            fenced_writes: 1,
            ..PruneCounts::default()
        }
    );
    assert!(w.store.batch(old).await.unwrap().is_none(), "no tombstone");
    assert_eq!(items_of(&w, old).await, 0);
    for table in [
        "item_checkpoints",
        "fenced_writes",
        "webhook_deliveries",
        "idempotency_keys",
    ] {
        assert_eq!(
            scalar(&w, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
    let recent_view = w.store.batch(recent).await.unwrap().expect("kept");
    assert_eq!(recent_view.counts.cancelled, 2);
    let queued_view = w.store.batch(queued).await.unwrap().expect("kept");
    assert_eq!(queued_view.counts.queued, 2);
    let busy_view = w.store.batch(busy).await.unwrap().expect("kept");
    assert_eq!((busy_view.counts.running, busy_view.counts.queued), (1, 1));

    // Nothing is left to do: a second pass deletes nothing.
    assert_eq!(prune_pass(&w).await.counts.total(), 0);
}

#[tokio::test]
async fn a_tenants_own_retention_overrides_the_fleets() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), no_fleet_pruner).await;
    for (name, days) in [("brief", Some(2)), ("archivist", Some(90)), ("plain", None)] {
        w.store.ensure_tenant(name, "secret").await.unwrap();
        let policy = TenantPolicy {
            retention_days: days,
            ..TenantPolicy::default()
        };
        assert!(w.store.set_tenant_policy(name, &policy).await.unwrap());
        assert_eq!(
            w.store
                .tenant(name)
                .await
                .unwrap()
                .unwrap()
                .policy
                .retention_days,
            days
        );
    }
    let mut batches = Vec::new();
    // (tenant, finished days ago, expected to go)
    for (i, (tenant, days, goes)) in [
        (Some("brief"), 3, true),
        (Some("brief"), 1, false),
        (Some("archivist"), 40, false),
        (Some("archivist"), 91, true),
        (Some("plain"), 31, true),
        (Some("plain"), 29, false),
        (None, 31, true),
        (None, 29, false),
    ]
    .into_iter()
    .enumerate()
    {
        let id = cancelled_batch(&w, char::from(b'a' + i as u8), 1).await;
        if let Some(t) = tenant {
            sql(
                &w,
                &format!("UPDATE batches SET tenant = '{t}' WHERE id = '{id}'"),
            )
            .await;
        }
        finished_days_ago(&w, id, days).await;
        batches.push((id, tenant, days, goes));
    }

    let dry = {
        let mut options = PruneOptions::from_settings(&w.settings.retention);
        options.dry_run = true;
        prune_once(
            &w.store,
            &options,
            WorkerId::new(),
            None,
            &CancellationToken::new(),
        )
        .await
        .unwrap()
        .unwrap()
    };
    let report = prune_pass(&w).await;

    assert_eq!(
        (dry.counts.batches, dry.counts.items),
        (4, 4),
        "the dry run counts the same"
    );
    assert_eq!((report.counts.batches, report.counts.items), (4, 4));
    for (id, tenant, days, goes) in batches {
        assert_eq!(
            w.store.batch(id).await.unwrap().is_none(),
            goes,
            "batch of {tenant:?} finished {days} days ago"
        );
    }
}

#[tokio::test]
async fn cache_entries_stay_while_read_and_go_once_unused_past_the_limit() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), no_fleet_pruner).await;
    sql(
        &w,
        "INSERT INTO transcripts (video_id, language, kind, segments, last_used_at)
             VALUES ('useduseduse', 'en', 'manual', '[]', now() - interval '40 days'),
                    ('unusedunuse', 'en', 'manual', '[]', now() - interval '40 days'),
                    ('recentrecen', 'en', 'manual', '[]', now() - interval '29 days');
         INSERT INTO summaries (video_id, backend, model, length, language, prompt_version, summary,
                                last_used_at)
             VALUES ('useduseduse', 'extractive', '', 'short', 'en', 'v1', 's', now() - interval '40 days'),
                    ('unusedunuse', 'extractive', '', 'short', 'en', 'v1', 's', now() - interval '40 days');",
    )
    .await;
    let key = |video: &str| SummaryKey {
        video_id: video.into(),
        backend: "extractive".into(),
        model: String::new(),
        length: "short".into(),
        language: "en".into(),
        prompt_version: "v1".into(),
        source: String::new(),
        scope: String::new(),
        prompt_title: String::new(),
    };
    let last_used = |table: &'static str| {
        let w = w.clone();
        async move {
            sqlx::query_scalar::<_, f64>(sqlx::AssertSqlSafe(format!(
                "SELECT extract(epoch FROM now() - last_used_at)::float8 FROM {table}
                 WHERE video_id = 'useduseduse'"
            )))
            .fetch_one(w.store.pool())
            .await
            .unwrap()
        }
    };
    let touched_at = |table: &'static str| {
        let w = w.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(sqlx::AssertSqlSafe(format!(
                "SELECT last_used_at FROM {table} WHERE video_id = 'useduseduse'"
            )))
            .fetch_one(w.store.pool())
            .await
            .unwrap()
        }
    };

    // Reads (cache hits) touch the entries they return.
    assert_eq!(
        w.store
            .cached_transcripts("useduseduse")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        w.store
            .cached_summary(&key("useduseduse"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        last_used("transcripts").await < 60.0,
        "the hit touched the transcript"
    );
    assert!(
        last_used("summaries").await < 60.0,
        "the hit touched the summary"
    );
    // ... at most once a day: a second hit writes nothing.
    let (t1, s1) = (
        touched_at("transcripts").await,
        touched_at("summaries").await,
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.store.cached_transcripts("useduseduse").await.unwrap();
    w.store.cached_summary(&key("useduseduse")).await.unwrap();
    assert_eq!(touched_at("transcripts").await, t1);
    assert_eq!(touched_at("summaries").await, s1);

    let report = prune_pass(&w).await;

    assert_eq!((report.counts.transcripts, report.counts.summaries), (1, 1));
    let left = |table: &str| format!("SELECT count(*) FROM {table} WHERE video_id = 'unusedunuse'");
    assert_eq!(scalar(&w, &left("transcripts")).await, 0);
    assert_eq!(scalar(&w, &left("summaries")).await, 0);
    assert_eq!(
        scalar(&w, "SELECT count(*) FROM transcripts").await,
        2,
        "used and recent stay"
    );
    assert_eq!(scalar(&w, "SELECT count(*) FROM summaries").await, 1);
}

#[tokio::test]
async fn idempotency_keys_sessions_and_fenced_records_go_by_age() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), no_fleet_pruner).await;
    let open = enqueue(&w, &video_lines('k', 1), Priority::Normal)
        .await
        .batch_id;
    w.store.ensure_tenant("acme", "secret").await.unwrap();
    for (key, hours) in [("old", 25), ("new", 23)] {
        sql(
            &w,
            &format!(
                "INSERT INTO idempotency_keys (tenant, key, request_hash, batch_id, response, created_at)
                 VALUES ('acme', '{key}', '\\x00', '{open}', '{{}}', now() - interval '{hours} hours')"
            ),
        )
        .await;
    }
    let sessions: Vec<WorkerId> = (0..3).map(|_| WorkerId::new()).collect();
    for id in &sessions {
        w.store
            .register_session(NewSession {
                id: *id,
                queue: "default",
                host: "h",
                pid: 1,
                concurrency: 1,
                version: "test",
            })
            .await
            .unwrap();
    }
    sql(
        &w,
        &format!(
            "UPDATE worker_sessions SET started_at = now() - interval '30 days';
             UPDATE worker_sessions SET stopped_at = now() - interval '8 days', stop_reason = 'shutdown'
                 WHERE id = '{}';
             UPDATE worker_sessions SET stopped_at = now() - interval '6 days', stop_reason = 'shutdown'
                 WHERE id = '{}';
             INSERT INTO fenced_writes (item_id, worker_id, lease_token, attempted, found, at)
                 VALUES (1, gen_random_uuid(), 1, 'succeeded', 'queued', now() - interval '31 days'),
                        (1, gen_random_uuid(), 1, 'succeeded', 'queued', now() - interval '29 days');",
            sessions[0], sessions[1]
        ),
    )
    .await;

    let report = prune_pass(&w).await;

    assert_eq!(
        report.counts,
        PruneCounts {
            idempotency_keys: 1,
            worker_sessions: 1,
            fenced_writes: 1,
            ..PruneCounts::default()
        }
    );
    assert_eq!(
        scalar(
            &w,
            "SELECT count(*) FROM idempotency_keys WHERE key = 'new'"
        )
        .await,
        1
    );
    let left: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM worker_sessions ORDER BY id::text")
            .fetch_all(w.store.pool())
            .await
            .unwrap();
    let mut expected = vec![sessions[1].to_string(), sessions[2].to_string()];
    expected.sort();
    assert_eq!(
        left, expected,
        "the live session and the recently stopped one stay"
    );
    assert_eq!(
        scalar(
            &w,
            "SELECT count(*) FROM fenced_writes WHERE at > now() - interval '30 days'"
        )
        .await,
        1
    );
    assert!(
        w.store.batch(open).await.unwrap().is_some(),
        "the key's batch stays"
    );
}

#[tokio::test]
async fn the_pruner_deletes_in_bounded_chunks() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |s| {
        no_fleet_pruner(s);
        s.retention.prune_max_chunk = 10;
    })
    .await;
    // Every delete statement on these tables records how many rows it took.
    sql(
        &w,
        "CREATE TABLE delete_audit (tbl text NOT NULL, n bigint NOT NULL);
         CREATE FUNCTION audit_delete() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO delete_audit SELECT TG_TABLE_NAME, count(*) FROM old_rows;
             RETURN NULL;
         END $$;
         CREATE TRIGGER audit_items AFTER DELETE ON items REFERENCING OLD TABLE AS old_rows
             FOR EACH STATEMENT EXECUTE FUNCTION audit_delete();
         CREATE TRIGGER audit_fenced AFTER DELETE ON fenced_writes REFERENCING OLD TABLE AS old_rows
             FOR EACH STATEMENT EXECUTE FUNCTION audit_delete();
         INSERT INTO fenced_writes (item_id, worker_id, lease_token, attempted, found, at)
             SELECT g, gen_random_uuid(), 1, 'succeeded', 'queued', now() - interval '31 days'
             FROM generate_series(1000000, 1000024) g;",
    )
    .await;
    let big = cancelled_batch(&w, 'c', 35).await;
    let small = cancelled_batch(&w, 'd', 4).await;
    finished_days_ago(&w, big, 40).await;
    finished_days_ago(&w, small, 40).await;

    let report = prune_pass(&w).await;

    assert_eq!((report.counts.items, report.counts.fenced_writes), (39, 25));
    assert!(report.largest_chunk <= 10, "{report:?}");
    let statements: Vec<(String, i64)> =
        sqlx::query_as("SELECT tbl, n FROM delete_audit WHERE n > 0")
            .fetch_all(w.store.pool())
            .await
            .unwrap();
    for table in ["items", "fenced_writes"] {
        let sizes: Vec<i64> = statements
            .iter()
            .filter(|(t, _)| t == table)
            .map(|(_, n)| *n)
            .collect();
        assert!(sizes.iter().all(|n| *n <= 10), "{table}: {sizes:?}");
        assert!(sizes.len() >= 3, "{table}: {sizes:?}");
    }
    assert_eq!(
        statements
            .iter()
            .filter(|(t, _)| t == "items")
            .map(|(_, n)| n)
            .sum::<i64>(),
        39
    );
    assert!(w.store.batch(big).await.unwrap().is_none());
    assert!(w.store.batch(small).await.unwrap().is_none());
}

#[tokio::test]
async fn only_one_pruner_runs_at_a_time() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), no_fleet_pruner).await;
    let old = cancelled_batch(&w, 'l', 3).await;
    finished_days_ago(&w, old, 40).await;
    let options = PruneOptions::from_settings(&w.settings.retention);
    let stop = CancellationToken::new();

    // Another pruner holds the lease: a pass does nothing.
    let other = WorkerId::new();
    assert!(
        w.store
            .try_take_lease(PRUNE_TASK, other, Duration::from_secs(30), None)
            .await
            .unwrap()
    );
    let me = WorkerId::new();
    assert!(
        prune_once(&w.store, &options, me, None, &stop)
            .await
            .unwrap()
            .is_none()
    );
    assert!(w.store.batch(old).await.unwrap().is_some());
    assert_eq!(
        w.store
            .lease_holder(PRUNE_TASK)
            .await
            .unwrap()
            .map(|(h, _)| h),
        Some(other)
    );

    // Its lease ends (released, or expired): the next pass runs.
    w.store
        .release_lease(PRUNE_TASK, other, false)
        .await
        .unwrap();
    assert!(
        w.store
            .try_take_lease(PRUNE_TASK, other, Duration::from_millis(200), None)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = prune_once(&w.store, &options, me, None, &stop)
        .await
        .unwrap()
        .expect("an expired lease is free");
    assert_eq!(report.counts.batches, 1);
    assert!(
        w.store.lease_holder(PRUNE_TASK).await.unwrap().is_none(),
        "released"
    );

    // Workers ask for a gap since the last pass ended: none runs right after one...
    let again = cancelled_batch(&w, 'm', 2).await;
    finished_days_ago(&w, again, 40).await;
    let many_at_once = || {
        futures::future::join_all((0..6).map(|_| {
            let (store, options, stop) = (w.store.clone(), options.clone(), stop.clone());
            async move {
                prune_once(
                    &store,
                    &options,
                    WorkerId::new(),
                    Some(Duration::from_secs(60)),
                    &stop,
                )
                .await
                .unwrap()
            }
        }))
    };
    let passes = many_at_once().await;
    assert!(
        passes.iter().all(Option::is_none),
        "the last pass ended less than a minute ago"
    );
    assert!(w.store.batch(again).await.unwrap().is_some());

    // ... and of six at once after the gap, exactly one runs.
    sql(
        &w,
        "UPDATE maintenance_leases SET last_run_at = now() - interval '2 minutes'",
    )
    .await;
    let passes = many_at_once().await;
    let ran: Vec<_> = passes.into_iter().flatten().collect();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(ran[0].counts.batches, 1);
    assert!(w.store.batch(again).await.unwrap().is_none());
}

#[tokio::test]
async fn workers_prune_by_themselves() {
    let (_env, w) = env_and_worker(processor(|_| async { ok("x") }), |s| {
        s.retention.prune_every = Some(Duration::from_millis(200))
    })
    .await;
    let old = cancelled_batch(&w, 'w', 2).await;
    let recent = cancelled_batch(&w, 'x', 2).await;
    finished_days_ago(&w, old, 31).await;

    let running = Running::start(w.clone(), 2);
    eventually(
        Duration::from_secs(10),
        "the fleet's pruner deleted the old batch",
        || async { w.store.batch(old).await.unwrap().is_none() },
    )
    .await;
    running.stop().await;

    assert!(w.store.batch(recent).await.unwrap().is_some());
    assert!(
        w.store.lease_holder(PRUNE_TASK).await.unwrap().is_none(),
        "a stopped worker holds no lease"
    );
}
