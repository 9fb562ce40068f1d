//! `GET /v1/batches/{id}/export`: a ZIP of the batch, streamed as it is written.
//!
//! - `summaries/NNNN-title.md`: one markdown file per succeeded item, named by its 1-based
//!   position (zero-padded) and its title (or video id).
//! - `index.csv`: every item, in input order, with its status, error and summary file.
//! - `batch.json`: the batch's status and every item (the same facts as `index.csv`).
//!
//! A writer task pages through the items (a few hundred rows at a time, three passes: one per
//! part) and writes deflated entries into a bounded pipe that the response body reads, so a
//! 10,000-item batch never sits in memory and a slow client slows the writer down. A failure
//! mid-way aborts the response (the client sees a truncated download, never a "complete"
//! archive with missing files). Items are read as they are at each page: for a finished batch
//! that is one consistent picture.

use std::io;

use abridge_core::{BatchId, ItemStatus};
use abridge_store::batch_api::IndexRow;
use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipDateTime, ZipEntryBuilder};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{AsyncWriteExt, StreamExt};
use tokio::io::DuplexStream;
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
    let task = tokio::spawn(write_zip(state, caller, id, view, writer));
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

async fn write_zip(
    state: ApiState,
    caller: Caller,
    id: BatchId,
    view: BatchStatusView,
    writer: DuplexStream,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let now = ZipDateTime::from_chrono(&chrono::Utc::now());
    let entry = |name: String| {
        ZipEntryBuilder::new(name.into(), Compression::Deflate)
            .last_modification_date(now)
            .unix_permissions(0o644)
    };
    let mut zip = ZipFileWriter::with_tokio(writer);
    let width = digits(view.total);

    // 1. One markdown file per succeeded item.
    let mut from = 0;
    loop {
        let page = state
            .store
            .items_of(id, Some(ItemStatus::Succeeded), from, PAGE)
            .await
            .context("read summaries")?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for item in &page {
            let title = item.title.as_deref().unwrap_or(&item.video_id);
            let text = format!(
                "# {title}\n\n<{}>\n\n{}\n",
                item.url,
                item.summary.as_deref().unwrap_or("").trim_end()
            );
            zip.write_entry_whole(
                entry(summary_file(
                    item.position,
                    width,
                    item.title.as_deref(),
                    &item.video_id,
                )),
                text.as_bytes(),
            )
            .await
            .context("write summary entry")?;
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }

    // 2. index.csv, streamed.
    {
        let mut csv = zip
            .write_entry_stream(entry("index.csv".into()))
            .await
            .context("start index.csv")?;
        csv.write_all(
            b"position,video_id,url,title,status,attempts,error_kind,error_message,finished_at,file\n",
        )
        .await?;
        let mut rows = Rows::new(&state, id);
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
                    shown_error(&caller, r.error_kind.as_deref(), r.error_message.clone())
                        .unwrap_or_default(),
                    r.finished_at.as_ref().map(rfc3339).unwrap_or_default(),
                    file_of(r, width),
                ];
                let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                text.push_str(&line.join(","));
                text.push('\n');
            }
            csv.write_all(text.as_bytes()).await?;
        }
        csv.close().await.context("finish index.csv")?;
    }

    // 3. batch.json, streamed: {"batch": {...}, "items": [...]}.
    {
        let mut json = zip
            .write_entry_stream(entry("batch.json".into()))
            .await
            .context("start batch.json")?;
        json.write_all(b"{\"batch\":").await?;
        json.write_all(&serde_json::to_vec(&view)?).await?;
        json.write_all(b",\"items\":[").await?;
        let mut first = true;
        let mut rows = Rows::new(&state, id);
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
                        "error_message": shown_error(&caller, r.error_kind.as_deref(), r.error_message.clone()),
                        "finished_at": r.finished_at.as_ref().map(rfc3339),
                        "file": (r.status == ItemStatus::Succeeded).then(|| file_of(r, width)),
                    }),
                )?;
            }
            json.write_all(&text).await?;
        }
        json.write_all(b"]}\n").await?;
        json.close().await.context("finish batch.json")?;
    }
    let mut inner = zip.close().await.context("finish archive")?;
    inner.close().await?;
    Ok(())
}

/// Pages of a batch's index rows, in input order.
struct Rows<'a> {
    state: &'a ApiState,
    id: BatchId,
    from: i32,
    done: bool,
}

impl<'a> Rows<'a> {
    fn new(state: &'a ApiState, id: BatchId) -> Self {
        Self {
            state,
            id,
            from: 0,
            done: false,
        }
    }

    async fn next(&mut self) -> anyhow::Result<Option<Vec<IndexRow>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .state
            .store
            .index_rows(self.id, self.from, PAGE)
            .await?;
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

/// `summaries/0007-Some-Title.md`: the 1-based position, then a file-name-safe title.
pub fn summary_file(position: i32, width: usize, title: Option<&str>, video_id: &str) -> String {
    let mut slug = String::new();
    for c in title.unwrap_or(video_id).chars() {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.chars().count() >= 60 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { video_id } else { slug };
    format!("summaries/{:0width$}-{slug}.md", i64::from(position) + 1)
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
