//! `GET /v1/batches/{id}/export`: a ZIP of the batch, streamed as it is written.
//!
//! - `summaries/NNNN-title.md`: one markdown file per succeeded item, named by its 1-based
//!   position (zero-padded) and its title (or video id).
//! - `index.csv`: every item, in input order, with its status, error and summary file.
//! - `batch.json`: the batch's status and every item (the same facts as `index.csv`).
//!
//! A reader task pages through the items (a few hundred rows at a time, three passes: one per
//! file kind) and hands the files over as [`Part`]s on a bounded channel; a writer makes them
//! deflated entries in a bounded pipe that the response body reads, so a 10,000-item batch
//! never sits in memory and a slow client slows the reader down. The same parts make the
//! folder `abridge export --out` and `abridge up` write ([`write_dir`]). A failure
//! mid-way aborts the response (the client sees a truncated download, never a "complete"
//! archive with missing files). Items are read as they are at each page: for a finished batch
//! that is one consistent picture.

use std::io;
use std::path::{Path, PathBuf};

use abridge_core::{BatchId, ItemStatus};
use abridge_store::IndexRow;
use abridge_store::Store;
use anyhow::Context as _;
use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTime, ZipEntryBuilder};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{AsyncWriteExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::io::ReaderStream;

use crate::ApiState;
use crate::auth::Caller;
use crate::batches::{owned_batch, status_view};
use crate::error::ApiError;
use crate::params::BatchPath;
use crate::views::{BatchStatusView, rfc3339, shown_error};

/// Rows read per query.
const PAGE: i64 = 250;
/// Bytes buffered between the writer task and the response body.
const PIPE_BYTES: usize = 64 * 1024;

/// The archive's bytes, for the OpenAPI document: a binary string (`contentMediaType`).
pub struct ZipArchive;

impl utoipa::PartialSchema for ZipArchive {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .content_media_type("application/zip")
            .into()
    }
}

impl utoipa::ToSchema for ZipArchive {}

#[utoipa::path(
    get, path = "/v1/batches/{id}/export", tag = "batches",
    params(BatchPath),
    responses(
        (status = 200, description = "A ZIP: summaries/NNNN-title.md per succeeded item, index.csv and batch.json listing every item with its status and error", content_type = "application/zip", body = ZipArchive),
    ),
    security(("bearer" = []))
)]
pub async fn export_batch(
    State(state): State<ApiState>,
    caller: Caller,
    id: BatchPath,
) -> Result<Response, ApiError> {
    let batch = owned_batch(&state, &caller, id).await?;
    let view = status_view(&state, &batch).await?;
    let (writer, reader) = tokio::io::duplex(PIPE_BYTES);
    let id = batch.id;
    let parts = parts(state.store.clone(), view, caller.is_operator());
    let task = tokio::spawn(write_zip(parts, writer));
    // After the archive's last byte, the writer's result decides whether the body ends
    // cleanly or with an error (which aborts the response).
    let outcome = futures::stream::once(async move {
        match task.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::warn!(batch = %id, error = %e, "export failed mid-way; aborting the download");
                Some(Err(io::Error::other(e)))
            }
            Err(e) => Some(Err(io::Error::other(e.to_string()))),
        }
    })
    .filter_map(futures::future::ready);
    let body = Body::from_stream(ReaderStream::new(reader).chain(outcome));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"batch-{id}.zip\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// One step of writing a batch's results: a whole file, or a file written in pieces (opened,
/// then data, then closed). The same steps make the ZIP and the folder, so the two hold the
/// same files.
#[derive(Debug)]
pub enum Part {
    File {
        name: String,
        bytes: Vec<u8>,
    },
    Open(String),
    Data(Vec<u8>),
    Close,
    /// The last part: without it, the files are not all there (the reader failed or died).
    End,
}

/// Parts buffered between the reader of the rows and the writer of the files.
const PARTS_BUFFERED: usize = 8;

/// The parts of `view`'s batch, read page by page by a task of their own. `operator` decides
/// which error messages are written (see [`shown_error`]). An error ends the parts.
pub fn parts(
    store: Store,
    view: BatchStatusView,
    operator: bool,
) -> mpsc::Receiver<anyhow::Result<Part>> {
    let (tx, rx) = mpsc::channel(PARTS_BUFFERED);
    tokio::spawn(async move {
        let failed = tx.clone();
        if let Err(e) = send_parts(&store, view, operator, tx).await {
            let _ = failed.send(Err(e)).await;
        }
    });
    rx
}

/// Sends each part; stops early (without an error) when the writer went away.
async fn send_parts(
    store: &Store,
    view: BatchStatusView,
    operator: bool,
    tx: mpsc::Sender<anyhow::Result<Part>>,
) -> anyhow::Result<()> {
    let send = |part: Part| {
        let tx = tx.clone();
        async move { tx.send(Ok(part)).await.is_ok() }
    };
    let id = view.id;
    let width = digits(view.total);

    // 1. One markdown file per succeeded item.
    let mut from = 0;
    loop {
        let page = store
            .items_of(id, Some(ItemStatus::Succeeded), from, PAGE)
            .await
            .context("read summaries")?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for item in &page {
            let text = summary_markdown(
                item.title.as_deref(),
                &item.video_id,
                &item.url,
                item.summary.as_deref(),
            );
            let name = summary_file(item.position, width, item.title.as_deref(), &item.video_id);
            if !send(Part::File {
                name,
                bytes: text.into_bytes(),
            })
            .await
            {
                return Ok(());
            }
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }

    // 2. index.csv, a page at a time.
    if !send(Part::Open("index.csv".into())).await
        || !send(Part::Data(
            b"position,video_id,url,title,status,attempts,error_kind,error_message,finished_at,file\n"
                .to_vec(),
        ))
        .await
    {
        return Ok(());
    }
    let mut rows = Rows::new(store, id);
    while let Some(page) = rows.next().await? {
        let mut text = String::new();
        for r in &page {
            let fields = [
                r.position.to_string(),
                r.video_id.clone(),
                r.url.clone(),
                r.title.clone().unwrap_or_default(),
                r.status.to_string(),
                r.attempts.to_string(),
                r.error_kind.clone().unwrap_or_default(),
                shown_error(operator, r.error_kind.as_deref(), r.error_message.clone())
                    .unwrap_or_default(),
                r.finished_at.as_ref().map(rfc3339).unwrap_or_default(),
                file_of(r, width),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            text.push_str(&line.join(","));
            text.push('\n');
        }
        if !send(Part::Data(text.into_bytes())).await {
            return Ok(());
        }
    }
    if !send(Part::Close).await {
        return Ok(());
    }

    // 3. batch.json, a page at a time: {"batch": {...}, "items": [...]}.
    let mut head = b"{\"batch\":".to_vec();
    head.extend(serde_json::to_vec(&view)?);
    head.extend(b",\"items\":[");
    if !send(Part::Open("batch.json".into())).await || !send(Part::Data(head)).await {
        return Ok(());
    }
    let mut first = true;
    let mut rows = Rows::new(store, id);
    while let Some(page) = rows.next().await? {
        let mut text = Vec::new();
        for r in &page {
            if !first {
                text.push(b',');
            }
            first = false;
            serde_json::to_writer(
                &mut text,
                &serde_json::json!({
                    "position": r.position,
                    "video_id": r.video_id,
                    "url": r.url,
                    "title": r.title,
                    "status": r.status,
                    "attempts": r.attempts,
                    "error_kind": r.error_kind,
                    "error_message": shown_error(operator, r.error_kind.as_deref(), r.error_message.clone()),
                    "finished_at": r.finished_at.as_ref().map(rfc3339),
                    "file": (r.status == ItemStatus::Succeeded).then(|| file_of(r, width)),
                }),
            )?;
        }
        if !send(Part::Data(text)).await {
            return Ok(());
        }
    }
    let _ = send(Part::Data(b"]}\n".to_vec())).await
        && send(Part::Close).await
        && send(Part::End).await;
    Ok(())
}

/// Writes the parts as a ZIP (deflated entries) into `writer`.
pub async fn write_zip<W>(
    mut parts: mpsc::Receiver<anyhow::Result<Part>>,
    writer: W,
) -> anyhow::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let now = ZipDateTime::from_chrono(&chrono::Utc::now());
    let entry = |name: String| {
        ZipEntryBuilder::new(name.into(), Compression::Deflate)
            .last_modification_date(now)
            .unix_permissions(0o644)
    };
    let mut zip = ZipFileWriter::with_tokio(writer);
    loop {
        let Some(part) = parts.recv().await else {
            anyhow::bail!("the batch's files ended early");
        };
        match part? {
            Part::End => break,
            Part::File { name, bytes } => zip
                .write_entry_whole(entry(name), &bytes)
                .await
                .context("write a summary")?,
            Part::Open(name) => {
                let mut file = zip
                    .write_entry_stream(entry(name.clone()))
                    .await
                    .with_context(|| format!("start {name}"))?;
                loop {
                    match parts.recv().await.transpose()? {
                        Some(Part::Data(bytes)) => file.write_all(&bytes).await?,
                        Some(Part::Close) => break,
                        other => anyhow::bail!("{name}: the parts ended early ({other:?})"),
                    }
                }
                file.close()
                    .await
                    .with_context(|| format!("finish {name}"))?;
            }
            other => anyhow::bail!("a piece outside a file: {other:?}"),
        }
    }
    let mut inner = zip.close().await.context("finish archive")?;
    inner.close().await?;
    Ok(())
}

/// Writes the parts as files under `dir` (which must exist), by their relative names.
pub async fn write_dir(
    mut parts: mpsc::Receiver<anyhow::Result<Part>>,
    dir: &Path,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut open: Option<(PathBuf, tokio::fs::File)> = None;
    loop {
        let Some(part) = parts.recv().await else {
            anyhow::bail!("the batch's files ended early");
        };
        match (part?, open.as_mut()) {
            (Part::End, None) => return Ok(()),
            (Part::File { name, bytes }, None) => {
                let path = inside(dir, &name)?;
                tokio::fs::write(&path, bytes)
                    .await
                    .with_context(|| format!("write {}", path.display()))?;
            }
            (Part::Open(name), None) => {
                let path = inside(dir, &name)?;
                let file = tokio::fs::File::create(&path)
                    .await
                    .with_context(|| format!("create {}", path.display()))?;
                open = Some((path, file));
            }
            (Part::Data(bytes), Some((path, file))) => file
                .write_all(&bytes)
                .await
                .with_context(|| format!("write {}", path.display()))?,
            (Part::Close, Some((path, file))) => {
                file.flush()
                    .await
                    .with_context(|| format!("write {}", path.display()))?;
                open = None;
            }
            (other, _) => anyhow::bail!("a piece out of order: {other:?}"),
        }
    }
}

/// Unpacks a ZIP of this module's making (`GET /v1/batches/{id}/export`) into `dir`: the same
/// files a local export writes. A name that would leave `dir` is an error.
pub async fn unzip(bytes: Vec<u8>, dir: &Path) -> anyhow::Result<()> {
    let zip = async_zip::base::read::mem::ZipFileReader::new(bytes)
        .await
        .context("read the archive")?;
    for i in 0..zip.file().entries().len() {
        let name = zip.file().entries()[i]
            .filename()
            .as_str()
            .context("an entry's name is not UTF-8")?
            .to_owned();
        let path = inside(dir, &name)?;
        let mut reader = zip
            .reader_with_entry(i)
            .await
            .with_context(|| format!("read {name}"))?;
        let mut bytes = Vec::new();
        reader
            .read_to_end_checked(&mut bytes)
            .await
            .with_context(|| format!("read {name}"))?;
        tokio::fs::write(&path, bytes)
            .await
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// `dir/name`, its folder made, for a relative name of plain components only.
pub fn inside(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let relative = Path::new(name);
    anyhow::ensure!(
        !name.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
        "{name:?} is not a plain relative file name"
    );
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    Ok(path)
}

/// Pages of a batch's index rows, in input order.
struct Rows<'a> {
    store: &'a Store,
    id: BatchId,
    from: i32,
    done: bool,
}

impl<'a> Rows<'a> {
    fn new(store: &'a Store, id: BatchId) -> Self {
        Self {
            store,
            id,
            from: 0,
            done: false,
        }
    }

    async fn next(&mut self) -> anyhow::Result<Option<Vec<IndexRow>>> {
        if self.done {
            return Ok(None);
        }
        let page = self.store.index_rows(self.id, self.from, PAGE).await?;
        match page.last() {
            None => Ok(None),
            Some(last) => {
                self.from = last.position + 1;
                self.done = (page.len() as i64) < PAGE;
                Ok(Some(page))
            }
        }
    }
}

fn file_of(r: &IndexRow, width: usize) -> String {
    if r.status == ItemStatus::Succeeded {
        summary_file(r.position, width, r.title.as_deref(), &r.video_id)
    } else {
        String::new()
    }
}

/// Digits of the largest position number, at least 4.
fn digits(total: i64) -> usize {
    total.max(1).to_string().len().max(4)
}

/// A summary file's text: the title (or video id) as its heading, the video's link, the
/// summary. A summary that opens with its own heading keeps it, with the link beneath.
pub fn summary_markdown(
    title: Option<&str>,
    video_id: &str,
    url: &str,
    summary: Option<&str>,
) -> String {
    let summary = summary.unwrap_or("").trim_end();
    let (heading, body) = match summary.strip_prefix("# ") {
        Some(rest) => {
            let (line, body) = rest.split_once('\n').unwrap_or((rest, ""));
            (line.trim_end().to_owned(), body.trim_start_matches('\n'))
        }
        None => (title.unwrap_or(video_id).to_owned(), summary),
    };
    format!("# {heading}\n\n<{url}>\n\n{body}\n")
}

/// `summaries/0007-Some-Title.md`: the 1-based position, then a file-name-safe title.
pub fn summary_file(position: i32, width: usize, title: Option<&str>, video_id: &str) -> String {
    let slug = slug(title.unwrap_or(video_id), 60);
    let slug = if slug.is_empty() { video_id } else { &slug };
    format!("summaries/{:0width$}-{slug}.md", i64::from(position) + 1)
}

/// `text` as a file name: letters and digits, runs of anything else made one `-`, at most
/// `max` characters; empty when `text` holds no letter or digit.
pub fn slug(text: &str, max: usize) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.chars().count() >= max {
            break;
        }
    }
    slug.trim_end_matches('-').to_owned()
}

/// A CSV field, quoted when it holds a comma, quote or line break (RFC 4180). A field that a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
/// return) gets a leading `'`, as OWASP advises: titles and errors are anyone's text.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_positioned_and_safe() {
        assert_eq!(
            summary_file(6, 4, Some("Hello, World! / Part 2"), "aaaaaaaaaaa"),
            "summaries/0007-Hello-World-Part-2.md"
        );
        assert_eq!(
            summary_file(0, 5, Some("../../etc"), "aaaaaaaaaaa"),
            "summaries/00001-etc.md"
        );
        assert_eq!(
            summary_file(9, 4, None, "dQw4w9WgXcQ"),
            "summaries/0010-dQw4w9WgXcQ.md"
        );
        assert_eq!(
            summary_file(0, 4, Some("???"), "abc_def-123"),
            "summaries/0001-abc_def-123.md"
        );
    }

    #[test]
    fn a_summary_file_has_one_heading_and_the_link_beneath_it() {
        let url = "https://www.youtube.com/watch?v=aaaaaaaaaaa";
        assert_eq!(
            summary_markdown(Some("T"), "aaaaaaaaaaa", url, Some("# T\n\n**TL;DR:** x\n")),
            format!("# T\n\n<{url}>\n\n**TL;DR:** x\n")
        );
        assert_eq!(
            summary_markdown(None, "aaaaaaaaaaa", url, Some("**TL;DR:** x")),
            format!("# aaaaaaaaaaa\n\n<{url}>\n\n**TL;DR:** x\n")
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\n"), "\"say \"\"hi\"\"\n\"");
    }

    #[test]
    fn csv_fields_that_a_spreadsheet_would_run_are_defused() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://evil\")"),
            "\"'=HYPERLINK(\"\"http://evil\"\")\""
        );
        assert_eq!(csv_field("+1+1"), "'+1+1");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("a=b"), "a=b");
    }
}
