//! Pooled Redis connections (and the worker's fast Postgres pool) are handed out without a
//! check when they were used within the last second (no ping round trip before every command),
//! so a connection that broke must be thrown away after its first failure rather than handed
//! out again.

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

    // Postgres: the durable pool (the API's, the CLI's, the outcome writer's) still checks
    // every connection it hands out, so a restart costs its callers nothing. (The worker's
    // fast pool does not; the worker retries, see the Postgres restart drill in tests/e2e.)
    own.postgres.stop();
    own.postgres.start_again().unwrap();
    for _ in 0..20 {
        store
            .ping()
            .await
            .expect("the durable pool hands out live connections after a restart");
    }
}
