//! The commands' input, output and errors.

use abridge_testkit::TestEnv;

use crate::support::*;

#[tokio::test]
async fn enqueue_reports_every_rejected_line_and_queues_the_rest() {
    let fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let input = "\
https://www.youtube.com/watch?v=aaaaaaaaaaa&t=42s
youtu.be/bbbbbbbbbbb?si=xyz
https://www.youtube.com/shorts/ccccccccccc
https://www.youtube.com/playlist?list=PLabc
https://youtu.be/aaaaaaaaaaa
{\"url\": \"ddddddddddd\", \"title\": \"A talk\", \"transcript\": \"Hello world. More.\"}
https://vimeo.com/1234
";
    let (code, out, err) = fleet.run(
        &[
            "enqueue",
            "--json",
            "--name",
            "demo",
            "--priority",
            "high",
            "-",
        ],
        Some(input),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], 4);
    assert_eq!(v["duplicates"], 1);
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["line"], 4);
    assert_eq!(
        rejected[0]["input"],
        "https://www.youtube.com/playlist?list=PLabc"
    );
    assert!(rejected[0]["reason"].as_str().unwrap().contains("playlist"));
    assert_eq!(rejected[1]["line"], 7);
    assert!(
        rejected[1]["reason"]
            .as_str()
            .unwrap()
            .contains("not a YouTube URL")
    );

    let id = v["batch_id"].as_str().unwrap().to_owned();
    let (code, out, _) = fleet.run(&["status", "--json", &id], None);
    assert_eq!(code, 0);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cost",
            "counts",
            "created_at",
            "finished_at",
            "id",
            "name",
            "priority",
            "started_at",
            "status",
            "total"
        ]
    );
    assert_eq!(
        (
            s["name"].as_str(),
            s["status"].as_str(),
            s["priority"].as_str(),
            s["total"].as_i64()
        ),
        (Some("demo"), Some("pending"), Some("high"), Some(4))
    );
    assert_eq!(
        s["counts"],
        serde_json::json!({"queued": 4, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0})
    );
    assert_eq!(s["cost"]["spent_usd"], 0.0);
    assert!(s["cost"]["estimate_rest_usd"].is_null());

    let items = fleet
        .store
        .items_of(id.parse().unwrap(), None, 0, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i.video_id.as_str()).collect();
    assert_eq!(
        ids,
        ["aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc", "ddddddddddd"]
    );
    assert_eq!(items[0].url, "https://www.youtube.com/watch?v=aaaaaaaaaaa");
    assert_eq!(items[3].title.as_deref(), Some("A talk"));

    let (code, out, _) = fleet.run(&["stats", "--json"], None);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["depth"]["high"], 4);

    // Human output names the rejected lines on stderr.
    let (code, out, err) = fleet.run(&["enqueue"], Some("eeeeeeeeeee\nnope\n"));
    assert_eq!(code, 0);
    assert!(out.contains("1 accepted"), "{out}");
    assert!(err.contains("line 2: nope: not a URL"), "{err}");

    // Nothing valid: an error, and nothing created.
    let (code, _, err) = fleet.run(&["enqueue"], Some("nope\n"));
    assert_ne!(code, 0);
    assert!(err.contains("nothing enqueued"), "{err}");
}

#[tokio::test]
async fn a_hundred_thousand_lines_are_enqueued_whole() {
    let fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let lines = video_lines('h', 100_000);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &lines).unwrap();
    let (code, out, err) = fleet.run(&["enqueue", "--json", file.path().to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["accepted"], 100_000);
    let id = v["batch_id"].as_str().unwrap().parse().unwrap();
    assert_eq!(fleet.batch(id).await.counts.queued, 100_000);
    let (_, out, _) = fleet.run(&["stats", "--json"], None);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["depth"]["normal"], 100_000);
}

#[tokio::test]
async fn commands_refuse_an_unmigrated_database_until_migrate_runs() {
    let env = TestEnv::new().await;
    let name = format!("u_{}", uuid::Uuid::new_v4().simple());
    let admin = abridge_core::settings::Secret::new(
        env.database_url
            .expose()
            .rsplit_once('/')
            .unwrap()
            .0
            .to_owned()
            + "/postgres",
    );
    abridge_store::admin::create_database(&admin, &name, None)
        .await
        .unwrap();
    let url = env
        .database_url
        .expose()
        .rsplit_once('/')
        .unwrap()
        .0
        .to_owned()
        + "/"
        + &name;
    let mut vars = env.vars(&[]);
    vars.retain(|(k, _)| k != "ABRIDGE_DATABASE_URL");
    vars.push(("ABRIDGE_DATABASE_URL".into(), url));

    for args in [
        &["stats"][..],
        &["enqueue"][..],
        &["status", "01a20000-0000-7000-8000-000000000000"][..],
    ] {
        let (code, _, err) = run_with(&vars, args, Some("aaaaaaaaaaa\n"));
        assert_ne!(code, 0, "{args:?} ran against an unmigrated database");
        assert!(err.contains("run `abridge migrate`"), "{args:?}: {err}");
    }
    let (code, out, _) = run_with(&vars, &["migrate"], None);
    assert_eq!(code, 0);
    assert!(out.contains("applied 0001_core"), "{out}");
    let (code, out, _) = run_with(&vars, &["migrate"], None);
    assert_eq!(code, 0);
    assert!(out.contains("up to date"), "{out}");
    let (code, _, err) = run_with(&vars, &["stats"], None);
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_no_panic() {
    let fleet = Fleet::new(TestEnv::new().await, &[]).await;
    /// (settings to change, arguments, what the error must say)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (
            &[("ABRIDGE_LEASE_MS", "soon")],
            &["stats"],
            "lease_ms (ABRIDGE_LEASE_MS): expected a whole number of milliseconds",
        ),
        (
            &[("ABRIDGE_MAX_ATTEMPTS", "0")],
            &["stats"],
            "ABRIDGE_MAX_ATTEMPTS",
        ),
        (
            &[("ABRIDGE_SUMMARIZER", "magic")],
            &["reap"],
            "ABRIDGE_SUMMARIZER",
        ),
        (&[("ABRIDGE_QUEUE", "a b")], &["stats"], "ABRIDGE_QUEUE"),
        (
            &[("ABRIDGE_REDIS_URL", "http://nope")],
            &["stats"],
            "redis url",
        ),
        (
            &[],
            &["status", "not-a-batch"],
            "\"not-a-batch\" is not a batch id",
        ),
        (
            &[],
            &["cancel", "01a20000-0000-7000-8000-000000000000"],
            "no batch 01a20000-0000-7000-8000-000000000000",
        ),
        (
            &[],
            &["enqueue", "--priority", "urgent"],
            "high, normal, low",
        ),
        (&[], &["enqueue", "/no/such/file"], "read /no/such/file"),
    ];
    for (overrides, args, expected) in cases {
        let mut vars = fleet.vars.clone();
        for (k, v) in *overrides {
            vars.retain(|(name, _)| name != k);
            vars.push(((*k).to_owned(), (*v).to_owned()));
        }
        let (code, _, err) = run_with(&vars, args, Some(""));
        assert_ne!(code, 0, "{args:?} with {overrides:?} succeeded");
        assert!(
            err.contains(expected),
            "{args:?} with {overrides:?}: expected {expected:?} in {err:?}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    // A password in a URL never reaches an error message.
    let mut vars = fleet.vars.clone();
    vars.retain(|(k, _)| k != "ABRIDGE_DATABASE_URL");
    vars.push((
        "ABRIDGE_DATABASE_URL".into(),
        "postgres://app:s3cr3t-pw@127.0.0.1:1/abridge".into(),
    ));
    let (code, _, err) = run_with(&vars, &["stats"], None);
    assert_ne!(code, 0);
    assert!(!err.contains("s3cr3t-pw"), "{err}");
    assert!(err.contains("***"), "{err}");
}

#[tokio::test]
async fn cancel_reap_and_stats_from_the_command_line() {
    let mut fleet = Fleet::new(TestEnv::new().await, &[("ABRIDGE_NOOP_DELAY_MS", "60000")]).await;
    let id = fleet.enqueue(&video_lines('q', 6));
    fleet.spawn_worker(2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while fleet.batch(id).await.counts.running < 2 {
        assert!(std::time::Instant::now() < deadline, "items never started");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, out, _) = fleet.run(&["stats", "--json"], None);
    assert_eq!(code, 0);
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["leased"], 2);
    assert_eq!(st["depth"]["normal"], 4);
    assert_eq!(st["workers"].as_array().unwrap().len(), 1);
    assert_eq!(st["workers"][0]["items_in_hand"], 2);

    let (code, out, err) = fleet.run(&["cancel", &id.to_string()], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("cancelled (6 unfinished items cancelled)"),
        "{out}"
    );
    let b = fleet
        .wait_finished(id, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(b.counts.cancelled, 6);
    let (code, _, err) = fleet.run(&["cancel", &id.to_string()], None);
    assert_ne!(code, 0);
    assert!(err.contains("already cancelled"), "{err}");

    let (code, out, _) = fleet.run(&["reap"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("expired leases: 0") && out.contains("dead workers: 0"),
        "{out}"
    );
    let (code, out, _) = fleet.run(&["reap", "--json"], None);
    assert_eq!(code, 0);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["reap"]["expired_leases"], 0);
}

#[tokio::test]
async fn up_runs_a_whole_fleet_on_its_own_servers() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        video_lines('u', 50) + "https://www.youtube.com/@channel\n",
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    // The channel line is read from YouTube, which this machine cannot reach: a rejected line
    // with its reason, and the rest of the batch runs. No database or Redis configured: `up` starts its own (throwaway ones, with
    // `--ephemeral`), then stops them.
    let vars = vec![
        ("ABRIDGE_SHUTDOWN_GRACE_MS".to_owned(), "2000".to_owned()),
        // The default summarizer (extractive) would fetch these made-up videos from YouTube.
        ("ABRIDGE_SUMMARIZER".to_owned(), "noop".to_owned()),
        ("ABRIDGE_DRILLS".to_owned(), "1".to_owned()),
    ];
    let (code, _, err) = run_with(
        &vars,
        &[
            "up",
            "--workers",
            "2",
            "--ephemeral",
            "--listen",
            "127.0.0.1:0",
            "--out",
            out.path().join("results").to_str().unwrap(),
            "--exit-when-done",
            file.path().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("started postgres") && err.contains("started redis-server"),
        "{err}"
    );
    assert!(
        err.contains(
            "line 51: https://www.youtube.com/@channel: channel @channel could not be read"
        ),
        "{err}"
    );
    assert!(err.contains("completed: 50 succeeded, 0 failed"), "{err}");
    assert!(
        err.contains("throwaway: its data is deleted on exit"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(out.path().join("results/summaries"))
            .unwrap()
            .count(),
        50
    );
}

#[tokio::test]
async fn prune_counts_with_dry_run_then_deletes_finished_batches_only() {
    let fleet = Fleet::new(TestEnv::new().await, &[("ABRIDGE_PRUNE_INTERVAL_MS", "0")]).await;
    let done = fleet.enqueue(&video_lines('p', 3));
    let (code, _, err) = fleet.run(&["cancel", &done.to_string()], None);
    assert_eq!(code, 0, "{err}");
    let open = fleet.enqueue(&video_lines('q', 2));

    let (code, out, err) = fleet.run(
        &["prune", "--dry-run", "--json", "--older-than", "0s"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["older_than_seconds"], 0);
    assert_eq!(dry["counts"]["batches"], 1, "{dry}");
    assert_eq!(dry["counts"]["items"], 3, "{dry}");
    let mut kinds: Vec<&str> = dry["counts"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "batches",
            "checkpoints",
            "fenced_writes",
            "idempotency_keys",
            "item_partitions",
            "items",
            "summaries",
            "transcripts",
            "webhook_deliveries",
            "worker_sessions"
        ]
    );
    assert_eq!(
        fleet.batch(done).await.counts.cancelled,
        3,
        "a dry run deletes nothing"
    );

    let (code, out, err) = fleet.run(&["prune", "--json", "--older-than", "0s"], None);
    assert_eq!(code, 0, "{err}");
    let pass: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(pass["dry_run"], false);
    assert_eq!(
        (
            pass["counts"]["batches"].as_u64(),
            pass["counts"]["items"].as_u64()
        ),
        (Some(1), Some(3))
    );
    assert!(pass["statements"].as_u64().unwrap() >= 2, "{pass}");
    assert!(fleet.store.batch(done).await.unwrap().is_none());
    assert_eq!(fleet.batch(open).await.counts.queued, 2, "open work stays");

    // The default retention (30 days) keeps everything left; the text names each kind.
    let (code, out, err) = fleet.run(&["prune", "--dry-run"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("older than 30d") && out.contains("would delete"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().eq(["batches", "0"])),
        "{out}"
    );

    let (code, _, err) = fleet.run(&["prune", "--older-than", "a while"], None);
    assert_ne!(code, 0);
    assert!(err.contains("30d"), "{err}");
}

#[tokio::test]
async fn tenant_set_keeps_a_tenants_own_retention() {
    let fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let (code, _, err) = fleet.run(&["token", "create", "--tenant", "acme"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = fleet.run(&["tenant", "set", "acme", "--retention-days", "5"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("retention days:         5"), "{out}");
    let (_, out, _) = fleet.run(&["tenant", "show", "acme", "--json"], None);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["retention_days"], 5);
    let (code, out, _) = fleet.run(&["tenant", "set", "acme", "--retention-days", "0"], None);
    assert_eq!(code, 0);
    assert!(out.contains("retention days:         the fleet's"), "{out}");
}
