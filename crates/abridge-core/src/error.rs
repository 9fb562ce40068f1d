//! How an item's processing fails. The variant decides what happens next: a transient error is
//! retried with backoff until `max_attempts`, a permanent one fails the item at once.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A short machine-readable failure class stored in `items.error_kind` (`rate_limited`,
/// `video_unavailable`, ...). Open-ended: backends add their own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorKind(Cow<'static, str>);

impl ErrorKind {
    /// The item ran longer than `item_timeout_ms`.
    pub const TIMEOUT: ErrorKind = ErrorKind::from_static("timeout");
    /// Its lease expired (the worker stopped renewing) too many times.
    pub const LEASE_EXPIRED: ErrorKind = ErrorKind::from_static("lease_expired");
    /// It was found running in Postgres with no lease in Redis (Redis lost it), too many times.
    pub const LEASE_LOST: ErrorKind = ErrorKind::from_static("lease_lost");
    /// Its worker died (missed heartbeats) while holding it, too many times.
    pub const WORKER_DIED: ErrorKind = ErrorKind::from_static("worker_died");
    /// A bug or an unexpected condition inside abridge.
    pub const INTERNAL: ErrorKind = ErrorKind::from_static("internal");

    pub const fn from_static(kind: &'static str) -> Self {
        Self(Cow::Borrowed(kind))
    }

    pub fn new(kind: impl Into<String>) -> Self {
        Self(Cow::Owned(kind.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What a tenant is told of a failure of this kind: stable and readable. The full message
    /// (provider text, request URLs, SQL) stays with the operator: it is stored on the item,
    /// logged, and shown to operator tokens only.
    pub fn public_message(&self) -> &'static str {
        public_message(self.as_str())
    }
}

/// [`ErrorKind::public_message`] for a stored kind.
pub fn public_message(kind: &str) -> &'static str {
    match kind {
        "video_unavailable" => "The video is unavailable (removed, private or never existed).",
        "transcripts_disabled" => "The video's captions are turned off.",
        "no_transcript" => "The video has no captions in the requested languages.",
        "age_restricted" => "The video is age-restricted; its captions cannot be read.",
        "invalid_video" => "This is not a valid video id.",
        "rate_limited"
        | "request_blocked"
        | "youtube_unavailable"
        | "youtube_unexpected"
        | "connection_failed"
        | "budget_unavailable" => {
            "YouTube could not be reached or refused the request; the item was retried."
        }
        "submitted" => {
            "The item waits for the model provider's batch API (half price); its answer is collected when the provider's batch ends."
        }
        "egress_blocked" => {
            "YouTube is blocking every proxy of the fleet for now; the item waits for one to come back."
        }
        "timeout" => "The item took longer than the time allowed.",
        "context_length_exceeded" => "The transcript is too long for the model.",
        "llm_rate_limited"
        | "llm_overloaded"
        | "llm_server_error"
        | "llm_timeout"
        | "llm_conflict"
        | "llm_connection_failed"
        | "circuit_open"
        | "budget_exhausted" => {
            "The summarizing model was unavailable or busy; the item was retried."
        }
        "llm_bad_response" => "The model's answer could not be read as a summary.",
        "llm_refused" => "The model declined to summarize the video, twice.",
        "transcript_too_short" => "The video's transcript is too short to summarize.",
        "llm_bad_request"
        | "llm_auth_failed"
        | "llm_forbidden"
        | "llm_not_found"
        | "insufficient_quota"
        | "backend_not_configured" => {
            "The summarizing model refused the request (the fleet's configuration); contact the operator."
        }
        "unknown_backend" | "invalid_options" => {
            "The batch asks for a summarizer this fleet does not offer."
        }
        "lease_expired" | "lease_lost" | "worker_died" => {
            "The worker processing the item stopped too many times."
        }
        "cancelled" => "The batch was cancelled.",
        "budget_reached" => "The batch's max_cost_usd was reached; the item was not summarized.",
        "unpriced_model" => {
            "The batch sets max_cost_usd, but the fleet has no price for its model; contact the operator."
        }
        "database_unavailable" | "database_busy" => {
            "The fleet's database was unavailable or busy; the item was retried."
        }
        "database_error" => "The fleet could not store the item's work; contact the operator.",
        "tenant_budget_exhausted" => {
            "The tenant's daily model budget is spent; the item waits for the next UTC day."
        }
        _ => "The item failed.",
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The failure of one attempt at one item.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// Worth another attempt later (rate limits, timeouts, 5xx, lost connections).
    #[error("{kind}: {message}")]
    Transient {
        kind: ErrorKind,
        message: String,
        /// The outside service's own hint (`retry-after`); the backoff never waits less.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (the video is private, the key is wrong, the input is invalid).
    #[error("{kind}: {message}")]
    Permanent { kind: ErrorKind, message: String },
    /// The item was not really attempted: the fleet is holding back (a provider's circuit
    /// breaker is open, a shared budget is spent). It waits `retry_after` and does not use up
    /// an attempt, so a long provider outage delays items instead of failing them.
    #[error("{kind}: {message}")]
    Deferred {
        kind: ErrorKind,
        message: String,
        retry_after: Duration,
    },
    /// The item will not be attempted, and that is not a failure: it ends `cancelled` (its
    /// batch's cost budget is spent).
    #[error("{kind}: {message}")]
    Cancelled { kind: ErrorKind, message: String },
}

impl ItemError {
    pub fn transient(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Transient {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Permanent {
            kind,
            message: message.into(),
        }
    }

    pub fn deferred(kind: ErrorKind, message: impl Into<String>, retry_after: Duration) -> Self {
        Self::Deferred {
            kind,
            message: message.into(),
            retry_after,
        }
    }

    pub fn cancelled(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Cancelled {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> &ErrorKind {
        match self {
            Self::Transient { kind, .. }
            | Self::Permanent { kind, .. }
            | Self::Deferred { kind, .. }
            | Self::Cancelled { kind, .. } => kind,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Self::Transient { message, .. }
            | Self::Permanent { message, .. }
            | Self::Deferred { message, .. }
            | Self::Cancelled { message, .. } => message,
        }
    }

    /// Worth another attempt later (deferred items are retried too, without counting).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Deferred { .. })
    }

    pub fn is_deferred(&self) -> bool {
        matches!(self, Self::Deferred { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::Deferred { retry_after, .. } => Some(*retry_after),
            Self::Permanent { .. } | Self::Cancelled { .. } => None,
        }
    }
}
