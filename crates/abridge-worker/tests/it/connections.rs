//! Pooled connections are handed out without a check when they were used within the last
//! second (no ping round trip before every command or statement), so a connection that broke
//! must be thrown away after its first failure rather than handed out again.

use abridge_testkit::TestEnv;

/// Checks out `n` connections at once, so that the pool holds several.
async fn fill_pools(queue: &abridge_queue::Queue, store: &abridge_store::Store, n: usize) {
    let pings = (0..n).map(|_| async {
        queue.ping().await.unwrap();
        store.ping().await.unwrap();
    });
    futures::future::join_all(pings).await;
}

#[tokio::test]
async fn connections_broken_by_a_restart_fail_once_and_are_replaced() {
    let mut env = TestEnv::with_own_servers().await;
    let settings = env.settings(&[]);
    let queue = env.queue(&settings);
    let store = env.store();
    fill_pools(&queue, &store, 4).await;

    // Redis restarts; the pool's connections are all dead, and were used a moment ago.
    let own = env.own();
    own.redis.restart_empty().unwrap();
    let mut failures = 0;
    for _ in 0..20 {
        if queue.ping().await.is_err() {
            failures += 1;
        }
    }
    assert!(
        failures <= 4,
        "each dead redis connection fails at most once ({failures} failures)"
    );
    for _ in 0..5 {
        queue
            .ping()
            .await
            .expect("fresh connections after the restart");
    }

    // The same for Postgres.
    own.postgres.stop();
    own.postgres.start_again().unwrap();
    let mut failures = 0;
    for _ in 0..20 {
        if store.ping().await.is_err() {
            failures += 1;
        }
    }
    assert!(
        failures <= 4,
        "each dead postgres connection fails at most once ({failures} failures)"
    );
    for _ in 0..5 {
        store
            .ping()
            .await
            .expect("fresh connections after the restart");
    }
}
