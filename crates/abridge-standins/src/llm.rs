//! LLM provider stand-ins: OpenAI's `POST /v1/chat/completions` and Anthropic's
//! `POST /v1/messages`, with their real request checks, response and error bodies; and their
//! batch APIs (OpenAI: `/v1/files`, `/v1/batches`, the output file; Anthropic:
//! `/v1/messages/batches` and its results), answering each batched request as the chat
//! endpoint would once the batch ends (after [`LlmStandin::batch_polls`] polls), or expiring
//! every batch ([`LlmStandin::expire_batches`]).
//!
//! The "model" is deterministic: it answers in the line format abridge's prompts ask for, built
//! from the `[mm:ss] text` lines of the request (`TL;DR: ...` then `KEY POINTS:` and up to five
//! `- [mm:ss] ...` bullets). A request over the context window (estimated at 4 characters per
//! token) gets the provider's context-length error. Tests queue failures with
//! [`LlmStandin::push_failure`] (served first, in order) or pin one to a request number with
//! [`LlmStandin::fail_nth`], and queue answers of their own (prose, a refusal, anything a real
//! model says) with [`LlmStandin::push_answer`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::Server;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

/// A scripted failure: status, extra headers, JSON body.
#[derive(Clone, Debug)]
pub struct Failure {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Failure {
    /// The provider's error body for `status`, with its usual `type`.
    pub fn new(provider: Provider, status: u16, message: &str) -> Self {
        let body = match provider {
            Provider::OpenAi => {
                let (kind, code) = match status {
                    401 => ("invalid_request_error", "invalid_api_key"),
                    429 => ("requests", "rate_limit_exceeded"),
                    400 => ("invalid_request_error", "invalid_request"),
                    _ => ("server_error", "server_error"),
                };
                json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            }
            Provider::Anthropic => {
                let kind = match status {
                    400 => "invalid_request_error",
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    429 => "rate_limit_error",
                    529 => "overloaded_error",
                    _ => "api_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
        };
        Self {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// OpenAI's out-of-credit 429, which must not be retried.
    pub fn insufficient_quota() -> Self {
        Self {
            status: 429,
            headers: Vec::new(),
            body: json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                                   "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
        }
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    /// The status it was answered with.
    pub status: u16,
}

struct Inner {
    provider: Provider,
    /// Largest request (estimated tokens: characters / 4) the model accepts.
    context_tokens: usize,
    failures: VecDeque<Failure>,
    /// Answers served instead of the deterministic one, in order.
    answers: VecDeque<String>,
    /// Refuse a request that asks for structure (`response_format`), as servers without
    /// JSON-schema support do.
    reject_structure: bool,
    /// Failures for given request numbers (1-based, counting every request received).
    nth: std::collections::HashMap<usize, Failure>,
    received: Vec<Received>,
    /// Uploaded files (OpenAI), by id: their text.
    files: std::collections::HashMap<String, String>,
    batches: std::collections::HashMap<String, Batch>,
    /// Polls a batch answers "in progress" before it ends.
    batch_polls: u32,
    /// Batches end expired, their requests unanswered.
    expire_batches: bool,
    /// Calls to the batch endpoints.
    batch_calls: usize,
}

/// A provider batch: its requests (custom id, chat body) and how many polls it has left.
struct Batch {
    /// The uploaded file it was made of (OpenAI).
    input_file: String,
    requests: Vec<(String, Value)>,
    polls_left: u32,
    /// The results (JSONL), once it ended.
    results: Option<String>,
}

pub struct LlmStandin {
    server: Server,
    state: Arc<Mutex<Inner>>,
}

impl LlmStandin {
    pub fn start(provider: Provider) -> Self {
        let state = Arc::new(Mutex::new(Inner {
            provider,
            context_tokens: 1_000_000,
            failures: VecDeque::new(),
            answers: VecDeque::new(),
            reject_structure: false,
            nth: std::collections::HashMap::new(),
            received: Vec::new(),
            files: std::collections::HashMap::new(),
            batches: std::collections::HashMap::new(),
            batch_polls: 0,
            expire_batches: false,
            batch_calls: 0,
        }));
        let s = state.clone();
        let server = Server::start(move |_| {
            axum::Router::new()
                .route("/v1/chat/completions", post(complete))
                .route("/v1/messages", post(complete))
                .route("/v1/files", post(upload))
                .route("/v1/files/{id}", axum::routing::delete(delete_file))
                .route("/v1/files/{id}/content", get(file_content))
                .route("/v1/batches", post(create_openai_batch))
                .route("/v1/batches/{id}", get(openai_batch))
                .route("/v1/messages/batches", post(create_anthropic_batch))
                .route("/v1/messages/batches/{id}", get(anthropic_batch))
                .route("/v1/messages/batches/{id}/results", get(anthropic_results))
                .with_state(s)
        });
        Self { server, state }
    }

    /// The base URL (`ABRIDGE_OPENAI_BASE_URL` / `ABRIDGE_ANTHROPIC_BASE_URL`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn set_context_tokens(&self, tokens: usize) {
        self.state.lock().unwrap().context_tokens = tokens;
    }

    pub fn push_failure(&self, failure: Failure) {
        self.state.lock().unwrap().failures.push_back(failure);
    }

    /// Answers the next request that gets an answer with `text` (queued, in order).
    pub fn push_answer(&self, text: &str) {
        self.state
            .lock()
            .unwrap()
            .answers
            .push_back(text.to_owned());
    }

    /// From now on, answer a request for structure (`response_format`) with a 400, as a
    /// server without JSON-schema support does.
    pub fn reject_structure(&self) {
        self.state.lock().unwrap().reject_structure = true;
    }

    /// Fails the `n`-th request this server receives (1-based), whatever it is.
    pub fn fail_nth(&self, n: usize, failure: Failure) {
        self.state.lock().unwrap().nth.insert(n, failure);
    }

    /// Batches answer `n` polls "in progress" before they end.
    pub fn batch_polls(&self, n: u32) {
        self.state.lock().unwrap().batch_polls = n;
    }

    /// From now on, batches end expired, their requests unanswered.
    pub fn expire_batches(&self) {
        self.state.lock().unwrap().expire_batches = true;
    }

    /// Files the OpenAI stand-in still keeps (uploaded requests, output files).
    pub fn files_kept(&self) -> usize {
        self.state.lock().unwrap().files.len()
    }

    /// Calls to the batch endpoints so far, and the batches made.
    pub fn batch_counts(&self) -> (usize, usize) {
        let inner = self.state.lock().unwrap();
        (inner.batch_calls, inner.batches.len())
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }
}

fn prompt_text(body: &Value) -> String {
    let mut text = String::new();
    if let Some(system) = body["system"].as_str() {
        text.push_str(system);
        text.push('\n');
    }
    for m in body["messages"].as_array().into_iter().flatten() {
        match &m["content"] {
            Value::String(s) => text.push_str(s),
            Value::Array(parts) => {
                for p in parts {
                    text.push_str(p["text"].as_str().unwrap_or_default());
                }
            }
            _ => {}
        }
        text.push('\n');
    }
    text
}

/// The deterministic answer as the structure abridge asks for: `{tldr, key_points: [{at,
/// text}]}`.
fn structured_answer(prompt: &str) -> Value {
    let text = answer(prompt);
    let tldr = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("TL;DR:")
        .trim();
    let points: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("- ["))
        .filter_map(|l| l.split_once(']'))
        .map(|(at, rest)| json!({"at": at, "text": rest.trim()}))
        .collect();
    json!({"tldr": tldr, "key_points": points})
}

/// The deterministic "model": a TL;DR and up to five bullets from the `[mm:ss]` lines given.
fn answer(prompt: &str) -> String {
    let lines: Vec<&str> = prompt
        .lines()
        .map(|l| l.trim().trim_start_matches("- "))
        .filter(|l| {
            l.starts_with('[')
                && l.find(']').is_some_and(|end| {
                    let stamp = &l[1..end];
                    stamp.contains(':') && stamp.chars().all(|c| c.is_ascii_digit() || c == ':')
                })
        })
        .collect();
    let step = (lines.len() / 5).max(1);
    let picked: Vec<&str> = lines.iter().step_by(step).take(5).copied().collect();
    let tldr = picked
        .iter()
        .take(2)
        .map(|l| l[l.find(']').unwrap() + 1..].trim())
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = format!("TL;DR: The video covers this. {tldr}\nKEY POINTS:\n");
    for l in picked {
        out.push_str(&format!("- {l}\n"));
    }
    out
}

async fn complete(
    State(state): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut inner = state.lock().unwrap();
    let provider = inner.provider;
    let respond = |inner: &mut Inner, status: u16, extra: Vec<(String, String)>, payload: Value| {
        inner.received.push(Received {
            headers: headers.clone(),
            body: body.clone(),
            status,
        });
        let mut response = (StatusCode::from_u16(status).unwrap(), Json(payload)).into_response();
        for (k, v) in extra {
            response.headers_mut().insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        response
    };

    // Authentication, as the real APIs check it.
    let authorized = match provider {
        Provider::OpenAi => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7),
        Provider::Anthropic => {
            headers.contains_key("x-api-key")
                && headers
                    .get("anthropic-version")
                    .and_then(|v| v.to_str().ok())
                    == Some("2023-06-01")
        }
    };
    if !authorized {
        let f = Failure::new(provider, 401, "missing or malformed credentials");
        return respond(&mut inner, 401, Vec::new(), f.body);
    }
    let number = inner.received.len() + 1;
    if let Some(f) = inner.nth.remove(&number) {
        return respond(&mut inner, f.status, f.headers, f.body);
    }
    if let Some(f) = inner.failures.pop_front() {
        return respond(&mut inner, f.status, f.headers, f.body);
    }
    let (status, payload) = chat(&mut inner, &body);
    respond(&mut inner, status, Vec::new(), payload)
}

/// The chat endpoint's answer to `body` (after authentication and scripted failures).
fn chat(inner: &mut Inner, body: &Value) -> (u16, Value) {
    let provider = inner.provider;
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let max_tokens = match provider {
        Provider::OpenAi => body["max_tokens"]
            .as_u64()
            .or(body["max_completion_tokens"].as_u64()),
        Provider::Anthropic => body["max_tokens"].as_u64(),
    };
    if model.is_empty() || (provider == Provider::Anthropic && max_tokens.is_none()) {
        let f = Failure::new(provider, 400, "model and max_tokens are required");
        return (400, f.body);
    }
    let prompt = prompt_text(body);
    let prompt_tokens = prompt.len().div_ceil(4);
    let max_tokens = max_tokens.unwrap_or(0) as usize;
    if prompt_tokens + max_tokens > inner.context_tokens {
        let window = inner.context_tokens;
        let payload = match provider {
            Provider::OpenAi => json!({"error": {
                "message": format!("This model's maximum context length is {window} tokens. However, you requested {} tokens ({prompt_tokens} in the messages, {max_tokens} in the completion). Please reduce the length of the messages or completion.", prompt_tokens + max_tokens),
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
            Provider::Anthropic => {
                json!({"type": "error", "error": {"type": "invalid_request_error",
                "message": format!("prompt is too long: {} tokens > {window} maximum", prompt_tokens + max_tokens)}})
            }
        };
        return (400, payload);
    }
    let wants_json = body["response_format"]["type"] == "json_schema";
    let wants_tool = body["tool_choice"]["type"] == "tool";
    if wants_json && inner.reject_structure {
        let f = Failure::new(
            provider,
            400,
            "response_format json_schema is not supported for this model",
        );
        return (400, f.body);
    }
    // A queued answer is said as it is (a model that ignores the structure asked for).
    let pushed = inner.answers.pop_front();
    let text = match &pushed {
        Some(t) => t.clone(),
        None if wants_json => structured_answer(&prompt).to_string(),
        None => answer(&prompt),
    };
    let completion_tokens = text.len().div_ceil(4);
    let payload = match provider {
        Provider::OpenAi => json!({
            "id": "chatcmpl-standin", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }),
        Provider::Anthropic if wants_tool && pushed.is_none() => json!({
            "id": "msg_standin", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "tool_use", "id": "toolu_standin",
                         "name": body["tool_choice"]["name"], "input": structured_answer(&prompt)}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
        }),
        Provider::Anthropic => json!({
            "id": "msg_standin", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
        }),
    };
    (200, payload)
}

type Shared = State<Arc<Mutex<Inner>>>;

/// Authenticates a batch call as the chat endpoint does, and counts it.
fn batch_call(inner: &mut Inner, headers: &HeaderMap) -> Option<Response> {
    inner.batch_calls += 1;
    let ok = match inner.provider {
        Provider::OpenAi => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7),
        Provider::Anthropic => headers.contains_key("x-api-key"),
    };
    (!ok).then(|| {
        let f = Failure::new(inner.provider, 401, "missing or malformed credentials");
        (StatusCode::UNAUTHORIZED, Json(f.body)).into_response()
    })
}

fn not_found(provider: Provider, what: &str) -> Response {
    let f = Failure::new(provider, 404, &format!("no such {what}"));
    (StatusCode::NOT_FOUND, Json(f.body)).into_response()
}

/// `POST /v1/files` (multipart: `purpose`, `file`): keeps the file's text.
async fn upload(State(state): Shared, headers: HeaderMap, body: String) -> Response {
    let mut inner = state.lock().unwrap();
    if let Some(denied) = batch_call(&mut inner, &headers) {
        return denied;
    }
    let boundary = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_owned());
    let file = boundary.and_then(|b| {
        body.split(&format!("--{b}"))
            .find(|part| part.contains("name=\"file\""))
            .and_then(|part| part.split_once("\r\n\r\n"))
            .map(|(_, content)| content.trim_end_matches("\r\n").to_owned())
    });
    let (Some(file), true) = (file, body.contains("name=\"purpose\"\r\n\r\nbatch")) else {
        let f = Failure::new(
            inner.provider,
            400,
            "a batch file needs purpose=batch and a file",
        );
        return (StatusCode::BAD_REQUEST, Json(f.body)).into_response();
    };
    let id = format!("file-standin{}", inner.files.len() + 1);
    inner.files.insert(id.clone(), file);
    Json(json!({"id": id, "object": "file", "purpose": "batch", "status": "processed"}))
        .into_response()
}

async fn delete_file(State(state): Shared, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let mut inner = state.lock().unwrap();
    if let Some(denied) = batch_call(&mut inner, &headers) {
        return denied;
    }
    match inner.files.remove(&id) {
        Some(_) => Json(json!({"id": id, "object": "file", "deleted": true})).into_response(),
        None => not_found(inner.provider, "file"),
    }
}

async fn file_content(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut inner = state.lock().unwrap();
    if let Some(denied) = batch_call(&mut inner, &headers) {
        return denied;
    }
    match inner.files.get(&id) {
        Some(text) => text.clone().into_response(),
        None => not_found(inner.provider, "file"),
    }
}

/// `POST /v1/batches`: a batch of the input file's chat requests.
async fn create_openai_batch(
    State(state): Shared,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = state.lock().unwrap();
    if let Some(denied) = batch_call(&mut inner, &headers) {
        return denied;
    }
    let file = body["input_file_id"]
        .as_str()
        .and_then(|f| inner.files.get(f))
        .cloned();
    let (Some(file), "/v1/chat/completions", "24h") = (
        file,
        body["endpoint"].as_str().unwrap_or_default(),
        body["completion_window"].as_str().unwrap_or_default(),
    ) else {
        let f = Failure::new(
            inner.provider,
            400,
            "input_file_id, endpoint and completion_window are required",
        );
        return (StatusCode::BAD_REQUEST, Json(f.body)).into_response();
    };
    let requests: Vec<(String, Value)> = file
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|l| {
            (
                l["custom_id"].as_str().unwrap_or_default().to_owned(),
                l["body"].clone(),
            )
        })
        .collect();
    let id = format!("batch_standin{}", inner.batches.len() + 1);
    let polls_left = inner.batch_polls;
    let input_file = body["input_file_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    inner.batches.insert(
        id.clone(),
        Batch {
            input_file,
            requests,
            polls_left,
            results: None,
        },
    );
    Json(json!({"id": id, "object": "batch", "endpoint": "/v1/chat/completions", "status": "validating"}))
        .into_response()
}

/// Moves a batch on by one poll; `Some(ended)` once it has ended (`false`: expired).
fn advance(inner: &mut Inner, id: &str) -> Option<Option<bool>> {
    let expire = inner.expire_batches;
    let batch = inner.batches.get_mut(id)?;
    if batch.results.is_some() {
        return Some(Some(!expire));
    }
    if batch.polls_left > 0 {
        batch.polls_left -= 1;
        return Some(None);
    }
    let requests = std::mem::take(&mut batch.requests);
    let provider = inner.provider;
    let mut lines = String::new();
    for (i, (custom_id, params)) in requests.iter().enumerate() {
        let line = if expire {
            match provider {
                Provider::OpenAi => continue,
                Provider::Anthropic => {
                    json!({"custom_id": custom_id, "result": {"type": "expired"}})
                }
            }
        } else {
            let (status, payload) = chat(inner, params);
            match provider {
                Provider::OpenAi => json!({"id": format!("batch_req_{i}"), "custom_id": custom_id,
                    "response": {"status_code": status, "request_id": "req_standin", "body": payload},
                    "error": null}),
                Provider::Anthropic if status == 200 => {
                    json!({"custom_id": custom_id, "result": {"type": "succeeded", "message": payload}})
                }
                Provider::Anthropic => json!({"custom_id": custom_id,
                    "result": {"type": "errored", "error": payload["error"]}}),
            }
        };
        lines.push_str(&format!("{line}\n"));
    }
    if provider == Provider::OpenAi && !expire {
        inner.files.insert(format!("file-out-{id}"), lines.clone());
    }
    inner.batches.get_mut(id).expect("present").results = Some(lines);
    Some(Some(!expire))
}

async fn openai_batch(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut inner = state.lock().unwrap();
    if let Some(denied) = batch_call(&mut inner, &headers) {
        return denied;
    }
    let input = inner.batches.get(&id).map(|b| b.input_file.clone());
    let answer = match advance(&mut inner, &id) {
        None => return not_found(inner.provider, "batch"),
        Some(None) => json!({"id": id, "object": "batch", "status": "in_progress"}),
        Some(Some(true)) => json!({"id": id, "object": "batch", "status": "completed",
                                   "input_file_id": input, "output_file_id": format!("file-out-{id}"),
                                   "error_file_id": null}),
        Some(Some(false)) => json!({"id": id, "object": "batch", "status": "expired",
                                    "input_file_id": input, "output_file_id": null}),
    };
    Json(answer).into_response()
}

/// `POST /v1/messages/batches`.
async fn create_anthropic_batch(
    State(state): Shared,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut inner = state.lock().unwrap();
    if let Some(denied) = batch_call(&mut inner, &headers) {
        return denied;
    }
    let requests: Vec<(String, Value)> = body["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["custom_id"].as_str().unwrap_or_default().to_owned(),
                r["params"].clone(),
            )
        })
        .collect();
    let valid = !requests.is_empty()
        && requests.iter().all(|(id, _)| {
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if !valid {
        let f = Failure::new(
            inner.provider,
            400,
            "requests: each needs a custom_id of 1-64 [a-zA-Z0-9_-]",
        );
        return (StatusCode::BAD_REQUEST, Json(f.body)).into_response();
    }
    let id = format!("msgbatch_standin{}", inner.batches.len() + 1);
    let polls_left = inner.batch_polls;
    inner.batches.insert(
        id.clone(),
        Batch {
            input_file: String::new(),
            requests,
            polls_left,
            results: None,
        },
    );
    Json(json!({"id": id, "type": "message_batch", "processing_status": "in_progress"}))
        .into_response()
}

async fn anthropic_batch(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut inner = state.lock().unwrap();
    if let Some(denied) = batch_call(&mut inner, &headers) {
        return denied;
    }
    match advance(&mut inner, &id) {
        None => not_found(inner.provider, "batch"),
        Some(None) => {
            Json(json!({"id": id, "type": "message_batch", "processing_status": "in_progress"}))
                .into_response()
        }
        Some(Some(_)) => Json(
            json!({"id": id, "type": "message_batch", "processing_status": "ended",
            "results_url": format!("/v1/messages/batches/{id}/results")}),
        )
        .into_response(),
    }
}

async fn anthropic_results(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut inner = state.lock().unwrap();
    if let Some(denied) = batch_call(&mut inner, &headers) {
        return denied;
    }
    match inner.batches.get(&id).and_then(|b| b.results.clone()) {
        Some(lines) => lines.into_response(),
        None => not_found(inner.provider, "batch results"),
    }
}
