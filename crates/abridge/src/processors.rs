//! Chooses the processor (`ABRIDGE_SUMMARIZER`): `extractive` (the default), `openai`,
//! `anthropic` or `noop`. Every backend runs through the summarizer, so a batch may ask for
//! another backend than the fleet's default (`abridge enqueue --summarizer`).

use std::sync::Arc;

use abridge_processor::Processor;
use abridge_queue::Queue;
use abridge_store::Store;
use abridge_summarize::Summarizer;
use abridge_summarize::config::SummarizeConfig;

pub fn build(
    config: SummarizeConfig,
    store: &Store,
    queue: &Queue,
) -> anyhow::Result<Arc<dyn Processor>> {
    Ok(Arc::new(Summarizer::new(
        config,
        store.clone(),
        queue.clone(),
    )?))
}
