//! Progress notices to API processes (their SSE streams re-read a batch when told it moved).

use abridge_core::BatchId;
use abridge_queue::Queue;

/// Tells API processes that these batches' items moved: one PUBLISH per write group, sent
/// after the writes (and completions) so a reader sees them, and off the hot path.
pub(crate) fn notify(queue: &Queue, batches: Vec<BatchId>) {
    if batches.is_empty() {
        return;
    }
    let queue = queue.clone();
    tokio::spawn(async move { queue.notify_progress(&batches).await });
}
