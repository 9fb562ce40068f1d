//! Configuration: built-in defaults < an optional TOML file (`--config PATH`, flat keys such as
//! `lease_ms = 30000`) < `ABRIDGE_*` environment variables (`ABRIDGE_LEASE_MS=30000`).
//!
//! [`SettingsSource`] merges the layers and reads typed values with errors that name both the
//! key and its variable. Each crate builds its own settings struct from it, so a capability's
//! options live next to its code; [`Settings`] holds the fleet core's.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::options::Backend;
use config::{Config, Environment, File, FileFormat};

/// A bad or unreadable configuration value. The message names the key, the environment
/// variable, what was expected and what was found (never the value of a secret).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("read configuration file {path}: {source}")]
    File {
        path: String,
        source: config::ConfigError,
    },
    #[error("configuration {key} ({env}): expected {expected}, got {got}")]
    Invalid {
        key: String,
        env: String,
        expected: String,
        got: String,
    },
    #[error("configuration {key} ({env}) is not a setting{hint}")]
    Unknown {
        key: String,
        env: String,
        /// `: did you mean ...?` when a known key is close, else empty.
        hint: String,
    },
    #[error("configuration {key} ({env}) is required: {why}")]
    Missing {
        key: String,
        env: String,
        why: String,
    },
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// For connection URLs: the URL with any password replaced by `***`, safe to log.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "***".to_owned(),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The merged configuration layers, read key by key.
#[derive(Clone, Debug)]
pub struct SettingsSource {
    config: Config,
    /// Every key asked for, so a test can hold the documented settings to the ones read.
    asked: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

/// Every key any part of abridge reads (`lease_ms` in the file is `ABRIDGE_LEASE_MS`), with
/// the command line's own variables. Loading refuses a key outside it, so a misspelt setting
/// cannot silently leave its default in place; the `settings_table` test holds this list to
/// the loaders, the command line and README's table. Variables starting `ABRIDGE_TEST_`
/// belong to the test harness.
pub const KNOWN_KEYS: &[&str] = &[
    "anthropic_api_key",
    "anthropic_base_url",
    "anthropic_context_tokens",
    "anthropic_model",
    "anthropic_requests_per_minute",
    "anthropic_tokens_per_minute",
    "api_depth_sample_ms",
    "api_eta_window_ms",
    "api_events_min_interval_ms",
    "api_events_refresh_ms",
    "api_listen",
    "api_list_reads",
    "api_list_time_limit_ms",
    "api_max_body_bytes",
    "api_max_items",
    "api_max_streams_per_tenant",
    "api_token",
    "api_url",
    "breaker_failures",
    "breaker_open_ms",
    "budget_max_wait_ms",
    "cache_retention_days",
    "claim_batch",
    "concurrency",
    "config",
    "database_pool_size",
    "database_url",
    "drills",
    "exporter_listen",
    "fenced_retention_days",
    "heartbeat_ms",
    "idempotency_retention_hours",
    "item_timeout_ms",
    "languages",
    "lease_ms",
    "llm_batch_api",
    "llm_batch_poll_ms",
    "llm_chunk_tokens",
    "llm_max_retries",
    "llm_prices",
    "llm_retry_base_ms",
    "llm_retry_max_ms",
    "llm_retry_max_wait_ms",
    "llm_timeout_ms",
    "log_format",
    "max_attempts",
    "max_wait_ms",
    "metrics_listen",
    "min_transcript_words",
    "noop_delay_ms",
    "openai_api_key",
    "openai_base_url",
    "openai_context_tokens",
    "openai_model",
    "openai_requests_per_minute",
    "openai_tokens_per_minute",
    "prune_interval_ms",
    "prune_max_chunk",
    "prune_statement_ms",
    "queue",
    "queue_shards",
    "reap_ms",
    "reconcile_ms",
    "redis_pool_size",
    "redis_prefix",
    "redis_url",
    "retention_days",
    "retry_base_ms",
    "retry_max_ms",
    "session_retention_days",
    "session_ttl_ms",
    "shutdown_grace_ms",
    "start_after_ms",
    "summarizer",
    "webhook_allow_cidrs",
    "webhook_allow_private",
    "webhook_give_up_ms",
    "webhook_poll_ms",
    "webhook_retry_base_ms",
    "webhook_retry_max_ms",
    "webhook_timeout_ms",
    "youtube_base_url",
    "youtube_burst",
    "youtube_proxies",
    "youtube_proxy",
    "youtube_proxy_quarantine_ms",
    "youtube_requests_per_second",
    "youtube_timeout_ms",
];

/// Environment variables start with this, then `_` and the upper-cased key.
pub const ENV_PREFIX: &str = "ABRIDGE";

impl SettingsSource {
    /// Reads the optional TOML file and the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::build(file, None)
    }

    /// Like [`SettingsSource::load`] without a file, with `vars` in place of the process
    /// environment (names with the `ABRIDGE_` prefix). For tests.
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let map = vars
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self::build(None, Some(map)).unwrap_or_else(|e| panic!("test settings: {e}"))
    }

    fn build(
        file: Option<&Path>,
        vars: Option<config::Map<String, String>>,
    ) -> Result<Self, SettingsError> {
        let mut builder = Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(File::from(path).format(FileFormat::Toml).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .ignore_empty(true)
                .source(vars),
        );
        let config = builder.build().map_err(|source| SettingsError::File {
            path: file.map(|p| p.display().to_string()).unwrap_or_default(),
            source,
        })?;
        let source = Self {
            config,
            asked: Default::default(),
        };
        source.refuse_unknown_keys()?;
        Ok(source)
    }

    fn refuse_unknown_keys(&self) -> Result<(), SettingsError> {
        let set: std::collections::HashMap<String, config::Value> =
            self.config.clone().try_deserialize().unwrap_or_default();
        let Some(key) = set
            .keys()
            .find(|k| !KNOWN_KEYS.contains(&k.as_str()) && !k.starts_with("test_"))
        else {
            return Ok(());
        };
        let closest = KNOWN_KEYS
            .iter()
            .map(|known| (strsim::damerau_levenshtein(key, known), known))
            .min()
            .filter(|(distance, _)| *distance <= 3);
        Err(SettingsError::Unknown {
            key: key.to_owned(),
            env: Self::env_name(key),
            hint: closest
                .map(|(_, known)| format!(": did you mean {}?", Self::env_name(known)))
                .unwrap_or_default(),
        })
    }

    /// The keys asked for so far (by every loader that read this source).
    pub fn keys_asked(&self) -> Vec<String> {
        self.asked
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The environment variable that sets `key`.
    pub fn env_name(key: &str) -> String {
        format!("{ENV_PREFIX}_{}", key.to_ascii_uppercase())
    }

    /// The raw text of `key`, if set in any layer.
    pub fn text(&self, key: &str) -> Result<Option<String>, SettingsError> {
        if let Ok(mut asked) = self.asked.lock() {
            asked.insert(key.to_owned());
        }
        match self.config.get_string(key) {
            Ok(s) => Ok(Some(s)),
            Err(config::ConfigError::NotFound(_)) => Ok(None),
            Err(e) => Err(self.invalid(key, "a single value", &e.to_string())),
        }
    }

    /// Parses `key` with `FromStr`; `expected` says what a valid value looks like.
    pub fn parse<T: FromStr>(&self, key: &str, expected: &str) -> Result<Option<T>, SettingsError> {
        match self.text(key)? {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| self.invalid(key, expected, &format!("{raw:?}"))),
        }
    }

    /// A whole number of milliseconds, at least `min`.
    pub fn millis(&self, key: &str, default: u64, min: u64) -> Result<Duration, SettingsError> {
        let expected = format!("a whole number of milliseconds >= {min}");
        let ms = self.parse::<u64>(key, &expected)?.unwrap_or(default);
        if ms < min {
            return Err(self.invalid(key, &expected, &ms.to_string()));
        }
        Ok(Duration::from_millis(ms))
    }

    /// A whole number in `min..=max`.
    pub fn number(
        &self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, SettingsError> {
        let expected = format!("a whole number from {min} to {max}");
        let n = self.parse::<u64>(key, &expected)?.unwrap_or(default);
        if !(min..=max).contains(&n) {
            return Err(self.invalid(key, &expected, &n.to_string()));
        }
        Ok(n)
    }

    /// A yes/no switch (`1`/`0`, `true`/`false`, `yes`/`no`, `on`/`off`).
    pub fn flag(&self, key: &str, default: bool) -> Result<bool, SettingsError> {
        match self.text(key)? {
            None => Ok(default),
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(self.invalid(key, "1 or 0 (true or false)", &format!("{raw:?}"))),
            },
        }
    }

    /// A secret: its value never appears in an error.
    pub fn secret(&self, key: &str) -> Result<Option<Secret>, SettingsError> {
        Ok(self
            .text(key)
            .map_err(|_| self.invalid(key, "a single text value", "(hidden)"))?
            .map(Secret::new))
    }

    /// A comma-separated list; empty entries are dropped.
    pub fn list(&self, key: &str) -> Result<Option<Vec<String>>, SettingsError> {
        Ok(self.text(key)?.map(|raw| {
            raw.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        }))
    }

    pub fn invalid(&self, key: &str, expected: &str, got: &str) -> SettingsError {
        SettingsError::Invalid {
            key: key.to_owned(),
            env: Self::env_name(key),
            expected: expected.to_owned(),
            got: got.to_owned(),
        }
    }

    pub fn missing(&self, key: &str, why: &str) -> SettingsError {
        SettingsError::Missing {
            key: key.to_owned(),
            env: Self::env_name(key),
            why: why.to_owned(),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for LogFormat {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(()),
        }
    }
}

/// The fleet core's settings. Durations are read from `*_ms` keys.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Postgres, the source of truth. `None` lets `abridge up` start a throwaway server.
    pub database_url: Option<Secret>,
    /// Redis, the fast path. `None` lets `abridge up` start a throwaway server.
    pub redis_url: Option<Secret>,
    /// The queue this process serves; batches are enqueued into one queue.
    pub queue: String,
    /// Every Redis key starts with `{redis_prefix}:{queue}:` (the braces are a cluster hash tag).
    pub redis_prefix: String,
    /// Hash tags the queue is spread over, so that on a Redis Cluster its work spreads over
    /// that many masters (ARCHITECTURE.md, "Shards").
    pub queue_shards: usize,
    /// How long a claim is valid without renewal.
    pub lease: Duration,
    /// How often a worker renews the leases of the items it holds.
    pub heartbeat: Duration,
    /// A worker session with no heartbeat for this long is dead and its items are requeued.
    pub session_ttl: Duration,
    /// How often Redis is checked against Postgres (and repaired) by the reconciler.
    pub reconcile_every: Duration,
    /// How often the reaper looks for expired leases and dead sessions.
    pub reap_every: Duration,
    /// Attempts (claims that started work, including expired ones) before an item fails.
    pub max_attempts: u32,
    /// The first retry waits about this long; each later one doubles it, with jitter.
    pub retry_base: Duration,
    /// No retry's own backoff waits longer than this (a service's `retry-after` may ask for
    /// more, up to `max_wait`).
    pub retry_max: Duration,
    /// No item waits longer than this before it is tried again, whatever asked for the wait
    /// (a backoff, a service's `retry-after`, a breaker or a spent budget): a hostile or
    /// broken `retry-after` cannot park an item for years.
    pub max_wait: Duration,
    /// The fleet's summarizer backend for batches that name none (`extractive`, the default;
    /// `openai`, `anthropic`; `noop` with drills on).
    pub summarizer: Backend,
    /// The operator's switch for fault drills (`ABRIDGE_DRILLS=1`): only then are the `noop`
    /// backend and its `abridge:` directives (sleep, fail, exit) offered, since a tenant that
    /// could ask for them could hold or kill workers.
    pub drills: bool,
    /// The `noop` summarizer sleeps this long per item (benchmarks and fault drills).
    pub noop_delay: Duration,
    /// Items a worker process works on at once.
    pub concurrency: usize,
    /// Most items claimed in one Redis call.
    pub claim_batch: usize,
    /// On SIGTERM, in-flight items get this long to finish before they are released.
    pub shutdown_grace: Duration,
    /// An attempt running longer than this fails with a transient `timeout`.
    pub item_timeout: Duration,
    /// An item is marked `running` in Postgres once it has run this long; one that finishes
    /// sooner is written once, from `queued` straight to its outcome (0: mark at once).
    pub start_after: Duration,
    /// Postgres connections per process.
    pub database_pool_size: u32,
    /// Redis connections per process (the claim loop keeps one more of its own). Redis
    /// answers each in turn, so a few carry a whole worker: more only queue behind it.
    pub redis_pool_size: usize,
    pub log_format: LogFormat,
    /// What the pruner deletes, and when (see [`Retention`]).
    pub retention: Retention,
}

/// How long abridge keeps what it no longer needs, and how the pruner runs. A retention of
/// `None` (the setting `0`) keeps that kind of row forever.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Finished (completed or cancelled) batches, their items, checkpoints, webhook deliveries
    /// and idempotency keys go this long after the batch finished. A tenant's own
    /// `retention_days` (set by the operator) takes its place for the tenant's batches.
    pub batches: Option<Duration>,
    /// Transcript and summary cache entries go after this long without a read.
    pub caches: Option<Duration>,
    /// An `Idempotency-Key` replays its batch for this long (Stripe's 24 hours).
    pub idempotency_keys: Option<Duration>,
    /// Stopped (shut down or buried) worker sessions stay this long, for `abridge top` and
    /// post-mortems.
    pub sessions: Option<Duration>,
    /// Records of refused (fenced) writes stay this long.
    pub fenced_writes: Option<Duration>,
    /// How often the fleet runs a pass (one worker at a time); `None` (0): workers never
    /// prune, the operator runs `abridge prune`.
    pub prune_every: Option<Duration>,
    /// The time one delete statement should take: chunk sizes grow and shrink to meet it, so
    /// no statement holds its row locks much longer.
    pub prune_statement_target: Duration,
    /// The most rows one delete statement takes, however fast the statements are.
    pub prune_max_chunk: u64,
}

impl Default for Retention {
    /// What an unset key means (README's table says the same).
    fn default() -> Self {
        const DAY: u64 = 86_400;
        let days = |n: u64| Some(Duration::from_secs(n * DAY));
        Self {
            batches: days(30),
            caches: days(30),
            idempotency_keys: Some(Duration::from_secs(24 * 3_600)),
            sessions: days(7),
            fenced_writes: days(30),
            prune_every: Some(Duration::from_secs(60)),
            prune_statement_target: Duration::from_millis(50),
            prune_max_chunk: 5_000,
        }
    }
}

impl Retention {
    pub fn from_source(src: &SettingsSource) -> Result<Self, SettingsError> {
        const DAY: u64 = 86_400;
        let d = Self::default();
        let keep = |secs: u64| (secs > 0).then(|| Duration::from_secs(secs));
        let secs = |kept: Option<Duration>, unit: u64| kept.map_or(0, |k| k.as_secs() / unit);
        Ok(Self {
            batches: keep(src.number("retention_days", secs(d.batches, DAY), 0, 36_500)? * DAY),
            caches: keep(src.number("cache_retention_days", secs(d.caches, DAY), 0, 36_500)? * DAY),
            idempotency_keys: keep(
                src.number(
                    "idempotency_retention_hours",
                    secs(d.idempotency_keys, 3_600),
                    0,
                    876_000,
                )? * 3_600,
            ),
            sessions: keep(
                src.number("session_retention_days", secs(d.sessions, DAY), 0, 36_500)? * DAY,
            ),
            fenced_writes: keep(
                src.number(
                    "fenced_retention_days",
                    secs(d.fenced_writes, DAY),
                    0,
                    36_500,
                )? * DAY,
            ),
            prune_every: Some(src.millis("prune_interval_ms", ms(d.prune_every), 0)?)
                .filter(|d| !d.is_zero()),
            prune_statement_target: src.millis(
                "prune_statement_ms",
                ms(Some(d.prune_statement_target)),
                1,
            )?,
            prune_max_chunk: src.number("prune_max_chunk", d.prune_max_chunk, 1, 100_000)?,
        })
    }
}

/// A default duration as the whole milliseconds its `*_ms` key takes (`None`: 0).
fn ms(d: impl Into<Option<Duration>>) -> u64 {
    d.into()
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Default for Settings {
    /// What an unset key means (README's table says the same). The heartbeat's default is a
    /// third of the lease, whatever the lease is set to.
    fn default() -> Self {
        Self {
            database_url: None,
            redis_url: None,
            queue: "default".to_owned(),
            redis_prefix: "abridge".to_owned(),
            queue_shards: 1,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            session_ttl: Duration::from_secs(10),
            reconcile_every: Duration::from_secs(30),
            reap_every: Duration::from_secs(1),
            max_attempts: 5,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            max_wait: Duration::from_secs(3_600),
            summarizer: Backend::Extractive,
            drills: false,
            noop_delay: Duration::ZERO,
            concurrency: 16,
            claim_batch: 256,
            shutdown_grace: Duration::from_secs(25),
            item_timeout: Duration::from_secs(600),
            start_after: Duration::from_millis(200),
            database_pool_size: 8,
            redis_pool_size: 16,
            log_format: LogFormat::Text,
            retention: Retention::default(),
        }
    }
}

impl Settings {
    pub fn from_source(src: &SettingsSource) -> Result<Self, SettingsError> {
        let d = Self::default();
        let lease = src.millis("lease_ms", ms(d.lease), 100)?;
        let heartbeat = src.millis("heartbeat_ms", ms(lease / 3), 10)?;
        if heartbeat * 2 > lease {
            return Err(src.invalid(
                "heartbeat_ms",
                &format!(
                    "at most half of lease_ms ({} ms) so a missed renewal still leaves time",
                    lease.as_millis()
                ),
                &heartbeat.as_millis().to_string(),
            ));
        }
        let retry_base = src.millis("retry_base_ms", ms(d.retry_base), 1)?;
        let retry_max = src.millis("retry_max_ms", ms(d.retry_max), 1)?;
        if retry_max < retry_base {
            return Err(src.invalid(
                "retry_max_ms",
                "at least retry_base_ms",
                &retry_max.as_millis().to_string(),
            ));
        }
        let max_wait = src.millis("max_wait_ms", ms(d.max_wait), 1)?;
        if max_wait < retry_max {
            return Err(src.invalid(
                "max_wait_ms",
                "at least retry_max_ms",
                &max_wait.as_millis().to_string(),
            ));
        }
        let queue = src.text("queue")?.unwrap_or(d.queue);
        check_key_part(src, "queue", &queue)?;
        let redis_prefix = src.text("redis_prefix")?.unwrap_or(d.redis_prefix);
        check_key_part(src, "redis_prefix", &redis_prefix)?;
        let drills = src.flag("drills", d.drills)?;
        let summarizer = match src.text("summarizer")? {
            None => d.summarizer,
            Some(raw) => raw.parse::<Backend>().map_err(|_| {
                src.invalid(
                    "summarizer",
                    "one of extractive, openai, anthropic (noop with ABRIDGE_DRILLS=1)",
                    &format!("{raw:?}"),
                )
            })?,
        };
        if summarizer == Backend::Noop && !drills {
            return Err(src.invalid(
                "summarizer",
                "extractive, openai or anthropic: noop is the drill backend and needs ABRIDGE_DRILLS=1",
                "\"noop\"",
            ));
        }
        Ok(Self {
            database_url: src.secret("database_url")?,
            redis_url: src.secret("redis_url")?,
            queue,
            redis_prefix,
            queue_shards: src.number("queue_shards", d.queue_shards as u64, 1, 64)? as usize,
            lease,
            heartbeat,
            session_ttl: src.millis("session_ttl_ms", ms(d.session_ttl), 100)?,
            reconcile_every: src.millis("reconcile_ms", ms(d.reconcile_every), 100)?,
            reap_every: src.millis("reap_ms", ms(d.reap_every), 10)?,
            max_attempts: src.number("max_attempts", d.max_attempts.into(), 1, 1_000)? as u32,
            retry_base,
            retry_max,
            max_wait,
            summarizer,
            drills,
            noop_delay: src.millis("noop_delay_ms", ms(d.noop_delay), 0)?,
            concurrency: src.number("concurrency", d.concurrency as u64, 1, 100_000)? as usize,
            claim_batch: src.number("claim_batch", d.claim_batch as u64, 1, 4_096)? as usize,
            shutdown_grace: src.millis("shutdown_grace_ms", ms(d.shutdown_grace), 0)?,
            item_timeout: src.millis("item_timeout_ms", ms(d.item_timeout), 10)?,
            start_after: src.millis("start_after_ms", ms(d.start_after), 0)?,
            database_pool_size: src.number(
                "database_pool_size",
                d.database_pool_size.into(),
                1,
                1_000,
            )? as u32,
            redis_pool_size: src.number("redis_pool_size", d.redis_pool_size as u64, 1, 1_000)?
                as usize,
            log_format: src
                .parse("log_format", "text or json")?
                .unwrap_or(d.log_format),
            retention: Retention::from_source(src)?,
        })
    }

    /// The Postgres URL, or an error that says how to set it.
    pub fn require_database_url(&self) -> Result<&Secret, SettingsError> {
        self.database_url
            .as_ref()
            .ok_or_else(|| SettingsError::Missing {
                key: "database_url".into(),
                env: SettingsSource::env_name("database_url"),
                why: "set it to a postgres:// URL (or run `abridge up`, which starts its own)"
                    .into(),
            })
    }

    /// The Redis URL, or an error that says how to set it.
    pub fn require_redis_url(&self) -> Result<&Secret, SettingsError> {
        self.redis_url
            .as_ref()
            .ok_or_else(|| SettingsError::Missing {
                key: "redis_url".into(),
                env: SettingsSource::env_name("redis_url"),
                why: "set it to a redis:// URL (or run `abridge up`, which starts its own)".into(),
            })
    }
}

/// Queue names and prefixes become part of Redis key names and the `{...}` hash tag.
fn check_key_part(src: &SettingsSource, key: &str, value: &str) -> Result<(), SettingsError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(src.invalid(
            key,
            "1 to 64 characters of A-Z, a-z, 0-9, '_', '-' and '.'",
            &format!("{value:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_setting_is_refused_naming_the_one_meant() {
        let err = SettingsSource::build(
            None,
            Some([("ABRIDGE_LEASE_MSS".to_owned(), "100".to_owned())].into()),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("ABRIDGE_LEASE_MSS") && err.contains("did you mean ABRIDGE_LEASE_MS?"),
            "{err}"
        );
        // The test harness's own variables are not settings, and not refused.
        SettingsSource::from_vars([("ABRIDGE_TEST_LOG", "debug")]);
    }

    #[test]
    fn unset_keys_take_the_named_defaults() {
        let read = Settings::from_source(&SettingsSource::from_vars([])).unwrap();
        let named = Settings::default();
        assert_eq!(format!("{read:?}"), format!("{named:?}"));
    }

    #[test]
    fn defaults_follow_the_lease() {
        let s = Settings::from_source(&SettingsSource::from_vars([("ABRIDGE_LEASE_MS", "6000")]))
            .unwrap();
        assert_eq!(s.lease, Duration::from_secs(6));
        assert_eq!(s.heartbeat, Duration::from_secs(2));
        assert_eq!(s.queue, "default");
        assert_eq!(s.max_attempts, 5);
        assert_eq!(s.summarizer, Backend::Extractive);
        assert!(!s.drills);
    }

    #[test]
    fn the_noop_backend_needs_drills_on() {
        let err =
            Settings::from_source(&SettingsSource::from_vars([("ABRIDGE_SUMMARIZER", "noop")]))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("ABRIDGE_SUMMARIZER") && err.contains("ABRIDGE_DRILLS=1"),
            "{err}"
        );
        let s = Settings::from_source(&SettingsSource::from_vars([
            ("ABRIDGE_SUMMARIZER", "noop"),
            ("ABRIDGE_DRILLS", "1"),
        ]))
        .unwrap();
        assert!(s.drills);
        assert_eq!(s.summarizer, Backend::Noop);
        let err = Settings::from_source(&SettingsSource::from_vars([("ABRIDGE_DRILLS", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ABRIDGE_DRILLS"), "{err}");
    }

    #[test]
    fn retention_has_defaults_and_zero_keeps_forever() {
        let s = Settings::from_source(&SettingsSource::from_vars([])).unwrap();
        let day = Duration::from_secs(86_400);
        assert_eq!(s.retention.batches, Some(day * 30));
        assert_eq!(s.retention.caches, Some(day * 30));
        assert_eq!(
            s.retention.idempotency_keys,
            Some(Duration::from_secs(24 * 3_600))
        );
        assert_eq!(s.retention.sessions, Some(day * 7));
        assert_eq!(s.retention.fenced_writes, Some(day * 30));
        assert_eq!(s.retention.prune_every, Some(Duration::from_secs(60)));
        assert_eq!(s.retention.prune_max_chunk, 5_000);

        let s = Settings::from_source(&SettingsSource::from_vars([
            ("ABRIDGE_RETENTION_DAYS", "0"),
            ("ABRIDGE_PRUNE_INTERVAL_MS", "0"),
            ("ABRIDGE_IDEMPOTENCY_RETENTION_HOURS", "2"),
        ]))
        .unwrap();
        assert_eq!(s.retention.batches, None);
        assert_eq!(s.retention.prune_every, None);
        assert_eq!(
            s.retention.idempotency_keys,
            Some(Duration::from_secs(7_200))
        );

        let err = Settings::from_source(&SettingsSource::from_vars([(
            "ABRIDGE_CACHE_RETENTION_DAYS",
            "a month",
        )]))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "configuration cache_retention_days (ABRIDGE_CACHE_RETENTION_DAYS): expected a whole number from 0 to 36500, got \"a month\""
        );
        let err = Settings::from_source(&SettingsSource::from_vars([(
            "ABRIDGE_PRUNE_MAX_CHUNK",
            "0",
        )]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ABRIDGE_PRUNE_MAX_CHUNK"), "{err}");
    }

    #[test]
    fn bad_values_name_the_variable_and_the_expectation() {
        let err = Settings::from_source(&SettingsSource::from_vars([("ABRIDGE_LEASE_MS", "soon")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "configuration lease_ms (ABRIDGE_LEASE_MS): expected a whole number of milliseconds >= 100, got \"soon\""
        );
        let err = Settings::from_source(&SettingsSource::from_vars([("ABRIDGE_QUEUE", "a{b}")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ABRIDGE_QUEUE"), "{err}");
        let err = Settings::from_source(&SettingsSource::from_vars([
            ("ABRIDGE_LEASE_MS", "1000"),
            ("ABRIDGE_HEARTBEAT_MS", "900"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("at most half of lease_ms"), "{err}");
    }

    #[test]
    fn the_environment_overrides_the_file_which_overrides_the_defaults() {
        let dir = std::env::temp_dir().join(format!("abridge-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("abridge.toml");
        std::fs::write(
            &file,
            "lease_ms = 6000\nqueue = \"from-file\"\nmax_attempts = 7\n",
        )
        .unwrap();
        let vars: config::Map<String, String> =
            [("ABRIDGE_QUEUE".to_owned(), "from-env".to_owned())].into();
        let src = SettingsSource::build(Some(&file), Some(vars)).unwrap();
        let s = Settings::from_source(&src).unwrap();
        assert_eq!(
            s.lease,
            Duration::from_secs(6),
            "the file sets what the environment does not"
        );
        assert_eq!(
            s.heartbeat,
            Duration::from_secs(2),
            "defaults follow the file's lease"
        );
        assert_eq!(s.queue, "from-env", "the environment wins over the file");
        assert_eq!(s.max_attempts, 7);
        assert_eq!(
            s.reconcile_every,
            Duration::from_secs(30),
            "untouched keys keep their defaults"
        );

        std::fs::write(&file, "lease_ms = \"soon\"\n").unwrap();
        let src = SettingsSource::build(Some(&file), Some(config::Map::new())).unwrap();
        let err = Settings::from_source(&src).unwrap_err().to_string();
        assert!(
            err.contains("ABRIDGE_LEASE_MS") && err.contains("soon"),
            "{err}"
        );
        let missing = SettingsSource::load(Some(&dir.join("nope.toml")))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.toml"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_source(&SettingsSource::from_vars([(
            "ABRIDGE_DATABASE_URL",
            "postgres://app:hunter2@db/abridge",
        )]))
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert_eq!(
            s.database_url.unwrap().redacted_url(),
            "postgres://app:***@db/abridge"
        );
    }
}
