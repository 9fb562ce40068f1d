//! Deferred starts. An item is marked `running` in Postgres once it has run for
//! `start_after`; item tasks ask, and a writer task marks whatever has accumulated in one
//! statement. Items that finish sooner never need this write (see ARCHITECTURE.md,
//! "Deferred starts").

use std::sync::Arc;
use std::time::Instant;

use abridge_core::backoff::Doubling;
use abridge_core::{BatchId, ErrorKind, ItemError, ItemId, WorkerId};
use abridge_queue::LeaseRef;
use abridge_store::Claim;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{Worker, batching, progress};

/// What marking an item `running` came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartResult {
    /// The item is `running` under this claim's token.
    Started,
    /// The item was no longer `queued` under this claim (taken over, finished elsewhere, or
    /// cancelled), or this worker's session was buried. The attempt must stop and write
    /// nothing.
    Refused,
    /// Postgres could not take the statement; the item carries on unstarted.
    NotWritten,
}

type StartRequest = Box<dyn Fn() -> futures::future::BoxFuture<'static, StartResult> + Send + Sync>;

/// An item's deferred start (ARCHITECTURE.md, "Deferred starts"), shared by the worker and
/// the processor. The worker asks once the item has run for `start_after`; a processor asks
/// before any write of its own that is fenced on the item running (a checkpoint). Either way
/// the start is written once, and both see the same result.
#[derive(Clone)]
pub struct StartHandle(Arc<StartState>);

struct StartState {
    result: tokio::sync::OnceCell<StartResult>,
    request: StartRequest,
}

impl std::fmt::Debug for StartHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StartHandle")
            .field(&self.0.result.get())
            .finish()
    }
}

impl StartHandle {
    /// Marks the item running unless that was already done; returns the result.
    pub async fn ensure(&self) -> StartResult {
        *self.0.result.get_or_init(|| (self.0.request)()).await
    }

    /// The result, if the start was asked for and has been written.
    pub fn result(&self) -> Option<StartResult> {
        self.0.result.get().copied()
    }

    pub(crate) fn new(starter: &Starter, lease: &LeaseRef, attempt: i32, began: Instant) -> Self {
        let (tx, batch) = (starter.tx.clone(), lease.batch);
        let claim = Claim {
            item: lease.item,
            token: lease.token,
            attempt,
        };
        Self(Arc::new(StartState {
            result: tokio::sync::OnceCell::new(),
            request: Box::new(move || {
                let tx = tx.clone();
                Box::pin(async move {
                    let (done, reply) = oneshot::channel();
                    let op = StartOp {
                        claim,
                        batch,
                        began,
                        done,
                    };
                    if tx.send(op).await.is_err() {
                        return StartResult::NotWritten;
                    }
                    match reply.await {
                        Ok(Some(true)) => StartResult::Started,
                        Ok(Some(false)) => StartResult::Refused,
                        _ => StartResult::NotWritten,
                    }
                })
            }),
        }))
    }
}

/// Where item tasks ask for their starts to be written.
#[derive(Clone)]
pub(crate) struct Starter {
    tx: mpsc::Sender<StartOp>,
}

impl Starter {
    /// The handle, and the receiving end for the start writers ([`run`]).
    pub(crate) fn channel(room: usize) -> (Self, mpsc::Receiver<StartOp>) {
        let (tx, rx) = mpsc::channel(room.max(1));
        (Self { tx }, rx)
    }
}

/// A processor's fenced writes ask for the item's start, and see only whether they may write.
#[async_trait::async_trait]
impl abridge_processor::Fence for StartHandle {
    async fn hold(&self, what: &str) -> Result<(), ItemError> {
        match self.ensure().await {
            StartResult::Started => Ok(()),
            StartResult::Refused => Err(ItemError::transient(
                ErrorKind::LEASE_LOST,
                format!("{what} refused: this attempt no longer holds the item"),
            )),
            StartResult::NotWritten => Err(ItemError::transient(
                ErrorKind::from_static("database_unavailable"),
                format!("{what}: the item could not be marked running"),
            )),
        }
    }
}

pub(crate) struct StartOp {
    /// The start is fenced by the claim's token and the attempt count it read.
    claim: Claim,
    /// For the progress notice once the item is marked running.
    batch: BatchId,
    /// When the attempt began: `started_at` is that, not when the deferred write runs.
    began: Instant,
    done: oneshot::Sender<Option<bool>>,
}

/// A start writer: marks the starts of session `id` running as they come, until `stop`.
pub(crate) async fn run(
    worker: Worker,
    id: WorkerId,
    rx: Arc<Mutex<mpsc::Receiver<StartOp>>>,
    stop: CancellationToken,
) {
    while let Some(ops) = batching::next_batch(&rx, &stop).await {
        let claims: Vec<Claim> = ops.iter().map(|op| op.claim).collect();
        let began: Vec<_> = ops.iter().map(|op| op.began).collect();
        let mut waits = Doubling::WHILE_AWAY;
        let started = loop {
            match worker.store.start_items_begun(id, &claims, &began).await {
                Ok(ids) => break Some(ids),
                Err(e) if e.is_unavailable() && !stop.is_cancelled() => {
                    warn!(error = %e, items = claims.len(), "cannot mark items running; retrying");
                    tokio::time::sleep(waits.next_wait()).await;
                }
                Err(e) => {
                    warn!(error = %e, items = claims.len(), "cannot mark items running; they carry on unstarted");
                    break None;
                }
            }
        };
        let started: Option<std::collections::HashSet<ItemId>> =
            started.map(|ids| ids.into_iter().collect());
        if let Some(started) = &started {
            let batches: std::collections::HashSet<BatchId> = ops
                .iter()
                .filter(|op| started.contains(&op.claim.item))
                .map(|op| op.batch)
                .collect();
            progress::notify(&worker.queue, batches.into_iter().collect());
        }
        for op in ops {
            let _ = op
                .done
                .send(started.as_ref().map(|s| s.contains(&op.claim.item)));
        }
    }
}
