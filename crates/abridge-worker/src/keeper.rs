//! Keeps this worker's claims alive: renews leases every `heartbeat`, enforces the local
//! lease deadline, and heartbeats the session in Postgres every `session_ttl / 3`.

use std::sync::Arc;

use abridge_queue::Renewal;
use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Worker;
use crate::holdings::StopReason;
use crate::session::SessionCtx;

pub(crate) async fn run(worker: Worker, ctx: Arc<SessionCtx>, stop: CancellationToken) {
    let mut renew = interval(worker.settings.heartbeat);
    let mut deadlines = interval(worker.deadline_check_every());
    let mut session = interval(worker.settings.session_ttl / 3);
    for t in [&mut renew, &mut deadlines, &mut session] {
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = renew.tick() => renew_leases(&worker, &ctx).await,
            _ = deadlines.tick() => {
                let n = ctx.holdings.stop_expired(Instant::now());
                if n > 0 {
                    warn!(items = n, "lease deadline reached without a successful renewal; abandoning items");
                }
            }
            _ = session.tick() => match worker.store.heartbeat_session(ctx.id).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!("session heartbeat refused: this worker was declared dead");
                    ctx.buried.cancel();
                }
                Err(e) => warn!(error = %e, "cannot heartbeat session"),
            },
        }
    }
}

async fn renew_leases(worker: &Worker, ctx: &SessionCtx) {
    let leases = ctx.holdings.leases();
    if leases.is_empty() {
        return;
    }
    let sent_at = Instant::now();
    match worker
        .queue
        .renew(ctx.id, worker.settings.lease, &leases)
        .await
    {
        Ok(codes) => {
            let valid_until = sent_at + worker.settings.lease - worker.lease_margin();
            for (lease, code) in leases.iter().zip(codes) {
                match code {
                    Renewal::Renewed => ctx.holdings.extend(lease.item, lease.token, valid_until),
                    Renewal::Recreated => {
                        ctx.holdings.span(lease.item).in_scope(|| {
                            debug!(item = %lease.item, "lease was missing in Redis; re-created it");
                        });
                        ctx.holdings.extend(lease.item, lease.token, valid_until);
                    }
                    Renewal::Lost => {
                        ctx.holdings.span(lease.item).in_scope(|| {
                            info!(item = %lease.item, "lease lost to another claim; stopping the item");
                        });
                        ctx.holdings.stop(lease.item, lease.token, StopReason::Lost);
                    }
                    Renewal::Cancelled => {
                        ctx.holdings
                            .stop(lease.item, lease.token, StopReason::Cancelled);
                    }
                }
            }
        }
        Err(e) => {
            metrics::counter!("abridge_lease_renew_failures_total").increment(leases.len() as u64);
            warn!(error = %e, leases = leases.len(), "cannot renew leases");
        }
    }
}
