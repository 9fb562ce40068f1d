//! `abridge enqueue --api` and `abridge status --api`: the same commands through the producer
//! API, for producers with a token but no database credentials. Output matches the local
//! commands (rejections are reported by input line).

use std::process::ExitCode;
use std::time::Duration;

use abridge_api::client::{ApiClient, ClientError};
use abridge_api::views::{BatchStatusView, RejectedInput};
use abridge_core::BatchId;
use abridge_core::input::{BatchInput, RawItem, Rejected};
use anyhow::Context;

use crate::cli::{EnqueueArgs, StatusArgs};
use crate::context;

pub async fn enqueue(args: EnqueueArgs, text: &str) -> anyhow::Result<ExitCode> {
    let client = context::api_client(&args.remote)?;
    // Lines become `items` in order; each item remembers its line. Lines that are not valid
    // JSON objects are rejected here, exactly as the local command rejects them.
    let mut items = Vec::new();
    let mut lines = Vec::new();
    let mut local = BatchInput::default();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let raw = if trimmed.starts_with('{') {
            match serde_json::from_str::<RawItem>(trimmed) {
                Ok(raw) => raw,
                Err(_) => {
                    local.push_line(n + 1, trimmed);
                    continue;
                }
            }
        } else {
            RawItem {
                url: trimmed.to_owned(),
                ..RawItem::default()
            }
        };
        items.push(
            serde_json::json!({"url": raw.url, "title": raw.title, "transcript": raw.transcript}),
        );
        lines.push(n + 1);
    }
    let by_line = |r: &RejectedInput| Rejected {
        line: lines.get(r.index).copied().unwrap_or(0),
        input: r.input.clone(),
        reason: r.reason.clone(),
    };
    let mut body = serde_json::json!({"items": items, "priority": args.priority.as_str()});
    if let Some(name) = &args.name {
        body["name"] = serde_json::json!(name);
    }
    // The API reads the playlists and channels, within its own time limit.
    if args.lists.expand_lists {
        body["expand_lists"] = serde_json::json!(true);
    }
    if args.lists.max_per_list as usize != abridge_core::lists::DEFAULT_MAX_PER_LIST {
        body["max_per_list"] = serde_json::json!(args.lists.max_per_list);
    }
    let options = args.summary.options();
    if !options.is_empty() {
        body["summarizer"] = serde_json::to_value(&options)?;
    }
    let created = if items.is_empty() {
        Err(ClientError::Api {
            status: 422,
            code: "no_valid_input".into(),
            message: String::new(),
            details: None,
        })
    } else {
        client
            .create_batch(&body, args.idempotency_key.as_deref())
            .await
    };
    let created = match created {
        Ok(created) => created,
        Err(ClientError::Api { code, details, .. }) if code == "no_valid_input" => {
            let mut rejected = local.rejected;
            let remote: Vec<RejectedInput> = details
                .and_then(|d| serde_json::from_value(d["rejected"].clone()).ok())
                .unwrap_or_default();
            rejected.extend(remote.iter().map(by_line));
            rejected.sort_by_key(|r| r.line);
            return Err(super::report::nothing_enqueued(args.json, &rejected));
        }
        Err(e) => return Err(e).context("create the batch through the api"),
    };
    let mut rejected = local.rejected;
    rejected.extend(created.rejected.iter().map(by_line));
    rejected.sort_by_key(|r| r.line);
    super::report::report(
        args.json,
        &abridge_control::Enqueued {
            batch_id: created.id,
            accepted: created.accepted,
            duplicates: created.duplicates,
            rejected,
        },
    )?;
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let done = follow(&client, created.id, created.total as u64).await?;
    if args.json {
        println!("{}", serde_json::to_string(&done)?);
    }
    let results = super::results::Results::Remote(client);
    super::results::hand_over(&results, &done, args.out.as_deref()).await
}

/// Shows a progress bar fed by the batch's event stream until it finishes.
async fn follow(client: &ApiClient, id: BatchId, total: u64) -> anyhow::Result<BatchStatusView> {
    let bar = super::batch_bar(total);
    bar.enable_steady_tick(Duration::from_millis(200));
    let done = client
        .follow(id, |_, view| {
            let c = &view.counts;
            bar.set_length(view.total.max(0) as u64);
            bar.set_position((c.succeeded + c.failed + c.cancelled).max(0) as u64);
            bar.set_message(format!(
                "{} running, {} failed{}",
                c.running,
                c.failed,
                view.eta_seconds
                    .filter(|_| !view.status.is_finished())
                    .map(|s| format!(", about {s}s left"))
                    .unwrap_or_default()
            ));
        })
        .await
        .context("follow the batch's progress")?;
    bar.finish_and_clear();
    Ok(done)
}

pub async fn status(args: StatusArgs, id: BatchId) -> anyhow::Result<ExitCode> {
    let client = context::api_client(&args.remote)?;
    let b = client
        .batch(id)
        .await
        .with_context(|| format!("read batch {id} through the api"))?;
    if args.json {
        println!("{}", serde_json::to_string(&b)?);
    } else {
        print_status(&b);
    }
    Ok(ExitCode::SUCCESS)
}

/// `abridge status` for people, local or through the API.
pub(super) fn print_status(b: &BatchStatusView) {
    let c = &b.counts;
    println!(
        "batch {}{}  {}  priority {}",
        b.id,
        b.name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default(),
        b.status,
        b.priority
    );
    println!(
        "  {} items: {} queued, {} running, {} succeeded, {} failed, {} cancelled",
        b.total, c.queued, c.running, c.succeeded, c.failed, c.cancelled
    );
    println!(
        "  created {}  started {}  finished {}",
        b.created_at,
        b.started_at.as_deref().unwrap_or("-"),
        b.finished_at.as_deref().unwrap_or("-"),
    );
    println!(
        "  {:.1}% done{}",
        b.progress_percent,
        b.eta_seconds
            .filter(|_| !b.status.is_finished())
            .map(|s| format!(", about {s}s left"))
            .unwrap_or_default()
    );
    if let Some(line) = cost_line(&b.cost) {
        println!("  {line}");
    }
}

/// The batch's model cost, for a batch that has spent or set a limit.
fn cost_line(c: &abridge_api::views::CostView) -> Option<String> {
    if c.requests == 0 && c.max_cost_usd.is_none() {
        return None;
    }
    let mut line = format!(
        "cost ${:.4} ({} requests, {} tokens in, {} out)",
        c.spent_usd, c.requests, c.input_tokens, c.output_tokens
    );
    if let Some(rest) = c.estimate_rest_usd.filter(|r| *r > 0.0) {
        line += &format!(", about ${rest:.4} more to finish");
    }
    if let Some(max) = c.max_cost_usd {
        line += &format!(", limit ${max}");
    }
    if c.unpriced {
        line += ", and requests to a model without a price";
    }
    Some(line)
}
