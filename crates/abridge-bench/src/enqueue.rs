//! Enqueue: one large batch through `abridge enqueue` (a real process: parsing, validation,
//! the Postgres transaction with COPY, and the Redis push).

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::burndown::round;
use crate::fleet::{Servers, fresh_queue, video_lines};
use crate::{BenchOptions, Record};

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
    let n = opts.enqueue_items as f64;
    Ok(vec![
        Record::new("enqueue")
            .set("path", "cli")
            .set("items", opts.enqueue_items)
            .set("seconds", round(seconds, 3))
            .set("items_per_s", round(n / seconds, 0))
            .set(
                "redis_commands_per_item",
                round((redis_after.calls - redis_before.calls) as f64 / n, 4),
            )
            .set(
                "redis_script_usec_per_item",
                round(
                    (redis_after.script_usec - redis_before.script_usec) as f64 / n,
                    3,
                ),
            ),
    ])
}
