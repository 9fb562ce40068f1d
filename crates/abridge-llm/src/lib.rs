//! LLM providers. One request, one answer, one classified error: this crate is the only one
//! that talks to a model.
//!
//! - [`LlmClient`]: OpenAI-compatible Chat Completions (`POST {base}/v1/chat/completions`,
//!   bearer key; also Ollama, vLLM, llama.cpp server and hosted gateways) and Anthropic Messages
//!   (`POST {base}/v1/messages`, `x-api-key`, `anthropic-version: 2023-06-01`).
//! - [`LlmError`]: every failure, with the `error_kind` an item fails with, whether it is worth
//!   retrying, and the provider's `retry-after` / `retry-after-ms`.
//! - [`retry`]: the capped exponential backoff with jitter that callers retry with.
//! - [`tokens`]: token estimates, for fitting a prompt to a model's window before sending it.
//!
//! Retrying, budgets and circuit breaking are the caller's: a client makes exactly one HTTP
//! request per [`LlmClient::complete`], so every attempt can be counted against a budget.
//!
//! API keys are [`Secret`]s: they never appear in `Debug`, in errors (a provider message that
//! echoes the key is redacted) or in logs.

pub mod batch;
pub mod retry;
pub mod tokens;

use std::fmt;
use std::time::Duration;

use abridge_core::settings::Secret;
use abridge_core::{ErrorKind, ItemError};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// Which API a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    /// The backend name (`ABRIDGE_SUMMARIZER`).
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::Anthropic => "anthropic",
        }
    }

    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::OpenAi => "https://api.openai.com",
            Self::Anthropic => "https://api.anthropic.com",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `text` without a markdown code fence around it (```json ... ```), trimmed.
pub fn unfence(text: &str) -> &str {
    let t = text.trim();
    match t.strip_prefix("```") {
        Some(rest) => {
            let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
            rest.strip_suffix("```").unwrap_or(rest).trim()
        }
        None => t,
    }
}

/// The name of the structured answer (OpenAI's schema name, Anthropic's tool).
const STRUCTURE_NAME: &str = "summary";

/// How to reach one provider.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    pub provider: Provider,
    /// `https://api.openai.com`, `http://localhost:11434` (Ollama), ...; a trailing `/v1` is
    /// accepted too.
    pub base_url: String,
    /// Required by the hosted APIs; local servers usually need none.
    pub api_key: Option<Secret>,
    /// Per request, including reading the whole answer.
    pub timeout: Duration,
}

/// One prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub system: String,
    pub user: String,
    /// The most tokens the answer may have.
    pub max_tokens: u32,
    pub temperature: f32,
    /// A JSON schema the answer should follow, asked for as the provider asks for structure:
    /// OpenAI's `response_format` (`json_schema`, strict), Anthropic's forced tool call. `None`:
    /// a text answer.
    pub structure: Option<Value>,
}

/// One answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatResponse {
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// The answer was cut at `max_tokens`.
    pub truncated: bool,
    /// The answer as the JSON object the request's `structure` asked for, when it is one.
    pub structured: Option<Value>,
    /// The provider said the model declined (OpenAI's `refusal`, Anthropic's `refusal` stop).
    pub refused: bool,
}

/// The class of a failure; decides the `error_kind` and whether to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmErrorKind {
    /// 429 (not `insufficient_quota`).
    RateLimited,
    /// Anthropic's 529.
    Overloaded,
    /// 500, 502, 503, 504, ...
    Server,
    /// 408, or no answer in time.
    Timeout,
    /// 409.
    Conflict,
    /// The provider could not be reached.
    Connection,
    /// A 200 whose body was not what the API documents.
    BadResponse,
    /// 400 and 422, other than context length.
    BadRequest,
    /// 401: the key is wrong or missing.
    Auth,
    /// 403.
    Forbidden,
    /// 404: usually an unknown model.
    NotFound,
    /// The prompt does not fit the model's window.
    ContextLength,
    /// The account is out of credit (OpenAI's 429 `insufficient_quota`).
    InsufficientQuota,
}

impl LlmErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "llm_rate_limited",
            Self::Overloaded => "llm_overloaded",
            Self::Server => "llm_server_error",
            Self::Timeout => "llm_timeout",
            Self::Conflict => "llm_conflict",
            Self::Connection => "llm_connection_failed",
            Self::BadResponse => "llm_bad_response",
            Self::BadRequest => "llm_bad_request",
            Self::Auth => "llm_auth_failed",
            Self::Forbidden => "llm_forbidden",
            Self::NotFound => "llm_not_found",
            Self::ContextLength => "context_length_exceeded",
            Self::InsufficientQuota => "insufficient_quota",
        }
    }

    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Overloaded
                | Self::Server
                | Self::Timeout
                | Self::Conflict
                | Self::Connection
                | Self::BadResponse
        )
    }

    /// The provider looks down (not merely busy with us): what a circuit breaker counts.
    pub fn means_provider_down(self) -> bool {
        matches!(
            self,
            Self::Overloaded | Self::Server | Self::Timeout | Self::Connection
        )
    }
}

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{provider} {}: {message}", .status.map(|s| format!("HTTP {s}")).unwrap_or_else(|| "request".to_owned()))]
pub struct LlmError {
    pub provider: Provider,
    pub kind: LlmErrorKind,
    /// The HTTP status, if one came back.
    pub status: Option<u16>,
    /// What the provider said (its error message), or what went wrong. Never holds the key.
    pub message: String,
    /// `retry-after-ms` or `retry-after`.
    pub retry_after: Option<Duration>,
}

impl From<LlmError> for ItemError {
    fn from(e: LlmError) -> Self {
        let kind = ErrorKind::from_static(e.kind.as_str());
        if e.kind.is_transient() {
            ItemError::Transient {
                kind,
                retry_after: e.retry_after,
                message: e.to_string(),
            }
        } else {
            ItemError::permanent(kind, e.to_string())
        }
    }
}

/// The client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("build {provider} client: {cause}")]
pub struct BuildError {
    provider: Provider,
    cause: String,
}

/// A provider client. Cheap to clone.
#[derive(Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    config: LlmConfig,
    /// The provider's root, without `/v1` (the batch APIs' endpoints hang off it).
    base: String,
    endpoint: String,
}

impl fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmClient")
            .field("provider", &self.config.provider)
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.config.api_key)
            .finish()
    }
}

impl LlmClient {
    pub fn new(config: LlmConfig) -> Result<Self, BuildError> {
        // reqwest is built without a default TLS provider (see the workspace manifest).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| BuildError {
                provider: config.provider,
                cause: e.to_string(),
            })?;
        let base = config.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let endpoint = match config.provider {
            Provider::OpenAi => format!("{base}/v1/chat/completions"),
            Provider::Anthropic => format!("{base}/v1/messages"),
        };
        if reqwest::Url::parse(&endpoint).is_err() {
            return Err(BuildError {
                provider: config.provider,
                cause: format!("base url {:?} is not a URL", config.base_url),
            });
        }
        Ok(Self {
            http,
            base: base.to_owned(),
            config,
            endpoint,
        })
    }

    pub fn provider(&self) -> Provider {
        self.config.provider
    }

    /// One request to the provider.
    pub async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let builder = self.authed(self.http.post(&self.endpoint));
        let body = self.body(request);
        let response = builder
            .json(&body)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(self.status_error(status, &text, retry_after));
        }
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            self.error(
                LlmErrorKind::BadResponse,
                Some(status.as_u16()),
                format!("answer is not JSON: {e}"),
            )
        })?;
        self.read_answer(&value, request)
    }

    /// `builder` with the provider's key and version headers.
    fn authed(&self, mut builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.config.provider {
            Provider::OpenAi => {
                if let Some(key) = &self.config.api_key {
                    builder = builder.bearer_auth(key.expose());
                }
            }
            Provider::Anthropic => {
                if let Some(key) = &self.config.api_key {
                    builder = builder.header("x-api-key", key.expose());
                }
                builder = builder.header("anthropic-version", "2023-06-01");
            }
        }
        builder
    }

    /// The request's body in the provider's format.
    fn body(&self, request: &ChatRequest) -> Value {
        match self.config.provider {
            Provider::OpenAi => self.openai_body(request),
            Provider::Anthropic => {
                let mut body = json!({
                    "model": request.model,
                    "max_tokens": request.max_tokens,
                    "temperature": request.temperature,
                    "system": request.system,
                    "messages": [{"role": "user", "content": request.user}],
                });
                if let Some(schema) = &request.structure {
                    body["tools"] = json!([{
                        "name": STRUCTURE_NAME,
                        "description": "Record the answer.",
                        "input_schema": schema,
                    }]);
                    body["tool_choice"] = json!({"type": "tool", "name": STRUCTURE_NAME});
                }
                body
            }
        }
    }

    /// The official API wants `max_completion_tokens` (reasoning models refuse `max_tokens` and
    /// any temperature but the default); compatible servers know `max_tokens`.
    fn openai_body(&self, request: &ChatRequest) -> Value {
        let messages = json!([
            {"role": "system", "content": request.system},
            {"role": "user", "content": request.user},
        ]);
        let mut body = if self.endpoint.starts_with("https://api.openai.com/") {
            json!({
                "model": request.model,
                "messages": messages,
                "max_completion_tokens": request.max_tokens,
            })
        } else {
            json!({
                "model": request.model,
                "messages": messages,
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "stream": false,
            })
        };
        if let Some(schema) = &request.structure {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": {"name": STRUCTURE_NAME, "strict": true, "schema": schema},
            });
        }
        body
    }

    fn read_answer(&self, v: &Value, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let (text, structured, refused, truncated, input, output) = match self.config.provider {
            Provider::OpenAi => {
                let choice = &v["choices"][0];
                // A model that declines under a JSON schema says so in `refusal`, with no content.
                let refusal = choice["message"]["refusal"].as_str();
                let text = choice["message"]["content"]
                    .as_str()
                    .or(refusal)
                    .map(str::to_owned);
                // Asked for JSON: an object (fenced as markdown code, too) is the structured
                // answer; anything else is text.
                let structured = request
                    .structure
                    .as_ref()
                    .and(text.as_deref())
                    .and_then(|t| serde_json::from_str::<Value>(unfence(t)).ok())
                    .filter(Value::is_object);
                (
                    text,
                    structured,
                    refusal.is_some_and(|r| !r.trim().is_empty()),
                    choice["finish_reason"].as_str() == Some("length"),
                    v["usage"]["prompt_tokens"].as_u64(),
                    v["usage"]["completion_tokens"].as_u64(),
                )
            }
            Provider::Anthropic => {
                let parts = v["content"].as_array();
                let tool = parts
                    .into_iter()
                    .flatten()
                    .find(|p| p["type"] == "tool_use" && p["name"] == STRUCTURE_NAME)
                    .map(|p| p["input"].clone())
                    .filter(Value::is_object);
                let text = parts
                    .map(|parts| {
                        parts
                            .iter()
                            .filter(|p| p["type"] == "text")
                            .filter_map(|p| p["text"].as_str())
                            .collect::<String>()
                    })
                    .filter(|t| !t.trim().is_empty())
                    .or_else(|| tool.as_ref().map(Value::to_string));
                (
                    text,
                    tool,
                    v["stop_reason"].as_str() == Some("refusal"),
                    v["stop_reason"].as_str() == Some("max_tokens"),
                    v["usage"]["input_tokens"].as_u64(),
                    v["usage"]["output_tokens"].as_u64(),
                )
            }
        };
        let text = text.filter(|t| !t.trim().is_empty()).ok_or_else(|| {
            self.error(
                LlmErrorKind::BadResponse,
                Some(200),
                "the answer has no text".into(),
            )
        })?;
        Ok(ChatResponse {
            model: v["model"]
                .as_str()
                .unwrap_or(request.model.as_str())
                .to_owned(),
            // Servers that report no usage are charged our estimate.
            input_tokens: input.unwrap_or_else(|| {
                tokens::estimate(&request.system) + tokens::estimate(&request.user)
            }),
            output_tokens: output.unwrap_or_else(|| tokens::estimate(&text)),
            text,
            truncated,
            structured,
            refused,
        })
    }

    fn error(&self, kind: LlmErrorKind, status: Option<u16>, message: String) -> LlmError {
        LlmError {
            provider: self.config.provider,
            kind,
            status,
            message: self.redact(message),
            retry_after: None,
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> LlmError {
        let kind = if e.is_timeout() {
            LlmErrorKind::Timeout
        } else {
            LlmErrorKind::Connection
        };
        // The URL is left out: a gateway's URL may carry credentials.
        let mut text = if e.is_timeout() {
            "no answer in time".to_owned()
        } else if e.is_connect() {
            "could not connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        self.error(kind, None, text)
    }

    /// Classifies a non-2xx answer from its status and the provider's error body.
    fn status_error(
        &self,
        status: StatusCode,
        body: &str,
        retry_after: Option<Duration>,
    ) -> LlmError {
        let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        let error = &parsed["error"];
        let message = error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                let snippet: String = body.chars().take(200).collect();
                if snippet.trim().is_empty() {
                    status.canonical_reason().unwrap_or("error").to_owned()
                } else {
                    snippet
                }
            });
        let code = error["code"].as_str().unwrap_or_default();
        let etype = error["type"].as_str().unwrap_or_default();
        let lower = message.to_lowercase();
        let context_length = code == "context_length_exceeded"
            || lower.contains("context length")
            || lower.contains("context window")
            || lower.contains("prompt is too long")
            || lower.contains("maximum context");
        let kind = match status.as_u16() {
            429 if code == "insufficient_quota" || etype == "insufficient_quota" => {
                LlmErrorKind::InsufficientQuota
            }
            429 => LlmErrorKind::RateLimited,
            529 => LlmErrorKind::Overloaded,
            408 => LlmErrorKind::Timeout,
            409 => LlmErrorKind::Conflict,
            413 => LlmErrorKind::ContextLength,
            400 | 422 if context_length => LlmErrorKind::ContextLength,
            400 | 422 => LlmErrorKind::BadRequest,
            401 => LlmErrorKind::Auth,
            403 => LlmErrorKind::Forbidden,
            404 => LlmErrorKind::NotFound,
            s if s >= 500 => {
                if etype == "overloaded_error" {
                    LlmErrorKind::Overloaded
                } else {
                    LlmErrorKind::Server
                }
            }
            _ => LlmErrorKind::BadRequest,
        };
        let mut e = self.error(kind, Some(status.as_u16()), message);
        e.retry_after = retry_after;
        e
    }

    /// Removes the API key from text a provider sent back (some echo it in auth errors).
    fn redact(&self, text: String) -> String {
        match &self.config.api_key {
            Some(key) if key.expose().len() >= 4 && text.contains(key.expose()) => {
                text.replace(key.expose(), "***")
            }
            _ => text,
        }
    }
}

/// `retry-after-ms` (milliseconds), else `retry-after` (seconds or an HTTP date).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let raw = header("retry-after")?;
    if let Ok(secs) = raw.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
    Some(
        at.signed_duration_since(chrono::Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(provider: Provider, key: Option<&str>) -> LlmClient {
        LlmClient::new(LlmConfig {
            provider,
            base_url: "http://127.0.0.1:9/v1/".into(),
            api_key: key.map(Secret::new),
            timeout: Duration::from_secs(1),
        })
        .unwrap()
    }

    #[test]
    fn endpoints_accept_a_base_with_or_without_v1() {
        assert_eq!(
            client(Provider::OpenAi, None).endpoint,
            "http://127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(
            client(Provider::Anthropic, None).endpoint,
            "http://127.0.0.1:9/v1/messages"
        );
    }

    #[test]
    fn classifies_statuses_and_bodies() {
        let c = client(Provider::OpenAi, Some("sk-secret-123"));
        let kind = |status: u16, body: &str| {
            c.status_error(StatusCode::from_u16(status).unwrap(), body, None)
                .kind
        };
        assert_eq!(
            kind(
                429,
                r#"{"error":{"code":"rate_limit_exceeded","message":"slow down"}}"#
            ),
            LlmErrorKind::RateLimited
        );
        assert_eq!(
            kind(
                429,
                r#"{"error":{"code":"insufficient_quota","type":"insufficient_quota","message":"quota"}}"#
            ),
            LlmErrorKind::InsufficientQuota
        );
        assert_eq!(
            kind(
                400,
                r#"{"error":{"code":"context_length_exceeded","message":"too long"}}"#
            ),
            LlmErrorKind::ContextLength
        );
        assert_eq!(
            kind(
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#
            ),
            LlmErrorKind::ContextLength
        );
        assert_eq!(
            kind(400, r#"{"error":{"message":"bad"}}"#),
            LlmErrorKind::BadRequest
        );
        assert_eq!(kind(401, ""), LlmErrorKind::Auth);
        assert_eq!(kind(403, ""), LlmErrorKind::Forbidden);
        assert_eq!(kind(404, ""), LlmErrorKind::NotFound);
        assert_eq!(kind(408, ""), LlmErrorKind::Timeout);
        assert_eq!(kind(409, ""), LlmErrorKind::Conflict);
        assert_eq!(kind(500, "<html>oops</html>"), LlmErrorKind::Server);
        assert_eq!(kind(503, ""), LlmErrorKind::Server);
        assert_eq!(
            kind(
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            LlmErrorKind::Overloaded
        );
        for k in [
            LlmErrorKind::RateLimited,
            LlmErrorKind::Overloaded,
            LlmErrorKind::Server,
            LlmErrorKind::Timeout,
            LlmErrorKind::Conflict,
        ] {
            assert!(k.is_transient(), "{k:?}");
        }
        for k in [
            LlmErrorKind::BadRequest,
            LlmErrorKind::Auth,
            LlmErrorKind::Forbidden,
            LlmErrorKind::NotFound,
            LlmErrorKind::ContextLength,
            LlmErrorKind::InsufficientQuota,
        ] {
            assert!(!k.is_transient(), "{k:?}");
        }
    }

    #[test]
    fn keys_are_redacted_from_provider_messages_and_debug() {
        let c = client(Provider::OpenAi, Some("sk-secret-123"));
        let e = c.status_error(
            StatusCode::UNAUTHORIZED,
            r#"{"error":{"message":"Incorrect API key provided: sk-secret-123."}}"#,
            None,
        );
        assert!(!e.to_string().contains("sk-secret-123"), "{e}");
        assert!(
            e.to_string().contains("Incorrect API key provided: ***"),
            "{e}"
        );
        assert!(!format!("{c:?}").contains("sk-secret-123"));
    }

    #[test]
    fn reads_retry_after_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
