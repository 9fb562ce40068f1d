//! Loading settings and connecting to the servers, shared by the commands.

use std::path::Path;

use abridge_core::Settings;
use abridge_core::settings::SettingsSource;
use abridge_queue::Queue;
use abridge_store::Store;
use anyhow::Context as _;

/// Settings plus the source they came from (for backends that read their own keys).
pub struct Loaded {
    pub source: SettingsSource,
    pub settings: Settings,
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
    )?)
}

/// Parses a batch id argument with an error that names it.
pub fn batch_id(raw: &str) -> anyhow::Result<abridge_core::BatchId> {
    raw.parse()
        .map_err(|_| anyhow::anyhow!("{raw:?} is not a batch id (a UUID such as 0193a1b2-...)"))
}
