//! `abridge top`: the fleet at a glance in the terminal, redrawn every `--interval` seconds
//! until Ctrl-C; one screen and exit with `--once` or when standard output is not a terminal.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use abridge_control::watch::{FleetWatch, Overview};
use abridge_core::Settings;

use crate::cli::TopArgs;
use crate::context;

pub async fn run(settings: &Settings, args: TopArgs) -> anyhow::Result<ExitCode> {
    let store = context::store(settings).await?;
    let queue = context::queue(settings)?;
    let mut watch = FleetWatch::new(store, queue, &settings.queue);
    let live = !args.once && std::io::stdout().is_terminal();
    let interval = Duration::from_secs_f64(args.interval.clamp(0.2, 3600.0));
    let mut stop = std::pin::pin!(super::stop_signal());
    loop {
        let read = watch.read(i64::from(args.batches)).await;
        let now = chrono::Utc::now();
        if !live {
            print!("{}", render(&read?, &settings.queue, now));
            return Ok(ExitCode::SUCCESS);
        }
        let screen = match read {
            Ok(overview) => render(&overview, &settings.queue, now),
            // Keep watching through an outage: say what is wrong and try again.
            Err(e) => format!(
                "abridge top · queue {} · {}\n\nerror: {e}\n",
                settings.queue,
                now.format("%H:%M:%S UTC")
            ),
        };
        // Home, clear the screen, draw.
        print!("\x1b[H\x1b[2J{screen}");
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// One screen of text.
pub fn render(o: &Overview, queue: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let s = &o.stats;
    let d = &s.depth;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "abridge top · queue {queue} · {}",
        now.format("%H:%M:%S UTC")
    );
    if let Some(since) = &s.paused_at {
        let _ = writeln!(
            out,
            "PAUSED since {since}: no item starts until `abridge resume`"
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "ready       {:>8}   high {}, normal {}, low {}",
        d.high + d.normal + d.low,
        d.high,
        d.normal,
        d.low
    );
    let _ = writeln!(
        out,
        "delayed     {:>8}   leased {}   failed {} (in unfinished batches)",
        s.delayed, s.leased, s.failed
    );
    let _ = writeln!(
        out,
        "throughput  {:>8.1}/s ({} finished in the last minute)",
        o.finished_last_minute as f64 / 60.0,
        o.finished_last_minute
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "workers: {} alive", s.workers.len());
    if !s.workers.is_empty() {
        let _ = writeln!(
            out,
            "  {:<36}  {:<20} {:>7}  {:>9}  {:>9}",
            "worker", "host", "pid", "heartbeat", "in hand"
        );
        for w in &s.workers {
            let _ = writeln!(
                out,
                "  {:<36}  {:<20} {:>7}  {:>8.1}s  {:>9}",
                w.id.to_string(),
                truncate(&w.host, 20),
                w.pid,
                w.heartbeat_age_s,
                format!("{}/{}", w.items_in_hand, w.concurrency)
            );
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "batches (newest {}):", o.batches.len());
    if !o.batches.is_empty() {
        let _ = writeln!(
            out,
            "  {:<36}  {:<14} {:<10} {:<28} {:>15}  {:>7}",
            "batch", "name", "status", "progress", "done / total", "failed"
        );
    }
    for b in &o.batches {
        let c = &b.counts;
        let total = b.batch.total.max(1);
        let done = c.terminal();
        let _ = writeln!(
            out,
            "  {:<36}  {:<14} {:<10} {} {:>4}% {:>15}  {:>7}",
            b.batch.id.to_string(),
            truncate(b.batch.name.as_deref().unwrap_or("-"), 14),
            b.batch.status.to_string(),
            bar(done, total, 20),
            done * 100 / total,
            format!("{done} / {}", b.batch.total),
            c.failed
        );
    }
    out
}

/// `[#####·····]`, `width` cells filled in proportion to `done / total`.
fn bar(done: i64, total: i64, width: usize) -> String {
    let filled = usize::try_from(done.clamp(0, total) * width as i64 / total.max(1)).unwrap_or(0);
    format!("[{}{}]", "#".repeat(filled), "·".repeat(width - filled))
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_proportion() {
        assert_eq!(bar(0, 10, 10), "[··········]");
        assert_eq!(bar(5, 10, 10), "[#####·····]");
        assert_eq!(bar(10, 10, 10), "[##########]");
        assert_eq!(bar(12, 10, 4), "[####]");
    }

    #[test]
    fn long_names_are_cut() {
        assert_eq!(truncate("a-very-long-host-name", 8), "a-very-…");
        assert_eq!(truncate("short", 8), "short");
    }
}
