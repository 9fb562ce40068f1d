//! The reaper: takes back items whose holder is gone. Runs in every worker every `reap_ms`;
//! `abridge reap` runs one pass. Every step is a compare-and-set, so any number of reapers
//! can run at once: Redis hands each expired lease to one of them, Postgres buries each dead
//! session once, and an item is reclaimed only if it is still running under the same claim.
//!
//! The liveness rule: a holder is judged gone only over time the judge could itself see the
//! store its evidence lives in. A store outage is nobody's death: a reaper takes expired
//! leases only once it has seen Redis without a break for a whole lease, and buries sessions
//! only once it has seen Postgres for a whole session TTL ([`Sight`]), so every live holder
//! has renewed (or heartbeaten) before anyone judges it after an outage, a pause of the
//! reaper's own process, or a cut between the two.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use abridge_core::{ErrorKind, ItemStatus, WorkerId};
use abridge_store::ItemRef;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Worker;
use crate::settle::{Settled, settle};

/// What one reaper pass did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReapReport {
    /// Expired leases taken from Redis.
    pub expired_leases: u64,
    /// Items taken back from expired leases (were running in Postgres under that claim).
    pub reclaimed_expired: u64,
    /// Expired claims that had not started: their attempt counted.
    pub counted_unstarted: u64,
    /// Sessions declared dead.
    pub dead_sessions: Vec<WorkerId>,
    /// Items taken back from dead sessions.
    pub reclaimed_from_dead: u64,
    /// Items that ran out of attempts and failed.
    pub failed: u64,
    /// Items put back in the Redis queue.
    pub requeued: u64,
}

impl ReapReport {
    fn add(&mut self, settled: Settled) {
        self.requeued += settled.requeued;
        self.failed += settled.failed;
    }
}

/// How long a process has seen a store without a break. Each reaper pass looks (one round
/// trip); a failed look, or a gap between two good looks longer than `max_gap` (the process
/// was paused, or the pass was stuck), starts the count again.
#[derive(Clone, Copy, Debug)]
pub struct Sight {
    /// Since when the store has been seen without a break; `None` while it is not seen.
    since: Option<Instant>,
    last_seen: Option<Instant>,
    max_gap: Duration,
    /// The operator vouches for the store having been seen all along.
    vouched: bool,
}

impl Sight {
    pub fn new(max_gap: Duration) -> Self {
        Self {
            since: None,
            last_seen: None,
            max_gap,
            vouched: false,
        }
    }

    /// A judge that vouches for having seen the store all along: `abridge reap`, run by the
    /// operator, who decides when the stores have been up long enough to judge.
    pub fn vouched() -> Self {
        Self {
            vouched: true,
            ..Self::new(Duration::MAX)
        }
    }

    pub fn observe(&mut self, seen: bool, now: Instant) {
        if !seen {
            self.since = None;
            self.last_seen = None;
            return;
        }
        let broken = self
            .last_seen
            .is_some_and(|last| now.saturating_duration_since(last) > self.max_gap);
        if self.since.is_none() || broken {
            self.since = Some(now);
        }
        self.last_seen = Some(now);
    }

    /// How long the store has been seen without a break, as of `now`.
    pub fn seen_for(&self, now: Instant) -> Duration {
        if self.vouched {
            return Duration::MAX;
        }
        self.since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

/// What a reaper has seen of the two stores.
#[derive(Clone, Copy, Debug)]
pub struct Sights {
    pub redis: Sight,
    pub postgres: Sight,
}

pub(crate) async fn run(worker: Worker, stop: CancellationToken) {
    let mut tick = tokio::time::interval(worker.settings.reap_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A pass every `reap_every`; three missed in a row is a break in what the reaper saw.
    let max_gap = worker.settings.reap_every * 3 + Duration::from_secs(1);
    let mut sights = Sights {
        redis: Sight::new(max_gap),
        postgres: Sight::new(max_gap),
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match reap_pass(&worker, &mut sights).await {
            Ok(r) if r != ReapReport::default() => info!(
                expired_leases = r.expired_leases,
                reclaimed_expired = r.reclaimed_expired,
                counted_unstarted = r.counted_unstarted,
                dead_sessions = r.dead_sessions.len(),
                reclaimed_from_dead = r.reclaimed_from_dead,
                failed = r.failed,
                requeued = r.requeued,
                "reaped"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %e, "reaper pass failed"),
        }
    }
}

/// One pass, judged as of now by the operator ([`Sight::vouched`]): `abridge reap`.
pub async fn reap_once(worker: &Worker) -> anyhow::Result<ReapReport> {
    let mut sights = Sights {
        redis: Sight::vouched(),
        postgres: Sight::vouched(),
    };
    reap_pass(worker, &mut sights).await
}

/// One pass: expired leases, then dead sessions, each judged only if the reaper has seen
/// the store behind it for long enough (the liveness rule, above).
pub async fn reap_pass(worker: &Worker, sights: &mut Sights) -> anyhow::Result<ReapReport> {
    let s = &worker.settings;
    let mut report = ReapReport::default();
    // A store that does not answer within a second is not seen (a stuck Redis would
    // otherwise hold the pass, and the judgement of Postgres with it, for its whole timeout).
    let (redis_up, postgres_up) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(1), worker.queue.ping()),
        tokio::time::timeout(Duration::from_secs(1), worker.store.ping())
    );
    let now = Instant::now();
    sights.redis.observe(matches!(redis_up, Ok(Ok(()))), now);
    sights
        .postgres
        .observe(matches!(postgres_up, Ok(Ok(()))), now);
    const BATCH: usize = 1_000;
    while sights.redis.seen_for(now) >= s.lease {
        let taken = worker.queue.take_expired(BATCH).await?;
        if taken.is_empty() {
            break;
        }
        report.expired_leases += taken.len() as u64;
        let claims: Vec<_> = taken
            .iter()
            .map(|t| (t.lease.item, t.lease.token))
            .collect();
        let reclaimed = worker
            .store
            .reclaim(&claims, s.max_attempts, &ErrorKind::LEASE_EXPIRED)
            .await?;
        report.reclaimed_expired += reclaimed.reclaimed;
        metrics::counter!("abridge_reclaimed_total", "reason" => "lease_expired")
            .increment(reclaimed.reclaimed);
        // Claims that expired before their start was written: the claim is taken over, so
        // the attempt counts (a poison item that hangs before its start runs out of
        // attempts), and counting it moves the attempt count that fences the old claim.
        let taken_back: HashSet<_> = reclaimed.ids.iter().copied().collect();
        let unstarted: Vec<abridge_core::ItemId> = reclaimed
            .items
            .iter()
            .filter(|i| i.status == ItemStatus::Queued && !taken_back.contains(&i.id))
            .map(|i| i.id)
            .collect();
        let mut items = reclaimed.items;
        if !unstarted.is_empty() {
            let counted = worker
                .store
                .count_unstarted_attempts(&unstarted, s.max_attempts, &ErrorKind::LEASE_EXPIRED)
                .await?;
            report.counted_unstarted += counted;
            let ids: Vec<i64> = unstarted.iter().map(|i| i.0).collect();
            let now_at: std::collections::HashMap<_, _> = worker
                .store
                .item_refs(&ids)
                .await?
                .into_iter()
                .map(|i| (i.id, i))
                .collect();
            for item in &mut items {
                if let Some(fresh) = now_at.get(&item.id) {
                    *item = fresh.clone();
                }
            }
        }
        report.add(settle(worker, &items).await?);
        if taken.len() < BATCH {
            break;
        }
    }
    if sights.postgres.seen_for(now) < s.session_ttl {
        return Ok(report);
    }
    for dead in worker
        .store
        .bury_dead_sessions(&s.queue, s.session_ttl)
        .await?
    {
        warn!(worker = %dead, "worker session missed its heartbeats: declared dead, requeueing its items");
        report.dead_sessions.push(dead);
        let reclaimed = worker
            .store
            .reclaim_worker_items(dead, s.max_attempts)
            .await?;
        report.reclaimed_from_dead += reclaimed.reclaimed;
        metrics::counter!("abridge_reclaimed_total", "reason" => "session_dead")
            .increment(reclaimed.reclaimed);
        let mut items = reclaimed.items;
        // Items it had claimed in Redis but not yet started are still queued in Postgres.
        let known: HashSet<_> = items.iter().map(|i| i.id).collect();
        let leftover: Vec<i64> = worker
            .queue
            .take_worker_leases(dead)
            .await?
            .into_iter()
            .filter(|t| !known.contains(&t.lease.item))
            .map(|t| t.lease.item.0)
            .collect();
        if !leftover.is_empty() {
            // Claimed but not yet marked running when it died: the attempt still counts.
            let unstarted: Vec<_> = leftover.iter().map(|i| abridge_core::ItemId(*i)).collect();
            worker
                .store
                .count_unstarted_attempts(&unstarted, s.max_attempts, &ErrorKind::WORKER_DIED)
                .await?;
            items.extend(worker.store.item_refs(&leftover).await?);
        }
        stagger(&mut items);
        report.add(settle(worker, &items).await?);
    }
    Ok(report)
}

/// A dead worker's items come back a little apart, in random order, rather than all at once
/// at the head of their batch: if one of them killed the worker (a poison item), the others
/// are then unlikely to be claimed together with it again and die with it a second time.
fn stagger(items: &mut [ItemRef]) {
    use rand::seq::SliceRandom;
    const SPREAD: Duration = Duration::from_secs(2);
    const MAX_GAP: Duration = Duration::from_millis(100);
    let mut queued: Vec<&mut ItemRef> = items
        .iter_mut()
        .filter(|i| i.status == ItemStatus::Queued)
        .collect();
    if queued.len() < 2 {
        return;
    }
    queued.shuffle(&mut rand::rng());
    let gap = MAX_GAP.min(SPREAD / queued.len() as u32);
    let now = chrono::Utc::now();
    for (k, item) in queued.into_iter().enumerate() {
        let due = now + gap * k as u32;
        item.available_at = Some(item.available_at.map_or(due, |a| a.max(due)));
    }
}

/// At shutdown: give back anything Postgres still says this session is running (a start
/// whose reply never arrived). Nothing of the session runs any more, so none of it is current.
pub(crate) async fn reclaim_own(worker: &Worker, id: WorkerId) {
    let result = async {
        let reclaimed = worker
            .store
            .reclaim_worker_items(id, worker.settings.max_attempts.saturating_add(1))
            .await?;
        settle(worker, &reclaimed.items).await?;
        anyhow::Ok(reclaimed.reclaimed)
    };
    match tokio::time::timeout(Duration::from_secs(10), result).await {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => info!(items = n, "gave back items left running under this session"),
        Ok(Err(e)) => warn!(error = %e, "cannot give back leftover items; the reconciler will"),
        Err(_) => warn!("timed out giving back leftover items; the reconciler will"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_break_in_what_the_judge_saw_starts_the_count_again() {
        let t0 = Instant::now();
        let mut sight = Sight::new(Duration::from_secs(1));
        assert_eq!(sight.seen_for(t0), Duration::ZERO);
        sight.observe(true, t0);
        sight.observe(true, t0 + Duration::from_millis(800));
        assert_eq!(
            sight.seen_for(t0 + Duration::from_secs(2)),
            Duration::from_secs(2)
        );
        // A failed look, then a good one: seen only since the good one.
        sight.observe(false, t0 + Duration::from_secs(2));
        sight.observe(true, t0 + Duration::from_secs(3));
        assert_eq!(
            sight.seen_for(t0 + Duration::from_secs(4)),
            Duration::from_secs(1)
        );
        // A gap between two good looks longer than `max_gap` (the judge was paused).
        sight.observe(true, t0 + Duration::from_secs(9));
        assert_eq!(
            sight.seen_for(t0 + Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(Sight::vouched().seen_for(t0), Duration::MAX);
    }
}
