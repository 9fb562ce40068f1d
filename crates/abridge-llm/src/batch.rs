//! The providers' batch APIs, at half the price of a request: OpenAI's Batch API (a JSONL file
//! uploaded, a batch made of it, polled, its output file read) and Anthropic's Message Batches
//! (a batch made, polled, its results read). One request per provider batch: the discount is
//! per request, and a batch of one needs no coordination between workers.

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::{ChatRequest, ChatResponse, LlmClient, LlmError, LlmErrorKind, Provider, retry_after};

/// Where a request sent through a batch API stands.
#[derive(Debug)]
pub enum BatchPoll {
    /// The provider has not finished the batch.
    Pending,
    Done(ChatResponse),
    /// The batch expired, failed or was cancelled, or the request in it failed: send it the
    /// ordinary way.
    Failed(String),
}

/// The most bytes of a results file read (one answer, with room to spare).
const MAX_RESULTS_BYTES: usize = 4 << 20;

impl LlmClient {
    /// Sends `request` as a batch of one; returns the provider's batch id. `custom_id` is
    /// 1 to 64 characters of A-Z, a-z, 0-9, `_` and `-` (Anthropic's rule).
    pub async fn submit_batch(
        &self,
        custom_id: &str,
        request: &ChatRequest,
    ) -> Result<String, LlmError> {
        let body = self.body(request);
        let created = match self.config.provider {
            Provider::OpenAi => {
                let line = json!({
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                });
                let file = Part::bytes(format!("{line}\n").into_bytes())
                    .file_name("abridge.jsonl")
                    .mime_str("application/jsonl")
                    .expect("a valid mime type");
                let form = Form::new().text("purpose", "batch").part("file", file);
                let url = format!("{}/v1/files", self.base);
                let uploaded = self
                    .send(self.authed(self.http.post(url)).multipart(form))
                    .await?;
                let file_id = self.id_of(&uploaded, "file")?;
                let url = format!("{}/v1/batches", self.base);
                self.send(self.authed(self.http.post(url)).json(&json!({
                    "input_file_id": file_id,
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                })))
                .await?
            }
            Provider::Anthropic => {
                let url = format!("{}/v1/messages/batches", self.base);
                self.send(self.authed(self.http.post(url)).json(&json!({
                    "requests": [{"custom_id": custom_id, "params": body}],
                })))
                .await?
            }
        };
        self.id_of(&created, "batch")
    }

    /// Where `batch_id` stands; its answer for `custom_id` once it has ended.
    pub async fn poll_batch(
        &self,
        batch_id: &str,
        custom_id: &str,
        request: &ChatRequest,
    ) -> Result<BatchPoll, LlmError> {
        if !batch_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Ok(BatchPoll::Failed(format!("{batch_id:?} is not a batch id")));
        }
        let url = match self.config.provider {
            Provider::OpenAi => format!("{}/v1/batches/{batch_id}", self.base),
            Provider::Anthropic => format!("{}/v1/messages/batches/{batch_id}", self.base),
        };
        let batch = self.send(self.authed(self.http.get(url))).await?;
        let results = match self.config.provider {
            Provider::OpenAi => match batch["status"].as_str().unwrap_or_default() {
                "validating" | "in_progress" | "finalizing" | "cancelling" => {
                    return Ok(BatchPoll::Pending);
                }
                "completed" => match batch["output_file_id"].as_str() {
                    Some(file) if !file.is_empty() => {
                        format!("{}/v1/files/{file}/content", self.base)
                    }
                    _ => {
                        self.delete_files(&batch).await;
                        return Ok(BatchPoll::Failed(failure(&batch)));
                    }
                },
                _ => {
                    self.delete_files(&batch).await;
                    return Ok(BatchPoll::Failed(failure(&batch)));
                }
            },
            Provider::Anthropic => match batch["processing_status"].as_str() {
                Some("ended") => format!("{}/v1/messages/batches/{batch_id}/results", self.base),
                _ => return Ok(BatchPoll::Pending),
            },
        };
        let text = self.fetch_text(&results).await?;
        if self.config.provider == Provider::OpenAi {
            // The request (a transcript) and its answer are not left with the provider.
            self.delete_files(&batch).await;
        }
        let Some(line) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["custom_id"] == custom_id)
        else {
            return Ok(BatchPoll::Failed(format!(
                "the batch's results hold no answer for {custom_id}"
            )));
        };
        let answer = match self.config.provider {
            Provider::OpenAi => {
                let response = &line["response"];
                if response["status_code"].as_u64() != Some(200) {
                    return Ok(BatchPoll::Failed(format!(
                        "the request failed in the batch: {}",
                        short(&line["error"], &response["body"])
                    )));
                }
                response["body"].clone()
            }
            Provider::Anthropic => {
                let result = &line["result"];
                if result["type"] != "succeeded" {
                    return Ok(BatchPoll::Failed(format!(
                        "the request ended {} in the batch: {}",
                        result["type"].as_str().unwrap_or("unknown"),
                        short(&result["error"], &Value::Null)
                    )));
                }
                result["message"].clone()
            }
        };
        self.read_answer(&answer, request).map(BatchPoll::Done)
    }

    /// Deletes an ended OpenAI batch's files (input, output, errors), best effort: a file
    /// left behind is the provider's to expire.
    async fn delete_files(&self, batch: &Value) {
        for key in ["input_file_id", "output_file_id", "error_file_id"] {
            let Some(file) = batch[key].as_str().filter(|f| {
                !f.is_empty()
                    && f.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }) else {
                continue;
            };
            let url = format!("{}/v1/files/{file}", self.base);
            if let Err(e) = self.authed(self.http.delete(url)).send().await {
                tracing::debug!(file, error = %e, "cannot delete a batch file");
            }
        }
    }

    /// Sends `builder` and reads a JSON answer, classifying failures as `complete` does.
    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<Value, LlmError> {
        let response = builder.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(&e))?;
        if !status.is_success() {
            return Err(self.status_error(status, &text, wait));
        }
        serde_json::from_str(&text).map_err(|e| {
            self.error(
                LlmErrorKind::BadResponse,
                Some(status.as_u16()),
                format!("batch API answer is not JSON: {e}"),
            )
        })
    }

    /// The `id` of a created object, which must look like one.
    fn id_of(&self, v: &Value, what: &str) -> Result<String, LlmError> {
        v["id"]
            .as_str()
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 200
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            })
            .map(str::to_owned)
            .ok_or_else(|| {
                self.error(
                    LlmErrorKind::BadResponse,
                    Some(200),
                    format!("the batch API made a {what} without a usable id"),
                )
            })
    }

    /// A results file, bounded in size.
    async fn fetch_text(&self, url: &str) -> Result<String, LlmError> {
        let mut response = self
            .authed(self.http.get(url))
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let wait = retry_after(response.headers());
            let text = response.text().await.unwrap_or_default();
            return Err(self.status_error(status, &text, wait));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e))?
        {
            if bytes.len() + chunk.len() > MAX_RESULTS_BYTES {
                return Err(self.error(
                    LlmErrorKind::BadResponse,
                    Some(status.as_u16()),
                    format!("a batch's results are over {MAX_RESULTS_BYTES} bytes"),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Why an OpenAI batch did not complete.
fn failure(batch: &Value) -> String {
    let status = batch["status"].as_str().unwrap_or("unknown");
    match batch["errors"]["data"][0]["message"].as_str() {
        Some(m) => format!("the batch ended {status}: {}", cut(m)),
        None => format!("the batch ended {status}"),
    }
}

fn short(error: &Value, body: &Value) -> String {
    let m = error["message"]
        .as_str()
        .or(body["error"]["message"].as_str())
        .unwrap_or("no reason given");
    cut(m)
}

fn cut(m: &str) -> String {
    m.chars().take(200).collect()
}
