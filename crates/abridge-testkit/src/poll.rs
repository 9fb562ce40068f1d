//! Waiting for something to become true, for tests that must stay correct on a loaded
//! machine: poll, never sleep a fixed time and hope.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns true, or panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Reads a value with `read` until `ok` holds for it and returns it, or panics after
/// `timeout` with the last value read.
pub async fn until<T: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut read: impl AsyncFnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let v = read().await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: still {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
