//! The API's errors and their one JSON shape:
//! `{"error": {"code": "...", "message": "...", "details": ...}}`.
//!
//! Codes are stable (clients branch on them); messages are for people. Internal failures are
//! logged here, once, and answered with a generic message: no SQL, Redis or stack text leaks.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A tenant asked for what only the operator may see or do.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    /// Malformed syntax: not JSON, a bad query string, a bad id.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Well-formed but unacceptable: a wrong type, an unknown value, nothing valid to do.
    #[error("{message}")]
    Unprocessable {
        code: &'static str,
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("{message}")]
    TooLarge { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// Over a limit the operator set for the tenant; `retry_after` (seconds) when waiting helps.
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after: Option<u64>,
    },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Postgres or Redis cannot be reached: retry later.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the cause is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `unauthorized`, `not_found`, `malformed_json`,
    /// `invalid_request`, `no_valid_input`, `too_many_items`, `body_too_large`,
    /// `idempotency_key_reused`, `batch_finished`, `batch_cancelled`, `webhook_url_refused`,
    /// `unavailable`, `internal`, ...
    pub code: String,
    pub message: String,
    /// Extra facts, such as every rejected input of a batch with no valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Unprocessable {
            code: "invalid_request",
            message: message.into(),
            details: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "operator_only"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::TooLarge { code, .. } => (StatusCode::PAYLOAD_TOO_LARGE, code),
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::TooManyRequests { code, .. } => (StatusCode::TOO_MANY_REQUESTS, code),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self {
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "answering 503");
                "a database is unavailable; try again shortly".to_owned()
            }
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, "answering 500");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => *retry_after,
            _ => None,
        };
        let details = match self {
            ApiError::Unprocessable { details, .. } => details,
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message,
                details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<abridge_store::StoreError> for ApiError {
    fn from(e: abridge_store::StoreError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<abridge_queue::QueueError> for ApiError {
    fn from(e: abridge_queue::QueueError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<abridge_control::ControlError> for ApiError {
    fn from(e: abridge_control::ControlError) -> Self {
        use abridge_control::ControlError as C;
        match e {
            C::NotFound(id) => ApiError::NotFound(format!("no batch {id}")),
            C::AlreadyFinished { id, status } => ApiError::Conflict {
                code: "batch_finished",
                message: format!("batch {id} is already {status}"),
            },
            C::Cancelled(id) => ApiError::Conflict {
                code: "batch_cancelled",
                message: format!("batch {id} is cancelled: its items cannot be retried"),
            },
            C::NothingToEnqueue { rejected } => ApiError::Unprocessable {
                code: "no_valid_input",
                message: format!(
                    "no valid video URL or id in the request ({} rejected)",
                    rejected.len()
                ),
                details: None,
            },
            C::OptionsRefused(message) => ApiError::Unprocessable {
                code: "option_not_allowed",
                message,
                details: None,
            },
            C::QuotaExceeded(message) => ApiError::TooManyRequests {
                code: "quota_exceeded",
                message,
                retry_after: None,
            },
            C::RateLimited {
                message,
                retry_after,
            } => ApiError::TooManyRequests {
                code: "rate_limited",
                message,
                retry_after: Some(retry_after),
            },
            C::StoredResult(m) => ApiError::Internal(m),
            C::Store(e) => e.into(),
            C::Queue(e) => e.into(),
        }
    }
}

/// Answers unknown paths in the error shape.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

/// Answers known paths called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this endpoint".to_owned())
}

/// A JSON request body, or the API's answer for one that is not: `400 malformed_json`, `415`
/// for another content type, `422` naming the field for a wrong type or unknown field.
/// `what` names the body in the 415 message ("the settings").
pub fn json_body<T>(
    body: Result<axum::Json<T>, axum::extract::rejection::JsonRejection>,
    what: &str,
) -> Result<T, ApiError> {
    use axum::extract::rejection::JsonRejection;
    body.map(|axum::Json(v)| v).map_err(|e| match e {
        JsonRejection::BytesRejection(e)
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
        {
            ApiError::TooLarge {
                code: "body_too_large",
                message: format!("the request body is too large: {}", e.body_text()),
            }
        }
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "malformed_json",
            format!("request body is not valid JSON: {e}"),
        ),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType(format!("send {what} as application/json"))
        }
        other => ApiError::invalid(other.body_text()),
    })
}
