//! Operating the fleet: `/metrics` on workers and on the exporter, JSON logs, `abridge top`.
//! Real processes, real servers; every scrape also passes `promtool check metrics`.

use std::time::Duration;

use abridge_telemetry::metrics::{CATALOGUE, Kind, Scope};
use abridge_testkit::TestEnv;
use nix::sys::signal::Signal;

use crate::support::*;

/// Every family of `scrape` is in the catalogue, with its type and exactly its label names
/// (plus `le` on histogram buckets); every family of `required` scope is present, but those
/// in `absent`.
fn assert_matches_catalogue(scrape: &Scrape, required: Scope, absent: &[&str]) {
    for (family, kind) in &scrape.types {
        let def = abridge_telemetry::metrics::def(family)
            .unwrap_or_else(|| panic!("{family} is served but not in the catalogue"));
        assert_eq!(kind, def.kind.as_str(), "type of {family}");
    }
    for def in CATALOGUE
        .iter()
        .filter(|d| d.scope == required && !absent.contains(&d.name))
    {
        assert!(
            scrape.has_family(def.name),
            "{} ({:?}) is missing from the scrape",
            def.name,
            def.scope
        );
    }
    for s in &scrape.samples {
        let (family, extra): (&str, &[&str]) = if let Some(f) = s.name.strip_suffix("_bucket") {
            (f, &["le"])
        } else if let Some(f) = s
            .name
            .strip_suffix("_sum")
            .or_else(|| s.name.strip_suffix("_count"))
            .filter(|f| {
                abridge_telemetry::metrics::def(f).is_some_and(|d| d.kind == Kind::Histogram)
            })
        {
            (f, &[])
        } else {
            (s.name.as_str(), &[])
        };
        let def = abridge_telemetry::metrics::def(family)
            .unwrap_or_else(|| panic!("sample {} has no catalogued family", s.name));
        let mut expected: Vec<&str> = def.labels.iter().chain(extra).copied().collect();
        expected.sort_unstable();
        let actual: Vec<&str> = s.labels.keys().map(String::as_str).collect();
        assert_eq!(actual, expected, "label names of {}", s.name);
    }
}

fn item_lines(prefix: char, n: usize, transcript: &str) -> String {
    (0..n)
        .map(|i| {
            serde_json::json!({ "url": format!("{prefix}{i:010}"), "transcript": transcript })
                .to_string()
                + "\n"
        })
        .collect()
}

#[tokio::test]
async fn worker_metrics_match_the_catalogue_and_move_when_items_complete() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[("ABRIDGE_NOOP_DELAY_MS", "10")]).await;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    fleet.spawn(
        "worker",
        &["worker", "--concurrency", "4", "--metrics-listen", &addr],
        &[],
    );
    wait_healthy(port).await;

    let before = scrape(port).await;
    // Only a worker with a pool of YouTube proxies has its blocks and quarantine states.
    let pool_only = [
        "abridge_youtube_blocks_total",
        "abridge_youtube_egress_quarantined",
    ];
    assert_matches_catalogue(&before, Scope::Process, &pool_only);
    for fleet_only in [
        "abridge_queue_depth",
        "abridge_redis_postgres_drift",
        "abridge_workers_alive",
    ] {
        assert!(
            !before.has_family(fleet_only),
            "workers must not report {fleet_only}"
        );
    }
    assert_eq!(
        before.get("abridge_items_total", &[("outcome", "succeeded")]),
        0.0
    );
    assert_eq!(before.get("abridge_worker_concurrency", &[]), 4.0);
    for reason in ["lease_expired", "session_dead", "reconciled"] {
        assert_eq!(
            before.get("abridge_reclaimed_total", &[("reason", reason)]),
            0.0
        );
    }
    for stage in ["process", "transcript", "summarize", "store"] {
        assert_eq!(
            before.get("abridge_item_duration_seconds_count", &[("stage", stage)]),
            0.0
        );
    }

    let id = fleet.enqueue(
        &(item_lines('m', 20, "Fine. Words.")
            + &item_lines('p', 1, "abridge:fail permanent drill")),
    );
    fleet.wait_finished(id, Duration::from_secs(30)).await;

    let after = scrape(port).await;
    assert_matches_catalogue(&after, Scope::Process, &pool_only);
    assert_eq!(
        after.get("abridge_items_total", &[("outcome", "succeeded")]),
        20.0
    );
    assert_eq!(
        after.get("abridge_items_total", &[("outcome", "failed")]),
        1.0
    );
    assert_eq!(
        after.get("abridge_items_total", &[("outcome", "retried")]),
        0.0
    );
    let processed = after.get(
        "abridge_item_duration_seconds_count",
        &[("stage", "process")],
    );
    assert_eq!(processed, 21.0);
    assert_eq!(
        after.get(
            "abridge_item_duration_seconds_bucket",
            &[("stage", "process"), ("le", "+Inf")]
        ),
        21.0
    );
    // Each took at least the 10 ms noop delay.
    assert!(after.get("abridge_item_duration_seconds_sum", &[("stage", "process")]) >= 0.2);
    assert!(after.get("abridge_item_duration_seconds_count", &[("stage", "store")]) >= 1.0);
    assert_eq!(
        after.get("abridge_enqueue_to_start_seconds_count", &[]),
        21.0
    );
    assert_eq!(
        after.get(
            "abridge_summarizer_requests_total",
            &[("backend", "noop"), ("outcome", "ok")]
        ),
        20.0
    );
    assert_eq!(
        after.get(
            "abridge_summarizer_requests_total",
            &[("backend", "noop"), ("outcome", "error")]
        ),
        1.0
    );
    assert_eq!(after.get("abridge_worker_items_in_hand", &[]), 0.0);
}

#[tokio::test]
async fn the_exporter_serves_the_fleet_gauges_from_redis_and_postgres() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[("ABRIDGE_NOOP_DELAY_MS", "5")]).await;
    let (code, _, err) = fleet.run(
        &["enqueue", "--priority", "high"],
        Some(&video_lines('h', 5)),
    );
    assert_eq!(code, 0, "{err}");
    fleet.enqueue(&video_lines('n', 7));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    fleet.spawn("exporter", &["exporter", "--listen", &addr], &[]);
    wait_healthy(port).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let q = ("queue", "default");
    let waiting = scrape(port).await;
    // No reconcile pass has run yet (no worker has started): no drift is known.
    assert_matches_catalogue(&waiting, Scope::Fleet, &["abridge_redis_postgres_drift"]);
    assert!(!waiting.has_family("abridge_redis_postgres_drift"));
    assert_eq!(
        waiting.get("abridge_reconcile_last_run_timestamp_seconds", &[q]),
        0.0
    );
    assert_eq!(
        waiting.get("abridge_fleet_source_up", &[("source", "redis")]),
        1.0
    );
    assert_eq!(
        waiting.get("abridge_fleet_source_up", &[("source", "postgres")]),
        1.0
    );
    assert_eq!(
        waiting.get("abridge_queue_depth", &[q, ("priority", "high")]),
        5.0
    );
    assert_eq!(
        waiting.get("abridge_queue_depth", &[q, ("priority", "normal")]),
        7.0
    );
    assert_eq!(
        waiting.get("abridge_queue_depth", &[q, ("priority", "low")]),
        0.0
    );
    assert_eq!(
        waiting.get("abridge_batch_items", &[q, ("state", "queued")]),
        12.0
    );
    assert_eq!(
        waiting.get("abridge_batches_open", &[q, ("state", "pending")]),
        2.0
    );
    assert_eq!(waiting.get("abridge_workers_alive", &[q]), 0.0);
    assert_eq!(waiting.get("abridge_leases_active", &[q]), 0.0);
    let age = waiting.get("abridge_oldest_item_age_seconds", &[q]);
    assert!((1.0..60.0).contains(&age), "oldest item age {age}");

    // Two workers drain the queue; the gauges follow, once for the fleet.
    fleet.spawn_worker(4);
    fleet.spawn_worker(4);
    wait_for(Duration::from_secs(30), "the queue to drain", || async {
        let s = scrape(port).await;
        s.value("abridge_batches_open", &[q, ("state", "running")]) == Some(0.0)
            && s.value("abridge_batches_open", &[q, ("state", "pending")]) == Some(0.0)
            && s.value("abridge_workers_alive", &[q]) == Some(2.0)
    })
    .await;
    let drained = scrape(port).await;
    assert_matches_catalogue(&drained, Scope::Fleet, &[]);
    for p in ["high", "normal", "low"] {
        assert_eq!(
            drained.get("abridge_queue_depth", &[q, ("priority", p)]),
            0.0
        );
    }
    assert_eq!(drained.get("abridge_oldest_item_age_seconds", &[q]), 0.0);
    assert_eq!(
        drained.get("abridge_batch_items", &[q, ("state", "queued")]),
        0.0
    );
    // Every worker reconciled at start: one drift series, recorded, zero.
    assert_eq!(drained.get("abridge_redis_postgres_drift", &[q]), 0.0);
    let last = drained.get("abridge_reconcile_last_run_timestamp_seconds", &[q]);
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        (now - 120.0..=now + 5.0).contains(&last),
        "last reconcile at {last}"
    );

    // Redis loses the items of a new batch while no worker runs; the next reconcile pass
    // measures (and repairs) the drift, and the exporter reports it.
    for w in &fleet.workers[1..] {
        w.signal(Signal::SIGTERM);
    }
    for w in &mut fleet.workers[1..] {
        assert_eq!(w.wait_exit(Duration::from_secs(20)), Some(0));
    }
    let lost = fleet.enqueue(&video_lines('d', 4));
    let client = redis::Client::open(fleet.env.redis_url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", fleet.env.redis_prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (code, out, err) = fleet.run(&["reap", "--json"], None);
    assert_eq!(code, 0, "{err}");
    let reap: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reap["reconcile"]["drift"], 4, "{out}");
    let after_loss = scrape(port).await;
    assert_eq!(after_loss.get("abridge_redis_postgres_drift", &[q]), 4.0);
    assert_eq!(
        after_loss.get("abridge_queue_depth", &[q, ("priority", "normal")]),
        4.0
    );
    assert_eq!(fleet.batch(lost).await.counts.queued, 4);
}

#[tokio::test]
async fn an_unreachable_redis_drops_its_gauges_and_says_so() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let closed = format!("redis://127.0.0.1:{}/", free_port());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    fleet.spawn(
        "exporter",
        &["exporter", "--listen", &addr],
        &[("ABRIDGE_REDIS_URL", &closed)],
    );
    wait_healthy(port).await;
    let s = scrape(port).await;
    assert_eq!(
        s.get("abridge_fleet_source_up", &[("source", "redis")]),
        0.0
    );
    assert_eq!(
        s.get("abridge_fleet_source_up", &[("source", "postgres")]),
        1.0
    );
    assert!(!s.has_family("abridge_queue_depth"));
    assert!(!s.has_family("abridge_leases_active"));
    assert_eq!(s.get("abridge_workers_alive", &[("queue", "default")]), 0.0);
}

#[tokio::test]
async fn json_logs_carry_batch_item_video_and_attempt_on_every_line_about_an_item() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[]).await;
    fleet.spawn(
        "worker",
        &["worker", "--concurrency", "4"],
        &[("ABRIDGE_LOG_FORMAT", "json")],
    );
    let id = fleet.enqueue(
        &(item_lines('r', 2, "abridge:fail-first 1 flaky") + &item_lines('k', 3, "Fine.")),
    );
    fleet.wait_finished(id, Duration::from_secs(30)).await;
    fleet.workers[0].signal(Signal::SIGTERM);
    assert_eq!(fleet.workers[0].wait_exit(Duration::from_secs(20)), Some(0));

    let logs = fleet.workers[0].logs();
    let lines: Vec<serde_json::Map<String, serde_json::Value>> = logs
        .lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => panic!("not a JSON object line: {l}"),
        })
        .collect();
    let about_items: Vec<_> = lines
        .iter()
        .filter(|l| l.get("span").and_then(|s| s.as_str()) == Some("item"))
        .collect();
    assert!(
        !about_items.is_empty(),
        "no line logged in an item span:\n{logs}"
    );
    for line in lines.iter().filter(|l| l.contains_key("item")) {
        for field in ["batch", "item", "video", "attempt"] {
            assert!(line.contains_key(field), "{field} missing from {line:?}");
        }
        assert_eq!(line["batch"], id.to_string());
    }
    let retries: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "attempt failed; will retry")
        .collect();
    assert_eq!(retries.len(), 2, "{logs}");
    for r in retries {
        assert_eq!(r["attempt"], 1);
        assert!(r["video"].as_str().unwrap().starts_with('r'), "{r:?}");
        assert_eq!(r["level"], "INFO");
        assert!(
            r["error"].as_str().unwrap().contains("drill failure"),
            "{r:?}"
        );
    }
    // Lines outside any item (the session starting) carry no item fields.
    let start = lines
        .iter()
        .find(|l| l["message"] == "worker session started")
        .expect("session start line");
    assert!(!start.contains_key("item"));
}

#[tokio::test]
async fn top_once_shows_depth_workers_and_batch_progress() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let (code, out, err) = fleet.run(
        &["enqueue", "--json", "--name", "demo"],
        Some(&video_lines('t', 3)),
    );
    assert_eq!(code, 0, "{err}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let (code, screen, err) = fleet.run(&["top", "--once"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        screen.starts_with("abridge top · queue default"),
        "{screen}"
    );
    assert!(
        screen.contains("\nready              3   high 0, normal 3, low 0\n"),
        "{screen}"
    );
    assert!(screen.contains("workers: 0 alive"), "{screen}");
    let row = screen
        .lines()
        .find(|l| l.contains(&id))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(
        row.contains("demo") && row.contains("pending") && row.contains("0 / 3"),
        "{row}"
    );
    assert!(row.contains("[····················]    0%"), "{row}");

    fleet.spawn_worker(2);
    fleet
        .wait_finished(id.parse().unwrap(), Duration::from_secs(30))
        .await;
    let (_, out, _) = fleet.run(&["stats", "--json"], None);
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    let worker_id = stats["workers"][0]["id"].as_str().unwrap().to_owned();

    let (code, screen, err) = fleet.run(&["top", "--once"], None);
    assert_eq!(code, 0, "{err}");
    assert!(screen.contains("workers: 1 alive"), "{screen}");
    let worker_row = screen
        .lines()
        .find(|l| l.contains(&worker_id))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(worker_row.trim_end().ends_with("0/2"), "{worker_row}");
    assert!(
        screen.contains("(3 finished in the last minute)"),
        "{screen}"
    );
    let row = screen.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        row.contains("completed") && row.contains("3 / 3") && row.contains("100%"),
        "{row}"
    );
}
