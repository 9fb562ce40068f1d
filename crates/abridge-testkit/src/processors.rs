//! Processors for in-process tests: any closure from a job to an outcome.

use std::future::Future;
use std::sync::Arc;

use abridge_core::ItemError;
use abridge_processor::{Job, JobOutput, Processor};
use async_trait::async_trait;

/// A processor made of a closure.
pub struct FnProcessor<F>(pub F);

#[async_trait]
impl<F, Fut> Processor for FnProcessor<F>
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<JobOutput, ItemError>> + Send,
{
    fn name(&self) -> &str {
        "test"
    }

    async fn process(&self, job: &Job) -> Result<JobOutput, ItemError> {
        (self.0)(job.clone()).await
    }
}

/// A shared processor made of a closure.
pub fn processor<F, Fut>(f: F) -> Arc<dyn Processor>
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<JobOutput, ItemError>> + Send + 'static,
{
    Arc::new(FnProcessor(f))
}

/// A successful outcome with this summary.
pub fn ok(summary: impl Into<String>) -> Result<JobOutput, ItemError> {
    Ok(JobOutput {
        summary: summary.into(),
        ..JobOutput::default()
    })
}

/// An outcome write of a successful attempt (attempt 1, begun now), for tests that call the
/// fenced statements themselves.
pub fn succeeded(
    item: abridge_core::ItemId,
    token: abridge_core::LeaseToken,
    started: bool,
    summary: &str,
) -> abridge_store::Finish {
    abridge_store::Finish {
        item,
        token,
        outcome: abridge_store::Outcome::Succeeded {
            summary: summary.into(),
            title: None,
            meta: serde_json::json!({}),
        },
        started,
        attempt: 1,
        began: std::time::Instant::now(),
    }
}
