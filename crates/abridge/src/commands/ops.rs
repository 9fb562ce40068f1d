//! The operator commands: `migrate`, `status`, `cancel`, `reap`, `prune`, `stats`.

use std::process::ExitCode;
use std::sync::Arc;

use abridge_core::Settings;
use abridge_queue::Queue;
use abridge_store::{BatchView, Store};
use abridge_worker::reconciler::{Suspects, reconcile_once};
use abridge_worker::{Worker, reaper};
use serde::Serialize;

use crate::cli::{BatchArg, JsonFlag, PauseArgs, PruneArgs, StatusArgs};
use crate::context::{self, Loaded};
use crate::processors;

pub async fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let url = settings.require_database_url()?;
    let store = Store::connect_lazy(url, 1)?;
    let applied = store.migrate().await?;
    if applied.is_empty() {
        println!("database {} is up to date", url.redacted_url());
    } else {
        for m in &applied {
            println!("applied {m}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `abridge status --json`: exactly these keys.
#[derive(Serialize)]
struct StatusJson<'a> {
    id: abridge_core::BatchId,
    name: &'a Option<String>,
    status: abridge_core::BatchStatus,
    priority: abridge_core::Priority,
    total: i64,
    counts: abridge_store::Counts,
    cost: abridge_api::views::CostView,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
}

pub async fn status(settings: &Settings, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let id = context::batch_id(&args.batch)?;
    if args.remote.api.is_some() {
        return super::remote::status(args, id).await;
    }
    let store = context::store(settings).await?;
    let b = abridge_control::status(&store, id).await?;
    if args.json {
        println!("{}", serde_json::to_string(&status_json(&b))?);
    } else {
        // The same layout as `abridge status --api` (no ETA: that needs the API's rate).
        super::remote::print_status(&abridge_api::views::BatchStatusView::new(&b, None));
    }
    Ok(ExitCode::SUCCESS)
}

fn status_json(b: &BatchView) -> StatusJson<'_> {
    StatusJson {
        id: b.id,
        name: &b.name,
        status: b.status,
        priority: b.priority,
        total: b.total,
        counts: b.counts,
        cost: abridge_api::views::CostView::new(b),
        created_at: rfc3339(&b.created_at),
        started_at: b.started_at.as_ref().map(rfc3339),
        finished_at: b.finished_at.as_ref().map(rfc3339),
    }
}

fn rfc3339(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub async fn cancel(settings: &Settings, args: BatchArg) -> anyhow::Result<ExitCode> {
    let id = context::batch_id(&args.batch)?;
    let store = context::store(settings).await?;
    let queue = context::queue(settings)?;
    let n = abridge_control::cancel(&store, &queue, id).await?;
    println!(
        "batch {id} cancelled ({n} unfinished item{} cancelled)",
        if n == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn reap(loaded: Loaded, args: JsonFlag) -> anyhow::Result<ExitCode> {
    let summarizer = loaded.summarizer()?;
    let settings = loaded.settings;
    let store = context::store(&settings).await?;
    let queue = context::queue(&settings)?;
    let worker = Worker {
        processor: processors::build(summarizer, &store, &queue)?,
        store,
        queue,
        settings: Arc::new(settings),
    };
    let reaped = reaper::reap_once(&worker).await?;
    let reconciled = reconcile_once(&worker, &mut Suspects::new()).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "reap": reaped, "reconcile": reconciled })
        );
    } else {
        println!(
            "expired leases: {} ({} items reclaimed)",
            reaped.expired_leases, reaped.reclaimed_expired
        );
        println!(
            "dead workers: {} ({} items reclaimed){}",
            reaped.dead_sessions.len(),
            reaped.reclaimed_from_dead,
            reaped
                .dead_sessions
                .iter()
                .map(|w| format!("\n  {w}"))
                .collect::<String>()
        );
        println!("items failed (out of attempts): {}", reaped.failed);
        println!("items requeued: {}", reaped.requeued);
        println!(
            "reconcile: {} queued items missing from Redis ({} requeued), {} batches completed",
            reconciled.drift, reconciled.requeued, reconciled.completed_batches
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn prune(settings: &Settings, args: PruneArgs) -> anyhow::Result<ExitCode> {
    use abridge_worker::pruner::{self, PruneOptions};
    let store = context::store(settings).await?;
    let mut options = PruneOptions::from_settings(&settings.retention);
    if let Some(age) = args.older_than {
        options.ages.batches = Some(age);
    }
    options.dry_run = args.dry_run;
    let holder = abridge_core::WorkerId::new();
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            super::stop_signal().await;
            stop.cancel();
        });
    }
    let mut told = false;
    let report = loop {
        if let Some(report) = pruner::prune_once(&store, &options, holder, None, &stop).await? {
            break report;
        }
        if !told {
            if let Some((worker, left)) = store
                .lease_holder(abridge_store::retention::PRUNE_TASK)
                .await?
            {
                eprintln!(
                    "another pruner is running (worker {worker}, lease for {left:.0}s more); waiting for it to end"
                );
            }
            told = true;
        }
        tokio::select! {
            _ = stop.cancelled() => anyhow::bail!("stopped while waiting for the running pruner"),
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    };
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["older_than_seconds"] = options.ages.batches.map(|d| d.as_secs()).into();
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    match options.ages.batches {
        Some(age) => println!(
            "finished batches older than {} (a tenant's own retention applies to its batches); {verb}:",
            describe_age(age)
        ),
        None => println!("finished batches are kept (but tenants' own retention); {verb}:"),
    }
    for kind in abridge_store::PruneKind::ALL {
        println!("  {:<20} {:>10}", kind.as_str(), report.counts.get(kind));
    }
    if !report.dry_run {
        println!(
            "{} statements, at most {} rows each, in {} ms{}",
            report.statements,
            report.largest_chunk,
            report.took_ms,
            if report.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_age(age: std::time::Duration) -> String {
    let s = age.as_secs();
    match s {
        _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

/// `abridge pause` / `abridge resume`.
pub async fn pause(settings: &Settings, args: PauseArgs, paused: bool) -> anyhow::Result<ExitCode> {
    let store = context::store(settings).await?;
    let name = args.queue.as_deref().unwrap_or(&settings.queue);
    let queue = Queue::connect(
        settings.require_redis_url()?,
        &settings.redis_prefix,
        name,
        1,
    )?
    .with_shards(settings.queue_shards);
    let state = if paused {
        abridge_control::pause(&store, &queue, name, "cli").await?
    } else {
        abridge_control::resume(&store, &queue, name).await?
    };
    if args.json {
        println!("{}", serde_json::to_string(&state)?);
    } else if let Some(since) = &state.paused_at {
        println!("queue {name} paused (since {since}): items in hand finish, no new item starts");
    } else {
        println!("queue {name} running");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn stats(settings: &Settings, args: JsonFlag) -> anyhow::Result<ExitCode> {
    let store = context::store(settings).await?;
    let queue = context::queue(settings)?;
    let s = abridge_control::stats(&store, &queue, &settings.queue).await?;
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("queue {}", s.queue);
    if let Some(since) = &s.paused_at {
        println!("  PAUSED since {since}: no item starts until `abridge resume`");
    }
    println!(
        "  ready:   high {}, normal {}, low {}",
        s.depth.high, s.depth.normal, s.depth.low
    );
    println!("  delayed retries: {}", s.delayed);
    println!("  leased:  {}", s.leased);
    println!("  failed (unfinished batches): {}", s.failed);
    println!("  live workers: {}", s.workers.len());
    for w in &s.workers {
        println!(
            "    {}  {} pid {}  heartbeat {:.1}s ago  {} / {} items in hand",
            w.id, w.host, w.pid, w.heartbeat_age_s, w.items_in_hand, w.concurrency
        );
    }
    Ok(ExitCode::SUCCESS)
}
