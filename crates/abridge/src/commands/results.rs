//! `abridge items`, `abridge show` and `abridge export`, and the results folder that `up` and
//! `enqueue --wait` write when their batch finishes: a batch's results read from the
//! databases, or through the API with `--api`.
//!
//! Positions count from 1 here, as the summary files number them; the API's (and `--json`'s)
//! `position` counts from 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use abridge_api::client::ApiClient;
use abridge_api::export;
use abridge_api::views::{BatchStatusView, ItemStatusView};
use abridge_core::{BatchId, BatchStatus, ItemStatus, Settings};
use abridge_store::Store;
use anyhow::Context;

use crate::cli::{ExportArgs, ItemsArgs, RemoteArgs, ShowArgs};
use crate::context;

/// Where a batch's results are read: the databases (the operator's view: full error
/// messages), or the API (what the token may see).
pub enum Results {
    Local(Store),
    Remote(ApiClient),
}

/// Items read per page.
const PAGE: i64 = 500;
/// Rows of the table printed when a batch finishes; the rest are in `index.csv`.
const TABLE_ROWS: usize = 20;
/// Where results go when no folder is given, under the working directory.
const RESULTS_DIR: &str = "abridge-summaries";

impl Results {
    pub async fn open(settings: &Settings, remote: &RemoteArgs) -> anyhow::Result<Self> {
        Ok(if remote.api.is_some() {
            Self::Remote(crate::context::api_client(remote)?)
        } else {
            Self::Local(context::store(settings).await?)
        })
    }

    pub async fn batch(&self, id: BatchId) -> anyhow::Result<BatchStatusView> {
        match self {
            Self::Local(store) => {
                let b = abridge_control::status(store, id).await?;
                Ok(BatchStatusView::new(&b, None))
            }
            Self::Remote(client) => client
                .batch(id)
                .await
                .with_context(|| format!("read batch {id} through the api")),
        }
    }

    /// One page of items from 0-based position `from`, and where the next page starts.
    async fn items(
        &self,
        id: BatchId,
        status: Option<ItemStatus>,
        from: i32,
    ) -> anyhow::Result<(Vec<ItemStatusView>, Option<i32>)> {
        match self {
            Self::Local(store) => {
                let mut rows = store.items_of(id, status, from, PAGE + 1).await?;
                let next = if rows.len() as i64 > PAGE {
                    rows.pop().map(|r| r.position)
                } else {
                    None
                };
                let items = rows
                    .into_iter()
                    .map(|i| ItemStatusView::new(i, true))
                    .collect();
                Ok((items, next))
            }
            Self::Remote(client) => {
                let page = client
                    .items(id, status, from, PAGE)
                    .await
                    .with_context(|| format!("read the items of batch {id} through the api"))?;
                let next = page.next_cursor.and_then(|c| c.parse().ok());
                Ok((page.items, next))
            }
        }
    }

    /// Every item (of `status`), in input order.
    async fn all_items(
        &self,
        id: BatchId,
        status: Option<ItemStatus>,
    ) -> anyhow::Result<Vec<ItemStatusView>> {
        let mut all = Vec::new();
        let mut from = 0;
        loop {
            let (page, next) = self.items(id, status, from).await?;
            all.extend(page);
            match next {
                Some(n) => from = n,
                None => return Ok(all),
            }
        }
    }

    /// Writes the batch's files into `dir` (which exists and is empty).
    async fn write_dir(&self, view: &BatchStatusView, dir: &Path) -> anyhow::Result<()> {
        match self {
            Self::Local(store) => {
                let parts = export::parts(store.clone(), view.clone(), true);
                export::write_dir(parts, dir).await
            }
            Self::Remote(client) => export::unzip(download(client, view.id).await?, dir).await,
        }
    }

    async fn write_zip(&self, view: &BatchStatusView, file: &Path) -> anyhow::Result<()> {
        match self {
            Self::Local(store) => {
                let out = tokio::fs::File::create(file)
                    .await
                    .with_context(|| format!("create {}", file.display()))?;
                let parts = export::parts(store.clone(), view.clone(), true);
                export::write_zip(parts, out).await
            }
            Self::Remote(client) => tokio::fs::write(file, download(client, view.id).await?)
                .await
                .with_context(|| format!("write {}", file.display())),
        }
    }
}

/// The batch's ZIP, through the API.
async fn download(client: &ApiClient, id: BatchId) -> anyhow::Result<Vec<u8>> {
    client
        .export(id)
        .await
        .with_context(|| format!("download batch {id} through the api"))
}

pub async fn items(settings: &Settings, args: ItemsArgs) -> anyhow::Result<ExitCode> {
    let id = context::batch_id(&args.batch)?;
    let results = Results::open(settings, &args.remote).await?;
    // An unknown batch is an error, not an empty list.
    results.batch(id).await?;
    let items = results.all_items(id, args.status).await?;
    if args.json {
        for item in &items {
            println!("{}", serde_json::to_string(item)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>5}  {:<11}  {:<9}  {:>8}  {:<22}  error",
        "#", "video", "status", "attempts", "error kind"
    );
    for i in &items {
        println!(
            "{:>5}  {:<11}  {:<9}  {:>8}  {:<22}  {}",
            i.position + 1,
            printable(&i.video_id),
            i.status,
            i.attempts,
            printable(i.error_kind.as_deref().unwrap_or("")),
            printable(i.error_message.as_deref().unwrap_or("")),
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show(settings: &Settings, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let id = context::batch_id(&args.batch)?;
    let results = Results::open(settings, &args.remote).await?;
    let batch = results.batch(id).await?;
    let position = i32::try_from(args.position - 1).context("position out of range")?;
    let (page, _) = results.items(id, None, position).await?;
    let Some(item) = page.into_iter().find(|i| i.position == position) else {
        anyhow::bail!(
            "batch {id} has no item {} (its items are 1 to {})",
            args.position,
            batch.total
        );
    };
    if item.status != ItemStatus::Succeeded {
        let error = match (&item.error_kind, &item.error_message) {
            (Some(kind), Some(message)) => format!(": {kind}: {}", printable(message)),
            (Some(kind), None) => format!(": {kind}"),
            _ => String::new(),
        };
        anyhow::bail!(
            "item {} of batch {id} ({}) has no summary: it is {}{error}",
            args.position,
            item.video_id,
            item.status
        );
    }
    let text = export::summary_markdown(
        item.title.as_deref(),
        &item.video_id,
        &item.url,
        item.summary.as_deref(),
    );
    print!("{}", printable_text(&text));
    Ok(ExitCode::SUCCESS)
}

pub async fn export(settings: &Settings, args: ExportArgs) -> anyhow::Result<ExitCode> {
    let id = context::batch_id(&args.batch)?;
    let results = Results::open(settings, &args.remote).await?;
    let batch = results.batch(id).await?;
    if !batch.status.is_finished() {
        eprintln!(
            "batch {id} is {}: the export holds the items finished so far",
            batch.status
        );
    }
    if let Some(file) = &args.zip {
        results.write_zip(&batch, file).await?;
        println!("{}", file.display());
    } else {
        let folder = write_folder(&results, &batch, args.out.as_deref()).await?;
        println!("{}", folder.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// When a batch that `up` or `enqueue --wait` followed has finished: writes its results
/// folder, prints where it is and a short table of what it holds, and gives the exit code
/// (0: every item succeeded; 1: some failed; 2: cancelled).
pub async fn hand_over(
    results: &Results,
    batch: &BatchStatusView,
    out: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let folder = write_folder(results, batch, out).await?;
    let items = results.all_items(batch.id, None).await?;
    let c = &batch.counts;
    eprintln!(
        "batch {} {}: {} succeeded, {} failed, {} cancelled",
        batch.id, batch.status, c.succeeded, c.failed, c.cancelled
    );
    eprintln!("results: {}", folder.display());
    eprintln!("{:>5}  {:<9}  {:<22}  title", "#", "status", "error kind");
    for i in items.iter().take(TABLE_ROWS) {
        eprintln!(
            "{:>5}  {:<9}  {:<22}  {}",
            i.position + 1,
            i.status,
            printable(i.error_kind.as_deref().unwrap_or("")),
            printable(i.title.as_deref().unwrap_or(&i.video_id)),
        );
    }
    if items.len() > TABLE_ROWS {
        eprintln!(
            "  ... and {} more in {}",
            items.len() - TABLE_ROWS,
            folder.join("index.csv").display()
        );
    }
    Ok(exit_code(batch, &folder))
}

fn exit_code(batch: &BatchStatusView, folder: &Path) -> ExitCode {
    if batch.status == BatchStatus::Cancelled {
        eprintln!("batch {} was cancelled", batch.id);
        return ExitCode::from(2);
    }
    if batch.counts.failed > 0 {
        eprintln!(
            "{} of {} items failed: see `abridge items {} --status failed` or {}",
            batch.counts.failed,
            batch.total,
            batch.id,
            folder.join("index.csv").display()
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Writes the batch's files into `out`, or into `./abridge-summaries/<name or id>` (then
/// `<name>-<id prefix>` if that holds another batch), and returns the folder. The files are
/// written beside it and moved in whole; a folder that holds an earlier export of the same
/// batch and nothing else is replaced, and any other non-empty folder is left alone (an error
/// for `out`).
pub async fn write_folder(
    results: &Results,
    batch: &BatchStatusView,
    out: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let target = match out {
        Some(dir) => {
            anyhow::ensure!(
                free_for(dir, batch.id),
                "{} already holds other files; choose another folder",
                dir.display()
            );
            dir.to_path_buf()
        }
        None => {
            let base = Path::new(RESULTS_DIR);
            let name = batch
                .name
                .as_deref()
                .map(|n| export::slug(n, 80))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| batch.id.to_string());
            let short = batch.id.to_string()[..8].to_owned();
            [base.join(&name), base.join(format!("{name}-{short}"))]
                .into_iter()
                .find(|dir| free_for(dir, batch.id))
                .with_context(|| {
                    format!(
                        "{} and its -{short} variant hold other batches; pass a folder",
                        base.join(&name).display()
                    )
                })?
        }
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("create {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".abridge-export-")
        .tempdir_in(&parent)
        .with_context(|| format!("make a folder in {}", parent.display()))?;
    results.write_dir(batch, staging.path()).await?;
    // Looked at again now that the files are ready: the folder may have changed meanwhile.
    // The old export goes aside first, then the new one in (never half old, half new); the
    // old one is deleted (with `aside`) only once the new one is in place.
    let aside = if target.exists() {
        anyhow::ensure!(
            free_for(&target, batch.id),
            "{} now holds other files; the results are not written",
            target.display()
        );
        let aside = tempfile::Builder::new()
            .prefix(".abridge-replaced-")
            .tempdir_in(&parent)?;
        std::fs::rename(&target, aside.path().join("old"))
            .with_context(|| format!("replace {}", target.display()))?;
        Some(aside)
    } else {
        None
    };
    let staged = staging.keep();
    if let Err(e) = std::fs::rename(&staged, &target) {
        if let Some(aside) = &aside {
            let _ = std::fs::rename(aside.path().join("old"), &target);
        }
        return Err(e).with_context(|| format!("move into {}", target.display()));
    }
    drop(aside);
    Ok(target)
}

/// Whether `dir` may take `id`'s files: absent, empty, or an earlier export of `id` holding
/// nothing else (files a person added to it are never deleted).
fn free_for(dir: &Path, id: BatchId) -> bool {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return !dir.exists();
    };
    if entries.next().is_none() {
        return true;
    }
    let ours = std::fs::read(dir.join("batch.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|v| v["batch"]["id"] == id.to_string());
    ours && only_export_files(dir)
}

/// Whether `dir` holds only what an export writes: `batch.json`, `index.csv` and
/// `summaries/*.md`.
fn only_export_files(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|e| {
        let name = e.file_name();
        match name.to_str() {
            Some("batch.json" | "index.csv") => e.path().is_file(),
            Some("summaries") => std::fs::read_dir(e.path()).is_ok_and(|files| {
                files
                    .flatten()
                    .all(|f| f.path().is_file() && f.path().extension().is_some_and(|x| x == "md"))
            }),
            _ => false,
        }
    })
}

/// One line of hostile text made safe for a terminal: control characters (escape sequences,
/// line breaks) become `?`.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Like [`printable`], keeping line breaks and tabs.
fn printable_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '?'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_loses_its_escapes() {
        assert_eq!(printable("a\u{1b}[31mred\nb"), "a?[31mred?b");
        assert_eq!(printable_text("# t\n\n\u{7}x\ty"), "# t\n\n?x\ty");
    }
}
