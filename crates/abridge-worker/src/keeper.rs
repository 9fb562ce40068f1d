//! Keeps this worker's claims alive: renews leases every `heartbeat` (moving each item's
//! local deadline), and heartbeats the session in Postgres every `session_ttl / 3`.
//!
//! A renewal that fails (Redis away) stops nothing: a store outage is nobody's death. The
//! items carry on, their outcomes are fenced in Postgres, and reapers judge a lease expired
//! only over time they could see Redis themselves (the liveness rule, `reaper`), so holders
//! renew before anyone takes their leases once Redis is back.

use std::sync::Arc;

use abridge_queue::Renewal;
use tokio::time::{Instant, MissedTickBehavior, interval};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use abridge_core::WorkerId;

use crate::Worker;
use crate::holdings::{Holdings, StopReason};

/// Keeps session `id` and the leases in `holdings` alive until `stop`; cancels `buried` when
/// Postgres says the session was declared dead.
pub(crate) async fn run(
    worker: Worker,
    id: WorkerId,
    holdings: Arc<Holdings>,
    buried: CancellationToken,
    stop: CancellationToken,
) {
    // Two loops, not one: a renewal stuck on an unresponsive Redis must not hold back the
    // session's heartbeat to Postgres (the worker would look dead to reapers that see it).
    tokio::join!(
        renew_every_heartbeat(&worker, id, &holdings, &stop),
        heartbeat_session(&worker, id, &buried, &stop)
    );
}

async fn renew_every_heartbeat(
    worker: &Worker,
    id: WorkerId,
    holdings: &Holdings,
    stop: &CancellationToken,
) {
    let mut renew = interval(worker.settings.heartbeat);
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = renew.tick() => renew_leases(worker, id, holdings).await,
        }
    }
}

async fn heartbeat_session(
    worker: &Worker,
    id: WorkerId,
    buried: &CancellationToken,
    stop: &CancellationToken,
) {
    let mut session = interval(worker.settings.session_ttl / 3);
    session.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = session.tick() => match worker.store.heartbeat_session(id).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!("session heartbeat refused: this worker was declared dead");
                    buried.cancel();
                }
                Err(e) => warn!(error = %e, "cannot heartbeat session"),
            },
        }
    }
}

async fn renew_leases(worker: &Worker, id: WorkerId, holdings: &Holdings) {
    let leases = holdings.leases();
    if leases.is_empty() {
        return;
    }
    let sent_at = Instant::now();
    match worker.queue.renew(id, worker.settings.lease, &leases).await {
        Ok(codes) => {
            let valid_until = sent_at + worker.settings.lease - worker.lease_margin();
            for (lease, code) in leases.iter().zip(codes) {
                match code {
                    Renewal::Renewed => holdings.extend(lease.item, lease.token, valid_until),
                    Renewal::Recreated => {
                        holdings.span(lease.item).in_scope(|| {
                            debug!(item = %lease.item, "lease was missing in Redis; re-created it");
                        });
                        holdings.extend(lease.item, lease.token, valid_until);
                    }
                    Renewal::Lost => {
                        holdings.span(lease.item).in_scope(|| {
                            info!(item = %lease.item, "lease lost to another claim; stopping the item");
                        });
                        holdings.stop(lease.item, lease.token, StopReason::Lost);
                    }
                    Renewal::Cancelled => {
                        holdings.stop(lease.item, lease.token, StopReason::Cancelled);
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
