//! Group commit for the writer tasks (starts and outcomes): take whatever has queued up.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

/// Most operations written in one statement.
pub(crate) const MAX_BATCH: usize = 1_000;

/// Waits for one operation, then takes every other one already waiting (up to
/// [`MAX_BATCH`], and never more than the channel holds, so that a group is bounded by the
/// channel's capacity even while senders refill it). Several writers share one receiver:
/// while one writes, the next gathers. `None` once stopped or the channel is closed.
pub(crate) async fn next_batch<T>(
    rx: &Arc<Mutex<mpsc::Receiver<T>>>,
    stop: &CancellationToken,
) -> Option<Vec<T>> {
    let mut rx = rx.lock().await;
    let first = tokio::select! {
        op = rx.recv() => op?,
        _ = stop.cancelled() => return None,
    };
    let most = MAX_BATCH.min(rx.max_capacity());
    let mut ops = vec![first];
    while ops.len() < most {
        match rx.try_recv() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Some(ops)
}
