//! Summaries by an LLM backend: prompts, fitting the transcript to the model's window,
//! map-reduce for long transcripts (chunk summaries checkpointed), and each request's passage
//! through the fleet's circuit breaker, budgets and bounded in-process retries.

use std::time::Duration;

use abridge_core::{ErrorKind, ItemError, SummaryLength};
use abridge_llm::retry::RetryPolicy;
use abridge_llm::tokens::estimate;
use abridge_llm::{ChatRequest, ChatResponse, LlmClient};
use abridge_queue::Queue;
use abridge_telemetry::metrics;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use crate::checkpoints::Checkpoints;
use crate::config::LlmSettings;
use crate::limits::{self, Breaker, Bucket, Ledger, TenantBudget};
use crate::render::{KeyPoint, Summary, parse_answer, read_answer, read_structured, refusal};
use crate::text::{Doc, prompt_lines, stamp};

/// Bumped whenever a prompt changes (the summary cache key).
pub const PROMPT_VERSION: &str = "llm-1";

/// Map-reduce levels before giving up (each level shrinks the text many times over).
const MAX_LEVELS: usize = 6;
/// The answer limit for one chunk's notes.
const MAP_ANSWER_TOKENS: u32 = 700;

/// One configured LLM backend.
pub struct LlmBackend {
    pub client: LlmClient,
    pub settings: LlmSettings,
    pub requests: Option<Bucket>,
    pub tokens: Option<Bucket>,
    pub breaker: Breaker,
    pub retry: RetryPolicy,
    /// The most transcript tokens per request (the model's window permitting).
    pub chunk_tokens: u64,
    pub budget_max_wait: Duration,
}

/// How long the fleet remembers that a server refused structured answers for a model (a
/// server may be upgraded: it is asked again after that).
const TEXT_ONLY_FOR: Duration = Duration::from_secs(24 * 3600);

/// The structure a final answer is asked for in: what [`crate::render::read_structured`]
/// reads.
fn summary_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "tldr": {"type": "string", "description": "The TL;DR paragraph."},
            "key_points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "at": {"type": ["string", "null"],
                               "description": "The [mm:ss] time of the line the point comes from, without brackets; null without times."},
                        "text": {"type": "string"},
                    },
                    "required": ["at", "text"],
                    "additionalProperties": false,
                },
            },
        },
        "required": ["tldr", "key_points"],
        "additionalProperties": false,
    })
}

/// What one summary cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Requests this attempt made (retries included).
    pub requests: u64,
    /// Chunk summaries reused from an earlier attempt's checkpoints.
    pub reused_chunks: u64,
    /// Chunks at the first map level (1 when the transcript fit one request).
    pub chunks: u64,
    pub truncated: bool,
    /// The final answer came as the structure asked for (JSON, or Anthropic's tool call).
    pub structured: bool,
    /// The final answer was prose (no TL;DR label, no bullets) and was read as such.
    pub prose: bool,
    /// Key-point timestamps past the video's end, set to the end.
    pub stamps_clamped: u32,
    /// The provider batch the answer came through (billed at half price).
    pub provider_batch: Option<String>,
}

/// Who pays for an item's model requests: its owner shares the fleet's LLM budgets with the
/// other owners, and a tenant may have a daily token budget of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct Payer<'a> {
    /// The item's tenant; `None` for a CLI batch.
    pub owner: Option<&'a str>,
    pub daily: Option<&'a TenantBudget>,
    /// Where each answer's cost is written down.
    pub ledger: Option<&'a Ledger<'a>>,
    /// The item may wait in a provider batch for half the price.
    pub via_batch: Option<&'a ViaBatch>,
}

/// An item to summarize through the provider's batch API, when its summary is one request.
#[derive(Clone, Debug)]
pub struct ViaBatch {
    /// The request's id in its batch (the item's).
    pub custom_id: String,
    /// How long the item waits between asking whether the batch has ended.
    pub poll: Duration,
}

/// What a provider batch's answer costs, against a request's.
pub const BATCH_PRICE_FACTOR: f64 = 0.5;

fn answer_tokens(length: SummaryLength) -> u32 {
    match length {
        SummaryLength::Short => 500,
        SummaryLength::Standard => 900,
        SummaryLength::Detailed => 1800,
    }
}

fn shape_words(length: SummaryLength) -> (&'static str, &'static str) {
    match length {
        SummaryLength::Short => ("2 sentences", "3 to 4"),
        SummaryLength::Standard => ("3 to 4 sentences", "5 to 7"),
        SummaryLength::Detailed => ("5 to 6 sentences", "10 to 14"),
    }
}

fn system_prompt(language: &str) -> String {
    format!(
        "You summarize YouTube videos from their transcripts for busy readers. Use only what the \
         transcript says. Write in the transcript's language (language code \"{language}\"). Follow \
         the answer format exactly, with no preamble and no other text."
    )
}

const FORMAT: &str =
    "TL;DR: <one paragraph>\nKEY POINTS:\n- [mm:ss] <one key point in one sentence>";

fn final_prompt(doc: &Doc, length: SummaryLength, body: &str, from_notes: bool) -> String {
    let (tldr, points) = shape_words(length);
    let source = if from_notes {
        "Below are notes on consecutive parts of the video, each point with the [mm:ss] time it is \
         discussed. Combine them into one summary of the whole video."
    } else {
        "Below is its transcript; each line starts with the [mm:ss] time it is spoken."
    };
    format!(
        "Summarize the video \"{title}\". {source}\n\nAnswer in exactly this format:\n{FORMAT}\n\n\
         The TL;DR is {tldr}. Write {points} key points in the order they occur, each starting \
         with the [mm:ss] time of the line it comes from.\n\n{label}:\n{body}",
        title = doc.title,
        label = if from_notes { "Notes" } else { "Transcript" },
    )
}

fn map_prompt(
    doc: &Doc,
    part: usize,
    parts: usize,
    span: (u64, u64),
    body: &str,
    from_notes: bool,
) -> String {
    let what = if from_notes {
        "notes on"
    } else {
        "the transcript of"
    };
    format!(
        "This is part {part} of {parts} of {what} the video \"{title}\", from {from} to {to}. Each \
         line starts with the [mm:ss] time it is spoken.\n\nList the important points of this part \
         in the order they occur, in exactly this format:\nKEY POINTS:\n- [mm:ss] <one point in one \
         sentence>\n\nWrite at most 8 points, each starting with the [mm:ss] time of the line it comes \
         from.\n\n{label}:\n{body}",
        title = doc.title,
        from = stamp(span.0),
        to = stamp(span.1),
        label = if from_notes { "Notes" } else { "Transcript" },
    )
}

fn format_lines(lines: &[(u64, String)]) -> String {
    lines
        .iter()
        .map(|(at, text)| format!("[{}] {text}\n", stamp(*at)))
        .collect()
}

/// Packs lines into chunks of at most `budget` estimated tokens, keeping lines whole (a single
/// line over the budget gets a chunk of its own).
pub fn pack(lines: &[(u64, String)], budget: u64) -> Vec<Vec<(u64, String)>> {
    let mut chunks: Vec<Vec<(u64, String)>> = Vec::new();
    let mut current: Vec<(u64, String)> = Vec::new();
    let mut used = 0;
    for line in lines {
        let cost = estimate(&line.1) + 4;
        if !current.is_empty() && used + cost > budget {
            chunks.push(std::mem::take(&mut current));
            used = 0;
        }
        used += cost;
        current.push(line.clone());
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

impl LlmBackend {
    pub fn name(&self) -> &'static str {
        self.settings.provider.name()
    }

    /// Transcript tokens one request may carry: the configured chunk size, within the model's
    /// window less the prompt and the answer.
    fn body_budget(&self, doc: &Doc, length: SummaryLength) -> Result<u64, ItemError> {
        let overhead = estimate(&system_prompt(&doc.language))
            + estimate(&final_prompt(doc, length, "", true))
            + 64;
        let room = self
            .settings
            .context_tokens
            .saturating_sub(overhead + u64::from(answer_tokens(length)));
        if room < 200 {
            return Err(ItemError::permanent(
                ErrorKind::from_static("context_length_exceeded"),
                format!(
                    "{} model {}: a context window of {} tokens leaves no room for a transcript \
                     (set {})",
                    self.name(),
                    self.settings.model,
                    self.settings.context_tokens,
                    abridge_core::settings::SettingsSource::env_name(&format!(
                        "{}_context_tokens",
                        self.name()
                    ))
                ),
            ));
        }
        Ok(room.min(self.chunk_tokens))
    }

    /// Summarizes `doc`, map-reducing when it does not fit one request.
    pub async fn summarize(
        &self,
        queue: &Queue,
        checkpoints: &mut Checkpoints<'_>,
        doc: &Doc,
        model: &str,
        length: SummaryLength,
        payer: Payer<'_>,
    ) -> Result<(Summary, Usage), ItemError> {
        let budget = self.body_budget(doc, length)?;
        let run = run_id(&[
            self.name(),
            model,
            length.as_str(),
            PROMPT_VERSION,
            &doc.language,
            &budget.to_string(),
        ]);
        let mut usage = Usage::default();
        let mut lines = prompt_lines(&doc.segments, doc.timed);
        let system = system_prompt(&doc.language);
        let mut level = 0;
        loop {
            let body = format_lines(&lines);
            if estimate(&body) <= budget || lines.len() <= 1 {
                if level == 0 {
                    usage.chunks = 1;
                }
                let server = format!("{}|{model}", self.settings.base_url);
                let server = crate::sha256_hex(&server);
                // Unknown (Redis away): ask for structure; a refusal costs one request.
                let text_only = queue.text_only(&server).await.unwrap_or(false);
                let mut request = ChatRequest {
                    model: model.to_owned(),
                    system: system.clone(),
                    user: final_prompt(doc, length, &body, level > 0),
                    max_tokens: answer_tokens(length),
                    temperature: 0.2,
                    structure: (!text_only).then(summary_schema),
                };
                let asked_structure = request.structure.is_some();
                // A summary of one request may go through the provider's batch API.
                let batched = match payer.via_batch {
                    Some(batch) if level == 0 => {
                        let stage = format!("batch:{run}");
                        self.through_batch(
                            queue,
                            checkpoints,
                            &stage,
                            batch,
                            &request,
                            &mut usage,
                            payer,
                        )
                        .await?
                    }
                    _ => None,
                };
                let response = match batched {
                    Some(response) => Ok(response),
                    None => self.call(queue, &request, &mut usage, payer).await,
                };
                let response = match response {
                    // A server that does not take the structure: ask for text; if that is
                    // answered, remember it (a 400 for this transcript alone is not the
                    // server's verdict on structure).
                    Err(e) if asked_structure && e.kind().as_str() == "llm_bad_request" => {
                        request.structure = None;
                        let answered = self.call(queue, &request, &mut usage, payer).await?;
                        tracing::info!(backend = self.name(), model, error = %e.message(),
                            "the server refused a structured answer; asking this model for text from now on");
                        if let Err(e) = queue.set_text_only(&server, TEXT_ONLY_FOR).await {
                            tracing::debug!(error = %e, "cannot remember the answer format");
                        }
                        answered
                    }
                    other => other?,
                };
                // A refusal may come as text, or inside the structure as its TL;DR.
                let said = response
                    .structured
                    .as_ref()
                    .and_then(|v| v["tldr"].as_str())
                    .unwrap_or(&response.text);
                // (The echo check compares with the instructions, not the transcript a summary
                // may quote.)
                let instructions = final_prompt(doc, length, "", level > 0);
                if response.refused || refusal(said, &instructions) {
                    // Retried once (the processor makes a second refusal permanent).
                    return Err(ItemError::transient(
                        ErrorKind::from_static("llm_refused"),
                        format!(
                            "{} declined or did not answer: {:?}",
                            self.name(),
                            response.text.chars().take(120).collect::<String>()
                        ),
                    ));
                }
                let duration = doc.segments.last().map(|s| (s.start_ms + s.dur_ms) / 1000);
                // The structured answer first, the text second; JSON that was asked for and
                // cannot be read (cut short, malformed) is not prose to keep.
                let broken_json = request.structure.is_some()
                    && response.structured.is_none()
                    && abridge_llm::unfence(&response.text).starts_with('{');
                let read = match &response.structured {
                    Some(v) => read_structured(v, duration),
                    None if broken_json => None,
                    None => read_answer(&response.text, duration),
                };
                let Some(answer) = read else {
                    return Err(ItemError::transient(
                        ErrorKind::from_static("llm_bad_response"),
                        format!("{} answered with no words to read", self.name()),
                    ));
                };
                usage.structured = response.structured.is_some() && !answer.prose;
                usage.prose = answer.prose;
                usage.stamps_clamped = answer.clamped;
                let (mut tldr, points) = (answer.tldr, answer.points);
                let points: Vec<KeyPoint> = points
                    .into_iter()
                    .map(|p| KeyPoint {
                        at_s: if doc.timed { p.at_s } else { None },
                        text: p.text,
                    })
                    .collect();
                if tldr.is_empty() {
                    tldr = points
                        .iter()
                        .take(2)
                        .map(|p| p.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" ");
                }
                return Ok((
                    Summary {
                        title: doc.title.clone(),
                        tldr,
                        points,
                    },
                    usage,
                ));
            }
            if level >= MAX_LEVELS {
                return Err(ItemError::permanent(
                    ErrorKind::from_static("context_length_exceeded"),
                    format!("the transcript does not shrink to fit {budget} tokens"),
                ));
            }
            let chunks = pack(&lines, budget);
            if level == 0 {
                usage.chunks = chunks.len() as u64;
            }
            let mut notes: Vec<(u64, String)> = Vec::new();
            for (i, chunk) in chunks.iter().enumerate() {
                let stage = format!("map:{run}:{level}:{i}");
                if let Some(saved) = checkpoints.get(&stage) {
                    let lines: Vec<(u64, String)> =
                        serde_json::from_value(saved["lines"].clone()).unwrap_or_default();
                    usage.input_tokens += saved["input_tokens"].as_u64().unwrap_or(0);
                    usage.output_tokens += saved["output_tokens"].as_u64().unwrap_or(0);
                    usage.reused_chunks += 1;
                    notes.extend(lines);
                    continue;
                }
                let span = (chunk[0].0, chunk[chunk.len() - 1].0);
                let request = ChatRequest {
                    model: model.to_owned(),
                    system: system.clone(),
                    user: map_prompt(
                        doc,
                        i + 1,
                        chunks.len(),
                        span,
                        &format_lines(chunk),
                        level > 0,
                    ),
                    max_tokens: MAP_ANSWER_TOKENS,
                    temperature: 0.2,
                    structure: None,
                };
                let response = self.call(queue, &request, &mut usage, payer).await?;
                let chunk_notes: Vec<(u64, String)> = match parse_answer(&response.text, None) {
                    Some((_, points)) if !points.is_empty() => points
                        .into_iter()
                        .map(|p| {
                            (
                                p.at_s.unwrap_or(span.0).clamp(span.0, span.1.max(span.0)),
                                p.text,
                            )
                        })
                        .collect(),
                    // Notes without bullets still carry the content; time them at the chunk.
                    _ => vec![(
                        span.0,
                        response
                            .text
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" "),
                    )],
                };
                checkpoints
                    .put(
                        &stage,
                        json!({
                            "lines": chunk_notes,
                            "input_tokens": response.input_tokens,
                            "output_tokens": response.output_tokens,
                        }),
                    )
                    .await?;
                notes.extend(chunk_notes);
            }
            lines = notes;
            level += 1;
        }
    }

    /// The answer through the provider's batch API: submits the request (the item then waits,
    /// deferred as `submitted`, without a worker slot), or asks whether its batch has ended
    /// (still waiting: deferred again). `None`: send it the ordinary way (the batch expired or
    /// failed, the server has no batch API, or an earlier attempt already used the answer).
    ///
    /// A submission is charged at once by its estimate (so the batch's `max_cost_usd` and the
    /// tenant's daily tokens count it), and corrected when the answer comes.
    #[allow(clippy::too_many_arguments)]
    async fn through_batch(
        &self,
        queue: &Queue,
        checkpoints: &mut Checkpoints<'_>,
        stage: &str,
        batch: &ViaBatch,
        request: &ChatRequest,
        usage: &mut Usage,
        payer: Payer<'_>,
    ) -> Result<Option<ChatResponse>, ItemError> {
        let waiting = |id: &str| {
            ItemError::deferred(
                ErrorKind::from_static("submitted"),
                format!(
                    "submitted to the {} batch API as {id}; its answer is collected when the batch ends",
                    self.name()
                ),
                batch.poll,
            )
        };
        let (est_in, est_out) = (
            estimate(&request.system) + estimate(&request.user),
            u64::from(request.max_tokens),
        );
        let saved = checkpoints.get(stage).cloned();
        let Some(saved) = saved else {
            if let Some(budget) = payer.daily {
                budget.check(queue).await?;
            }
            let id = match self.client.submit_batch(&batch.custom_id, request).await {
                Ok(id) => id,
                Err(e) if e.kind.is_transient() => return Err(e.into()),
                Err(e) => {
                    tracing::info!(backend = self.name(), error = %e, "the batch API refused the request; sending it the ordinary way");
                    checkpoints
                        .put(stage, json!({"fallback": true, "why": e.to_string()}))
                        .await?;
                    return Ok(None);
                }
            };
            // Logged before anything else can fail: a lost checkpoint leaves it findable.
            tracing::info!(backend = self.name(), batch = %id, "submitted to the provider's batch API");
            if let Some(ledger) = payer.ledger {
                ledger
                    .charge_estimate(est_in, est_out, BATCH_PRICE_FACTOR)
                    .await;
            }
            if let Some(budget) = payer.daily {
                budget.charge(queue, est_in + est_out).await;
            }
            checkpoints
                .put(
                    stage,
                    json!({"batch_id": id, "structured": request.structure.is_some()}),
                )
                .await?;
            checkpoints
                .show(
                    json!({"stage": "submitted", "backend": self.name(), "provider_batch_id": id}),
                )
                .await?;
            return Err(waiting(&id));
        };
        let Some(id) = saved["batch_id"]
            .as_str()
            .filter(|_| saved["fallback"] != true)
        else {
            return Ok(None);
        };
        // The answer is read against the request as it was submitted.
        let submitted = ChatRequest {
            structure: (saved["structured"] == true).then(summary_schema),
            ..request.clone()
        };
        let fall_back = |why: String| json!({"fallback": true, "batch_id": id, "why": why});
        match self
            .client
            .poll_batch(id, &batch.custom_id, &submitted)
            .await
        {
            Ok(abridge_llm::batch::BatchPoll::Pending) => Err(waiting(id)),
            // The provider is away for now: ask again later, without using up an attempt.
            Err(e) if e.kind.is_transient() => Err(waiting(id)),
            Err(e) => {
                tracing::info!(backend = self.name(), batch = id, error = %e, "cannot read the provider batch; sending the request the ordinary way");
                checkpoints.put(stage, fall_back(e.to_string())).await?;
                Ok(None)
            }
            Ok(abridge_llm::batch::BatchPoll::Failed(why)) => {
                tracing::info!(backend = self.name(), batch = id, %why, "the provider batch did not answer; sending the request the ordinary way");
                checkpoints.put(stage, fall_back(why)).await?;
                Ok(None)
            }
            Ok(abridge_llm::batch::BatchPoll::Done(response)) => {
                // Used by this attempt only: a later one (this one failing after) asks the
                // ordinary way rather than read and pay for the same answer again.
                checkpoints
                    .put(stage, fall_back("its answer was collected".into()))
                    .await?;
                usage.requests += 1;
                usage.input_tokens += response.input_tokens;
                usage.output_tokens += response.output_tokens;
                usage.truncated |= response.truncated;
                usage.provider_batch = Some(id.to_owned());
                metrics::summarizer_request(self.name(), "ok");
                metrics::summarizer_tokens(
                    self.name(),
                    response.input_tokens,
                    response.output_tokens,
                );
                if let Some(ledger) = payer.ledger {
                    let delta = |actual: u64, est: u64| {
                        i64::try_from(actual).unwrap_or(i64::MAX)
                            - i64::try_from(est).unwrap_or(i64::MAX)
                    };
                    ledger
                        .correct(
                            delta(response.input_tokens, est_in),
                            delta(response.output_tokens, est_out),
                            BATCH_PRICE_FACTOR,
                        )
                        .await;
                }
                Ok(Some(response))
            }
        }
    }

    /// One request: through the breaker and the budgets, with bounded in-process retries of
    /// transient failures (honouring `retry-after`); longer waits go back to the queue.
    async fn call(
        &self,
        queue: &Queue,
        request: &ChatRequest,
        usage: &mut Usage,
        payer: Payer<'_>,
    ) -> Result<ChatResponse, ItemError> {
        let cost =
            estimate(&request.system) + estimate(&request.user) + u64::from(request.max_tokens);
        let mut retry = 0;
        loop {
            if let Some(budget) = payer.daily {
                budget.check(queue).await?;
            }
            self.breaker.pass(queue).await?;
            if let Some(bucket) = &self.requests {
                limits::take(queue, bucket, payer.owner, 1.0, self.budget_max_wait).await?;
            }
            if let Some(bucket) = &self.tokens {
                limits::take(
                    queue,
                    bucket,
                    payer.owner,
                    cost as f64,
                    self.budget_max_wait,
                )
                .await?;
            }
            usage.requests += 1;
            let span = tracing::info_span!(
                "llm call",
                backend = self.name(),
                model = %request.model,
                try_number = retry + 1
            );
            let answer = self.client.complete(request).instrument(span).await;
            if let Ok(response) = &answer {
                if let Some(budget) = payer.daily {
                    budget
                        .charge(queue, response.input_tokens + response.output_tokens)
                        .await;
                }
                if let Some(ledger) = payer.ledger {
                    ledger
                        .charge(response.input_tokens, response.output_tokens)
                        .await;
                }
            }
            match &answer {
                Ok(response) => {
                    metrics::summarizer_request(self.name(), "ok");
                    metrics::summarizer_tokens(
                        self.name(),
                        response.input_tokens,
                        response.output_tokens,
                    );
                }
                Err(e) => metrics::summarizer_request(self.name(), e.kind.as_str()),
            }
            match answer {
                Ok(response) => {
                    self.breaker.report(queue, true).await;
                    usage.input_tokens += response.input_tokens;
                    usage.output_tokens += response.output_tokens;
                    usage.truncated |= response.truncated;
                    return Ok(response);
                }
                Err(e) => {
                    if e.kind.means_provider_down() {
                        self.breaker.report(queue, false).await;
                    }
                    retry += 1;
                    let wait = if e.kind.is_transient() {
                        self.retry.wait(retry, e.retry_after)
                    } else {
                        None
                    };
                    match wait {
                        Some(wait) => {
                            tracing::info!(
                                backend = self.name(),
                                error = %e,
                                retry,
                                wait_ms = wait.as_millis() as u64,
                                "llm request failed; retrying"
                            );
                            tokio::time::sleep(wait).await;
                        }
                        None => return Err(e.into()),
                    }
                }
            }
        }
    }
}

/// A short id for one way of summarizing one transcript: checkpoints of another model,
/// length or chunk size are not reused.
fn run_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_whole_lines_within_the_budget() {
        let lines: Vec<(u64, String)> = (0..100).map(|i| (i * 30, "word ".repeat(40))).collect();
        let chunks = pack(&lines, 1000);
        assert!(chunks.len() > 1);
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 100);
        for c in &chunks {
            let cost: u64 = c.iter().map(|(_, t)| estimate(t) + 4).sum();
            assert!(cost <= 1000, "{cost}");
        }
        // Order and timestamps survive.
        let flat: Vec<u64> = chunks.concat().iter().map(|(at, _)| *at).collect();
        assert_eq!(flat, (0..100).map(|i| i * 30).collect::<Vec<_>>());
    }
}
