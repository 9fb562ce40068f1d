//! Fault drills with real processes. Every drill ends with `assert_exactly_once`: the batch
//! completed, each item reached a terminal state exactly once, counts equal the rows.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use abridge_core::{ItemStatus, WorkerId};
use abridge_testkit::TestEnv;
use nix::sys::signal::Signal;

use crate::support::*;

/// The session id of the worker process with `pid`.
async fn session_of(fleet: &Fleet, pid: i32) -> WorkerId {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let sessions = fleet.store.live_sessions("default").await.unwrap();
        if let Some(s) = sessions.iter().find(|s| s.pid == pid) {
            return s.id;
        }
        assert!(Instant::now() < deadline, "worker {pid} never registered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigkill_one_of_three_workers_its_items_run_elsewhere_within_20s_with_default_settings() {
    // The production defaults for leases, heartbeats, sessions, reaping and reconciling.
    let defaults = [
        ("ABRIDGE_LEASE_MS", "30000"),
        ("ABRIDGE_HEARTBEAT_MS", "10000"),
        ("ABRIDGE_SESSION_TTL_MS", "10000"),
        ("ABRIDGE_REAP_MS", "1000"),
        ("ABRIDGE_RECONCILE_MS", "30000"),
        ("ABRIDGE_NOOP_DELAY_MS", "1000"),
    ];
    let mut fleet = Fleet::new(TestEnv::new().await, &defaults).await;
    let id = fleet.enqueue(&video_lines('k', 60));
    for _ in 0..3 {
        fleet.spawn_worker(4);
    }
    let victim_pid = fleet.workers[0].pid().as_raw();
    let victim = session_of(&fleet, victim_pid).await;
    let in_hand = || async {
        fleet
            .store
            .running_items("default")
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.worker == victim)
            .collect::<Vec<_>>()
    };
    wait_until(
        Duration::from_secs(20),
        "the victim to hold items",
        || async { !in_hand().await.is_empty() },
    )
    .await;
    let held: Vec<_> = in_hand().await.into_iter().map(|r| r.id).collect();

    fleet.workers[0].signal(Signal::SIGKILL);
    let killed_at = Instant::now();
    // Every item it held is running again under another worker (or already done).
    wait_until(
        Duration::from_secs(30),
        "the victim's items to run elsewhere",
        || async {
            let running = fleet.store.running_items("default").await.unwrap();
            let items = fleet.store.items_of(id, None, 0, 100).await.unwrap();
            held.iter().all(|h| {
                let item = items.iter().find(|i| i.id == *h).unwrap();
                item.status.is_terminal()
                    || running.iter().any(|r| r.id == *h && r.worker != victim)
            })
        },
    )
    .await;
    let recovered = killed_at.elapsed();
    assert!(
        recovered < Duration::from_secs(20),
        "took {recovered:?} to resume a SIGKILLed worker's items"
    );
    let reason = fleet
        .store
        .session_stop_reason(victim)
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(reason.starts_with("dead"), "{reason}");

    fleet.wait_finished(id, Duration::from_secs(60)).await;
    fleet.assert_exactly_once(id, 60).await;
}

#[tokio::test]
async fn a_worker_paused_past_its_lease_cannot_write_when_it_resumes() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[("ABRIDGE_NOOP_DELAY_MS", "1500")]).await;
    let id = fleet.enqueue(&video_lines('p', 40));
    for _ in 0..3 {
        fleet.spawn_worker(4);
    }
    let zombie = session_of(&fleet, fleet.workers[0].pid().as_raw()).await;
    wait_until(
        Duration::from_secs(20),
        "the zombie to hold items",
        || async {
            fleet
                .store
                .running_items("default")
                .await
                .unwrap()
                .iter()
                .filter(|r| r.worker == zombie)
                .count()
                >= 2
        },
    )
    .await;
    let held: Vec<_> = fleet
        .store
        .running_items("default")
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.worker == zombie)
        .map(|r| r.id)
        .collect();

    fleet.workers[0].signal(Signal::SIGSTOP);
    // Past its lease (3 s) and its session TTL (2 s): its items go to the others.
    tokio::time::sleep(Duration::from_secs(6)).await;
    fleet.workers[0].signal(Signal::SIGCONT);

    fleet.wait_finished(id, Duration::from_secs(60)).await;
    fleet.assert_exactly_once(id, 40).await;
    let fenced = fleet.store.fenced_write_counts(&held).await.unwrap();
    assert!(
        fenced.values().sum::<i64>() >= 1,
        "the zombie's refused writes were not recorded: {fenced:?}"
    );
    assert!(
        fleet.workers[0].is_running(),
        "the resumed worker should carry on with a new session"
    );
    let reason = fleet
        .store
        .session_stop_reason(zombie)
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(reason.starts_with("dead"), "{reason}");
}

#[tokio::test]
async fn a_worker_paused_holding_unstarted_items_cannot_write_when_it_resumes() {
    // Starts are deferred past the drill, so every write is an unstarted one, fenced by
    // the attempt count its claim read; each item takes 6 s.
    let mut fleet = Fleet::new(
        TestEnv::new().await,
        &[
            ("ABRIDGE_START_AFTER_MS", "60000"),
            ("ABRIDGE_NOOP_DELAY_MS", "6000"),
        ],
    )
    .await;
    fleet.spawn_worker(4);
    let zombie = session_of(&fleet, fleet.workers[0].pid().as_raw()).await;
    let id = fleet.enqueue(&video_lines('h', 4));
    let queue = fleet.env.queue(&fleet.env.settings(&[]));
    wait_until(
        Duration::from_secs(20),
        "the zombie to hold every item",
        || async { queue.leases_by_worker().await.unwrap().get(&zombie) == Some(&4) },
    )
    .await;
    // Let it read them from Postgres and begin: it is paused mid-work, not mid-claim.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    // Paused past its lease and session TTL: another worker takes the items over and
    // works on them; the zombie resumes after its own 6 s are up, before the live holder's.
    fleet.workers[0].signal(Signal::SIGSTOP);
    fleet.spawn_worker(4);
    let live = session_of(&fleet, fleet.workers[1].pid().as_raw()).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    fleet.workers[0].signal(Signal::SIGCONT);

    fleet.wait_finished(id, Duration::from_secs(60)).await;
    fleet.assert_exactly_once(id, 4).await;
    let items = fleet.store.items_of(id, None, 0, 4).await.unwrap();
    for item in &items {
        assert_eq!(
            item.worker_id,
            Some(live.0),
            "item {} carries the zombie's write (attempts {})",
            item.id,
            item.attempts
        );
    }
    let ids: Vec<_> = items.iter().map(|i| i.id).collect();
    let fenced = fleet.store.fenced_write_counts(&ids).await.unwrap();
    // Whether the zombie got as far as writing (rather than learning first that it lost
    // the items) is a race; when it does, its writes are refused and recorded.
    eprintln!("the zombie's refused writes: {fenced:?}");
}

#[tokio::test]
async fn redis_flushall_mid_batch_loses_nothing() {
    let mut fleet = Fleet::new(
        TestEnv::with_own_servers().await,
        &[("ABRIDGE_NOOP_DELAY_MS", "150")],
    )
    .await;
    let id = fleet.enqueue(&video_lines('f', 120));
    for _ in 0..3 {
        fleet.spawn_worker(4);
    }
    wait_until(Duration::from_secs(30), "a third done", || async {
        fleet.batch(id).await.counts.succeeded >= 40
    })
    .await;
    let client = redis::Client::open(fleet.env.redis_url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();

    fleet.wait_finished(id, Duration::from_secs(90)).await;
    fleet.assert_exactly_once(id, 120).await;
}

/// Runs a 150-item batch on three workers, applies `outage` once 30 items are done, and
/// checks that the batch completes exactly once with every worker still alive.
async fn ride_out(prefix: char, outage: impl FnOnce(&mut Fleet)) {
    let mut fleet = Fleet::new(
        TestEnv::with_own_servers().await,
        &[("ABRIDGE_NOOP_DELAY_MS", "100")],
    )
    .await;
    let id = fleet.enqueue(&video_lines(prefix, 150));
    for _ in 0..3 {
        fleet.spawn_worker(4);
    }
    wait_until(Duration::from_secs(30), "some done", || async {
        fleet.batch(id).await.counts.succeeded >= 30
    })
    .await;
    outage(&mut fleet);

    fleet.wait_finished(id, Duration::from_secs(90)).await;
    fleet.assert_exactly_once(id, 150).await;
    for w in fleet.workers.iter_mut() {
        assert!(
            w.is_running(),
            "a worker crashed during the outage:\n{}",
            w.logs()
        );
    }
}

#[tokio::test]
async fn a_postgres_restart_mid_batch_is_ridden_out() {
    ride_out('g', |fleet| {
        fleet.env.own().postgres.stop();
        std::thread::sleep(Duration::from_secs(3));
        fleet.env.own().postgres.start_again().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_redis_restart_without_persistence_mid_batch_is_ridden_out() {
    ride_out('r', |fleet| {
        fleet.env.own().redis.kill();
        std::thread::sleep(Duration::from_secs(2));
        fleet.env.own().redis.restart_empty().unwrap();
    })
    .await;
}

#[tokio::test]
async fn sigterm_releases_items_in_hand_and_exits_zero() {
    let mut fleet = Fleet::new(
        TestEnv::new().await,
        &[
            ("ABRIDGE_NOOP_DELAY_MS", "30000"),
            ("ABRIDGE_SHUTDOWN_GRACE_MS", "1000"),
        ],
    )
    .await;
    let id = fleet.enqueue(&video_lines('t', 8));
    fleet.spawn_worker(4);
    let session = session_of(&fleet, fleet.workers[0].pid().as_raw()).await;
    wait_until(Duration::from_secs(20), "four items running", || async {
        fleet.batch(id).await.counts.running == 4
    })
    .await;

    fleet.workers[0].signal(Signal::SIGTERM);
    let code = fleet.workers[0].wait_exit(Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "worker did not exit cleanly:\n{}",
        fleet.workers[0].logs()
    );
    assert_eq!(
        fleet
            .store
            .session_stop_reason(session)
            .await
            .unwrap()
            .as_deref(),
        Some("shutdown")
    );
    let b = fleet.batch(id).await;
    assert_eq!(
        (b.counts.queued, b.counts.running),
        (8, 0),
        "items in hand were released at once"
    );
    for item in fleet.store.items_of(id, None, 0, 10).await.unwrap() {
        assert_eq!((item.status, item.attempts), (ItemStatus::Queued, 0));
    }

    // Another worker (no delay) picks them up right away.
    fleet.vars.retain(|(k, _)| k != "ABRIDGE_NOOP_DELAY_MS");
    fleet.spawn_worker(4);
    fleet.wait_finished(id, Duration::from_secs(30)).await;
    fleet.assert_exactly_once(id, 8).await;
}

#[tokio::test]
async fn a_poison_item_that_kills_its_worker_fails_after_max_attempts() {
    let mut fleet = Fleet::new(
        TestEnv::new().await,
        &[
            ("ABRIDGE_MAX_ATTEMPTS", "3"),
            ("ABRIDGE_NOOP_DELAY_MS", "20"),
        ],
    )
    .await;
    let lines =
        video_lines('n', 10) + "{\"url\": \"POISON00000\", \"transcript\": \"abridge:exit\"}\n";
    let id = fleet.enqueue(&lines);
    fleet.spawn_worker(2);
    fleet.spawn_worker(2);
    // A supervisor: restart any worker that died, as compose or Kubernetes would.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut restarts = 0;
    while !fleet.batch(id).await.status.is_finished() {
        assert!(
            Instant::now() < deadline,
            "batch never finished: {:?}",
            fleet.batch(id).await.counts
        );
        for i in 0..fleet.workers.len() {
            if !fleet.workers[i].is_running() {
                let c = "2".to_owned();
                fleet.workers[i] = abridge_testkit::Proc::spawn(
                    &format!("worker-{i}"),
                    &bin(),
                    &["worker", "--concurrency", &c],
                    &fleet.vars,
                );
                restarts += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        restarts >= 2,
        "the poison item should have killed a worker per attempt"
    );
    fleet.assert_exactly_once(id, 11).await;
    let items = fleet.store.items_of(id, None, 0, 20).await.unwrap();
    let poison = items.iter().find(|i| i.video_id == "POISON00000").unwrap();
    assert_eq!(poison.status, ItemStatus::Failed);
    assert_eq!(poison.attempts, 3);
    assert_eq!(poison.error_kind.as_deref(), Some("worker_died"));
    let others: HashSet<_> = items
        .iter()
        .filter(|i| i.video_id != "POISON00000")
        .map(|i| i.status)
        .collect();
    assert_eq!(others, HashSet::from([ItemStatus::Succeeded]));
}

/// `abridge pause` starts no item fleet-wide (checked over 3 s under a full queue), holds
/// through a Redis FLUSHALL (Postgres has it; the reconciler puts it back before any item),
/// and `abridge resume` has the workers claiming again at once.
#[tokio::test]
async fn pause_starts_nothing_through_a_redis_loss_and_resume_restarts_at_once() {
    let mut fleet = Fleet::new(
        TestEnv::with_own_servers().await,
        &[("ABRIDGE_NOOP_DELAY_MS", "50")],
    )
    .await;
    let id = fleet.enqueue(&video_lines('p', 400));
    fleet.spawn_worker(4);
    fleet.spawn_worker(4);
    wait_until(Duration::from_secs(30), "some done", || async {
        fleet.batch(id).await.counts.succeeded >= 20
    })
    .await;
    let (code, out, err) = fleet.run(&["pause"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("paused"), "{out}");
    // Items in hand finish (50 ms each); then nothing moves.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let finished = |b: abridge_store::BatchView| b.counts.terminal();
    let at_pause = finished(fleet.batch(id).await);
    assert!(at_pause < 400, "the queue was drained before the pause");
    let (_, stats, _) = fleet.run(&["stats", "--json"], None);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(stats["paused_at"].is_string(), "{stats}");
    assert_eq!(stats["leased"], 0, "nothing in hand while paused: {stats}");
    let (_, top, _) = fleet.run(&["top", "--once"], None);
    assert!(top.contains("PAUSED since"), "{top}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        finished(fleet.batch(id).await),
        at_pause,
        "an item started while the queue was paused"
    );

    // Redis loses everything; the reconciler rebuilds the queue, paused.
    let client = redis::Client::open(fleet.env.redis_url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    wait_until(
        Duration::from_secs(20),
        "the reconciler to put the queue back",
        || async {
            let (_, s, _) = fleet.run(&["stats", "--json"], None);
            let s: serde_json::Value = serde_json::from_str(&s).unwrap();
            s["depth"]["normal"].as_i64().unwrap_or(0) > 0
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        finished(fleet.batch(id).await),
        at_pause,
        "an item started after the Redis loss while the queue was paused"
    );

    let (code, _, err) = fleet.run(&["resume"], None);
    assert_eq!(code, 0, "{err}");
    let resumed = std::time::Instant::now();
    wait_until(
        Duration::from_secs(2),
        "an item to finish after resume",
        || async { finished(fleet.batch(id).await) > at_pause },
    )
    .await;
    assert!(
        resumed.elapsed() < Duration::from_millis(1500),
        "claims resumed after {:?}",
        resumed.elapsed()
    );
    fleet.wait_finished(id, Duration::from_secs(60)).await;
    fleet.assert_exactly_once(id, 400).await;
}
