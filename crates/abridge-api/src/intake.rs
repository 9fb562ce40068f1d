//! What the dashboard's new-batch form asks before it creates a batch: which summarizer
//! options the caller may pick (`GET /v1/options`), and what a pasted list or an uploaded file
//! holds (`POST /v1/batches/check`), read by `abridge-core`'s `input` exactly as
//! `abridge enqueue` reads a file, so the form never validates with a copy of its own.

use abridge_core::Backend;
use abridge_core::input::BatchInput;
use abridge_core::lists::{DEFAULT_MAX_PER_LIST, ListOptions};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::batches::too_many_items;
use crate::error::ApiError;

/// `POST /v1/batches/check`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckInput {
    /// The list as `abridge enqueue` reads a file: one URL, bare id or JSON object
    /// (`{"url", "title"?, "transcript"?}`) per line, or a CSV file with a header row naming a
    /// `url` column (and optionally `title` and `transcript`).
    pub text: String,
    /// `lines` (the default) or `csv`.
    pub format: Option<InputFormat>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    #[default]
    Lines,
    Csv,
}

/// What the text holds: the videos a batch made of it would have, the playlists and channels
/// it names (send both as `items` to `POST /v1/batches`, in line order: the create reads the
/// lists), and every line that would be rejected, with its reason.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckedInput {
    pub items: Vec<CheckedItem>,
    /// Lines naming a video an earlier line named (dropped).
    pub duplicates: usize,
    /// Playlist and channel lines: not read by the check; their videos are added at create.
    pub lists: Vec<CheckedList>,
    pub rejected: Vec<RejectedLine>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckedItem {
    /// 1-based line of the text (of the file, counting a CSV's header row).
    pub line: usize,
    pub video_id: String,
    /// The canonical watch URL.
    pub url: String,
    pub title: Option<String>,
    pub transcript: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CheckedList {
    /// 1-based line of the text.
    pub line: usize,
    /// The line, shortened to 200 characters.
    pub input: String,
    /// What it names (`playlist PL...`, `channel @name`).
    pub list: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RejectedLine {
    pub line: usize,
    /// The input, shortened to 200 characters.
    pub input: String,
    pub reason: String,
}

#[utoipa::path(
    post, path = "/v1/batches/check", tag = "batches",
    request_body = CheckInput,
    responses(
        (status = 200, description = "What the text holds; nothing is created", body = CheckedInput),
        (status = 400, description = "The body is not JSON (`malformed_json`)", body = crate::error::ErrorBody),
        (status = 415, description = "A content type other than JSON (`unsupported_media_type`)", body = crate::error::ErrorBody),
        (status = 422, description = "A wrong type or an unknown field (`invalid_request`, naming the field), or a CSV text without a `url` column", body = crate::error::ErrorBody),
        (status = 413, description = "More inputs than a batch may hold (`too_many_items`)", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn check_input(
    State(state): State<ApiState>,
    _caller: Caller,
    body: Result<Json<CheckInput>, JsonRejection>,
) -> Result<Json<CheckedInput>, ApiError> {
    let body = crate::error::json_body(body, "the text")?;
    // List lines are kept, not read: a check must stay quick; the create reads them.
    let options = ListOptions::new(false, DEFAULT_MAX_PER_LIST).expect("the default is valid");
    let mut input = BatchInput::with_lists(options);
    match body.format.unwrap_or_default() {
        InputFormat::Lines => input.push_lines(&body.text),
        InputFormat::Csv => input
            .push_csv(&body.text)
            .map_err(|e| ApiError::invalid(format!("text: {e}")))?,
    }
    let n = input.items.len() + input.duplicates + input.rejected.len() + input.lists.len();
    if n > state.settings.max_items {
        return Err(too_many_items(n, state.settings.max_items));
    }
    Ok(Json(CheckedInput {
        items: input
            .items
            .into_iter()
            .map(|i| CheckedItem {
                line: i.line,
                video_id: i.video_id.as_str().to_owned(),
                url: i.url,
                title: i.title,
                transcript: i.transcript,
            })
            .collect(),
        duplicates: input.duplicates,
        lists: input
            .lists
            .into_iter()
            .map(|l| CheckedList {
                line: l.line,
                input: l.input.chars().take(200).collect(),
                list: l.list.describe(),
            })
            .collect(),
        rejected: input
            .rejected
            .into_iter()
            .map(|r| RejectedLine {
                line: r.line,
                input: r.input.chars().take(200).collect(),
                reason: r.reason,
            })
            .collect(),
    }))
}

/// The summarizer options the caller may pick.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Options {
    /// The backend a batch that names none gets.
    pub default_backend: String,
    /// Backends the caller's batches may name.
    pub backends: Vec<String>,
    /// Models the caller's batches may name; `null`: any (the operator's).
    pub models: Option<Vec<String>>,
}

#[utoipa::path(
    get, path = "/v1/options", tag = "batches",
    responses((status = 200, description = "The summarizer backends and models the token's batches may name", body = Options)),
    security(("bearer" = []))
)]
pub async fn options(State(state): State<ApiState>, caller: Caller) -> Json<Options> {
    let default = state.offer.default_backend;
    let offered: Vec<Backend> = Backend::ALL
        .iter()
        .copied()
        .filter(|b| *b != Backend::Noop || state.offer.drills)
        .collect();
    let (backends, models) = match caller.policy() {
        None => (offered, None),
        Some(policy) => {
            let allowed = policy.allowed(default);
            let backends = allowed
                .backends
                .unwrap_or_else(|| offered.clone())
                .into_iter()
                .filter(|b| offered.contains(b))
                .collect();
            (backends, allowed.models)
        }
    };
    Json(Options {
        default_backend: default.as_str().to_owned(),
        backends: backends.iter().map(|b| b.as_str().to_owned()).collect(),
        models,
    })
}
