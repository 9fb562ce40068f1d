//! The summarizer's settings (`ABRIDGE_*`), read through `SettingsSource` so every error names
//! the key and its variable. See README.md, "Configuration".

// `SettingsError` is the core's error type, built once at start-up: its size does not matter.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use abridge_core::Backend;
use abridge_core::settings::{Secret, Settings, SettingsError, SettingsSource};
use abridge_llm::Provider;
use abridge_llm::retry::RetryPolicy;

use crate::cost::Prices;

#[derive(Clone, Debug)]
pub struct SummarizeConfig {
    /// The fleet's backend when a batch names none (`ABRIDGE_SUMMARIZER`).
    pub default_backend: Backend,
    /// `ABRIDGE_DRILLS`: whether batches may run on `noop` (see [`Backend::Noop`]).
    pub drills: bool,
    /// Transcript language preference, most preferred first.
    pub languages: Vec<String>,
    pub youtube: YoutubeSettings,
    pub openai: LlmSettings,
    pub anthropic: LlmSettings,
    /// In-process retries of one LLM request.
    pub llm_retry: RetryPolicy,
    /// What each model's tokens cost (`ABRIDGE_LLM_PRICES` over the defaults).
    pub prices: Prices,
    /// `ABRIDGE_LLM_BATCH_API`: `low`-priority batches on `openai`/`anthropic` are summarized
    /// through the provider's batch API (half price, answers within a day).
    pub llm_batch_api: bool,
    /// How often an item waiting on a provider batch asks whether it has ended.
    pub llm_batch_poll: Duration,
    /// The most transcript tokens sent in one request; longer transcripts are map-reduced.
    pub llm_chunk_tokens: u64,
    /// Fewer words than this in a transcript (an empty caption track, "[Music]") fail the item
    /// as `transcript_too_short` before any summarizer sees it: there is nothing to summarize.
    pub min_transcript_words: usize,
    /// Consecutive "provider down" failures (5xx, 529, timeouts) that open a backend's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses requests before letting one probe through.
    pub breaker_open: Duration,
    /// The longest an item waits in-process for a fleet budget before handing itself back to
    /// the queue (retried after the wait, without holding a worker slot).
    pub budget_max_wait: Duration,
    /// The `noop` backend's delay (for a batch that asks for `noop`).
    pub noop_delay: Duration,
}

#[derive(Clone, Debug)]
pub struct YoutubeSettings {
    pub base_url: url::Url,
    /// May carry credentials (`http://user:pass@proxy:3128`).
    pub proxy: Option<Secret>,
    /// A pool of proxies instead of `proxy` (`ABRIDGE_YOUTUBE_PROXIES`); each may carry
    /// credentials.
    pub proxies: Vec<Secret>,
    /// How long a proxy that answered with a block stays out of use.
    pub proxy_quarantine: Duration,
    pub timeout: Duration,
    /// Fleet-wide requests per second to YouTube; 0 turns the budget off.
    pub requests_per_second: f64,
    /// Requests the fleet may make at once after a quiet spell.
    pub burst: f64,
}

#[derive(Clone, Debug)]
pub struct LlmSettings {
    pub provider: Provider,
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub model: String,
    /// The model's context window, in tokens.
    pub context_tokens: u64,
    /// Fleet-wide requests per minute; 0 turns the budget off.
    pub requests_per_minute: f64,
    /// Fleet-wide tokens (prompt estimate + answer limit) per minute; 0 turns it off.
    pub tokens_per_minute: f64,
    pub timeout: Duration,
}

impl LlmSettings {
    /// Whether requests can be made: the hosted APIs need a key, a custom server may not.
    pub fn missing_key(&self) -> bool {
        self.api_key.is_none()
            && (self.provider == Provider::Anthropic
                || self.base_url.trim_end_matches('/') == self.provider.default_base_url())
    }

    /// The variable that sets the key.
    pub fn key_variable(&self) -> String {
        SettingsSource::env_name(&format!("{}_api_key", self.provider.name()))
    }
}

impl SummarizeConfig {
    /// Reads every key. The default backend, the drills switch and the `noop` delay are the
    /// core's settings.
    pub fn from_source(src: &SettingsSource, core: &Settings) -> Result<Self, SettingsError> {
        let default_backend = core.summarizer;
        let languages = src.list("languages")?.unwrap_or_else(|| vec!["en".into()]);
        if languages.is_empty()
            || !languages
                .iter()
                .all(|l| abridge_core::options::is_language_tag(l))
        {
            return Err(src.invalid(
                "languages",
                "comma-separated language codes such as \"en\" or \"pt-BR,en\"",
                &format!("{languages:?}"),
            ));
        }
        let client = abridge_youtube::YoutubeConfig::from_source(src)?;
        let rps = rate(src, "youtube_requests_per_second", 5.0)?;
        let youtube = YoutubeSettings {
            base_url: client.base_url,
            proxy: client.proxy.map(Secret::new),
            proxies: client.proxies.into_iter().map(Secret::new).collect(),
            proxy_quarantine: src.millis("youtube_proxy_quarantine_ms", 600_000, 1)?,
            timeout: client.timeout,
            requests_per_second: rps,
            burst: src
                .parse::<f64>("youtube_burst", "a number >= 1")?
                .unwrap_or(rps.max(1.0))
                .max(1.0),
        };
        let llm_timeout = src.millis("llm_timeout_ms", 120_000, 100)?;
        let openai = llm(src, Provider::OpenAi, &OPENAI, llm_timeout)?;
        let anthropic = llm(src, Provider::Anthropic, &ANTHROPIC, llm_timeout)?;
        for settings in [&openai, &anthropic] {
            if default_backend == backend_of(settings.provider) && settings.missing_key() {
                return Err(src.missing(
                    &format!("{}_api_key", settings.provider.name()),
                    &format!(
                        "the {} summarizer needs an API key (or point {} at a server that needs none)",
                        settings.provider.name(),
                        SettingsSource::env_name(&format!("{}_base_url", settings.provider.name()))
                    ),
                ));
            }
        }
        let prices = match src.text("llm_prices")? {
            None => Prices::default(),
            Some(spec) => Prices::with_overrides(&spec).map_err(|e| {
                src.invalid(
                    "llm_prices",
                    "MODEL=IN/OUT entries, comma-separated (US dollars per million tokens)",
                    &e,
                )
            })?,
        };
        Ok(Self {
            default_backend,
            drills: core.drills,
            prices,
            llm_batch_api: src.flag("llm_batch_api", false)?,
            llm_batch_poll: src.millis("llm_batch_poll_ms", 60_000, 10)?,
            languages,
            youtube,
            openai,
            anthropic,
            llm_retry: RetryPolicy {
                max_retries: src.number("llm_max_retries", 2, 0, 10)? as u32,
                base: src.millis("llm_retry_base_ms", 500, 1)?,
                cap: src.millis("llm_retry_max_ms", 8_000, 1)?,
                max_wait: src.millis("llm_retry_max_wait_ms", 20_000, 0)?,
            },
            llm_chunk_tokens: src.number("llm_chunk_tokens", 16_000, 200, 10_000_000)?,
            min_transcript_words: src.number("min_transcript_words", 10, 0, 100_000)? as usize,
            breaker_failures: src.number("breaker_failures", 5, 1, 1_000)? as u32,
            breaker_open: src.millis("breaker_open_ms", 30_000, 10)?,
            budget_max_wait: src.millis("budget_max_wait_ms", 60_000, 0)?,
            noop_delay: core.noop_delay,
        })
    }

    pub fn llm(&self, provider: Provider) -> &LlmSettings {
        match provider {
            Provider::OpenAi => &self.openai,
            Provider::Anthropic => &self.anthropic,
        }
    }
}

/// The backend that summarizes through `provider`.
fn backend_of(provider: Provider) -> Backend {
    match provider {
        Provider::OpenAi => Backend::Openai,
        Provider::Anthropic => Backend::Anthropic,
    }
}

fn rate(src: &SettingsSource, key: &str, default: f64) -> Result<f64, SettingsError> {
    let v = src
        .parse::<f64>(key, "a number >= 0 (0 turns the budget off)")?
        .unwrap_or(default);
    if !v.is_finite() || v < 0.0 {
        return Err(src.invalid(
            key,
            "a number >= 0 (0 turns the budget off)",
            &v.to_string(),
        ));
    }
    Ok(v)
}

/// A provider's defaults, each overridable by its `{provider}_*` setting.
struct LlmDefaults {
    model: &'static str,
    /// The model's context window, in tokens.
    context_tokens: u64,
    /// Fleet-wide budgets per minute (`0` turns one off).
    requests_per_minute: f64,
    tokens_per_minute: f64,
}

const OPENAI: LlmDefaults = LlmDefaults {
    model: "gpt-4.1-mini",
    context_tokens: 128_000,
    requests_per_minute: 500.0,
    tokens_per_minute: 200_000.0,
};

const ANTHROPIC: LlmDefaults = LlmDefaults {
    model: "claude-haiku-4-5",
    context_tokens: 200_000,
    requests_per_minute: 50.0,
    tokens_per_minute: 30_000.0,
};

fn llm(
    src: &SettingsSource,
    provider: Provider,
    defaults: &LlmDefaults,
    timeout: Duration,
) -> Result<LlmSettings, SettingsError> {
    let name = provider.name();
    let key = |k: &str| format!("{name}_{k}");
    let base_url = src
        .text(&key("base_url"))?
        .unwrap_or_else(|| provider.default_base_url().into());
    if url::Url::parse(&base_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .is_none()
    {
        return Err(src.invalid(&key("base_url"), "an http(s) URL", &format!("{base_url:?}")));
    }
    Ok(LlmSettings {
        provider,
        base_url,
        api_key: src.secret(&key("api_key"))?,
        model: src
            .text(&key("model"))?
            .unwrap_or_else(|| defaults.model.into()),
        context_tokens: src.number(
            &key("context_tokens"),
            defaults.context_tokens,
            1_000,
            100_000_000,
        )?,
        requests_per_minute: rate(
            src,
            &key("requests_per_minute"),
            defaults.requests_per_minute,
        )?,
        tokens_per_minute: rate(src, &key("tokens_per_minute"), defaults.tokens_per_minute)?,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(backend: &str) -> Settings {
        Settings::from_source(&SettingsSource::from_vars([(
            "ABRIDGE_SUMMARIZER",
            backend,
        )]))
        .unwrap()
    }

    #[test]
    fn defaults_and_errors_that_name_the_variable() {
        let c = SummarizeConfig::from_source(&SettingsSource::from_vars([]), &core("extractive"))
            .unwrap();
        assert_eq!(c.languages, ["en"]);
        assert_eq!(c.youtube.base_url.as_str(), "https://www.youtube.com/");
        assert_eq!(c.openai.model, "gpt-4.1-mini");
        let err = SummarizeConfig::from_source(&SettingsSource::from_vars([]), &core("anthropic"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ABRIDGE_ANTHROPIC_API_KEY"), "{err}");
        let err = SummarizeConfig::from_source(
            &SettingsSource::from_vars([("ABRIDGE_LANGUAGES", "english please")]),
            &core("extractive"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ABRIDGE_LANGUAGES"), "{err}");
        // A local OpenAI-compatible server needs no key.
        let c = SummarizeConfig::from_source(
            &SettingsSource::from_vars([("ABRIDGE_OPENAI_BASE_URL", "http://localhost:11434")]),
            &core("openai"),
        )
        .unwrap();
        assert!(!c.openai.missing_key());
        let err = SummarizeConfig::from_source(
            &SettingsSource::from_vars([
                ("ABRIDGE_OPENAI_API_KEY", "sk-hunter2"),
                ("ABRIDGE_YOUTUBE_REQUESTS_PER_SECOND", "-1"),
            ]),
            &core("openai"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ABRIDGE_YOUTUBE_REQUESTS_PER_SECOND"), "{err}");
        let c = SummarizeConfig::from_source(
            &SettingsSource::from_vars([("ABRIDGE_OPENAI_API_KEY", "sk-hunter2")]),
            &core("openai"),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
