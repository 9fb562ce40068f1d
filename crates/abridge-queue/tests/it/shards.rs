//! A queue over several shards (`ABRIDGE_QUEUE_SHARDS`): items dealt out evenly, the claim's
//! rules held across shards to within one claim group, every shard claimed, reaped, counted
//! and cancelled, and a change of the shard count that loses nothing.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use abridge_core::{BatchId, ItemId, Priority, WorkerId};
use abridge_queue::{AfterAck, Claim, PLACEMENT_BLOCK, Queue, ShardId, Share};
use abridge_testkit::TestEnv;

fn ids(from: i64, n: i64) -> Vec<ItemId> {
    (from..from + n).map(ItemId).collect()
}

fn queue_of(env: &TestEnv, shards: usize) -> Queue {
    let mut settings = env.settings(&[]);
    settings.queue_shards = shards;
    env.queue(&settings)
}

fn share(tenant: &str) -> Share<'_> {
    Share {
        tenant: Some(tenant),
        weight: 1,
        max_in_flight: None,
    }
}

const LEASE: Duration = Duration::from_secs(30);

async fn claim(queue: &Queue, n: usize) -> Claim {
    queue.claim(WorkerId::new(), LEASE, n).await.unwrap()
}

/// A batch whose first item goes to `shard`.
fn batch_starting_on(queue: &Queue, shard: ShardId) -> BatchId {
    loop {
        let b = BatchId::new();
        if queue.placement_shard(b, 0) == shard {
            return b;
        }
    }
}

/// Positions dealt out in growing blocks over three shards (1, 2, 4, ... 32 to each).
const GROWING: i64 = 63 * 3;
/// A batch even over three shards: the growing blocks, then two whole blocks to each.
const BATCH: i64 = GROWING + 6 * PLACEMENT_BLOCK as i64;

#[tokio::test]
async fn a_batch_is_dealt_out_evenly_and_the_claim_keeps_priority_and_share_across_shards() {
    let env = TestEnv::new().await;
    let queue = queue_of(&env, 3);
    assert_eq!(queue.layout().len(), 3);
    let (a, b) = (BatchId::new(), BatchId::new());
    queue
        .enqueue(a, Priority::Normal, share("acme"), &ids(1000, BATCH))
        .await
        .unwrap();
    queue
        .enqueue(b, Priority::Normal, share("globex"), &ids(2000, BATCH))
        .await
        .unwrap();
    // A batch of three items is on three shards.
    let urgent = BatchId::new();
    queue
        .enqueue(urgent, Priority::High, share("globex"), &ids(300, 3))
        .await
        .unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!(stats.ready, [3, 2 * BATCH, 0]);

    // One claim connection, as a worker's claim loop has: it remembers what each shard had.
    let mut conn = queue.claim_connection();
    let worker = WorkerId::new();
    let first = conn.claim(worker, LEASE, 30, None).await.unwrap();
    let second = conn.claim(worker, LEASE, 30, None).await.unwrap();
    assert_eq!((first.items.len(), second.items.len()), (30, 30));
    // The first group takes every shard's urgent item before any normal one.
    assert!(
        first.items[..3].iter().all(|l| l.batch == urgent),
        "{first:?}"
    );
    let shards_of_urgent: HashSet<ShardId> = first.items[..3].iter().map(|l| l.shard).collect();
    assert_eq!(shards_of_urgent.len(), 3);
    // Within a group, each shard's part is in priority order.
    for claim in [&first, &second] {
        for shard in claim.items.iter().map(|l| l.shard).collect::<HashSet<_>>() {
            let ranks: Vec<u8> = claim
                .items
                .iter()
                .filter(|l| l.shard == shard)
                .map(|l| l.priority.rank())
                .collect();
            assert!(ranks.is_sorted(), "{ranks:?}");
        }
    }
    // The rest: the two owners share what is taken, to within a turn (32 items) on each
    // shard; each shard held a third of each batch, in whole blocks, and a batch's items come
    // off each shard in position order.
    let mut all: Vec<_> = first.items.into_iter().chain(second.items).collect();
    loop {
        let of = |batch| all.iter().filter(|l| l.batch == batch).count() as i64;
        if (300..450).contains(&all.len()) {
            assert!(
                (of(a) - of(b)).abs() <= 3 * 32,
                "acme {} globex {}",
                of(a),
                of(b)
            );
        }
        let more = conn.claim(worker, LEASE, 50, None).await.unwrap();
        if more.items.is_empty() {
            break;
        }
        all.extend(more.items);
    }
    let total = 2 * BATCH as usize + 3;
    assert_eq!(all.len(), total);
    let third = BATCH as usize / 3;
    for shard in queue.layout() {
        let on = |batch| {
            all.iter()
                .filter(|l| l.shard == *shard && l.batch == batch)
                .count()
        };
        assert_eq!(
            (on(a), on(b), on(urgent)),
            (third, third, 1),
            "shard {shard:?}"
        );
        let positions: Vec<i32> = all
            .iter()
            .filter(|l| l.shard == *shard && l.batch == a)
            .map(|l| l.position)
            .collect();
        assert!(positions.is_sorted(), "{positions:?}");
        // Past the growing blocks, whole blocks: a claim's items are neighbours in the batch.
        let blocks: HashSet<i64> = positions
            .iter()
            .filter(|p| i64::from(**p) >= GROWING)
            .map(|p| (i64::from(*p) - GROWING) / PLACEMENT_BLOCK as i64)
            .collect();
        assert_eq!(blocks.len(), 2, "shard {shard:?}: {blocks:?}");
    }
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased), ([0, 0, 0], total as i64));
    let held = queue.held_counts(&[a, b, urgent]).await.unwrap();
    assert_eq!((held[&a], held[&b], held[&urgent]), (BATCH, BATCH, 3));

    // Acknowledgements and retries go to the shard the item was claimed from.
    let acks: Vec<_> = all
        .iter()
        .map(|l| {
            let after = if l.batch == urgent {
                AfterAck::Ready
            } else {
                AfterAck::Drop
            };
            (l.clone(), after)
        })
        .collect();
    let acked = queue.ack(&acks, &[]).await.unwrap();
    assert_eq!(acked.removed, total as i64);
    let again = claim(&queue, 10).await;
    let mut back: Vec<_> = again.items.iter().map(|l| (l.item, l.shard)).collect();
    let mut before: Vec<_> = all
        .iter()
        .filter(|l| l.batch == urgent)
        .map(|l| (l.item, l.shard))
        .collect();
    back.sort();
    before.sort();
    assert_eq!(back, before);
}

#[tokio::test]
async fn every_shard_is_reaped_cancelled_and_woken_for() {
    let env = TestEnv::new().await;
    let queue = queue_of(&env, 3);
    let batch = BatchId::new();
    queue
        .enqueue(batch, Priority::Normal, Share::NO_TENANT, &ids(1, BATCH))
        .await
        .unwrap();

    // Leases of every shard expire and are taken.
    let claim = queue
        .claim(WorkerId::new(), Duration::from_millis(1), 500)
        .await
        .unwrap();
    let shards: HashSet<ShardId> = claim.items.iter().map(|l| l.shard).collect();
    assert_eq!(shards.len(), 3, "one claim of 500 spans shards");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = queue.take_expired(1_000).await.unwrap();
    assert_eq!(taken.len(), 500);
    assert!(taken.iter().all(|t| claim.items.contains(&t.lease)));

    // A cancel empties every shard of the batch.
    queue
        .cancel_batch(batch, Priority::Normal, &ids(1, BATCH))
        .await
        .unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased), ([0, 0, 0], 0));

    // An idle claim waits on the first shard's wake list; an item placed on another shard
    // wakes it (the enqueuer wakes the first shard's list after the other shard's script).
    let lone = batch_starting_on(&queue, ShardId(1));
    let waiting = queue.clone();
    let idle = tokio::spawn(async move {
        // As a claim loop does: wait, claim, and wait again while nothing came (the first
        // waits use up wake-ups left by the enqueue above).
        let mut conn = waiting.claim_connection();
        let began = Instant::now();
        loop {
            let claim = conn
                .claim(WorkerId::new(), LEASE, 4, Some(Duration::from_secs(4)))
                .await
                .unwrap();
            if !claim.items.is_empty() || began.elapsed() > Duration::from_secs(4) {
                return (claim, began.elapsed());
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    queue
        .enqueue(lone, Priority::Normal, Share::NO_TENANT, &ids(900, 1))
        .await
        .unwrap();
    let (claim, waited) = idle.await.unwrap();
    assert_eq!(claim.items.len(), 1, "{claim:?}");
    assert_ne!(claim.items[0].shard, ShardId::FIRST);
    // Enqueued 300 ms in; a claim that missed the wake-up would wait out its 4 s.
    assert!(waited < Duration::from_secs(2), "woken after {waited:?}");
}

#[tokio::test]
async fn a_change_of_the_shard_count_loses_nothing() {
    let env = TestEnv::new().await;
    let three = queue_of(&env, 3);
    let batch = BatchId::new();
    three
        .enqueue(batch, Priority::Normal, Share::NO_TENANT, &ids(1, BATCH))
        .await
        .unwrap();
    // A retry waits on a shard the new layout does not have.
    let claim = three.claim(WorkerId::new(), LEASE, 1_000).await.unwrap();
    let off_first = claim
        .items
        .iter()
        .find(|l| l.shard != ShardId::FIRST)
        .unwrap()
        .clone();
    let acks: Vec<_> = claim
        .items
        .iter()
        .map(|l| {
            let after = if *l == off_first {
                AfterAck::Delay(Duration::from_millis(200))
            } else {
                AfterAck::Ready
            };
            (l.clone(), after)
        })
        .collect();
    three.ack(&acks, &[]).await.unwrap();

    // The fleet now runs with one shard: the first shard is shared, the other two are only
    // recorded. The new process claims from them until they are empty.
    let one = queue_of(&env, 1);
    assert_eq!(one.layout().len(), 1);
    one.refresh_shards().await.unwrap();
    assert_eq!(one.active_shards().len(), 3);
    assert_eq!(
        one.retire_empty_shards(Duration::ZERO).await.unwrap(),
        0,
        "shards holding items stay"
    );
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < BATCH as usize && Instant::now() < deadline {
        let got = one.claim(WorkerId::new(), LEASE, 200).await.unwrap();
        let acks: Vec<_> = got
            .items
            .iter()
            .map(|l| (l.clone(), AfterAck::Drop))
            .collect();
        seen.extend(got.items.iter().map(|l| l.item));
        one.ack(&acks, &[]).await.unwrap();
        if got.items.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        seen.len(),
        BATCH as usize,
        "every item, the delayed retry too"
    );
    // Empty, but not yet for the grace: an item given back between two reads, or a process
    // still placing there, would show within it.
    assert_eq!(
        one.retire_empty_shards(Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(one.retire_empty_shards(Duration::ZERO).await.unwrap(), 2);
    assert_eq!(one.active_shards(), one.layout().to_vec());

    // A process still running with three shards records them again: nothing it places is
    // stranded.
    three.refresh_shards().await.unwrap();
    one.refresh_shards().await.unwrap();
    assert_eq!(one.active_shards().len(), 3);
}

#[tokio::test]
async fn a_tenants_limits_and_the_pause_reach_every_shard() {
    let env = TestEnv::new().await;
    let queue = queue_of(&env, 3);
    // A cap of 3 is one per shard.
    let capped = Share {
        tenant: Some("acme"),
        weight: 1,
        max_in_flight: Some(3),
    };
    queue
        .enqueue(BatchId::new(), Priority::Normal, capped, &ids(1, 30))
        .await
        .unwrap();
    assert_eq!(claim(&queue, 30).await.items.len(), 3);
    // The operator lifts the cap: every shard hears of it, not only the first.
    queue.set_limits("acme", 1, None).await.unwrap();
    assert_eq!(claim(&queue, 30).await.items.len(), 27);

    // A queue paused while it had one shard: a process with three places items on two new
    // shards, which get the pause before anything is claimed from them.
    let fresh = TestEnv::new().await;
    let one_alone = queue_of(&fresh, 1);
    assert!(one_alone.set_paused(true, 7).await.unwrap());
    let three = queue_of(&fresh, 3);
    three
        .enqueue(
            BatchId::new(),
            Priority::Normal,
            Share::NO_TENANT,
            &ids(100, 30),
        )
        .await
        .unwrap();
    assert_eq!(
        claim(&three, 30).await.items.len(),
        0,
        "paused on every shard"
    );
    assert!(three.set_paused(false, 8).await.unwrap());
    assert_eq!(claim(&three, 30).await.items.len(), 30);
}

/// Enqueues `batch` as one urgent item, and waits until this process hears of it.
async fn enqueue_urgent_and_hear(queue: &Queue, batch: BatchId, item: i64) {
    let heard = queue.notices_heard();
    queue
        .enqueue(batch, Priority::High, Share::NO_TENANT, &ids(item, 1))
        .await
        .unwrap();
    let began = Instant::now();
    while queue.notices_heard() == heard {
        assert!(began.elapsed() < Duration::from_secs(5), "no notice heard");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_loop_working_one_shard_hears_of_urgent_work_on_another() {
    let env = TestEnv::new().await;
    let queue = queue_of(&env, 3);
    queue
        .enqueue(
            BatchId::new(),
            Priority::Normal,
            Share::NO_TENANT,
            &ids(1, BATCH),
        )
        .await
        .unwrap();
    let listener = tokio::spawn({
        let queue = queue.clone();
        async move { queue.hear_ready_ranks().await }
    });
    let began = Instant::now();
    while queue.heard_shards().len() < 3 {
        assert!(began.elapsed() < Duration::from_secs(5), "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Rounds of a loop that does not look at the shards it did not ask (they are heard): an
    // urgent item placed on another shard than the one it works is the first of its next.
    let mut conn = queue.claim_connection();
    let worker = WorkerId::new();
    for round in 0..6 {
        let claim = conn.claim(worker, LEASE, 10, None).await.unwrap();
        assert_eq!(claim.items.len(), 10);
        let on = claim.items.last().unwrap().shard;
        let elsewhere = *queue.layout().iter().find(|s| **s != on).unwrap();
        let urgent = batch_starting_on(&queue, elsewhere);
        enqueue_urgent_and_hear(&queue, urgent, 5000 + round).await;
        let next = conn.claim(worker, LEASE, 10, None).await.unwrap();
        assert_eq!(next.items[0].batch, urgent, "round {round}: {next:?}");
    }

    // Urgent work placed while the queue is paused is taken first once it resumes: a paused
    // shard's claim still says what it holds (the resume publishes nothing).
    for round in 0..3 {
        let claim = conn.claim(worker, LEASE, 10, None).await.unwrap();
        let on = claim.items.last().unwrap().shard;
        assert!(queue.set_paused(true, 10 + 2 * round).await.unwrap());
        let elsewhere = *queue.layout().iter().find(|s| **s != on).unwrap();
        let urgent = batch_starting_on(&queue, elsewhere);
        enqueue_urgent_and_hear(&queue, urgent, 6000 + round).await;
        let paused = conn.claim(worker, LEASE, 10, None).await.unwrap();
        assert!(paused.items.is_empty());
        assert!(queue.set_paused(false, 11 + 2 * round).await.unwrap());
        let next = conn.claim(worker, LEASE, 10, None).await.unwrap();
        assert_eq!(next.items[0].batch, urgent, "after pause {round}: {next:?}");
    }

    // A notice lost on the way (here: urgent work listed with none, as a cluster bus link
    // that reset would lose it) is made up within the listener's check, a second.
    let claim = conn.claim(worker, LEASE, 10, None).await.unwrap();
    let on = claim.items.last().unwrap().shard;
    let elsewhere = *queue.layout().iter().find(|s| **s != on).unwrap();
    let keys = queue.shard_keys(elsewhere);
    let lost = BatchId::new();
    let _: () = redis::pipe()
        .zadd(keys.ready(lost), 7000, 0)
        .rpush(format!("{}batches:0:~", keys.prefix), lost.to_string())
        .rpush(&keys.rotation[0], "~")
        .query_async(&mut env.redis().await)
        .await
        .unwrap();
    let began = Instant::now();
    loop {
        let next = conn.claim(worker, LEASE, 1, None).await.unwrap();
        if next.items[0].batch == lost {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(3), "never made up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A listener that stops leaves the loops looking again.
    listener.abort();
    let _ = listener.await;
    assert!(queue.heard_shards().is_empty());
}
