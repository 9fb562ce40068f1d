//! Loading settings and connecting to the servers, shared by the commands.

use std::path::Path;

use abridge_api::ApiSettings;
use abridge_api::client::ApiClient;
use abridge_core::Settings;
use abridge_core::settings::SettingsSource;
use abridge_queue::Queue;
use abridge_store::Store;
use abridge_summarize::config::SummarizeConfig;
use abridge_youtube::YoutubeConfig;
use anyhow::Context as _;

use crate::cli::RemoteArgs;

/// The settings tree. The fleet core's branch (`settings`: servers, queue, leases, retries)
/// is read by every command at start; each other branch is read, and checked, by the
/// commands that use it, so a worker needs none of the API's settings and the API none of
/// the model keys.
pub struct Loaded {
    pub source: SettingsSource,
    pub settings: Settings,
}

impl Loaded {
    /// The summarizer's branch (backends, models, YouTube, fleet budgets).
    pub fn summarizer(&self) -> anyhow::Result<SummarizeConfig> {
        Ok(SummarizeConfig::from_source(&self.source, &self.settings)?)
    }

    /// `abridge api`'s branch (listener, limits, webhooks, the YouTube client for lists).
    pub fn api(&self) -> anyhow::Result<ApiSettings> {
        Ok(ApiSettings::from_source(&self.source)?)
    }

    /// The YouTube client's branch, for commands that read playlists and channels.
    pub fn youtube(&self) -> anyhow::Result<YoutubeConfig> {
        Ok(YoutubeConfig::from_source(&self.source)?)
    }
}

pub fn load(config: Option<&Path>) -> anyhow::Result<Loaded> {
    let source = SettingsSource::load(config)?;
    let settings = Settings::from_source(&source)?;
    Ok(Loaded { source, settings })
}

/// A store for a migrated database, or an error that says to run `abridge migrate`.
pub async fn store(settings: &Settings) -> anyhow::Result<Store> {
    let url = settings.require_database_url()?;
    let store = Store::connect_lazy(url, settings.database_pool_size)?;
    store
        .check_migrated()
        .await
        .with_context(|| format!("check database {}", url.redacted_url()))?;
    Ok(store)
}

pub fn queue(settings: &Settings) -> anyhow::Result<Queue> {
    let url = settings.require_redis_url()?;
    Ok(Queue::connect(
        url,
        &settings.redis_prefix,
        &settings.queue,
        settings.redis_pool_size,
    )?
    .with_shards(settings.queue_shards))
}

/// Parses a batch id argument with an error that names it.
pub fn batch_id(raw: &str) -> anyhow::Result<abridge_core::BatchId> {
    raw.parse()
        .map_err(|_| anyhow::anyhow!("{raw:?} is not a batch id (a UUID such as 0193a1b2-...)"))
}

/// A client of the producer API for `--api` commands, or an error that says what is missing.
pub fn api_client(remote: &RemoteArgs) -> anyhow::Result<ApiClient> {
    let api = remote.api.as_deref().context("no --api URL")?;
    let token = remote.token.as_deref().context(
        "--api needs a token: pass --token or set ABRIDGE_API_TOKEN (make one with `abridge token create`)",
    )?;
    Ok(ApiClient::new(api, token)?)
}
