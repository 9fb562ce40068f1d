//! A typed client of the API, for `abridge enqueue --api` / `abridge status --api` and tests.

use std::time::Duration;

use abridge_core::{BatchId, ItemStatus};
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::views::{BatchStatusView, Created, ItemPage};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: Option<serde_json::Value>,
    },
    #[error("call {url}: {cause}")]
    Http { url: String, cause: String },
    #[error("read the answer of {url}: {cause}")]
    Decode { url: String, cause: String },
}

/// The API at `base` (such as `http://localhost:8080`), acting with one token.
#[derive(Clone, Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: &str) -> Result<Self, ClientError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("abridge-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Http {
                url: base.to_owned(),
                cause: e.to_string(),
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /v1/batches` with a request body as the API documents it.
    pub async fn create_batch(
        &self,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<Created, ClientError> {
        let url = self.url("/v1/batches");
        let mut request = self.http.post(&url).bearer_auth(&self.token).json(body);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        decode(&url, request.send().await).await
    }

    /// `GET /v1/batches/{id}`.
    pub async fn batch(&self, id: BatchId) -> Result<BatchStatusView, ClientError> {
        let url = self.url(&format!("/v1/batches/{id}"));
        decode(
            &url,
            self.http.get(&url).bearer_auth(&self.token).send().await,
        )
        .await
    }

    /// `GET /v1/batches/{id}/items`: one page of items from position `from` (0-based), with
    /// the next page's cursor.
    pub async fn items(
        &self,
        id: BatchId,
        status: Option<ItemStatus>,
        from: i32,
        limit: i64,
    ) -> Result<ItemPage, ClientError> {
        // Numbers and a status name: nothing to escape.
        let mut url = self.url(&format!(
            "/v1/batches/{id}/items?cursor={from}&limit={limit}"
        ));
        if let Some(s) = status {
            url.push_str(&format!("&status={s}"));
        }
        decode(
            &url,
            self.http.get(&url).bearer_auth(&self.token).send().await,
        )
        .await
    }

    /// `GET /v1/batches/{id}/export`: the ZIP's bytes.
    pub async fn export(&self, id: BatchId) -> Result<Vec<u8>, ClientError> {
        let url = self.url(&format!("/v1/batches/{id}/export"));
        let failed = |e: reqwest::Error| ClientError::Http {
            url: url.clone(),
            cause: e.to_string(),
        };
        let response = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(api_error(response).await);
        }
        Ok(response.bytes().await.map_err(failed)?.to_vec())
    }

    /// Follows `GET /v1/batches/{id}/events` until the batch finishes, calling `on_event` with
    /// each event's name and batch view; reconnects (with `Last-Event-ID`) if the stream
    /// drops. Returns the final view.
    pub async fn follow(
        &self,
        id: BatchId,
        mut on_event: impl FnMut(&str, &BatchStatusView),
    ) -> Result<BatchStatusView, ClientError> {
        let url = self.url(&format!("/v1/batches/{id}/events"));
        let mut last_id: Option<String> = None;
        let mut last_view: Option<BatchStatusView> = None;
        // Reconnects wait as every retry-while-away loop does; a stream that connected starts
        // them again from the first.
        let mut waits = abridge_core::backoff::Doubling::new(
            Duration::from_millis(200),
            Duration::from_secs(5),
        );
        let mut failures = 0u32;
        loop {
            let mut request = self
                .http
                .get(&url)
                .bearer_auth(&self.token)
                .header("Accept", "text/event-stream");
            if let Some(id) = &last_id {
                request = request.header("Last-Event-ID", id);
            }
            let response = match request.send().await {
                Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {
                    // We already have the final event.
                    if let Some(view) = last_view {
                        return Ok(view);
                    }
                    return self.batch(id).await;
                }
                Ok(r) if r.status().is_success() => r,
                Ok(r) => return Err(api_error(r).await),
                Err(e) => {
                    failures += 1;
                    if failures > 5 {
                        return Err(ClientError::Http {
                            url,
                            cause: e.to_string(),
                        });
                    }
                    tokio::time::sleep(waits.next_wait()).await;
                    continue;
                }
            };
            failures = 0;
            waits.reset();
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let Some(event) = parse_event(&block) else {
                        continue;
                    };
                    if let Some(id) = event.id {
                        last_id = Some(id);
                    }
                    let view: BatchStatusView =
                        serde_json::from_str(&event.data).map_err(|e| ClientError::Decode {
                            url: url.clone(),
                            cause: e.to_string(),
                        })?;
                    on_event(&event.name, &view);
                    if matches!(event.name.as_str(), "completed" | "cancelled") {
                        return Ok(view);
                    }
                    last_view = Some(view);
                }
            }
            // The stream ended before the final event: reconnect and resume.
            tokio::time::sleep(waits.next_wait()).await;
        }
    }
}

/// One Server-Sent Event with data.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub id: Option<String>,
    pub data: String,
}

/// Parses one event block (lines up to a blank line); `None` for comments-only blocks.
pub fn parse_event(block: &str) -> Option<SseEvent> {
    let mut name = "message".to_owned();
    let mut id = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value.to_owned(),
            "id" => id = Some(value.to_owned()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(SseEvent {
        name,
        id,
        data: data.join("\n"),
    })
}

async fn decode<T: DeserializeOwned>(
    url: &str,
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T, ClientError> {
    let response = sent.map_err(|e| ClientError::Http {
        url: url.to_owned(),
        cause: e.to_string(),
    })?;
    if !response.status().is_success() {
        return Err(api_error(response).await);
    }
    let bytes = response.bytes().await.map_err(|e| ClientError::Http {
        url: url.to_owned(),
        cause: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        url: url.to_owned(),
        cause: e.to_string(),
    })
}

async fn api_error(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let error = &body["error"];
    ClientError::Api {
        status,
        code: error["code"].as_str().unwrap_or("unknown").to_owned(),
        message: error["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the API answered HTTP {status}")),
        details: error.get("details").cloned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_skips_comments() {
        assert_eq!(
            parse_event("event: progress\nid: 1.2\ndata: {\"a\":1}\n\n"),
            Some(SseEvent {
                name: "progress".into(),
                id: Some("1.2".into()),
                data: "{\"a\":1}".into()
            })
        );
        assert_eq!(parse_event(": keep-alive\n\n"), None);
        assert_eq!(parse_event("retry: 2000\n: hello\n\n"), None);
    }
}
