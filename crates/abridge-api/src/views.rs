//! What the API sends and accepts, with their OpenAPI schemas. Timestamps are RFC 3339 in UTC
//! with milliseconds, as `abridge status --json` prints them.

use std::time::Duration;

use abridge_core::{BatchId, BatchOptions, BatchStatus, ItemStatus, Priority};
use abridge_store::FinishRate;
use abridge_store::{BatchView, ItemView};

use crate::auth::Caller;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// `POST /v1/batches`. Serialized (fields in this order, absent ones as `null`) only to hash a
/// request for its `Idempotency-Key`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    /// A name to recognise the batch by: at most 200 characters, none of them control
    /// characters, once trimmed (empty is no name).
    pub name: Option<String>,
    #[schema(value_type = Option<PriorityName>)]
    pub priority: Option<Priority>,
    /// Video URLs or bare 11-character ids, or playlists (`/playlist?list=ID`) and channels
    /// (`/@handle`, `/@handle/videos`, `/channel/ID`), which are read at once and expanded
    /// into their videos, in order, in their place. An input that is not a video (or a list
    /// that cannot be read, with YouTube's reason) is reported in `rejected`; a batch needs at
    /// least one video (else 422 `no_valid_input`).
    pub urls: Option<Vec<String>>,
    /// Videos with an optional title and transcript (a supplied transcript is summarized
    /// without fetching one). Positions continue after `urls`.
    pub items: Option<Vec<ItemSpec>>,
    #[schema(value_type = Option<Summarizer>)]
    pub summarizer: Option<BatchOptions>,
    /// POSTed the final status, signed, when the batch completes or is cancelled. An http(s)
    /// URL of at most 2048 characters, without credentials, whose host resolves to public
    /// addresses only (unless the operator allows others).
    pub webhook_url: Option<String>,
    /// Expand `watch?v=X&list=ID` (and `youtu.be/X?list=ID`) into the playlist `ID` rather
    /// than take the one video `X` (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand_lists: Option<bool>,
    /// Videos taken from each playlist or channel, from its start (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 5000)]
    pub max_per_list: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    pub url: String,
    pub title: Option<String>,
    pub transcript: Option<String>,
}

/// The batch's summarizer options; unset fields use the fleet's defaults.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // documents BatchOptions in the OpenAPI document
pub struct Summarizer {
    /// `extractive`, `openai` or `anthropic` (any case), or `noop` where the operator turns
    /// drills on; a tenant may name only the backends the operator allows it.
    pub backend: Option<String>,
    /// At most 200 bytes of UTF-8, not only spaces, no control characters; a tenant may name
    /// only the models the operator allows it.
    pub model: Option<String>,
    pub length: Option<LengthName>,
    /// Transcript language preference, most preferred first (`de` or `pt-BR,en`): at most
    /// 100 bytes, comma-separated codes of 2 to 12 characters of A-Z, a-z, 0-9 and `-`.
    pub language: Option<String>,
    /// US dollars: once the batch's model requests have cost this much, its remaining items
    /// end `cancelled` with `budget_reached` instead of starting (above 0, at most 1000000).
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub max_cost_usd: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum LengthName {
    Short,
    Standard,
    Detailed,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum PriorityName {
    High,
    Normal,
    Low,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum BatchStatusName {
    Pending,
    Running,
    Completed,
    Cancelled,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum ItemStatusName {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// One rejected input.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RejectedInput {
    /// The array it came from: `urls` or `items`.
    pub field: String,
    /// Its index in that array (0-based).
    pub index: usize,
    /// The input, shortened to 200 characters.
    pub input: String,
    pub reason: String,
}

/// The answer to `POST /v1/batches`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Created {
    #[schema(value_type = String, format = Uuid)]
    pub id: BatchId,
    #[schema(value_type = BatchStatusName)]
    pub status: BatchStatus,
    /// Items in the batch (= `accepted`).
    pub total: usize,
    pub accepted: usize,
    /// Inputs that repeated an earlier video (the first is kept).
    pub duplicates: usize,
    pub rejected: Vec<RejectedInput>,
}

/// Items per state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CountsView {
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

/// A batch: the shape of `abridge status --json`, plus progress, ETA and API fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchStatusView {
    #[schema(value_type = String, format = Uuid)]
    pub id: BatchId,
    pub name: Option<String>,
    /// The tenant that created it; `null` for a batch of the CLI or an operator token.
    #[serde(default)]
    pub tenant: Option<String>,
    #[schema(value_type = BatchStatusName)]
    pub status: BatchStatus,
    #[schema(value_type = PriorityName)]
    pub priority: Priority,
    pub total: i64,
    pub counts: CountsView,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Finished items (succeeded, failed or cancelled) as a share of all, 0 to 100.
    pub progress_percent: f64,
    /// Seconds until every item is finished at the recent completion rate; `null` while no
    /// rate is known, 0 once finished.
    pub eta_seconds: Option<u64>,
    #[schema(value_type = Object)]
    pub summarizer: serde_json::Value,
    pub cost: CostView,
    pub webhook_url: Option<String>,
    /// Where the batch's webhook stands; `null` for a batch without one.
    pub webhook: Option<WebhookView>,
}

/// What a batch's model requests cost, from the fleet's price table (US dollars).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CostView {
    /// Spent so far, by every attempt (retries and refused answers too).
    pub spent_usd: f64,
    /// What its unfinished items will add at the average cost of its finished ones so far;
    /// `null` until one has finished, 0 once none is left.
    pub estimate_rest_usd: Option<f64>,
    /// The batch's limit (`summarizer.max_cost_usd`), if it set one.
    pub max_cost_usd: Option<f64>,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Some requests went to a model without a price: their cost is not in `spent_usd`.
    pub unpriced: bool,
}

impl CostView {
    pub fn new(b: &BatchView) -> Self {
        let c = b.counts;
        let spent = b.spend.cost_usd;
        let unfinished = c.queued + c.running;
        // Cancelled items never cost anything: they do not lower the average.
        let finished = c.succeeded + c.failed;
        let estimate_rest_usd = if unfinished == 0 {
            Some(0.0)
        } else if finished > 0 {
            Some(spent / finished as f64 * unfinished as f64)
        } else {
            None
        };
        Self {
            spent_usd: spent,
            estimate_rest_usd,
            max_cost_usd: b.options.get("max_cost_usd").and_then(|v| v.as_f64()),
            requests: b.spend.requests,
            input_tokens: b.spend.input_tokens,
            output_tokens: b.spend.output_tokens,
            unpriced: b.spend.unpriced,
        }
    }
}

/// A batch's webhook delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// `waiting` (the batch has not finished), `due`, `sending`, `retrying`, `delivered` or
    /// `gave_up` (it failed for `ABRIDGE_WEBHOOK_GIVE_UP_MS`; a retry of the batch re-arms it).
    pub state: String,
    /// Attempts of the current event.
    pub attempts: i32,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<String>,
    /// When the next attempt is due, while one is.
    pub next_attempt_at: Option<String>,
    pub delivered_at: Option<String>,
    pub gave_up_at: Option<String>,
}

impl WebhookView {
    pub fn new(d: &abridge_store::webhooks::DeliveryView, batch_finished: bool) -> Self {
        let state = if d.delivered_at.is_some() {
            "delivered"
        } else if d.gave_up_at.is_some() {
            "gave_up"
        } else if !batch_finished {
            "waiting"
        } else if d.in_flight {
            "sending"
        } else if d.attempts > 0 {
            "retrying"
        } else {
            "due"
        };
        let pending = d.delivered_at.is_none() && d.gave_up_at.is_none() && batch_finished;
        Self {
            state: state.to_owned(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error.clone(),
            last_attempt_at: d.last_attempt_at.as_ref().map(rfc3339),
            next_attempt_at: pending.then(|| rfc3339(&d.next_attempt_at)),
            delivered_at: d.delivered_at.as_ref().map(rfc3339),
            gave_up_at: d.gave_up_at.as_ref().map(rfc3339),
        }
    }
}

impl BatchStatusView {
    pub fn new(b: &BatchView, rate: Option<FinishRate>) -> Self {
        let c = b.counts;
        let total = b.total.max(c.total());
        let finished = c.terminal();
        let progress_percent = if total == 0 {
            100.0
        } else {
            (finished as f64 * 1000.0 / total as f64).floor() / 10.0
        };
        let remaining = c.queued + c.running;
        let eta_seconds = if b.status.is_finished() || remaining == 0 {
            Some(0)
        } else {
            rate.and_then(|r| eta(remaining, r))
        };
        Self {
            id: b.id,
            name: b.name.clone(),
            tenant: b.tenant.clone(),
            status: b.status,
            priority: b.priority,
            total: b.total,
            counts: CountsView {
                queued: c.queued,
                running: c.running,
                succeeded: c.succeeded,
                failed: c.failed,
                cancelled: c.cancelled,
            },
            created_at: rfc3339(&b.created_at),
            started_at: b.started_at.as_ref().map(rfc3339),
            finished_at: b.finished_at.as_ref().map(rfc3339),
            progress_percent,
            eta_seconds,
            summarizer: b.options.clone(),
            cost: CostView::new(b),
            webhook_url: b.webhook_url.clone(),
            webhook: None,
        }
    }
}

/// Remaining items at the recent rate, rounded up; `None` without a usable rate.
fn eta(remaining: i64, rate: FinishRate) -> Option<u64> {
    if rate.finished <= 0 || rate.window < Duration::from_millis(250) {
        return None;
    }
    let per_second = rate.finished as f64 / rate.window.as_secs_f64();
    Some((remaining as f64 / per_second).ceil() as u64)
}

/// A page of batches.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchPage {
    pub batches: Vec<BatchStatusView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One item of a batch.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemStatusView {
    pub id: i64,
    #[schema(value_type = String, format = Uuid)]
    pub batch_id: BatchId,
    /// 0-based input order.
    pub position: i32,
    pub url: String,
    pub video_id: String,
    pub title: Option<String>,
    #[schema(value_type = ItemStatusName)]
    pub status: ItemStatus,
    /// Attempts started so far.
    pub attempts: i32,
    pub error_kind: Option<String>,
    /// A tenant reads the stable message of `error_kind`; the operator the full one.
    pub error_message: Option<String>,
    /// The summary (markdown), once succeeded.
    pub summary: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// The error message a reader may see: the operator's is the full one (provider text, request
/// URLs, SQL); a tenant's is the stable message of the error's kind.
pub fn shown_error(operator: bool, kind: Option<&str>, message: Option<String>) -> Option<String> {
    if operator {
        return message;
    }
    message.map(|_| abridge_core::public_message(kind.unwrap_or("")).to_owned())
}

impl ItemStatusView {
    /// The item as `caller` may see it.
    pub fn shown_to(i: ItemView, caller: &Caller) -> Self {
        Self::new(i, caller.is_operator())
    }

    /// The item with its full error message (`operator`) or its kind's stable one.
    pub fn new(i: ItemView, operator: bool) -> Self {
        let error_message = shown_error(operator, i.error_kind.as_deref(), i.error_message);
        Self {
            id: i.id.0,
            batch_id: i.batch_id,
            position: i.position,
            url: i.url,
            video_id: i.video_id,
            title: i.title,
            status: i.status,
            attempts: i.attempts,
            error_kind: i.error_kind,
            error_message,
            summary: i.summary,
            started_at: i.started_at.as_ref().map(rfc3339),
            finished_at: i.finished_at.as_ref().map(rfc3339),
        }
    }
}

/// A page of items.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ItemPage {
    pub items: Vec<ItemStatusView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// The answer to `POST /v1/batches/{id}/retry`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Retried {
    /// Failed items put back in the queue.
    pub requeued: usize,
    pub batch: BatchStatusView,
}
