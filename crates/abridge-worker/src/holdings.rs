//! The items this worker process holds: from the claim until the outcome is written. Each
//! holding carries its lease (renewed by the keeper), a local monotonic deadline, and a stop
//! signal that the item's task watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use abridge_core::{BatchId, ItemId, LeaseToken};
use abridge_queue::LeaseRef;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a worker stops working on an item before it finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Redis says another claim holds the item, or it was requeued: someone else owns it.
    Lost,
    /// Its batch was cancelled.
    Cancelled,
    /// The worker is shutting down and the grace period is over.
    Shutdown,
    /// This worker's session was declared dead: its items were already taken back.
    SessionBuried,
}

/// A one-shot stop signal with its reason; the first reason wins.
#[derive(Clone, Debug, Default)]
pub struct StopSignal {
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl StopSignal {
    pub fn stop(&self, reason: StopReason) {
        if self.reason.set(reason).is_ok() {
            self.token.cancel();
        }
    }

    /// Resolves once stopped, with the reason.
    pub async fn stopped(&self) -> StopReason {
        self.token.cancelled().await;
        self.reason.get().copied().unwrap_or(StopReason::Lost)
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }
}

#[derive(Debug)]
struct Holding {
    lease: LeaseRef,
    /// Until this instant the lease is known to hold in Redis (a margin before it could
    /// expire). Moved forward by every successful renewal. Past it, the claim may have been
    /// taken over: the item keeps running (its writes are fenced in Postgres), but a claim
    /// read only after it is let go ([`Holdings::valid`]).
    valid_until: Instant,
    signal: StopSignal,
    /// The item's span once it has started, so what the keeper logs about the item carries
    /// its batch, video and attempt.
    span: Option<tracing::Span>,
}

/// The registry. Operations are short and never await while holding the lock.
#[derive(Debug, Default)]
pub struct Holdings {
    items: Mutex<HashMap<ItemId, Holding>>,
    emptied: Notify,
}

impl Holdings {
    pub fn add(&self, lease: LeaseRef, valid_until: Instant) -> StopSignal {
        let signal = StopSignal::default();
        let mut items = self.lock();
        items.insert(
            lease.item,
            Holding {
                lease,
                valid_until,
                signal: signal.clone(),
                span: None,
            },
        );
        report_in_hand(items.len());
        signal
    }

    pub fn remove(&self, item: ItemId) {
        let mut items = self.lock();
        items.remove(&item);
        report_in_hand(items.len());
        if items.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Remembers the span of a started item.
    pub fn set_span(&self, item: ItemId, span: tracing::Span) {
        if let Some(h) = self.lock().get_mut(&item) {
            h.span = Some(span);
        }
    }

    /// The span of a held, started item (a disabled span otherwise), to log in.
    pub fn span(&self, item: ItemId) -> tracing::Span {
        self.lock()
            .get(&item)
            .and_then(|h| h.span.clone())
            .unwrap_or_else(tracing::Span::none)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leases to renew.
    pub fn leases(&self) -> Vec<LeaseRef> {
        self.lock().values().map(|h| h.lease.clone()).collect()
    }

    /// A renewal sent at `sent_at` succeeded: the lease is good until `valid_until`.
    pub fn extend(&self, item: ItemId, token: LeaseToken, valid_until: Instant) {
        if let Some(h) = self.lock().get_mut(&item)
            && h.lease.token == token
        {
            h.valid_until = h.valid_until.max(valid_until);
        }
    }

    pub fn stop(&self, item: ItemId, token: LeaseToken, reason: StopReason) {
        if let Some(h) = self.lock().get(&item)
            && h.lease.token == token
        {
            h.signal.stop(reason);
        }
    }

    /// Stops every item of `batch`; returns how many.
    pub fn stop_batch(&self, batch: BatchId, reason: StopReason) -> usize {
        let items = self.lock();
        let mut n = 0;
        for h in items.values().filter(|h| h.lease.batch == batch) {
            h.signal.stop(reason);
            n += 1;
        }
        n
    }

    pub fn stop_all(&self, reason: StopReason) {
        for h in self.lock().values() {
            h.signal.stop(reason);
        }
    }

    /// Whether the lease on `item` is known to hold at `now` (false if not held).
    pub fn valid(&self, item: ItemId, now: Instant) -> bool {
        self.lock().get(&item).is_some_and(|h| h.valid_until > now)
    }

    /// Waits until nothing is held.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            if self.is_empty() {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ItemId, Holding>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts
        // and removes), so a poisoned lock is still safe to use.
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `abridge_worker_items_in_hand`: this process's holdings, as a gauge.
fn report_in_hand(n: usize) {
    metrics::gauge!("abridge_worker_items_in_hand").set(n as f64);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use abridge_core::Priority;

    use super::*;

    fn lease(item: i64, batch: BatchId) -> LeaseRef {
        LeaseRef {
            item: ItemId(item),
            token: LeaseToken(7),
            batch,
            priority: Priority::Normal,
            position: 0,
            shard: Default::default(),
        }
    }

    #[tokio::test]
    async fn only_a_renewal_of_the_same_claim_moves_the_deadline() {
        let holdings = Holdings::default();
        let batch = BatchId::new();
        let now = Instant::now();
        holdings.add(lease(1, batch), now + Duration::from_secs(1));
        holdings.add(lease(2, batch), now + Duration::from_secs(1));
        holdings.extend(ItemId(2), LeaseToken(7), now + Duration::from_secs(30));
        holdings.extend(ItemId(1), LeaseToken(8), now + Duration::from_secs(30)); // wrong token
        let later = now + Duration::from_secs(2);
        assert!(!holdings.valid(ItemId(1), later));
        assert!(holdings.valid(ItemId(2), later));
        assert!(!holdings.valid(ItemId(3), now));
    }

    #[tokio::test]
    async fn first_stop_reason_wins() {
        let holdings = Holdings::default();
        let batch = BatchId::new();
        let s = holdings.add(lease(1, batch), Instant::now() + Duration::from_secs(5));
        assert_eq!(holdings.stop_batch(batch, StopReason::Cancelled), 1);
        holdings.stop_all(StopReason::Shutdown);
        assert_eq!(s.stopped().await, StopReason::Cancelled);
        holdings.remove(ItemId(1));
        holdings.wait_empty().await;
    }
}
