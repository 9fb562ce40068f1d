//! `abridge up`: the whole fleet on this machine in one command. Uses the configured Redis and
//! Postgres, or starts throwaway ones; migrates; starts worker processes; optionally enqueues a
//! file and shows its progress; stops everything cleanly on Ctrl-C.

use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use abridge_control::EnqueueRequest;
use abridge_core::input::BatchInput;
use abridge_core::settings::Secret;
use abridge_core::{BatchId, Priority};
use abridge_local::{LocalPostgres, LocalRedis};
use abridge_queue::Queue;
use abridge_store::Store;
use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::UpArgs;
use crate::context::Loaded;

pub async fn run(config: Option<&Path>, loaded: Loaded, args: UpArgs) -> anyhow::Result<ExitCode> {
    let settings = loaded.settings;
    let mut servers = Servers::default();
    let redis_url = match &settings.redis_url {
        Some(url) => url.clone(),
        None => {
            let redis = tokio::task::spawn_blocking(LocalRedis::start).await??;
            let url = Secret::new(redis.url());
            eprintln!(
                "started redis-server on port {} (throwaway, no persistence)",
                redis.port()
            );
            servers.redis = Some(redis);
            url
        }
    };
    let database_url = match &settings.database_url {
        Some(url) => url.clone(),
        None => {
            let pg = tokio::task::spawn_blocking(|| LocalPostgres::start(false)).await??;
            let admin = Secret::new(pg.url("postgres"));
            abridge_store::admin::create_database(&admin, "abridge", None).await?;
            eprintln!(
                "started postgres on port {} (throwaway: its data is deleted on exit)",
                pg.port()
            );
            let url = Secret::new(pg.url("abridge"));
            servers.postgres = Some(pg);
            url
        }
    };
    let store = Store::connect_lazy(&database_url, 4)?;
    for m in store.migrate().await.context("migrate database")? {
        eprintln!("applied migration {m}");
    }
    let queue = Queue::connect(&redis_url, &settings.redis_prefix, &settings.queue, 4)?;
    queue.ping().await.context("reach redis")?;

    let log_dir = tempfile::Builder::new().prefix("abridge-up-").tempdir()?;
    let mut workers = Vec::new();
    for n in 0..args.workers {
        workers.push(spawn_worker(
            n,
            config,
            &database_url,
            &redis_url,
            args.concurrency,
            log_dir.path(),
        )?);
    }
    eprintln!(
        "{} workers running (logs in {}); to use this fleet from another shell:\n  export ABRIDGE_DATABASE_URL={} ABRIDGE_REDIS_URL={}",
        workers.len(),
        log_dir.path().display(),
        database_url.expose(),
        redis_url.expose()
    );

    let batch = match &args.file {
        Some(file) => {
            let text = super::enqueue::read_input(Some(file))?;
            let input = BatchInput::from_lines(&text);
            for r in &input.rejected {
                eprintln!("line {}: {}: {}", r.line, r.input, r.reason);
            }
            let done = abridge_control::enqueue(
                &store,
                &queue,
                &settings.queue,
                input,
                EnqueueRequest {
                    name: file.file_name().and_then(|n| n.to_str()),
                    priority: Priority::Normal,
                    options: Default::default(),
                    offer: abridge_control::Offer::from(&settings),
                },
            )
            .await?;
            eprintln!(
                "enqueued batch {}: {} accepted, {} duplicates, {} rejected",
                done.batch_id,
                done.accepted,
                done.duplicates,
                done.rejected.len()
            );
            Some(done.batch_id)
        }
        None => None,
    };

    let watch = watch(&store, &queue, &settings.queue, batch, args.exit_when_done);
    tokio::select! {
        r = watch => r?,
        _ = super::stop_signal() => eprintln!("stopping the fleet"),
    }

    stop_workers(
        &mut workers,
        settings.shutdown_grace + Duration::from_secs(5),
    )
    .await;
    store.close().await;
    drop(servers);
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct Servers {
    redis: Option<LocalRedis>,
    postgres: Option<LocalPostgres>,
}

fn spawn_worker(
    n: usize,
    config: Option<&Path>,
    database_url: &Secret,
    redis_url: &Secret,
    concurrency: Option<usize>,
    log_dir: &Path,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("find the abridge executable")?;
    let log = std::fs::File::create(log_dir.join(format!("worker-{n}.log")))?;
    let mut cmd = Command::new(exe);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("worker");
    if let Some(c) = concurrency {
        cmd.args(["--concurrency", &c.to_string()]);
    }
    cmd.env("ABRIDGE_DATABASE_URL", database_url.expose())
        .env("ABRIDGE_REDIS_URL", redis_url.expose())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    abridge_local::spawn_tied(cmd)
}

/// Shows progress until Ctrl-C, or until the batch is finished when asked to exit then.
async fn watch(
    store: &Store,
    queue: &Queue,
    queue_name: &str,
    batch: Option<BatchId>,
    exit_when_done: bool,
) -> anyhow::Result<()> {
    let multi = MultiProgress::new();
    let fleet = multi.add(ProgressBar::new_spinner());
    fleet.set_style(ProgressStyle::with_template("{spinner} {msg}")?);
    let bar = batch.map(|_| {
        let bar = multi.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("##-"),
        );
        bar
    });
    let mut reported = false;
    loop {
        if let Ok(s) = abridge_control::stats(store, queue, queue_name).await {
            fleet.set_message(format!(
                "{} workers · ready {} · retrying {} · in hand {} · Ctrl-C to stop",
                s.workers.len(),
                s.depth.high + s.depth.normal + s.depth.low,
                s.delayed,
                s.leased
            ));
        }
        fleet.tick();
        if let (Some(id), Some(bar)) = (batch, &bar)
            && let Ok(b) = abridge_control::status(store, id).await
        {
            let c = b.counts;
            bar.set_length(u64::try_from(b.total).unwrap_or(0));
            bar.set_position(u64::try_from(c.terminal()).unwrap_or(0));
            bar.set_message(format!(
                "{} · {} succeeded, {} failed, {} running",
                b.status, c.succeeded, c.failed, c.running
            ));
            if b.status.is_finished() && !reported {
                reported = true;
                multi.suspend(|| {
                    eprintln!(
                        "batch {id} {}: {} succeeded, {} failed, {} cancelled; see `abridge status {id}`",
                        b.status, c.succeeded, c.failed, c.cancelled
                    )
                });
                if exit_when_done {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn stop_workers(workers: &mut [Child], grace: Duration) {
    for w in workers.iter() {
        let _ = kill(Pid::from_raw(w.id() as i32), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    for w in workers.iter_mut() {
        loop {
            if let Ok(Some(_)) = w.try_wait() {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = w.kill();
                let _ = w.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
