//! `abridge bench`, small: every scenario runs against the test's servers and reports the
//! figures BENCHMARKS.md quotes. Speeds are not asserted (the machine may be loaded); that
//! the work was done, and measured, is.

use abridge_testkit::TestEnv;

use crate::support::*;

/// The JSON lines `abridge bench --json` printed, one record per scenario result.
struct BenchRecords {
    records: Vec<serde_json::Value>,
    out: String,
}

impl BenchRecords {
    /// Parses a finished run's output; the run must have exited 0.
    fn parse(code: i32, out: String, err: String) -> Self {
        assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
        let records = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        Self { records, out }
    }

    /// The record of `scenario`.
    fn find(&self, scenario: &str) -> &serde_json::Value {
        self.records
            .iter()
            .find(|r| r["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {scenario} line in:\n{}", self.out))
    }
}

#[tokio::test]
async fn bench_runs_every_scenario_and_reports_its_figures() {
    let fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let (code, out, err) = fleet.run(
        &[
            "bench",
            "--json",
            "--items",
            "3000",
            "--concurrency",
            "16",
            "--enqueue-items",
            "1500",
            "--rates",
            "50",
            "--rate-seconds",
            "1",
            "--backlog",
            "3000",
        ],
        None,
    );
    let records = BenchRecords::parse(code, out, err);
    let find = |scenario: &str| records.find(scenario);
    let positive = |r: &serde_json::Value, key: &str| {
        let v = r[key].as_f64().unwrap_or(f64::NAN);
        assert!(v > 0.0, "{key} = {v} in {r}");
    };

    let burndown = find("burndown");
    assert_eq!(burndown["succeeded"], 3000, "{burndown}");
    for key in [
        "items_per_s",
        "postgres_cpu_usec_per_item",
        "worker_cpu_usec_per_item",
        "redis_cpu_usec_per_item",
        "redis_commands_per_item",
        "pg_commits",
    ] {
        positive(burndown, key);
    }

    // The ceiling finished every item with the workers' own statements (it fails otherwise).
    let ceiling = find("ceiling");
    assert_eq!(ceiling["items"], 3000);
    positive(ceiling, "items_per_s");
    positive(ceiling, "postgres_cpu_usec_per_item");

    for scenario in ["enqueue", "enqueue-api"] {
        let r = find(scenario);
        positive(r, "items_per_s");
    }
    let idle = find("latency-idle");
    positive(idle, "p50_ms");
    assert!(idle["p99_ms"].as_f64() >= idle["p50_ms"].as_f64(), "{idle}");
    let scale = find("scale");
    for key in ["claim_cost_ratio", "redis_bytes_per_item", "worker_rss_mb"] {
        positive(scale, key);
    }
    // The session is reused: two requests a video, but for the first few that had none.
    let transcripts = find("transcripts");
    let per_video = transcripts["requests_per_video"].as_f64().unwrap();
    assert!((2.0..2.2).contains(&per_video), "{transcripts}");
}

#[tokio::test]
async fn bench_retention_measures_a_big_table_and_a_pruner_at_work() {
    let fleet = Fleet::new(TestEnv::new().await, &[]).await;
    let (code, out, err) = fleet.run(
        &[
            "bench",
            "--json",
            "--scenario",
            "retention",
            "--items",
            "2000",
            "--concurrency",
            "16",
            "--retention-rows",
            "30000",
            "--retention-prune",
            "12000",
        ],
        None,
    );
    let records = BenchRecords::parse(code, out, err);
    let find = |scenario: &str| records.find(scenario);
    let table = find("retention-table");
    assert!(
        table["items_table_rows"].as_i64().unwrap() >= 32_000,
        "{table}"
    );
    for key in [
        "burndown_items_per_s_small_table",
        "burndown_items_per_s_big_table",
        "big_vs_small",
    ] {
        assert!(table[key].as_f64().unwrap() > 0.0, "{key} in {table}");
    }
    let prune = find("retention-prune");
    assert_eq!(prune["pruned_items"], 12_000, "{prune}");
    assert_eq!(prune["pruned_batches"], 2, "{prune}");
    assert!(prune["prune_rows_per_s"].as_f64().unwrap() > 0.0, "{prune}");
    assert!(prune["largest_chunk"].as_u64().unwrap() <= 5_000, "{prune}");
    assert!(prune["statements"].as_u64().unwrap() >= 3, "{prune}");
    assert!(
        prune["while_pruning_vs_without"].as_f64().unwrap() > 0.0,
        "{prune}"
    );
}
