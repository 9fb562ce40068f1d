//! Live progress: `GET /v1/batches/{id}/events` (Server-Sent Events).
//!
//! Workers (and cancel/retry) publish tiny "batch X changed" notices on a Redis channel. Each
//! API process subscribes once ([`listen`]) and keeps one *feed* per batch that someone is
//! watching: the feed re-reads the batch from Postgres when noticed (at most once per
//! `events_min_interval`, which coalesces bursts), and every `events_refresh` anyway (pub/sub
//! is lossy), and hands the snapshot to all of that batch's streams through a `watch`
//! channel. Any replica serves any batch: the state comes from Postgres, not from the notice.
//!
//! Events: `progress` (the batch status view) whenever the counts change, then one final
//! `completed` or `cancelled`, after which the stream ends. Event ids are state fingerprints;
//! a reconnect with `Last-Event-ID` gets the current state at once (skipped if it is what the
//! client saw last) and the final event if the batch has finished; a client that already has
//! the final event is answered `204 No Content`, which tells `EventSource` to stop.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use abridge_core::{BatchId, BatchStatus};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::ApiState;
use crate::auth::Caller;
use crate::batches::{owned_batch, status_view};
use crate::error::{ApiError, ErrorBody};
use crate::params::BatchPath;
use crate::views::BatchStatusView;

/// The name of the events before the final one (which is named for the final status).
const PROGRESS_EVENT: &str = "progress";

/// What an open stream keeps of its caller: the token, looked up again while the stream is
/// open, and the stream's slot under the owner's cap.
struct Credentials {
    store: abridge_store::Store,
    token_hash: Vec<u8>,
    every: Duration,
    next_check: Instant,
    _slot: StreamSlot,
}

impl Credentials {
    /// False once the token is revoked (a store error keeps the stream: it is no verdict).
    async fn still_valid(&self) -> bool {
        match self.store.token_owner(&self.token_hash).await {
            Ok(owner) => owner.is_some(),
            Err(e) => {
                debug!(error = %e, "cannot re-check an event stream's token");
                true
            }
        }
    }
}

/// The latest snapshot of a watched batch (`None` until first read).
type Snapshot = Option<Arc<BatchStatusView>>;

/// The per-process fan-out of progress notices.
#[derive(Default)]
pub struct Hub {
    feeds: Mutex<HashMap<BatchId, Arc<Feed>>>,
    /// Open event streams per owner (tenant name, or "" for the operator) in this process.
    streams: Mutex<HashMap<String, usize>>,
    /// Woken by every notice: a batch may have finished, so its webhook may be due.
    pub dispatcher_wakeup: Notify,
}

struct Feed {
    /// Set when a notice names the batch.
    noticed: Notify,
    snapshot: watch::Sender<Snapshot>,
}

/// One open event stream, counted against its owner's cap until dropped.
struct StreamSlot {
    hub: Arc<Hub>,
    owner: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.hub.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = streams.get_mut(&self.owner) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.owner);
            }
        }
    }
}

impl Hub {
    /// A slot for one more stream of `owner`, or `None` at the cap.
    fn open_stream(self: &Arc<Self>, owner: &str, cap: usize) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let n = streams.entry(owner.to_owned()).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            hub: self.clone(),
            owner: owner.to_owned(),
        })
    }

    /// Marks the named batches changed, for the feeds that exist.
    pub fn notice(&self, batches: &[BatchId]) {
        {
            let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
            for b in batches {
                if let Some(feed) = feeds.get(b) {
                    feed.noticed.notify_one();
                }
            }
        }
        self.dispatcher_wakeup.notify_one();
    }

    /// Marks every watched batch changed (after notices may have been missed).
    fn notice_all(&self) {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        for feed in feeds.values() {
            feed.noticed.notify_one();
        }
        self.dispatcher_wakeup.notify_one();
    }

    /// Subscribes to a batch's snapshots, starting its feed if nobody watched it yet.
    fn watch(&self, state: &ApiState, id: BatchId) -> watch::Receiver<Snapshot> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(&id) {
            return feed.snapshot.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        let feed = Arc::new(Feed {
            noticed: Notify::new(),
            snapshot: tx,
        });
        feeds.insert(id, feed.clone());
        tokio::spawn(run_feed(state.clone(), id, feed));
        rx
    }

    /// Removes a feed unless someone subscribed meanwhile (checked under the lock).
    fn retire(&self, id: BatchId, feed: &Arc<Feed>, finished: bool) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if finished || feed.snapshot.receiver_count() == 0 {
            if feeds.get(&id).is_some_and(|f| Arc::ptr_eq(f, feed)) {
                feeds.remove(&id);
            }
            true
        } else {
            false
        }
    }
}

/// Reads one batch whenever noticed (coalesced) or every `events_refresh`, until it has
/// finished (its final snapshot stays with the receivers) or nobody watches.
async fn run_feed(state: ApiState, id: BatchId, feed: Arc<Feed>) {
    let min_gap = state.settings.events_min_interval;
    let refresh = state.settings.events_refresh;
    loop {
        let read_at = Instant::now();
        let finished = match read(&state, id).await {
            Ok(Some(view)) => {
                let finished = view.status.is_finished();
                feed.snapshot.send_if_modified(|current| {
                    if current.as_deref() == Some(&view) {
                        false
                    } else {
                        *current = Some(Arc::new(view));
                        true
                    }
                });
                finished
            }
            Ok(None) => true, // deleted: nothing more will happen
            Err(e) => {
                debug!(batch = %id, error = %e, "cannot read batch progress; trying again");
                false
            }
        };
        if finished && state.hub.retire(id, &feed, true) {
            return;
        }
        tokio::select! {
            _ = feed.noticed.notified() => {}
            _ = tokio::time::sleep(refresh) => {}
            _ = feed.snapshot.closed() => {}
            _ = state.shutdown.cancelled() => {
                state.hub.retire(id, &feed, true);
                return;
            }
        }
        if state.hub.retire(id, &feed, false) {
            return;
        }
        // Coalesce: whatever else arrives before the gap is over is covered by the next read.
        tokio::time::sleep_until(read_at + min_gap).await;
    }
}

async fn read(state: &ApiState, id: BatchId) -> Result<Option<BatchStatusView>, ApiError> {
    match state.store.batch(id).await? {
        Some(b) => Ok(Some(status_view(state, &b).await?)),
        None => Ok(None),
    }
}

/// Subscribes to progress notices until `stop`, re-subscribing after a drop (and then
/// re-reading every watched batch, since notices may have been missed).
pub async fn listen(state: ApiState, stop: CancellationToken) {
    let notices = abridge_queue::resubscribing("progress notices", || {
        let queue = state.queue.clone();
        async move { queue.progress_notices().await }
    });
    let mut notices = std::pin::pin!(notices);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            next = notices.next() => match next {
                Some(abridge_queue::Subscribed::Notice(batches)) => state.hub.notice(&batches),
                Some(abridge_queue::Subscribed::Again) => state.hub.notice_all(),
                None => return,
            },
        }
    }
}

/// The event id of a snapshot: a fingerprint of its state.
fn event_id(view: &BatchStatusView) -> String {
    if view.status.is_finished() {
        format!(
            "{}-{}",
            view.status,
            view.finished_at.as_deref().unwrap_or("")
        )
    } else {
        let c = &view.counts;
        format!(
            "{}.{}.{}.{}.{}",
            c.queued, c.running, c.succeeded, c.failed, c.cancelled
        )
    }
}

/// The schema of one event of the stream, for the OpenAPI document: `itemSchema` of
/// `text/event-stream` (OpenAPI 3.2), where an event is an object of its fields (`event`,
/// `id`, `data`; `data` a string, here JSON described by `contentSchema`). It follows
/// [`to_event`] and [`event_id`]; the contract test checks real streams against it.
pub fn event_item_schema() -> serde_json::Value {
    use serde_json::json;
    let view = json!({ "$ref": "#/components/schemas/BatchStatusView" });
    let event = |name: &str, id: serde_json::Value, statuses: &[BatchStatus]| {
        let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        json!({
            "type": "object",
            "required": ["event", "id", "data"],
            "properties": {
                "event": { "const": name },
                "id": id,
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": {
                        "allOf": [view, { "properties": { "status": { "enum": statuses } } }]
                    }
                }
            }
        })
    };
    let final_id = |status: BatchStatus| {
        json!({
            "type": "string",
            "pattern": format!("^{status}-"),
            "description": format!("`{status}-` and the batch's `finished_at`")
        })
    };
    json!({
        "description": "One event: `progress` while the batch is pending or running, then one `completed` or `cancelled`, the last. `id` is a fingerprint of the state (send it back as `Last-Event-ID`); `data` is the batch status view as JSON",
        "oneOf": [
            event(
                PROGRESS_EVENT,
                json!({
                    "type": "string",
                    "pattern": r"^[0-9]+(\.[0-9]+){4}$",
                    "description": "The counts: queued.running.succeeded.failed.cancelled"
                }),
                &[BatchStatus::Pending, BatchStatus::Running],
            ),
            event(
                BatchStatus::Completed.as_str(),
                final_id(BatchStatus::Completed),
                &[BatchStatus::Completed],
            ),
            event(
                BatchStatus::Cancelled.as_str(),
                final_id(BatchStatus::Cancelled),
                &[BatchStatus::Cancelled],
            ),
        ]
    })
}

fn to_event(view: &BatchStatusView) -> Event {
    let name = if view.status.is_finished() {
        view.status.as_str()
    } else {
        PROGRESS_EVENT
    };
    Event::default()
        .event(name)
        .id(event_id(view))
        .json_data(view)
        .unwrap_or_else(|_| Event::default().comment("unencodable snapshot"))
}

#[utoipa::path(
    get, path = "/v1/batches/{id}/events", tag = "batches",
    params(
        BatchPath,
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received, when reconnecting"),
    ),
    responses(
        (status = 200, description = "`progress` events (data: the batch status view) at item transitions, at most a few per second, then one `completed` or `cancelled` event, then the stream ends (it also ends without one when the token is revoked or the server stops). The first event is the current state. Each event is described by the `itemSchema` of `text/event-stream`", content_type = "text/event-stream"),
        (status = 204, description = "The client already received the final event (its `Last-Event-ID`): `EventSource` stops reconnecting"),
        (status = 429, description = "The tenant already has as many open streams on this API process as it may (`ABRIDGE_API_MAX_STREAMS_PER_TENANT`): `too_many_streams`, with `Retry-After`", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn batch_events(
    State(state): State<ApiState>,
    caller: Caller,
    id: BatchPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let batch = owned_batch(&state, &caller, id).await?;
    let last_seen = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if batch.status.is_finished() {
        let view = status_view(&state, &batch).await?;
        if last_seen.as_deref() == Some(event_id(&view).as_str()) {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    let slot = state
        .hub
        .open_stream(caller.tenant().unwrap_or(""), state.settings.max_streams_per_tenant)
        .ok_or(ApiError::TooManyRequests {
            code: "too_many_streams",
            message: format!(
                "at most {} event streams at once per tenant (ABRIDGE_API_MAX_STREAMS_PER_TENANT); close one first",
                state.settings.max_streams_per_tenant
            ),
            retry_after: Some(state.settings.events_refresh.as_secs().max(1)),
        })?;
    let rx = state.hub.watch(&state, batch.id);
    // The token is looked up again every refresh: a revoked token's stream ends then.
    let credentials = Credentials {
        store: state.store.clone(),
        token_hash: caller.token_hash.clone(),
        every: state.settings.events_refresh,
        next_check: Instant::now() + state.settings.events_refresh,
        _slot: slot,
    };
    let shutdown = state.shutdown.clone();
    let stream = futures::stream::unfold(
        (rx, last_seen, false, shutdown, credentials),
        |(mut rx, mut last, done, shutdown, mut credentials)| async move {
            if done {
                return None;
            }
            loop {
                if Instant::now() >= credentials.next_check {
                    if !credentials.still_valid().await {
                        return None;
                    }
                    credentials.next_check = Instant::now() + credentials.every;
                }
                let current = rx.borrow_and_update().clone();
                if let Some(view) = current {
                    let id = event_id(&view);
                    if last.as_deref() != Some(id.as_str()) {
                        let finished = view.status.is_finished();
                        last = Some(id);
                        let event = to_event(&view);
                        return Some((
                            Ok::<_, Infallible>(event),
                            (rx, last, finished, shutdown, credentials),
                        ));
                    }
                    if view.status.is_finished() {
                        return None;
                    }
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() {
                        // The feed is gone; its last value may still be unsent.
                        let view = rx.borrow().clone()?;
                        let id = event_id(&view);
                        if last.as_deref() == Some(id.as_str()) {
                            return None;
                        }
                        return Some((
                            Ok(to_event(&view)),
                            (rx, Some(id), true, shutdown, credentials),
                        ));
                    },
                    _ = tokio::time::sleep_until(credentials.next_check) => {},
                    _ = shutdown.cancelled() => return None,
                }
            }
        },
    );
    let first = futures::stream::once(async {
        Ok::<_, Infallible>(
            Event::default()
                .retry(Duration::from_secs(2))
                .comment("abridge progress"),
        )
    });
    Ok(Sse::new(first.chain(stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
