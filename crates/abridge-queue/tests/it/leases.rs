//! Leases taken over: a lease a reaper took is never re-created by its old holder, whose late
//! give-back places nothing.

use std::time::Duration;

use abridge_core::{BatchId, ItemId, Priority, WorkerId};
use abridge_queue::{AfterAck, LeaseRef, Placement, Queue, Renewal, Share};
use abridge_testkit::TestEnv;

/// A queue of its own, holding one ready item.
async fn queue_with_one_item() -> (TestEnv, Queue) {
    let env = TestEnv::new().await;
    let queue = env.queue(&env.settings(&[]));
    queue
        .enqueue(
            BatchId::new(),
            Priority::Normal,
            Share::NO_TENANT,
            &[ItemId(1)],
        )
        .await
        .unwrap();
    (env, queue)
}

/// Where a reaper puts a claimed item back: ready at once.
fn ready_now(lease: &LeaseRef) -> Placement {
    Placement {
        item: lease.item,
        batch: lease.batch,
        priority: lease.priority,
        position: lease.position,
        due: None,
    }
}

#[tokio::test]
async fn a_renewal_racing_the_reaper_does_not_recreate_the_lease_it_took() {
    let (_env, queue) = queue_with_one_item().await;
    let holder = WorkerId::new();
    let claim = queue
        .claim(holder, Duration::from_millis(100), 1)
        .await
        .unwrap();
    let lease = claim.items[0].clone();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The racing order: the reaper takes the expired lease; the old holder's renewal lands
    // before the reaper's requeue.
    let taken = queue.take_expired(10).await.unwrap();
    assert_eq!(taken.len(), 1);
    let renewed = queue
        .renew(
            holder,
            Duration::from_secs(30),
            std::slice::from_ref(&lease),
        )
        .await
        .unwrap();
    assert_eq!(renewed, vec![Renewal::Lost]);
    // So the requeue places the item, and another worker can claim it at once.
    let placed = queue.requeue(&[ready_now(&lease)]).await.unwrap();
    assert_eq!(placed, 1);
    let again = queue
        .claim(WorkerId::new(), Duration::from_secs(30), 1)
        .await
        .unwrap();
    assert_eq!(again.items.len(), 1);
}

#[tokio::test]
async fn a_stale_give_back_does_not_move_a_retry_scheduled_by_the_new_holder() {
    let (_env, queue) = queue_with_one_item().await;
    let (old, new) = (WorkerId::new(), WorkerId::new());
    let first = queue
        .claim(old, Duration::from_millis(100), 1)
        .await
        .unwrap();
    let stale = first.items[0].clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Taken over: the reaper takes the lease and requeues the item; the new holder claims
    // it and schedules a retry an hour out.
    let taken = queue.take_expired(10).await.unwrap();
    assert_eq!(taken.len(), 1);
    queue.requeue(&[ready_now(&stale)]).await.unwrap();
    let second = queue.claim(new, Duration::from_secs(30), 1).await.unwrap();
    let current = second.items[0].clone();
    queue
        .ack(
            &[(current, AfterAck::Delay(Duration::from_secs(3600)))],
            &[],
        )
        .await
        .unwrap();

    // The old holder's give-back arrives late: it holds nothing, so it places nothing.
    let acked = queue.ack(&[(stale, AfterAck::Ready)], &[]).await.unwrap();
    assert_eq!(acked.removed, 0);
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.ready, stats.delayed), ([0, 0, 0], 1));
}
