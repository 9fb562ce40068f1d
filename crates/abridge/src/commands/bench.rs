//! `abridge bench`.

use std::process::ExitCode;

use abridge_bench::{BenchOptions, Scenario};
use abridge_core::Settings;
use anyhow::Context;

use crate::cli::BenchArgs;

pub async fn run(settings: &Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let scenarios = args
        .scenario
        .iter()
        .map(|s| s.parse::<Scenario>().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        args.workers >= 1 && args.concurrency >= 1,
        "--workers and --concurrency must be at least 1"
    );
    let opts = BenchOptions {
        scenarios,
        items: args.items,
        batches: args.batches as usize,
        tenants: args.tenants,
        workers: args.workers,
        concurrency: args.concurrency,
        enqueue_items: args.enqueue_items,
        rates: args.rates,
        rate_seconds: args.rate_seconds,
        backlog: args.backlog,
        retention_rows: args.retention_rows,
        retention_prune: args.retention_prune.min(args.retention_rows),
        retention: settings.retention.clone(),
        exe: std::env::current_exe().context("find the abridge executable")?,
        database_url: settings.database_url.clone(),
        redis_url: settings.redis_url.clone(),
        redis_cluster: args.redis == "cluster",
        queue_shards: settings.queue_shards,
        worker_log: args.worker_log.clone(),
    };
    if cfg!(debug_assertions) && !args.json {
        eprintln!(
            "note: this is a debug build; run `cargo run --release -p abridge -- bench` for real figures"
        );
    }
    let records = abridge_bench::run(&opts, |r| println!("{}", r.json())).await?;
    if !args.json {
        println!();
        print!("{}", abridge_bench::report::table(&records));
    }
    Ok(ExitCode::SUCCESS)
}
