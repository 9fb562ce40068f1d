//! The producer API: `abridge api` serves batches over HTTP (axum), reading and writing the
//! same Postgres and Redis as the workers through `abridge-control`, and never summarizing.
//!
//! - [`router`] / [`serve`]: the routes, and the server with its background tasks (the
//!   progress listener and the webhook dispatcher); tests bind port 0.
//! - [`auth`]: bearer tokens (hashed at rest) and the [`auth::Caller`] extractor.
//! - [`batches`]: create (idempotent), list, read, items, cancel, retry, fleet stats.
//! - [`events`]: Server-Sent Events fed by Redis progress notices, coalesced per batch.
//! - [`intake`]: what the new-batch form asks first: the options the caller may pick, and
//!   what a pasted list or an uploaded file holds (nothing created).
//! - [`search`]: search over the caller's finished items, and bulk retry and cancel of what
//!   a search finds.
//! - [`export`]: the streamed ZIP of a batch's summaries, `index.csv` and `batch.json`.
//! - [`webhooks`]: SSRF guard, HMAC signature, and the at-least-once dispatcher.
//! - [`dashboard`]: the web dashboard at `/`, its history and failures routes, and the
//!   depth sampler behind its chart.
//! - [`params`]: the batch id in the path and the typed query strings, each its own extractor
//!   and its own OpenAPI parameters.
//! - [`tenants`]: the operator's settings for each tenant (operator tokens only).
//! - [`openapi`]: the OpenAPI document, generated from the handlers' annotations.
//! - [`client`]: a typed client of this API (used by `abridge enqueue --api` and tests).
//! - [`error`], [`views`], [`settings`]: the error shape, the JSON shapes, the settings.
//!
//! Architecture Invariant: every `/v1` route resolves its caller's tenant first, and a batch
//! of another tenant is answered exactly like a batch that does not exist (404).

pub mod auth;
pub mod batches;
pub mod client;
pub mod dashboard;
pub mod error;
pub mod events;
pub mod export;
pub mod intake;
pub mod openapi;
pub mod params;
pub mod search;
pub mod settings;
pub mod tenants;
pub mod views;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;

use abridge_control::Offer;
use abridge_core::Settings;
use abridge_queue::Queue;
use abridge_store::Store;
use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use settings::ApiSettings;

use crate::error::ApiError;
use crate::events::Hub;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub queue: Queue,
    /// The queue batches are enqueued into (`ABRIDGE_QUEUE`).
    pub queue_name: String,
    /// What this fleet offers a batch (its default backend; `noop` only with drills on).
    pub offer: Offer,
    pub settings: Arc<ApiSettings>,
    pub hub: Arc<Hub>,
    /// Cancelled when the server shuts down, so open event streams end and let it.
    pub shutdown: CancellationToken,
    /// Reads a batch's playlists and channels at enqueue.
    pub youtube: abridge_youtube::YoutubeClient,
    /// Bounds the list reads this process makes: at once in all, and one create per tenant.
    pub list_reads: Arc<ListReads>,
}

/// How many creates may read playlists and channels at once: in all
/// (`ABRIDGE_API_LIST_READS`), and one per tenant (a tenant's second waits its turn within
/// the time limit), so no tenant holds the others' list reads back.
#[derive(Debug)]
pub struct ListReads {
    pub all: tokio::sync::Semaphore,
    pub per_owner: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl ListReads {
    pub fn new(at_once: usize) -> Self {
        Self {
            all: tokio::sync::Semaphore::new(at_once.max(1)),
            per_owner: Default::default(),
        }
    }

    /// The owner's own permit (`""` for the operator), made on first use.
    pub fn owner(&self, owner: &str) -> Arc<tokio::sync::Semaphore> {
        let mut map = self.per_owner.lock().unwrap_or_else(|p| p.into_inner());
        // Idle owners' entries go once the map grows: nobody holds their permit.
        if map.len() > 10_000 {
            map.retain(|_, s| s.available_permits() == 0);
        }
        map.entry(owner.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(1)))
            .clone()
    }
}

impl ApiState {
    pub fn new(store: Store, queue: Queue, core: &Settings, settings: ApiSettings) -> Self {
        let youtube = abridge_youtube::YoutubeClient::new(&settings.youtube)
            .expect("a youtube client from settings checked by ApiSettings::from_source");
        Self {
            youtube,
            list_reads: Arc::new(ListReads::new(settings.list_reads)),
            store,
            queue,
            queue_name: core.queue.clone(),
            offer: Offer::from(core),
            settings: Arc::new(settings),
            hub: Arc::new(Hub::default()),
            shutdown: CancellationToken::new(),
        }
    }
}

/// Every route: `/v1`, health, the OpenAPI document, and the dashboard at `/`.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route(
            "/batches",
            post(batches::create_batch).get(batches::list_batches),
        )
        .route("/batches/check", post(intake::check_input))
        .route("/batches/cancel", post(search::cancel_found))
        .route("/items", get(search::search_items))
        .route("/items/retry", post(search::retry_found))
        .route("/options", get(intake::options))
        .route("/batches/{id}", get(batches::get_batch))
        .route("/batches/{id}/items", get(batches::list_items))
        .route("/batches/{id}/cancel", post(batches::cancel_batch))
        .route("/batches/{id}/retry", post(batches::retry_batch))
        .route("/batches/{id}/export", get(export::export_batch))
        .route("/batches/{id}/events", get(events::batch_events))
        .route("/stats", get(batches::fleet_stats))
        .route("/queue/pause", post(batches::pause_queue))
        .route("/queue/resume", post(batches::resume_queue))
        .route("/history", get(dashboard::history))
        .route("/failed", get(dashboard::failed))
        .route("/tenants", get(tenants::list_tenants))
        .route(
            "/tenants/{name}",
            get(tenants::get_tenant).put(tenants::put_tenant),
        )
        .route("/tenants/{name}/costs", get(tenants::tenant_costs));
    Router::new()
        .nest("/v1", v1)
        .route("/", get(dashboard::page))
        .route("/dashboard.js", get(dashboard::script))
        .route("/dashboard.css", get(dashboard::styles))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi::serve_document))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.settings.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
    // No /metrics here: this port faces tenants, and the process's metrics are the operator's
    // (`abridge api --metrics-listen` serves them on a listener of their own).
}

/// Serves the API on `listener` until `shutdown` resolves, with the progress listener, the
/// webhook dispatcher, the depth sampler and the search indexer running beside it. Open event
/// streams end at shutdown.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = state.shutdown.clone();
    let background = tokio_util::task::TaskTracker::new();
    background.spawn(events::listen(state.clone(), stop.clone()));
    background.spawn(webhooks::dispatch(state.clone(), stop.clone()));
    background.spawn(dashboard::sample_depth(state.clone(), stop.clone()));
    background.spawn(search::index(state.clone(), stop.clone()));
    let app = router(state);
    let stopping = stop.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stopping.cancelled() => {}
            }
            stopping.cancel();
        })
        .await;
    stop.cancel();
    background.close();
    background.wait().await;
    served
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Postgres and Redis answer"),
        (status = 503, description = "Postgres or Redis does not answer; the body says which"),
    ))]
pub async fn readyz(State(state): State<ApiState>) -> Response {
    let (postgres, redis) = tokio::join!(state.store.ping(), state.queue.ping());
    let status = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => e.clone(),
    };
    let postgres = postgres.map_err(|e| e.to_string());
    let redis = redis.map_err(|e| e.to_string());
    let ready = postgres.is_ok() && redis.is_ok();
    if !ready {
        tracing::warn!(postgres = %status(&postgres), redis = %status(&redis), "not ready");
    }
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "postgres": if postgres.is_ok() { "ok" } else { "unreachable" },
        "redis": if redis.is_ok() { "ok" } else { "unreachable" },
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}
