//! Chooses the processor (`ABRIDGE_SUMMARIZER`).

use std::sync::Arc;

use abridge_core::Settings;
use abridge_core::settings::SettingsSource;
use abridge_worker::Processor;
use abridge_worker::noop::Noop;

pub const BACKENDS: &str = "noop";

pub fn build(settings: &Settings, source: &SettingsSource) -> anyhow::Result<Arc<dyn Processor>> {
    match settings.summarizer.as_str() {
        "noop" => Ok(Arc::new(Noop {
            delay: settings.noop_delay,
        })),
        other => Err(source
            .invalid(
                "summarizer",
                &format!("one of {BACKENDS}"),
                &format!("{other:?}"),
            )
            .into()),
    }
}
