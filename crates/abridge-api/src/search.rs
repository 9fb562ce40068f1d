//! Search over the caller's finished items, and bulk actions on what a search finds. Every
//! API process also runs the indexer ([`index`]) that makes finished items findable (one at
//! a time fleet-wide; see `abridge_store::search`):
//! `GET /v1/items?q=` (paged, newest first, with how many items and batches a bulk action
//! would touch), `POST /v1/items/retry?q=` (every failed item found) and
//! `POST /v1/batches/cancel?q=` (every open batch holding an item found). A tenant finds its
//! own items only; the operator every tenant's and the CLI's.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{PageSize, Query, SearchText};
use crate::views::{ItemStatusName, ItemStatusView};

/// Most failed items one bulk retry requeues; the answer says when more are left.
const MAX_BULK: i64 = 10_000;
/// Items the indexer copies per pass; passes follow each other at once while there is more.
const INDEX_CHUNK: i64 = 2_000;
/// How long the indexer rests once it has caught up: how late a finished item may be found.
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Fills the search index until `stop`.
pub async fn index(state: ApiState, stop: tokio_util::sync::CancellationToken) {
    loop {
        let rest = match state.store.index_for_search(INDEX_CHUNK).await {
            Ok(n) if n as i64 >= INDEX_CHUNK => std::time::Duration::from_millis(20),
            Ok(_) => INDEX_EVERY,
            Err(e) => {
                tracing::debug!(error = %e, "search indexing failed; trying again");
                INDEX_EVERY * 5
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(rest) => {}
        }
    }
}

/// `GET /v1/items`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Words of the title, the summary or the error kind, or a video id, as a web search
    /// takes them (`"a phrase"`, `or`, `-word`).
    #[param(inline)]
    pub q: SearchText,
    /// Only items in this state.
    #[param(value_type = Option<ItemStatusName>)]
    pub status: Option<abridge_core::ItemStatus>,
    /// Page size (default 50).
    #[param(inline)]
    pub limit: Option<PageSize>,
    /// `next_cursor` of the previous page (an item id).
    #[param(inline)]
    pub cursor: Option<crate::params::ItemIdParam>,
}

/// `POST /v1/items/retry` and `POST /v1/batches/cancel`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BulkQuery {
    /// The search whose items the action takes, as for `GET /v1/items`.
    #[param(inline)]
    pub q: SearchText,
}

/// One item found.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FoundItem {
    #[serde(flatten)]
    pub item: ItemStatusView,
    pub batch_name: Option<String>,
}

/// A page of found items.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SearchPage {
    pub items: Vec<FoundItem>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// Of every item found (not only this page), those that failed: what a bulk retry takes.
    pub failed: i64,
    /// Open batches holding an item found: what a bulk cancel takes.
    pub open_batches: i64,
}

#[utoipa::path(
    get, path = "/v1/items", tag = "batches",
    params(SearchQuery),
    responses((status = 200, description = "The caller's finished items matching the search, newest first", body = SearchPage)),
    security(("bearer" = []))
)]
pub async fn search_items(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<SearchQuery>,
) -> Result<Json<SearchPage>, ApiError> {
    let PageSize(limit) = query.limit.unwrap_or_default();
    let before = query.cursor.map(|c| c.0.0);
    let tenant = caller.tenant();
    let terms = query.q.terms();
    let (mut hits, counts) = futures::try_join!(
        state
            .store
            .search_items(tenant, &terms, query.status, before, limit + 1),
        state.store.search_counts(tenant, &terms),
    )?;
    let next_cursor = if hits.len() as i64 > limit {
        hits.truncate(limit as usize);
        hits.last().map(|h| h.item.id.0.to_string())
    } else {
        None
    };
    Ok(Json(SearchPage {
        items: hits
            .into_iter()
            .map(|h| FoundItem {
                item: ItemStatusView::shown_to(h.item, &caller),
                batch_name: h.batch_name,
            })
            .collect(),
        next_cursor,
        failed: counts.failed,
        open_batches: counts.open_batches,
    }))
}

/// What a bulk action did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BulkDone {
    /// Items requeued, or batches cancelled.
    pub done: usize,
    /// Items or batches the action found but could not take (finished meanwhile, or past the
    /// per-call limit of a retry); run it again for the rest.
    pub left: usize,
}

#[utoipa::path(
    post, path = "/v1/items/retry", tag = "batches",
    params(BulkQuery),
    responses(
        (status = 200, description = "Every failed item the search finds is queued again (attempts reset), at most 10,000 per call", body = BulkDone),
        (status = 422, description = "The search has no word to match, only words to leave out (`invalid_request`)", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry_found(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<BulkQuery>,
) -> Result<Json<BulkDone>, ApiError> {
    query.q.require_a_match()?;
    let tenant = caller.tenant();
    let found = state
        .store
        .search_failed(tenant, &query.q.terms(), MAX_BULK + 1)
        .await?;
    let mut left = found.len().saturating_sub(MAX_BULK as usize);
    let mut done = 0;
    for (batch, item) in found.into_iter().take(MAX_BULK as usize) {
        match abridge_control::retry_failed(&state.store, &state.queue, batch, Some(item)).await {
            Ok(n) => done += n,
            // Cancelled meanwhile (or gone): not retried, and said so.
            Err(
                abridge_control::ControlError::Cancelled(_)
                | abridge_control::ControlError::NotFound(_),
            ) => left += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(BulkDone { done, left }))
}

#[utoipa::path(
    post, path = "/v1/batches/cancel", tag = "batches",
    params(BulkQuery),
    responses(
        (status = 200, description = "Every open batch holding an item the search finds is cancelled", body = BulkDone),
        (status = 422, description = "The search has no word to match, only words to leave out (`invalid_request`)", body = crate::error::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_found(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<BulkQuery>,
) -> Result<Json<BulkDone>, ApiError> {
    query.q.require_a_match()?;
    let batches = state
        .store
        .search_open_batches(caller.tenant(), &query.q.terms())
        .await?;
    let (mut done, mut left) = (0, 0);
    for batch in batches {
        match abridge_control::cancel(&state.store, &state.queue, batch).await {
            Ok(_) => done += 1,
            Err(
                abridge_control::ControlError::AlreadyFinished { .. }
                | abridge_control::ControlError::NotFound(_),
            ) => left += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(BulkDone { done, left }))
}
