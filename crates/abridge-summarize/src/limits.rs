//! Fleet-wide limits, kept in Redis (through `abridge-queue`) so every worker shares them:
//! token buckets for YouTube requests and for LLM requests and tokens, and a circuit breaker
//! per LLM backend.
//!
//! When Redis cannot answer, these fail open with a warning: the item's own retries and the
//! provider's 429s still bound the damage, and a worker without Redis loses its leases soon
//! anyway.

use std::time::Duration;

use abridge_core::{ErrorKind, ItemError};
use abridge_queue::Queue;
use abridge_youtube::{Session, SharedState, Throttle, YoutubeError};

use crate::cost::Price;
use async_trait::async_trait;
use rand::Rng;

/// One fleet-wide token bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// The bucket's key under the queue prefix (`youtube`, `openai:requests`).
    pub name: String,
    pub per_second: f64,
    pub capacity: f64,
}

impl Bucket {
    /// `None` when the rate is 0 (no budget).
    pub fn per_minute(name: &str, per_minute: f64) -> Option<Self> {
        (per_minute > 0.0).then(|| Self {
            name: name.to_owned(),
            per_second: per_minute / 60.0,
            // A minute's worth may go at once, as providers' own limits allow.
            capacity: per_minute.max(1.0),
        })
    }
}

/// Why an item could not get through a budget in time.
#[derive(Debug)]
pub struct OverBudget {
    pub bucket: String,
    pub wait: Duration,
}

/// Takes `cost` from `bucket` for `owner` (the item's tenant; `None` for a CLI batch), waiting
/// in-process for at most `max_wait` in all. Owners share a contended bucket equally.
pub async fn take(
    queue: &Queue,
    bucket: &Bucket,
    owner: Option<&str>,
    cost: f64,
    max_wait: Duration,
) -> Result<(), OverBudget> {
    let mut waited = Duration::ZERO;
    loop {
        match queue
            .take_budget(
                &bucket.name,
                bucket.per_second,
                bucket.capacity,
                cost,
                owner,
            )
            .await
        {
            Ok(None) => return Ok(()),
            Ok(Some(wait)) => {
                // A little jitter so waiting workers do not all ask again at the same instant.
                let wait = wait + Duration::from_millis(rand::rng().random_range(0..=20));
                if waited + wait > max_wait {
                    return Err(OverBudget {
                        bucket: bucket.name.clone(),
                        wait,
                    });
                }
                tokio::time::sleep(wait).await;
                waited += wait;
            }
            Err(e) => {
                tracing::warn!(bucket = %bucket.name, error = %e, "budget unavailable; going ahead");
                return Ok(());
            }
        }
    }
}

impl From<OverBudget> for ItemError {
    fn from(e: OverBudget) -> Self {
        ItemError::Deferred {
            kind: ErrorKind::from_static("budget_exhausted"),
            message: format!(
                "fleet budget {} is spent for now; retrying in {} ms",
                e.bucket,
                e.wait.as_millis()
            ),
            retry_after: e.wait,
        }
    }
}

/// Asked before every request of one owner's item to YouTube: counts it, and takes it from
/// the fleet's request budget (one bucket per way out: each proxy of a pool has its own).
pub struct YoutubeBudget {
    pub queue: Queue,
    /// `None`: no budget (`ABRIDGE_YOUTUBE_REQUESTS_PER_SECOND=0`).
    pub bucket: Option<Bucket>,
    pub max_wait: Duration,
    /// The tenant whose item makes the requests (`None`: a CLI batch); owners share the
    /// budget equally while it is contended.
    pub owner: Option<String>,
}

#[async_trait]
impl Throttle for YoutubeBudget {
    async fn before_request(&self, egress: &str) -> Result<(), YoutubeError> {
        let Some(bucket) = &self.bucket else {
            abridge_telemetry::metrics::youtube_request(egress);
            return Ok(());
        };
        let per_egress;
        let bucket = if egress == abridge_youtube::DIRECT {
            bucket
        } else {
            per_egress = Bucket {
                name: format!("{}:{egress}", bucket.name),
                ..bucket.clone()
            };
            &per_egress
        };
        take(
            &self.queue,
            bucket,
            self.owner.as_deref(),
            1.0,
            self.max_wait,
        )
        .await
        .map_err(|e| {
            YoutubeError::Budget(format!(
                "the fleet's youtube request budget is spent for now ({} ms to wait)",
                e.wait.as_millis()
            ))
        })?;
        abridge_telemetry::metrics::youtube_request(egress);
        Ok(())
    }
}

/// What the fleet shares about reaching YouTube, in Redis: the session (reused until YouTube
/// refuses it) and which proxies are quarantined.
pub struct YoutubeShared {
    pub queue: Queue,
    pub quarantine: Duration,
}

/// How long a session is kept without being refused: renewed a few times a day anyway.
const SESSION_TTL: Duration = Duration::from_secs(6 * 3600);

#[async_trait]
impl SharedState for YoutubeShared {
    async fn session(&self) -> Option<Session> {
        match self.queue.youtube_session().await {
            Ok(text) => text.and_then(|t| serde_json::from_str(&t).ok()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the youtube session");
                None
            }
        }
    }

    async fn save_session(&self, session: &Session) {
        let text = serde_json::to_string(session).expect("a session serializes");
        if let Err(e) = self.queue.set_youtube_session(&text, SESSION_TTL).await {
            tracing::debug!(error = %e, "cannot share the youtube session");
        }
    }

    async fn quarantined(&self, egress: &[&str]) -> Vec<Option<Duration>> {
        match self.queue.egress_quarantines(egress).await {
            Ok(states) => {
                for (e, state) in egress.iter().zip(&states) {
                    abridge_telemetry::metrics::youtube_egress(e, state.is_some(), false);
                }
                states
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read proxies' quarantine; trying them all");
                vec![None; egress.len()]
            }
        }
    }

    fn quarantine_for(&self) -> Duration {
        self.quarantine
    }

    async fn quarantine(&self, egress: &str, why: &YoutubeError) {
        abridge_telemetry::metrics::youtube_egress(egress, true, true);
        tracing::warn!(%egress, error = %why, quarantine_ms = self.quarantine.as_millis() as u64, "youtube proxy blocked; quarantined");
        if let Err(e) = self.queue.quarantine_egress(egress, self.quarantine).await {
            tracing::warn!(%egress, error = %e, "cannot quarantine a proxy fleet-wide");
        }
    }
}

/// A backend's circuit breaker.
#[derive(Clone, Debug)]
pub struct Breaker {
    pub name: String,
    pub threshold: u32,
    pub open_for: Duration,
    /// How long a half-open probe may take before another caller may probe.
    pub probe: Duration,
}

impl Breaker {
    /// `Ok` to go ahead; a deferral (`circuit_open`, no attempt used) while the breaker is open.
    pub async fn pass(&self, queue: &Queue) -> Result<(), ItemError> {
        match queue.breaker_pass(&self.name, self.probe).await {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(ItemError::Deferred {
                kind: ErrorKind::from_static("circuit_open"),
                message: format!(
                    "{} looks down (its circuit breaker is open); retrying in {} ms",
                    self.name,
                    wait.as_millis()
                ),
                retry_after: wait,
            }),
            Err(e) => {
                tracing::warn!(breaker = %self.name, error = %e, "circuit breaker unavailable; going ahead");
                Ok(())
            }
        }
    }

    pub async fn report(&self, queue: &Queue, success: bool) {
        match queue
            .breaker_report(
                &self.name,
                success,
                self.threshold,
                self.open_for,
                self.open_for.max(Duration::from_secs(60)),
            )
            .await
        {
            Ok(true) => tracing::warn!(
                breaker = %self.name,
                open_ms = self.open_for.as_millis() as u64,
                "circuit breaker opened: the backend failed {} times in a row",
                self.threshold
            ),
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(breaker = %self.name, error = %e, "circuit breaker unavailable")
            }
        }
    }
}

/// Writes each model answer's tokens and cost to its batch's spend (`llm_spend`).
#[derive(Debug)]
pub struct Ledger<'a> {
    pub store: &'a abridge_store::Store,
    pub batch: abridge_core::BatchId,
    pub tenant: Option<&'a str>,
    pub provider: &'a str,
    pub model: &'a str,
    /// `None`: the model has no price, and its answers are counted without a cost.
    pub price: Option<Price>,
}

impl Ledger<'_> {
    /// Charges one answer. A lost charge is logged, not the item's failure: the answer is
    /// paid for either way.
    pub async fn charge(&self, input_tokens: u64, output_tokens: u64) {
        self.record(1, signed(input_tokens), signed(output_tokens), 1.0)
            .await;
    }

    /// Charges one request sent to a provider batch, at `factor` of the price, by its
    /// estimate: it counts against the batch's limit at once, not a day later.
    pub async fn charge_estimate(&self, input_tokens: u64, output_tokens: u64, factor: f64) {
        self.record(1, signed(input_tokens), signed(output_tokens), factor)
            .await;
    }

    /// Corrects an estimate by what the answer really used (either way).
    pub async fn correct(&self, input_delta: i64, output_delta: i64, factor: f64) {
        self.record(0, input_delta, output_delta, factor).await;
    }

    async fn record(&self, requests: i64, input_tokens: i64, output_tokens: i64, factor: f64) {
        let cost_usd = self.price.map(|p| {
            (input_tokens as f64 * p.input + output_tokens as f64 * p.output) / 1_000_000.0 * factor
        });
        let charge = abridge_store::cost::Charge {
            batch: self.batch,
            tenant: self.tenant,
            provider: self.provider,
            model: self.model,
            requests,
            input_tokens,
            output_tokens,
            cost_usd,
        };
        if let Err(e) = self.store.charge(&charge).await {
            tracing::warn!(batch = %self.batch, error = %e, "could not write down a model answer's cost");
        }
    }
}

fn signed(tokens: u64) -> i64 {
    i64::try_from(tokens).unwrap_or(i64::MAX)
}

/// A tenant's daily LLM token budget: checked before each model request and charged with each
/// answer's tokens (an attempt that fails later still pays for what it used). Requests already
/// under way can pass it by their own use.
#[derive(Clone, Debug)]
pub struct TenantBudget {
    pub tenant: String,
    pub daily_tokens: i64,
}

impl TenantBudget {
    fn today() -> String {
        chrono::Utc::now().format("%Y%m%d").to_string()
    }

    /// Defers the item until the next UTC day when the budget is spent.
    pub async fn check(&self, queue: &Queue) -> Result<(), ItemError> {
        let now = chrono::Utc::now();
        let used = queue
            .tenant_tokens(&self.tenant, &Self::today())
            .await
            .map_err(crate::checkpoints::queue_error)?;
        if used < self.daily_tokens {
            return Ok(());
        }
        let tomorrow = (now.date_naive() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(now);
        Err(ItemError::deferred(
            ErrorKind::from_static("tenant_budget_exhausted"),
            format!(
                "tenant {:?} has spent its daily LLM token budget ({used} of {}); the item waits for the next UTC day",
                self.tenant, self.daily_tokens
            ),
            (tomorrow - now).to_std().unwrap_or_default(),
        ))
    }

    pub async fn charge(&self, queue: &Queue, tokens: u64) {
        if tokens == 0 {
            return;
        }
        if let Err(e) = queue
            .add_tenant_tokens(&self.tenant, &Self::today(), tokens)
            .await
        {
            tracing::warn!(tenant = %self.tenant, error = %e, "could not count a tenant's tokens against its daily budget");
        }
    }
}
