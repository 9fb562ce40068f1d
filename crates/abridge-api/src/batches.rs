//! The batch endpoints: create, list, read, items, cancel, retry; and fleet stats.
//!
//! Creation goes through `abridge_control::enqueue_once` with the same `BatchInput` that
//! `abridge enqueue` uses, so both accept, normalise and de-duplicate exactly the same inputs.

use abridge_control::{EnqueueOnce, EnqueueRequest, Owner};
use abridge_core::BatchStatus;
use abridge_core::input::{BatchInput, RawItem, Rejected};
use abridge_core::lists::{DEFAULT_MAX_PER_LIST, ListOptions};
use abridge_store::BatchView;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::params::{
    BatchCursor, BatchListQuery, BatchPath, ItemCursor, ItemListQuery, PageSize, Query, RetryQuery,
};
use crate::views::{
    BatchPage, BatchStatusView, CreateBatch, Created, ItemPage, ItemStatusView, RejectedInput,
    Retried, WebhookView,
};
use crate::webhooks;

pub(crate) fn too_many_items(n: usize, max: usize) -> ApiError {
    ApiError::TooLarge {
        code: "too_many_items",
        message: format!(
            "{n} inputs is more than the {max} a batch may have (ABRIDGE_API_MAX_ITEMS)"
        ),
    }
}

/// How many inputs a create request holds, read without keeping any of them. Any other field
/// is skipped; a body this cannot read is left for the real parse to name what is wrong.
#[derive(serde::Deserialize)]
struct Shape {
    #[serde(default, deserialize_with = "count_elements")]
    urls: usize,
    #[serde(default, deserialize_with = "count_elements")]
    items: usize,
}

fn count_elements<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    struct Count;
    impl<'de> serde::de::Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_unit<E>(self) -> Result<usize, E> {
            Ok(0)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    d.deserialize_any(Count)
}

/// Feeds what is written to a SHA-256.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Longest `name` accepted.
const MAX_NAME_CHARS: usize = 200;
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

#[utoipa::path(
    post, path = "/v1/batches", tag = "batches",
    request_body = CreateBatch,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$",
            description = "Makes a retried request return the first batch instead of creating another (1 to 255 printable ASCII characters)")),
    responses(
        (status = 201, description = "Batch created (or, with a known Idempotency-Key, the first one; then `Idempotent-Replayed: true`)", body = Created,
            headers(("Location" = String, description = "The batch's URL, `/v1/batches/{id}`"))),
        (status = 400, description = "The body is not JSON (`malformed_json`) or cannot be read (`unreadable_body`), or the Idempotency-Key is not 1 to 255 printable ASCII characters (`invalid_idempotency_key`)", body = ErrorBody),
        (status = 413, description = "The body is over `ABRIDGE_API_MAX_BODY_BYTES` (`body_too_large`) or has more inputs than `ABRIDGE_API_MAX_ITEMS`, counting the videos its playlists and channels expand to (`too_many_items`)", body = ErrorBody),
        (status = 415, description = "A content type other than JSON (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "JSON that is not a batch: a wrong type or an unknown field (`invalid_request`, naming the field); or a batch the server refuses although its shape is right, for rules the schema does not express: no input at all in `urls` and `items`, a `name`, `summarizer`, `webhook_url` or `max_per_list` outside the rules their descriptions give (`invalid_request`), no input that is a video (`no_valid_input`, every reason in `details.rejected`), a webhook host that is internal or does not resolve (`webhook_url_refused`), an Idempotency-Key used before with another body (`idempotency_key_reused`) or sent with an operator token (`invalid_request`: keys belong to tenants), a backend or model the tenant may not use (`option_not_allowed`)", body = ErrorBody),
        (status = 429, description = "Over the tenant's limits: its queued items (`quota_exceeded`; nothing of the batch is stored) or its batches per minute (`rate_limited`, with `Retry-After`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_batch(
    State(state): State<ApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_json_content_type(&headers)?;
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge {
                code: "body_too_large",
                message: format!(
                    "request body is larger than {} bytes (ABRIDGE_API_MAX_BODY_BYTES)",
                    state.settings.max_body_bytes
                ),
            }
        } else {
            ApiError::bad_request("unreadable_body", format!("read request body: {e}"))
        }
    })?;
    let idempotency_key = idempotency_key(&headers)?;
    if idempotency_key.is_some() && caller.is_operator() {
        return Err(ApiError::invalid(
            "Idempotency-Key: keys belong to a tenant; an operator token cannot use one",
        ));
    }
    // Counted before anything is kept: a body of millions of tiny inputs costs nothing but a
    // scan to refuse.
    if let Ok(shape) = serde_json::from_slice::<Shape>(&body)
        && shape.urls + shape.items > state.settings.max_items
    {
        return Err(too_many_items(
            shape.urls + shape.items,
            state.settings.max_items,
        ));
    }
    // Parsed straight into the request's types, never into a `serde_json::Value` tree (which
    // costs many times the body's size for a body of many small strings).
    let mut de = serde_json::Deserializer::from_slice(&body);
    let request: CreateBatch = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        use serde_json::error::Category;
        if matches!(
            e.inner().classify(),
            Category::Syntax | Category::Eof | Category::Io
        ) {
            return ApiError::bad_request(
                "malformed_json",
                format!("request body is not valid JSON: {}", e.inner()),
            );
        }
        let path = e.path().to_string();
        let field = if path == "." {
            "request body".to_owned()
        } else {
            path
        };
        ApiError::invalid(format!("{field}: {}", e.inner()))
    })?;
    de.end().map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    drop(body);
    // The canonical request (fields in a fixed order) identifies it for idempotency, hashed
    // as it is written: no second copy of the body.
    let request_hash = {
        let mut hasher = HashWriter(Sha256::new());
        serde_json::to_writer(&mut hasher, &request).expect("a request serializes");
        hasher.0.finalize().to_vec()
    };
    let urls = request.urls.unwrap_or_default();
    let items = request.items.unwrap_or_default();
    let n_inputs = urls.len() + items.len();
    if n_inputs == 0 {
        return Err(ApiError::invalid(
            "no inputs: send `urls` (video URLs or ids) or `items` (objects with a `url`)",
        ));
    }
    if n_inputs > state.settings.max_items {
        return Err(too_many_items(n_inputs, state.settings.max_items));
    }
    let name = match request.name.as_deref().map(str::trim) {
        Some("") | None => None,
        Some(n) if n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control) => {
            return Err(ApiError::invalid(format!(
                "name: must be at most {MAX_NAME_CHARS} printable characters"
            )));
        }
        Some(n) => Some(n.to_owned()),
    };
    let options = request.summarizer.unwrap_or_default();
    options.validate().map_err(ApiError::invalid)?;
    let webhook_url = match request.webhook_url.as_deref() {
        None => None,
        Some(raw) => Some(webhooks::check_url(raw, &state.settings.webhooks).await?),
    };

    let list_options = ListOptions::new(
        request.expand_lists.unwrap_or(false),
        request.max_per_list.unwrap_or(DEFAULT_MAX_PER_LIST),
    )
    .map_err(ApiError::invalid)?;

    // Inputs are numbered across both arrays (urls first), then mapped back to each array.
    let n_urls = urls.len();
    let mut input = BatchInput::with_lists(list_options);
    for (i, url) in urls.into_iter().enumerate() {
        input.push(
            i,
            RawItem {
                url,
                ..RawItem::default()
            },
        );
    }
    for (i, item) in items.into_iter().enumerate() {
        input.push(
            n_urls + i,
            RawItem {
                url: item.url,
                title: item.title,
                transcript: item.transcript,
            },
        );
    }
    // Playlists and channels are read now, within the time limit: a list that cannot be read
    // is a rejected input like any other. A tenant over its rate reads none.
    if !input.lists.is_empty() {
        if let (Some(tenant), Some(policy)) = (caller.tenant(), caller.policy()) {
            abridge_control::check_rate(&state.store, tenant, policy).await?;
        }
        read_lists(&state, caller.tenant().unwrap_or(""), &mut input).await;
    }
    if input.items.len() > state.settings.max_items {
        return Err(ApiError::TooLarge {
            code: "too_many_items",
            message: format!(
                "the playlists and channels expand to {} videos, more than the {} a batch may \
                 have (ABRIDGE_API_MAX_ITEMS); lower max_per_list",
                input.items.len(),
                state.settings.max_items
            ),
        });
    }
    let outcome = abridge_control::enqueue_once(
        &state.store,
        &state.queue,
        &state.queue_name,
        input,
        EnqueueRequest {
            name: name.as_deref(),
            priority: request.priority.unwrap_or_default(),
            options,
            offer: state.offer,
        },
        Some(Owner {
            tenant: caller.tenant(),
            policy: caller.policy(),
            webhook_url: webhook_url.as_ref().map(|u| u.as_str()),
            idempotency: idempotency_key
                .as_deref()
                .map(|k| (k, request_hash.as_slice())),
        }),
    )
    .await;
    let (done, replayed) = match outcome {
        Ok(EnqueueOnce::Created(done)) => (done, false),
        Ok(EnqueueOnce::Replayed {
            same_request: false,
            ..
        }) => {
            return Err(ApiError::Unprocessable {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was already used with a different request body"
                    .into(),
                details: None,
            });
        }
        Ok(EnqueueOnce::Replayed { done, .. }) => (done, true),
        Err(abridge_control::ControlError::NothingToEnqueue { rejected }) => {
            return Err(no_valid_input(&rejected, n_urls));
        }
        Err(e) => return Err(e.into()),
    };
    let status = if replayed {
        state
            .store
            .batch(done.batch_id)
            .await?
            .map_or(BatchStatus::Pending, |b| b.status)
    } else {
        BatchStatus::Pending
    };
    let body = Created {
        id: done.batch_id,
        status,
        total: done.accepted,
        accepted: done.accepted,
        duplicates: done.duplicates,
        rejected: done
            .rejected
            .iter()
            .map(|r| rejected_input(r, n_urls))
            .collect(),
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/batches/{}", done.batch_id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

fn rejected_input(r: &Rejected, n_urls: usize) -> RejectedInput {
    let (field, index) = if r.line < n_urls {
        ("urls", r.line)
    } else {
        ("items", r.line - n_urls)
    };
    RejectedInput {
        field: field.to_owned(),
        index,
        input: r.input.clone(),
        reason: r.reason.clone(),
    }
}

/// 422 with every reason in `details.rejected` and the first few in the message.
fn no_valid_input(rejected: &[Rejected], n_urls: usize) -> ApiError {
    let all: Vec<RejectedInput> = rejected.iter().map(|r| rejected_input(r, n_urls)).collect();
    let mut message = format!(
        "no valid video URL or id in the request ({} rejected): ",
        all.len()
    );
    let shown: Vec<String> = all
        .iter()
        .take(5)
        .map(|r| format!("{}[{}]: {}", r.field, r.index, r.reason))
        .collect();
    message.push_str(&shown.join("; "));
    if all.len() > 5 {
        message.push_str(&format!("; and {} more", all.len() - 5));
    }
    ApiError::Unprocessable {
        code: "no_valid_input",
        message,
        details: Some(serde_json::json!({ "rejected": all })),
    }
}

fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(()); // curl -d without -H: accept and parse as JSON
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "content type {essence:?} is not supported: send application/json"
        )))
    }
}

/// Reads `input`'s lists within the time limit, waiting its turn among this process's list
/// reads (one create per owner at a time); a turn that does not come in time leaves the lists
/// rejected with that reason.
async fn read_lists(state: &ApiState, owner: &str, input: &mut BatchInput) {
    let limit = state.settings.list_time_limit;
    let started = std::time::Instant::now();
    let own = state.list_reads.owner(owner);
    let turn = tokio::time::timeout(limit, async {
        let mine = own.acquire().await;
        let all = state.list_reads.all.acquire().await;
        (mine, all)
    })
    .await;
    match turn {
        Ok(_permits) => {
            let left = limit.saturating_sub(started.elapsed());
            abridge_youtube::browse::expand_lists(&state.youtube, input, left).await;
        }
        Err(_) => {
            let waiting = std::mem::take(&mut input.lists);
            for list in waiting {
                input.rejected.push(abridge_core::input::Rejected {
                    line: list.line,
                    input: list.input,
                    reason: format!(
                        "not read: this server was reading other lists for {} s (ABRIDGE_API_LIST_TIME_LIMIT_MS); try again",
                        limit.as_secs()
                    ),
                });
            }
        }
    }
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw.to_str().ok().map(str::trim).filter(|k| {
        !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.chars().all(|c| c.is_ascii_graphic())
    });
    match key {
        Some(k) => Ok(Some(k.to_owned())),
        None => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!(
                "Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ),
        )),
    }
}

/// The caller's batch `id`, or 404 — also when another tenant owns it, so ids leak nothing.
pub async fn owned_batch(
    state: &ApiState,
    caller: &Caller,
    BatchPath(id): BatchPath,
) -> Result<BatchView, ApiError> {
    state
        .store
        .tenant_batch(caller.tenant(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no batch {id}")))
}

/// The status view with its ETA (one more query while the batch runs).
pub async fn status_view(state: &ApiState, b: &BatchView) -> Result<BatchStatusView, ApiError> {
    let rate = if b.status.is_finished() {
        None
    } else {
        Some(
            state
                .store
                .finish_rate(b.id, state.settings.eta_window)
                .await?,
        )
    };
    let mut view = BatchStatusView::new(b, rate);
    if b.webhook_url.is_some()
        && let Some(d) = state.store.webhook_delivery(b.id).await?
    {
        view.webhook = Some(WebhookView::new(&d, b.status.is_finished()));
    }
    Ok(view)
}

#[utoipa::path(
    get, path = "/v1/batches", tag = "batches",
    params(BatchListQuery),
    responses(
        (status = 200, description = "The caller's batches, newest first", body = BatchPage),
    ),
    security(("bearer" = []))
)]
pub async fn list_batches(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<BatchListQuery>,
) -> Result<Json<BatchPage>, ApiError> {
    let PageSize(limit) = query.limit.unwrap_or_default();
    let before = query.cursor.map(|BatchCursor(id)| id);
    // A tenant sees its own batches whatever it asks; the operator may narrow to one tenant.
    let tenant = caller
        .tenant()
        .or(query.tenant.as_ref().map(|t| t.0.as_str()));
    let rows = state
        .store
        .list_batches(tenant, query.status, before, limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    let mut batches = Vec::with_capacity(rows.len());
    for b in rows.iter().take(limit as usize) {
        batches.push(status_view(&state, b).await?);
    }
    let next_cursor = if more {
        batches.last().map(|b| b.id.to_string())
    } else {
        None
    };
    Ok(Json(BatchPage {
        batches,
        next_cursor,
    }))
}

#[utoipa::path(
    get, path = "/v1/batches/{id}", tag = "batches",
    params(BatchPath),
    responses((status = 200, description = "The batch, with progress and ETA", body = BatchStatusView)),
    security(("bearer" = []))
)]
pub async fn get_batch(
    State(state): State<ApiState>,
    caller: Caller,
    id: BatchPath,
) -> Result<Json<BatchStatusView>, ApiError> {
    let b = owned_batch(&state, &caller, id).await?;
    Ok(Json(status_view(&state, &b).await?))
}

#[utoipa::path(
    get, path = "/v1/batches/{id}/items", tag = "batches",
    params(BatchPath, ItemListQuery),
    responses((status = 200, description = "Items in input order", body = ItemPage)),
    security(("bearer" = []))
)]
pub async fn list_items(
    State(state): State<ApiState>,
    caller: Caller,
    id: BatchPath,
    Query(query): Query<ItemListQuery>,
) -> Result<Json<ItemPage>, ApiError> {
    let b = owned_batch(&state, &caller, id).await?;
    let PageSize(limit) = query.limit.unwrap_or_default();
    let ItemCursor(from) = query.cursor.unwrap_or_default();
    let mut rows = state
        .store
        .items_of(b.id, query.status, from, limit + 1)
        .await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.pop().map(|next| next.position.to_string())
    } else {
        None
    };
    Ok(Json(ItemPage {
        items: rows
            .into_iter()
            .map(|i| ItemStatusView::shown_to(i, &caller))
            .collect(),
        next_cursor,
    }))
}

#[utoipa::path(
    post, path = "/v1/batches/{id}/cancel", tag = "batches",
    params(BatchPath),
    responses(
        (status = 200, description = "Cancelled: no item starts any more, running ones stop", body = BatchStatusView),
        (status = 409, description = "The batch had already finished (`batch_finished`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_batch(
    State(state): State<ApiState>,
    caller: Caller,
    id: BatchPath,
) -> Result<Json<BatchStatusView>, ApiError> {
    let b = owned_batch(&state, &caller, id).await?;
    abridge_control::cancel(&state.store, &state.queue, b.id).await?;
    let b = owned_batch(&state, &caller, id).await?;
    Ok(Json(status_view(&state, &b).await?))
}

#[utoipa::path(
    post, path = "/v1/batches/{id}/retry", tag = "batches",
    params(BatchPath, RetryQuery),
    responses(
        (status = 200, description = "Failed items are queued again (attempts reset); a completed batch runs again and its webhook is re-armed", body = Retried),
        (status = 409, description = "The batch is cancelled (`batch_cancelled`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry_batch(
    State(state): State<ApiState>,
    caller: Caller,
    id: BatchPath,
    Query(query): Query<RetryQuery>,
) -> Result<Json<Retried>, ApiError> {
    let only = query.item.map(|item| item.0);
    let b = owned_batch(&state, &caller, id).await?;
    let requeued = abridge_control::retry_failed(&state.store, &state.queue, b.id, only).await?;
    let b = owned_batch(&state, &caller, id).await?;
    Ok(Json(Retried {
        requeued,
        batch: status_view(&state, &b).await?,
    }))
}

/// Whether the queue is paused.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct QueueState {
    pub queue: String,
    pub paused: bool,
    /// Since when (RFC 3339); `null` while the queue runs.
    pub paused_at: Option<String>,
}

impl From<abridge_control::PauseState> for QueueState {
    fn from(p: abridge_control::PauseState) -> Self {
        Self {
            queue: p.queue,
            paused: p.paused,
            paused_at: p.paused_at,
        }
    }
}

#[utoipa::path(
    post, path = "/v1/queue/pause", tag = "fleet",
    responses(
        (status = 200, description = "The queue is paused: no new item starts fleet-wide within a second; items in hand finish; batches are still accepted. Pausing a paused queue changes nothing", body = QueueState),
        (status = 403, description = "Not an operator token (`operator_only`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn pause_queue(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<QueueState>, ApiError> {
    caller.require_operator()?;
    let p = abridge_control::pause(&state.store, &state.queue, &state.queue_name, "api").await?;
    Ok(Json(p.into()))
}

#[utoipa::path(
    post, path = "/v1/queue/resume", tag = "fleet",
    responses(
        (status = 200, description = "The queue runs: workers claim again within a second", body = QueueState),
        (status = 403, description = "Not an operator token (`operator_only`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn resume_queue(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<QueueState>, ApiError> {
    caller.require_operator()?;
    let p = abridge_control::resume(&state.store, &state.queue, &state.queue_name).await?;
    Ok(Json(p.into()))
}

#[utoipa::path(
    get, path = "/v1/stats", tag = "fleet",
    responses(
        (status = 200, description = "For a tenant token, the tenant's own figures (`scope: \"tenant\"`: its items by status, its throughput, its share of the queue). For an operator token, the fleet at a glance as `abridge stats --json` prints it (`scope: \"fleet\"`: queue depth per priority, delayed retries, leased items, failed items in unfinished batches, `paused_at` while the queue is paused, live workers)", body = Object),
    ),
    security(("bearer" = []))
)]
pub async fn fleet_stats(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = match caller.tenant() {
        None => {
            let stats =
                abridge_control::stats(&state.store, &state.queue, &state.queue_name).await?;
            let mut v = serde_json::to_value(stats).expect("stats serialize");
            v["scope"] = "fleet".into();
            v
        }
        Some(tenant) => {
            let stats =
                abridge_control::tenant_stats(&state.store, &state.queue_name, tenant).await?;
            let mut v = serde_json::to_value(stats).expect("stats serialize");
            v["scope"] = "tenant".into();
            v
        }
    };
    Ok(Json(view))
}
