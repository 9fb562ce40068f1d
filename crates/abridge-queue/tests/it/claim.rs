//! The claim: strict priorities, then the fair share by owner, then each batch in order.

use std::time::Duration;

use abridge_core::{BatchId, ItemId, Priority, WorkerId};
use abridge_queue::{Queue, Share};
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

/// Enqueues `items` as one normal batch of `tenant`, with its weight and cap.
async fn enqueue_as(
    queue: &Queue,
    batch: BatchId,
    tenant: &str,
    weight: i32,
    max_in_flight: Option<i32>,
    items: &[ItemId],
) {
    let share = Share {
        tenant: Some(tenant),
        weight,
        max_in_flight,
    };
    queue
        .enqueue(batch, Priority::Normal, share, items)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_heavy_owner_holds_a_light_one_off_for_no_more_than_its_weight_and_a_new_weight_applies_at_once()
 {
    let env = TestEnv::new().await;
    let queue = env.queue(&env.settings(&[]));
    let (heavy, light) = (BatchId::new(), BatchId::new());
    enqueue_as(&queue, heavy, "heavy", 1000, None, &ids(1, 5000)).await;
    enqueue_as(&queue, light, "light", 1, None, &ids(10_000, 100)).await;
    let me = WorkerId::new();
    let lease = Duration::from_secs(30);

    // Weights of 1000 and 1: the light owner's turn is 1 item per 1000 of the heavy one's
    // (not 32 per 32,000, which would starve it here).
    let mut heavy_before = 0;
    loop {
        let claim = queue.claim(me, lease, 64).await.unwrap();
        assert!(
            !claim.items.is_empty(),
            "ran dry before the light owner's turn"
        );
        if let Some(i) = claim.items.iter().position(|l| l.batch == light) {
            heavy_before += i;
            break;
        }
        heavy_before += claim.items.len();
    }
    assert!(
        heavy_before <= 1000,
        "light waited for {heavy_before} items"
    );

    // The heavy owner is in the middle of its next turn of 1000; its weight falls to 1, and
    // the next claims share by the new weights at once.
    queue.claim(me, lease, 64).await.unwrap();
    queue.set_limits("heavy", 1, None).await.unwrap();
    let claim = queue.claim(me, lease, 64).await.unwrap();
    let light_now = claim.items.iter().filter(|l| l.batch == light).count();
    assert!(
        light_now >= 30,
        "light took {light_now} of 64 after the change"
    );
}

#[tokio::test]
async fn owners_at_their_cap_or_gone_do_not_end_a_claim_while_another_has_work() {
    let env = TestEnv::new().await;
    let queue = env.queue(&env.settings(&[]));
    let (capped, lost, busy) = (BatchId::new(), BatchId::new(), BatchId::new());
    let me = WorkerId::new();
    let lease = Duration::from_secs(30);
    // The capped owner holds its one item in flight.
    enqueue_as(&queue, capped, "capped", 1, Some(1), &ids(1, 2)).await;
    assert_eq!(queue.claim(me, lease, 1).await.unwrap().items.len(), 1);
    // An owner still listed whose ready set is gone (a partial loss of Redis's data).
    enqueue_as(&queue, lost, "lost", 1, None, &ids(100, 1)).await;
    enqueue_as(&queue, busy, "busy", 1, None, &ids(200, 50)).await;
    let mut r = env.redis().await;
    let () = redis::cmd("DEL")
        .arg(queue.keys().ready(lost))
        .query_async(&mut r)
        .await
        .unwrap();

    let claim = queue.claim(me, lease, 10).await.unwrap();
    assert_eq!(claim.items.len(), 10, "{claim:?}");
    assert!(claim.items.iter().all(|l| l.batch == busy));
}
