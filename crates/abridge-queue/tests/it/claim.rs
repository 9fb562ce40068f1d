//! The claim: strict priorities, then the fair share by owner, then each batch in order.

use std::time::Duration;

use abridge_core::{BatchId, ItemId, Priority, WorkerId};
use abridge_queue::Share;
use abridge_testkit::TestEnv;

fn ids(from: i64, n: i64) -> Vec<ItemId> {
    (from..from + n).map(ItemId).collect()
}

#[tokio::test]
async fn a_claim_takes_higher_priorities_first_then_shares_by_owner_in_batch_order() {
    let env = TestEnv::new().await;
    let queue = env.queue(&env.settings(&[]));
    let share = |tenant| Share {
        tenant: Some(tenant),
        weight: 1,
        max_in_flight: None,
    };
    let (a, b, urgent) = (BatchId::new(), BatchId::new(), BatchId::new());
    queue
        .enqueue(a, Priority::Normal, share("acme"), &ids(100, 40))
        .await
        .unwrap();
    queue
        .enqueue(b, Priority::Normal, share("globex"), &ids(200, 40))
        .await
        .unwrap();
    queue
        .enqueue(urgent, Priority::High, share("globex"), &ids(300, 3))
        .await
        .unwrap();

    let claim = queue
        .claim(WorkerId::new(), Duration::from_secs(30), 40)
        .await
        .unwrap();
    assert_eq!(claim.items.len(), 40);
    assert!(claim.items[..3].iter().all(|l| l.batch == urgent));
    assert!(claim.items.iter().all(|l| l.token == claim.token));
    // Then the owners take turns of 32 items: acme's turn (it was first in the rotation),
    // then globex's, which the claim fills up before its end.
    let of = |claim: &abridge_queue::Claim, batch| {
        claim.items.iter().filter(|l| l.batch == batch).count()
    };
    assert_eq!((of(&claim, a), of(&claim, b)), (32, 5));
    assert!(claim.items[3..35].iter().all(|l| l.batch == a));
    // Each batch's items come in input order, from its first position.
    for batch in [a, b] {
        let positions: Vec<i32> = claim
            .items
            .iter()
            .filter(|l| l.batch == batch)
            .map(|l| l.position)
            .collect();
        assert_eq!(positions, (0..positions.len() as i32).collect::<Vec<_>>());
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased), ([0, 43, 0], 40));

    // The next claim goes on with globex's turn (27 more), then acme's last 8 items.
    let next = queue
        .claim(WorkerId::new(), Duration::from_secs(30), 40)
        .await
        .unwrap();
    assert!(next.items[..27].iter().all(|l| l.batch == b), "{next:?}");
    assert_eq!((of(&next, a), of(&next, b)), (8, 32));
}
