//! Notices: a subscription Redis drops comes back by itself, says so, and carries on.

use std::time::Duration;

use abridge_core::{BatchId, Priority};
use abridge_queue::{Subscribed, resubscribing};
use abridge_testkit::TestEnv;
use futures::{Stream, StreamExt};

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a notice in time")
}

#[tokio::test]
async fn a_dropped_subscription_comes_back_and_says_so() {
    let env = TestEnv::new().await;
    let queue = env.queue(&env.settings(&[]));
    let q = queue.clone();
    let cancels = resubscribing("cancel notices", move || {
        let q = q.clone();
        async move { q.cancellations().await }
    });
    let mut cancels = std::pin::pin!(cancels);

    // The first subscription is made on the first read: publish once it is surely there.
    let first = BatchId::new();
    let publisher = {
        let queue = queue.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            queue
                .cancel_batch(first, Priority::Normal, &[])
                .await
                .unwrap();
        })
    };
    assert_eq!(next(&mut cancels).await, Some(Subscribed::Notice(first)));
    publisher.await.unwrap();

    // Redis drops every subscriber (as a restart or a failover would). Under `cargo test`
    // nothing else subscribes while this binary runs.
    let mut conn = env.redis().await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg(&["KILL", "TYPE", "pubsub"])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(killed >= 1);
    assert_eq!(next(&mut cancels).await, Some(Subscribed::Again));

    let second = BatchId::new();
    queue
        .cancel_batch(second, Priority::Normal, &[])
        .await
        .unwrap();
    assert_eq!(next(&mut cancels).await, Some(Subscribed::Notice(second)));
}
