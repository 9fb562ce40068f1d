//! An upgrade across the key renaming: what a build before it left queued, delayed and leased
//! keeps its place under today's names, merged with what a newer build wrote meanwhile.

use std::time::Duration;

use abridge_core::{BatchId, ItemId, Priority, WorkerId};
use abridge_queue::{Placement, Renewal, Share};
use abridge_testkit::TestEnv;

#[tokio::test]
async fn items_under_the_old_key_names_keep_their_places() {
    let env = TestEnv::new().await;
    let queue = env.queue(&env.settings(&[]));
    let keys = queue.keys().clone();
    let (old_batch, new_batch) = (BatchId::new(), BatchId::new());
    // Item 1 leased, item 2 ready, item 3 waiting to retry.
    queue
        .enqueue(
            old_batch,
            Priority::Normal,
            Share::NO_TENANT,
            &[ItemId(1), ItemId(2)],
        )
        .await
        .unwrap();
    let holder = WorkerId::new();
    let claim = queue
        .claim(holder, Duration::from_secs(30), 1)
        .await
        .unwrap();
    let lease = claim.items[0].clone();
    assert_eq!(lease.item, ItemId(1));
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    queue
        .requeue(&[Placement {
            item: ItemId(3),
            batch: old_batch,
            priority: Priority::Normal,
            position: 3,
            due: Some(due),
        }])
        .await
        .unwrap();

    // Put that state under the names the older build used.
    let mut r = env.redis().await;
    let p = &keys.prefix;
    let renamed = [
        (keys.rotation[1].clone(), format!("{p}rr:1")),
        (format!("{p}batches:1:~"), format!("{p}orr:1:~")),
        (keys.lease_deadlines.clone(), format!("{p}leases")),
        (keys.lease_holders.clone(), format!("{p}lease")),
        (keys.delayed_places.clone(), format!("{p}dref")),
    ];
    let mut pipe = redis::pipe();
    for (today, old) in &renamed {
        pipe.rename(today, old).ignore();
    }
    let () = pipe.query_async(&mut r).await.unwrap();
    // A newer process enqueues meanwhile, under today's names.
    queue
        .enqueue(new_batch, Priority::Normal, Share::NO_TENANT, &[ItemId(10)])
        .await
        .unwrap();

    let moved = queue.adopt_old_keys().await.unwrap();
    assert_eq!(
        moved, 3,
        "one batch in rotation, one lease, one delayed item"
    );
    assert_eq!(
        queue.adopt_old_keys().await.unwrap(),
        0,
        "nothing left to move"
    );
    for (_, old) in &renamed {
        let exists: bool = redis::cmd("EXISTS")
            .arg(old)
            .query_async(&mut r)
            .await
            .unwrap();
        assert!(!exists, "{old} is still there");
    }

    // The lease is still its holder's, and every other item is claimable.
    let renewed = queue
        .renew(
            holder,
            Duration::from_secs(30),
            std::slice::from_ref(&lease),
        )
        .await
        .unwrap();
    assert_eq!(renewed, vec![Renewal::Renewed]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let other = queue
        .claim(WorkerId::new(), Duration::from_secs(30), 10)
        .await
        .unwrap();
    let mut items: Vec<_> = other.items.iter().map(|l| l.item.0).collect();
    items.sort();
    assert_eq!(items, vec![2, 3, 10]);
}
