//! Deferred starts. An item is marked `running` in Postgres once it has run for
//! `start_after`; item tasks ask, and a writer task marks whatever has accumulated in one
//! statement. Items that finish sooner never need this write (see ARCHITECTURE.md,
//! "Deferred starts").

use std::sync::Arc;
use std::time::Duration;

use abridge_core::{ItemId, LeaseToken};
use abridge_queue::LeaseRef;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::session::SessionCtx;
use crate::{Worker, batching};

/// `Some(true)`: started; `Some(false)`: refused (the item is no longer ours); `None`: not
/// written (Postgres refused the statement itself; the item carries on unstarted).
pub(crate) type StartReply = oneshot::Receiver<Option<bool>>;

pub(crate) struct StartOp {
    item: ItemId,
    token: LeaseToken,
    done: oneshot::Sender<Option<bool>>,
}

/// Asks for `lease`'s item to be marked running; the reply comes when it is written.
pub(crate) async fn request(ctx: &SessionCtx, lease: &LeaseRef) -> StartReply {
    let (done, reply) = oneshot::channel();
    let _ = ctx
        .start_tx
        .send(StartOp {
            item: lease.item,
            token: lease.token,
            done,
        })
        .await;
    reply
}

pub(crate) async fn run(
    worker: Worker,
    ctx: Arc<SessionCtx>,
    rx: Arc<Mutex<mpsc::Receiver<StartOp>>>,
    stop: CancellationToken,
) {
    while let Some(ops) = batching::next_batch(&rx, &stop).await {
        let claims: Vec<_> = ops.iter().map(|op| (op.item, op.token)).collect();
        let mut delay = Duration::from_millis(50);
        let started = loop {
            match worker.store.start_items(ctx.id, &claims).await {
                Ok(ids) => break Some(ids),
                Err(e) if e.is_unavailable() && !stop.is_cancelled() => {
                    warn!(error = %e, items = claims.len(), "cannot mark items running; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    warn!(error = %e, items = claims.len(), "cannot mark items running; they carry on unstarted");
                    break None;
                }
            }
        };
        let started: Option<std::collections::HashSet<ItemId>> =
            started.map(|ids| ids.into_iter().collect());
        for op in ops {
            let _ = op.done.send(started.as_ref().map(|s| s.contains(&op.item)));
        }
    }
}
