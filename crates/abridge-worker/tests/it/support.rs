//! Shared helpers: enqueueing and running workers (closure processors come from the test kit).

use std::sync::Arc;
use std::time::Duration;

use abridge_control::{EnqueueRequest, Enqueued};
use abridge_core::input::BatchInput;
use abridge_core::{BatchId, Priority};
use abridge_testkit::TestEnv;
use abridge_worker::{Processor, RunReport, Worker};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use abridge_testkit::{ok, processor};

/// `n` distinct video ids, `prefix` (1 char) + 10 digits.
pub fn video_lines(prefix: char, n: usize) -> String {
    (0..n).map(|i| format!("{prefix}{i:010}\n")).collect()
}

pub async fn enqueue(worker: &Worker, lines: &str, priority: Priority) -> Enqueued {
    abridge_control::enqueue(
        &worker.store,
        &worker.queue,
        &worker.settings.queue,
        BatchInput::from_lines(lines),
        EnqueueRequest {
            name: None,
            priority,
            options: Default::default(),
            ..Default::default()
        },
    )
    .await
    .expect("enqueue")
}

/// A worker running in this process until stopped.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<RunReport>>,
}

impl Running {
    pub fn start(worker: Worker, concurrency: usize) -> Self {
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(abridge_worker::run(worker, concurrency, async move {
            let _ = rx.await;
        }));
        Self {
            stop: Some(tx),
            handle,
        }
    }

    /// Signals shutdown and waits for the worker to finish it.
    pub async fn stop(mut self) -> RunReport {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("worker stops within a minute")
            .expect("worker task")
            .expect("worker run")
    }
}

pub use abridge_testkit::eventually;

/// Waits until the batch is completed or cancelled.
pub async fn wait_batch_finished(worker: &Worker, batch: BatchId, timeout: Duration) {
    eventually(timeout, "batch finished", || async {
        worker
            .store
            .batch(batch)
            .await
            .unwrap()
            .is_some_and(|b| b.status.is_finished())
    })
    .await;
}

pub async fn env_and_worker(
    p: Arc<dyn Processor>,
    change: impl FnOnce(&mut abridge_core::Settings),
) -> (TestEnv, Worker) {
    let env = TestEnv::new().await;
    let worker = env.worker_with(p, change);
    (env, worker)
}

/// Test-only SQL against the worker's database.
pub async fn sql(w: &Worker, statement: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(w.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// A test-only query's one number.
pub async fn scalar(w: &Worker, query: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(query.to_owned()))
        .fetch_one(w.store.pool())
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// One pruner pass with the worker's retention settings.
pub async fn prune_pass(w: &Worker) -> abridge_worker::pruner::PruneReport {
    let options = abridge_worker::pruner::PruneOptions::from_settings(&w.settings.retention);
    abridge_worker::pruner::prune_once(
        &w.store,
        &options,
        abridge_core::WorkerId::new(),
        None,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap()
    .expect("nobody else holds the pruner's lease")
}
