//! The summarizing processor: turns an item into a readable, timestamped summary.
//!
//! One attempt at one item ([`Summarizer::process`]) runs these stages:
//!
//! 1. **Options**: the batch's backend, model, length and language preference, else the
//!    fleet's defaults.
//! 2. **Transcript**: a supplied one; else the one an earlier attempt used (checkpoint); else
//!    the transcript cache (one row per video and language); else YouTube (through the fleet's
//!    request budget), then cached. The `transcript` checkpoint pins it for later attempts.
//! 3. **Summary cache**: keyed by (video, backend, model, length, language, prompt version,
//!    source, scope, prompt title); a hit costs nothing. An entry holds only what the video
//!    gave: one made from a producer's own input (a supplied transcript, a title sent to a
//!    model) is scoped to that producer, and the heading (the item's title) is rendered per
//!    item.
//! 4. **Summary**: [`extractive`] (LexRank, offline) or [`llm`] (OpenAI-compatible or
//!    Anthropic; map-reduce with checkpointed chunk summaries when the transcript is long).
//! 5. **Render** ([`render`]): one markdown shape for every backend, then cache it.
//!
//! Every write for the item is fenced by the attempt's lease token ([`checkpoints`]). Fleet
//! limits (budgets, breakers) live in Redis ([`limits`]). Configuration: [`config`].

pub mod checkpoints;
pub mod config;
pub mod cost;
pub mod extractive;
pub mod limits;
pub mod llm;
pub mod meta;
pub mod noop;
pub mod render;
pub mod text;

use std::sync::Arc;
use std::time::Instant;

use abridge_core::{Backend, ErrorKind, ItemError, SummaryLength};
use abridge_llm::{LlmClient, LlmConfig};
use abridge_processor::{Job, JobOutput, Processor};
use abridge_queue::Queue;
use abridge_store::{CachedTranscript, Store, SummaryKey};
use abridge_youtube::{CaptionTrack, Segment, YoutubeClient, YoutubeConfig, choose_track};
use async_trait::async_trait;
use noop::Noop;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use crate::checkpoints::{Checkpoints, store_error};
use crate::config::{LlmSettings, SummarizeConfig};
use crate::limits::{Breaker, Bucket, Ledger, TenantBudget, YoutubeBudget, YoutubeShared};
use crate::llm::Payer;
use crate::llm::{LlmBackend, Usage};
use crate::text::{Doc, supplied_segments};

/// The summarizer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Youtube(#[from] abridge_youtube::BuildError),
    #[error(transparent)]
    Llm(#[from] abridge_llm::BuildError),
}

/// The processor behind `extractive`, `openai` and `anthropic` (and `noop` for batches that ask
/// for it).
pub struct Summarizer {
    config: SummarizeConfig,
    store: Store,
    queue: Queue,
    youtube: YoutubeClient,
    openai: LlmBackend,
    anthropic: LlmBackend,
    noop: Noop,
    /// Tenants' daily token budgets as last read, and when.
    policies: std::sync::Mutex<std::collections::HashMap<String, (Instant, Option<i64>)>>,
}

/// What one item asks for, options resolved against the fleet's defaults.
#[derive(Clone, Debug, PartialEq)]
struct Request {
    backend: Backend,
    /// The batch's model, if it named one.
    model: Option<String>,
    length: SummaryLength,
    languages: Vec<String>,
    /// No model item of the batch starts once it has spent this much.
    max_cost_usd: Option<f64>,
}

/// Where an attempt's transcript came from.
#[derive(Clone, Debug)]
struct TranscriptInfo {
    /// `supplied`, `checkpoint`, `cache` or `youtube`.
    source: &'static str,
    language: String,
    kind: Option<String>,
    /// YouTube's title for the video.
    title: Option<String>,
    /// `""` for YouTube's captions, else the supplied transcript's SHA-256.
    cache_source: String,
}

impl Summarizer {
    pub fn new(config: SummarizeConfig, store: Store, queue: Queue) -> Result<Self, BuildError> {
        let youtube = YoutubeClient::new(&YoutubeConfig {
            base_url: config.youtube.base_url.clone(),
            proxy: config.youtube.proxy.as_ref().map(|p| p.expose().to_owned()),
            proxies: config
                .youtube
                .proxies
                .iter()
                .map(|p| p.expose().to_owned())
                .collect(),
            timeout: config.youtube.timeout,
        })?
        .with_shared(Arc::new(YoutubeShared {
            queue: queue.clone(),
            quarantine: config.youtube.proxy_quarantine,
        }));
        abridge_telemetry::metrics::preregister_youtube(
            &youtube.egress_ids(),
            !config.youtube.proxies.is_empty(),
        );
        let backend = |settings: &LlmSettings| -> Result<LlmBackend, BuildError> {
            let name = settings.provider.name();
            Ok(LlmBackend {
                client: LlmClient::new(LlmConfig {
                    provider: settings.provider,
                    base_url: settings.base_url.clone(),
                    api_key: settings.api_key.clone(),
                    timeout: settings.timeout,
                })?,
                settings: settings.clone(),
                requests: Bucket::per_minute(
                    &format!("{name}:requests"),
                    settings.requests_per_minute,
                ),
                tokens: Bucket::per_minute(&format!("{name}:tokens"), settings.tokens_per_minute),
                breaker: Breaker {
                    name: name.to_owned(),
                    threshold: config.breaker_failures,
                    open_for: config.breaker_open,
                    probe: settings.timeout,
                },
                retry: config.llm_retry,
                chunk_tokens: config.llm_chunk_tokens,
                budget_max_wait: config.budget_max_wait,
            })
        };
        Ok(Self {
            openai: backend(&config.openai)?,
            anthropic: backend(&config.anthropic)?,
            noop: Noop {
                delay: config.noop_delay,
            },
            youtube,
            store,
            queue,
            config,
            policies: Default::default(),
        })
    }

    fn request(&self, job: &Job) -> Result<Request, ItemError> {
        let o = &job.options;
        let text = |field: &Option<String>| {
            field
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let backend = o.backend.unwrap_or(self.config.default_backend);
        let languages = match text(&o.language) {
            Some(l) => l
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            None => self.config.languages.clone(),
        };
        Ok(Request {
            backend,
            model: text(&o.model),
            length: o.length.unwrap_or_default(),
            languages,
            max_cost_usd: o.max_cost_usd,
        })
    }

    /// The item's transcript: supplied, pinned by a checkpoint, cached, or fetched.
    async fn transcript(
        &self,
        job: &Job,
        request: &Request,
        checkpoints: &mut Checkpoints<'_>,
    ) -> Result<(Doc, TranscriptInfo), ItemError> {
        let fallback_title = || format!("Video {}", job.video_id);
        if let Some(text) = &job.transcript {
            let (segments, timed) = supplied_segments(text);
            let language = request
                .languages
                .first()
                .cloned()
                .unwrap_or_else(|| "en".into());
            let hash = sha256_hex(text);
            return Ok((
                Doc {
                    video_id: job.video_id.clone(),
                    title: job.title.clone().unwrap_or_else(fallback_title),
                    language: language.clone(),
                    segments,
                    timed,
                },
                TranscriptInfo {
                    source: "supplied",
                    language,
                    kind: None,
                    title: None,
                    cache_source: hash,
                },
            ));
        }

        let cached = self
            .store
            .cached_transcripts(&job.video_id)
            .await
            .map_err(store_error)?;
        let pinned = checkpoints
            .get("transcript")
            .and_then(|c| c["language"].as_str())
            .and_then(|lang| cached.iter().find(|t| t.language == lang));
        let (row, source) = match pinned {
            Some(row) => (row.clone(), "checkpoint"),
            None => {
                let tracks: Vec<CaptionTrack> = cached
                    .last()
                    .and_then(|t| serde_json::from_value(t.tracks.clone()).ok())
                    .unwrap_or_default();
                let hit = choose_track(&tracks, &request.languages)
                    .and_then(|track| cached.iter().find(|t| t.language == track.language));
                match hit {
                    Some(row) => (row.clone(), "cache"),
                    None => (
                        self.fetch_and_cache(job, &request.languages).await?,
                        "youtube",
                    ),
                }
            }
        };
        if source != "checkpoint" {
            checkpoints
                .put(
                    "transcript",
                    json!({ "language": row.language, "source": source }),
                )
                .await?;
        }
        let segments: Vec<Segment> = serde_json::from_value(row.segments.clone()).map_err(|e| {
            ItemError::permanent(ErrorKind::INTERNAL, format!("read cached transcript: {e}"))
        })?;
        Ok((
            Doc {
                video_id: job.video_id.clone(),
                title: job
                    .title
                    .clone()
                    .or_else(|| row.title.clone())
                    .unwrap_or_else(fallback_title),
                language: row.language.clone(),
                segments,
                timed: true,
            },
            TranscriptInfo {
                source,
                language: row.language.clone(),
                kind: Some(row.kind.clone()),
                title: row.title.clone(),
                cache_source: String::new(),
            },
        ))
    }

    /// The YouTube client for an item of `owner`: its requests go through the fleet's request
    /// budget as that owner's (owners share a contended budget equally).
    fn youtube_for(&self, owner: Option<&str>) -> YoutubeClient {
        let youtube = &self.config.youtube;
        self.youtube.clone().with_throttle(Arc::new(YoutubeBudget {
            queue: self.queue.clone(),
            bucket: (youtube.requests_per_second > 0.0).then(|| Bucket {
                name: "youtube".into(),
                per_second: youtube.requests_per_second,
                capacity: youtube.burst,
            }),
            max_wait: self.config.budget_max_wait,
            owner: owner.map(str::to_owned),
        }))
    }

    async fn fetch_and_cache(
        &self,
        job: &Job,
        languages: &[String],
    ) -> Result<CachedTranscript, ItemError> {
        let t = self
            .youtube_for(job.tenant.as_deref())
            .fetch_transcript(&job.video_id, languages)
            .await?;
        abridge_telemetry::metrics::youtube_fetch(t.requests);
        let row = CachedTranscript {
            video_id: t.video_id.clone(),
            language: t.language.clone(),
            kind: t.kind.as_str().to_owned(),
            title: t.title.clone(),
            channel: t.channel.clone(),
            duration_s: t.duration_s,
            segments: serde_json::to_value(&t.segments).expect("segments serialize"),
            tracks: serde_json::to_value(&t.tracks).expect("tracks serialize"),
            fetched_at: chrono::Utc::now(),
        };
        let cached = self
            .store
            .save_transcript(&row, &job.claim(), job.worker)
            .await
            .map_err(store_error)?;
        if !cached {
            return Err(ItemError::transient(
                ErrorKind::from_static("lease_lost"),
                "transcript cache fill refused: this attempt no longer holds the item",
            ));
        }
        Ok(row)
    }
}

/// A model that declines an item is asked once more (a later attempt); a second refusal fails
/// the item rather than paying for every attempt.
fn refused_twice(e: ItemError, attempt: u32) -> ItemError {
    if attempt >= 2 && e.kind().as_str() == "llm_refused" {
        ItemError::permanent(e.kind().clone(), e.message().to_owned())
    } else {
        e
    }
}

#[async_trait]
impl Processor for Summarizer {
    fn name(&self) -> &str {
        self.config.default_backend.as_str()
    }

    async fn process(&self, job: &Job) -> Result<JobOutput, ItemError> {
        let started = Instant::now();
        let request = self.request(job)?;
        let llm = match request.backend {
            Backend::Noop if self.config.drills => return self.noop.process(job).await,
            Backend::Noop => {
                return Err(ItemError::permanent(
                    ErrorKind::from_static("unknown_backend"),
                    "the noop backend is a drill, and this worker runs without ABRIDGE_DRILLS=1",
                ));
            }
            Backend::Extractive => None,
            Backend::Openai => Some(&self.openai),
            Backend::Anthropic => Some(&self.anthropic),
        };
        if let Some(b) = llm
            && b.settings.missing_key()
        {
            return Err(ItemError::permanent(
                ErrorKind::from_static("backend_not_configured"),
                format!(
                    "the {} backend has no API key: set {}",
                    b.name(),
                    b.settings.key_variable()
                ),
            ));
        }
        let (model, prompt_version) = match llm {
            None => (String::new(), extractive::ALGORITHM_VERSION),
            Some(b) => (
                request
                    .model
                    .clone()
                    .unwrap_or_else(|| b.settings.model.clone()),
                llm::PROMPT_VERSION,
            ),
        };

        let price = self.config.prices.get(&model);
        let mut checkpoints = Checkpoints::load(
            &self.store,
            job.item_id,
            job.lease_token,
            job.worker,
            job.fence.clone(),
        )
        .await?;
        // An item waiting on a provider batch was paid for when it was submitted: its
        // answer is collected whatever the batch has spent since.
        if let (Some(limit), Some(_)) = (request.max_cost_usd, llm)
            && !checkpoints.waits_on_provider_batch()
        {
            self.check_batch_budget(job, &model, price.is_some(), limit)
                .await?;
        }
        let fetch_started = Instant::now();
        let fetched = self
            .transcript(job, &request, &mut checkpoints)
            .instrument(tracing::info_span!("transcript"))
            .await;
        abridge_telemetry::metrics::record_stage("transcript", fetch_started.elapsed());
        let (doc, transcript) = fetched?;
        let words: usize = doc
            .segments
            .iter()
            .map(|s| s.text.split_whitespace().count())
            .sum();
        if words < self.config.min_transcript_words {
            return Err(ItemError::permanent(
                ErrorKind::from_static("transcript_too_short"),
                format!(
                    "the transcript has {words} words, fewer than {} (ABRIDGE_MIN_TRANSCRIPT_WORDS)",
                    self.config.min_transcript_words
                ),
            ));
        }
        // A producer's title reaches only a model's prompt (extractive summaries ignore it).
        let prompt_title = match (&job.title, llm) {
            (Some(title), Some(_)) => sha256_hex(title),
            _ => String::new(),
        };
        let supplied = !transcript.cache_source.is_empty() || !prompt_title.is_empty();
        let key = SummaryKey {
            video_id: job.video_id.clone(),
            backend: request.backend.as_str().to_owned(),
            model: model.clone(),
            length: request.length.as_str().to_owned(),
            language: doc.language.clone(),
            prompt_version: prompt_version.to_owned(),
            source: transcript.cache_source.clone(),
            scope: if supplied {
                owner_scope(job)
            } else {
                String::new()
            },
            prompt_title,
        };
        let cached = self.store.cached_summary(&key).await.map_err(store_error)?;
        let (summary, usage, cache) = match cached {
            Some(hit) => (hit.summary, Usage::default(), "hit"),
            None => {
                let summarize_started = Instant::now();
                let span = tracing::info_span!("summarize", backend = %request.backend);
                let summarized = match llm {
                    None => {
                        let summary = extractive::summarize_off_runtime(&doc, request.length)
                            .instrument(span)
                            .await?;
                        abridge_telemetry::metrics::summarizer_request(
                            Backend::Extractive.as_str(),
                            "ok",
                        );
                        Ok((summary, Usage::default()))
                    }
                    Some(b) => {
                        let spend = self.tenant_budget(job).await?;
                        // Low-priority work may wait a day for half the price.
                        let via_batch = (self.config.llm_batch_api
                            && job.priority == abridge_core::Priority::Low)
                            .then(|| llm::ViaBatch {
                                custom_id: format!("item-{}", job.item_id.0),
                                poll: self.config.llm_batch_poll,
                            });
                        let ledger = Ledger {
                            store: &self.store,
                            batch: job.batch_id,
                            tenant: job.tenant.as_deref(),
                            provider: b.name(),
                            model: &model,
                            price,
                        };
                        b.summarize(
                            &self.queue,
                            &mut checkpoints,
                            &doc,
                            &model,
                            request.length,
                            Payer {
                                owner: job.tenant.as_deref(),
                                daily: spend.as_ref(),
                                ledger: Some(&ledger),
                                via_batch: via_batch.as_ref(),
                            },
                        )
                        .instrument(span)
                        .await
                    }
                };
                abridge_telemetry::metrics::record_stage("summarize", summarize_started.elapsed());
                let (summary, usage) = summarized.map_err(|e| refused_twice(e, job.attempt))?;
                (render::body(&doc.video_id, &summary), usage, "miss")
            }
        };
        let model_run = llm.map(|_| meta::ModelRun {
            llm_requests: usage.requests,
            chunks: usage.chunks,
            reused_chunks: usage.reused_chunks,
            truncated: usage.truncated,
            answer: (cache == "miss").then_some(if usage.structured {
                "json"
            } else if usage.prose {
                "prose"
            } else {
                "text"
            }),
            stamps_clamped: (cache == "miss").then_some(usage.stamps_clamped),
        });
        // What the summary cost as made (reused chunks included); `null` without a price.
        let factor = if usage.provider_batch.is_some() {
            llm::BATCH_PRICE_FACTOR
        } else {
            1.0
        };
        let meta = meta::ResultMeta {
            backend: request.backend,
            model: if model.is_empty() {
                "lexrank".to_owned()
            } else {
                model.clone()
            },
            prompt_version: prompt_version.to_owned(),
            length: request.length.as_str(),
            language: doc.language.clone(),
            transcript: meta::TranscriptMeta {
                source: transcript.source,
                language: transcript.language.clone(),
                kind: transcript.kind.clone(),
                segments: doc.segments.len(),
            },
            summary_cache: cache,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: llm
                .map(|_| price.map(|p| p.cost(usage.input_tokens, usage.output_tokens) * factor)),
            provider_batch_id: llm.and(usage.provider_batch.clone()),
            model_run,
            duration_ms: started.elapsed().as_millis() as u64,
        }
        .to_json();
        if cache == "miss" {
            match self
                .store
                .save_summary(
                    &key,
                    &summary,
                    transcript.title.as_deref(),
                    &meta,
                    &job.claim(),
                    job.worker,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return Err(ItemError::transient(
                        ErrorKind::from_static("lease_lost"),
                        "summary cache fill refused: this attempt no longer holds the item",
                    ));
                }
                Err(e) => {
                    tracing::warn!(item = %job.item_id, error = %e, "could not cache the summary")
                }
            }
        }
        Ok(JobOutput {
            summary: render::heading(&doc.title) + &summary,
            title: transcript.title,
            meta,
        })
    }
}

/// How long a tenant's policy is trusted before it is read again.
const POLICY_TTL: std::time::Duration = std::time::Duration::from_secs(10);

impl Summarizer {
    /// Ends the item `cancelled` (`budget_reached`) once its batch has spent `limit`: it
    /// would start a model request the batch's owner did not want to pay for. A model without
    /// a price cannot be held to a limit: the item fails (`unpriced_model`) instead.
    async fn check_batch_budget(
        &self,
        job: &Job,
        model: &str,
        priced: bool,
        limit: f64,
    ) -> Result<(), ItemError> {
        if !priced {
            return Err(ItemError::permanent(
                ErrorKind::from_static("unpriced_model"),
                format!(
                    "the batch sets max_cost_usd, and the fleet has no price for model {model:?} (ABRIDGE_LLM_PRICES)"
                ),
            ));
        }
        let spent = self
            .store
            .batch_spend(&[job.batch_id])
            .await
            .map_err(store_error)?
            .first()
            .map_or(0.0, |(_, s)| s.cost_usd);
        if spent >= limit {
            return Err(ItemError::cancelled(
                ErrorKind::from_static("budget_reached"),
                format!("the batch has spent ${spent:.4} of its max_cost_usd ${limit}"),
            ));
        }
        Ok(())
    }

    /// The daily token budget of `job`'s tenant, if it has one.
    async fn tenant_budget(&self, job: &Job) -> Result<Option<TenantBudget>, ItemError> {
        let Some(tenant) = &job.tenant else {
            return Ok(None);
        };
        Ok(self
            .daily_tokens(tenant)
            .await?
            .map(|daily_tokens| TenantBudget {
                tenant: tenant.clone(),
                daily_tokens,
            }))
    }

    /// The tenant's daily token budget, read at most every `POLICY_TTL`.
    async fn daily_tokens(&self, tenant: &str) -> Result<Option<i64>, ItemError> {
        if let Some((at, limit)) = self
            .policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
            && at.elapsed() < POLICY_TTL
        {
            return Ok(*limit);
        }
        let limit = self
            .store
            .tenant(tenant)
            .await
            .map_err(store_error)?
            .and_then(|t| t.policy.daily_tokens);
        self.policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_owned(), (Instant::now(), limit));
        Ok(limit)
    }
}

/// The cache scope of a summary made from what `job`'s producer supplied.
fn owner_scope(job: &Job) -> String {
    match &job.tenant {
        Some(tenant) => format!("tenant:{tenant}"),
        None => "operator".to_owned(),
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
