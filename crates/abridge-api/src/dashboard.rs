//! The dashboard: one page at `/` whose HTML, CSS and script are compiled into the binary (no
//! build step, no CDN). The page is a client of the `/v1` routes like any other, with the token
//! the operator pastes in (kept in the browser's `localStorage`, never in a URL the server
//! sees). Two routes exist for it alone: `/v1/history` (queue depth and throughput per minute)
//! and `/v1/failed` (recent failures, each with a retry button). [`sample_depth`] records the
//! depth the chart draws: Redis keeps no history, so each API process samples it into
//! Postgres, one row per time bucket whatever the number of replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::params::{FailedQuery, HistoryMinutes, HistoryQuery, PageSize, Query};
use crate::views::{ItemStatusView, rfc3339};

/// Only this server's own script and styles; the page talks to this server only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("dashboard/index.html"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("dashboard/dashboard.js"),
    )
}

pub async fn styles() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("dashboard/dashboard.css"),
    )
}

/// One minute of the queue's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryMinute {
    /// The minute's start (RFC 3339, UTC).
    pub minute: String,
    /// Items that succeeded in this minute.
    pub succeeded: i64,
    /// Items that failed for good in this minute.
    pub failed: i64,
    /// The largest number of ready items sampled in this minute; `null` when no API process
    /// was sampling.
    pub ready: Option<i64>,
    /// Items waiting for a retry (same sample).
    pub delayed: Option<i64>,
    /// Items claimed by workers (same sample).
    pub leased: Option<i64>,
}

/// `GET /v1/history`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct History {
    pub queue: String,
    /// Oldest minute first; the last one is the current, partial minute.
    pub minutes: Vec<HistoryMinute>,
}

/// `GET /v1/failed`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FailedItems {
    /// Newest failure first.
    pub items: Vec<ItemStatusView>,
}

#[utoipa::path(
    get, path = "/v1/history", tag = "fleet",
    params(HistoryQuery),
    responses(
        (status = 200, description = "Throughput per minute, for the dashboard's chart, and the queue's depth: for a tenant token, the tenant's own items, and the depth fields are `null` (the queue is the fleet's); for an operator token, every item and the depth", body = History),
    ),
    security(("bearer" = []))
)]
pub async fn history(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let HistoryMinutes(minutes) = query.minutes.unwrap_or_default();
    // A tenant sees its own throughput; the queue's depth is the fleet's, the operator's.
    let (throughput, depth) = tokio::try_join!(
        state
            .store
            .throughput_per_minute(&state.queue_name, minutes, caller.tenant()),
        async {
            match caller.tenant() {
                None => {
                    state
                        .store
                        .depth_per_minute(&state.queue_name, minutes)
                        .await
                }
                Some(_) => Ok(Vec::new()),
            }
        },
    )?;
    let depth: BTreeMap<DateTime<Utc>, _> = depth.into_iter().map(|d| (d.minute, d)).collect();
    let minutes = throughput
        .into_iter()
        .map(|t| {
            let d = depth.get(&t.minute);
            HistoryMinute {
                minute: rfc3339(&t.minute),
                succeeded: t.succeeded,
                failed: t.failed,
                ready: d.map(|d| d.ready),
                delayed: d.map(|d| d.delayed),
                leased: d.map(|d| d.leased),
            }
        })
        .collect();
    Ok(Json(History {
        queue: state.queue_name.clone(),
        minutes,
    }))
}

#[utoipa::path(
    get, path = "/v1/failed", tag = "batches",
    params(FailedQuery),
    responses(
        (status = 200, description = "The latest failed items of the caller's newest 100 batches", body = FailedItems),
    ),
    security(("bearer" = []))
)]
pub async fn failed(
    State(state): State<ApiState>,
    caller: Caller,
    Query(query): Query<FailedQuery>,
) -> Result<Json<FailedItems>, ApiError> {
    let PageSize(limit) = query.limit.unwrap_or_default();
    let items = state
        .store
        .recent_failed_items(caller.tenant(), limit)
        .await?;
    Ok(Json(FailedItems {
        items: items
            .into_iter()
            .map(|i| ItemStatusView::shown_to(i, &caller))
            .collect(),
    }))
}

/// Samples the queue's depth into Postgres every `depth_sample` until `stop`. A failed
/// sample is logged and skipped: the chart shows a gap, nothing else depends on it.
pub async fn sample_depth(state: ApiState, stop: CancellationToken) {
    let every = state.settings.depth_sample;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sample_once(&state, every).await {
            tracing::debug!(error = %e, "cannot sample the queue depth");
        }
    }
}

async fn sample_once(state: &ApiState, every: Duration) -> anyhow::Result<()> {
    let stats = state.queue.stats().await?;
    state
        .store
        .record_depth_sample(
            &state.queue_name,
            every,
            stats.ready.iter().sum(),
            stats.delayed,
            stats.leased,
        )
        .await?;
    Ok(())
}
