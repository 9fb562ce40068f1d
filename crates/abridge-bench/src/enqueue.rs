//! Enqueue: one large batch through `abridge enqueue` (a real process: parsing, validation,
//! the Postgres transaction with COPY, and the Redis push).

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::burndown::round;
use crate::servers::{Servers, fresh_queue, video_lines};
use crate::{BenchOptions, Record};
use abridge_queue::ServerStats;

pub async fn run(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Vec<Record>> {
    let queue_name = fresh_queue("enqueue");
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), video_lines('e', opts.enqueue_items))?;
    let queue = servers.queue(&queue_name)?;
    let redis_before = queue.server_stats().await?;
    let started = Instant::now();
    let out = Command::new(&opts.exe)
        .args(["enqueue", "--json"])
        .arg(file.path())
        .env("ABRIDGE_DATABASE_URL", servers.database_url.expose())
        .env("ABRIDGE_REDIS_URL", servers.redis_url.expose())
        .env("ABRIDGE_REDIS_PREFIX", "abridge-bench")
        .env("ABRIDGE_QUEUE", &queue_name)
        .env("ABRIDGE_QUEUE_SHARDS", servers.queue_shards.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        out.status.success(),
        "abridge enqueue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let redis_after = queue.server_stats().await?;
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let accepted = reply["accepted"].as_u64().unwrap_or(0);
    anyhow::ensure!(
        accepted as usize == opts.enqueue_items,
        "enqueue accepted {accepted} items"
    );
    let cli = Record::new("enqueue").set("path", "cli");
    let cli = costs(
        cli,
        opts.enqueue_items,
        seconds,
        &redis_before,
        &redis_after,
    );
    Ok(vec![cli, through_api(opts, servers).await?])
}

/// The same batch through `POST /v1/batches` of an API served in this process (its batch
/// size limit raised to fit): JSON parsing, validation, the transaction and the Redis push.
async fn through_api(opts: &BenchOptions, servers: &Servers) -> anyhow::Result<Record> {
    let queue_name = fresh_queue("enqueue-api");
    let store = servers.store(8)?;
    let queue = servers.queue(&queue_name)?;
    let limit = (opts.enqueue_items + 1).to_string();
    let source = abridge_core::settings::SettingsSource::from_vars([
        ("ABRIDGE_API_MAX_ITEMS", limit.as_str()),
        ("ABRIDGE_API_MAX_BODY_BYTES", "1073741824"),
    ]);
    let settings = abridge_api::ApiSettings::from_source(&source)?;
    let mut core = abridge_core::Settings::from_source(&source)?;
    core.queue = queue_name.clone();
    let state = abridge_api::ApiState::new(store.clone(), queue.clone(), &core, settings);
    let made = abridge_api::auth::create_token(&store, Some("bench")).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(abridge_api::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    let urls: Vec<String> = (0..opts.enqueue_items)
        .map(|i| format!("https://youtu.be/a{i:010}"))
        .collect();
    let body = serde_json::json!({ "name": "bench", "urls": urls });
    let client = abridge_api::client::ApiClient::new(&base, &made.token)?;
    let redis_before = queue.server_stats().await?;
    let started = Instant::now();
    let created = client.create_batch(&body, None).await?;
    let seconds = started.elapsed().as_secs_f64();
    let redis_after = queue.server_stats().await?;
    let _ = stop.send(());
    let _ = server.await;
    anyhow::ensure!(
        created.accepted == opts.enqueue_items,
        "the API accepted {} items",
        created.accepted
    );
    let api = Record::new("enqueue-api").set("path", "api");
    Ok(costs(
        api,
        opts.enqueue_items,
        seconds,
        &redis_before,
        &redis_after,
    ))
}

/// A run's figures: items per second, and what each item cost Redis (commands and CPU of
/// the server process: the staged items are plain `ZADD`s, not scripts).
fn costs(
    record: Record,
    items: usize,
    seconds: f64,
    before: &ServerStats,
    after: &ServerStats,
) -> Record {
    let n = items as f64;
    record
        .set("items", items)
        .set("seconds", round(seconds, 3))
        .set("items_per_s", round(n / seconds, 0))
        .set(
            "redis_commands_per_item",
            round((after.calls - before.calls) as f64 / n, 4),
        )
        .set(
            "redis_cpu_usec_per_item",
            round((after.cpu_seconds - before.cpu_seconds) * 1e6 / n, 2),
        )
}
