//! How long to wait before retrying a failed request: capped exponential backoff with jitter,
//! never shorter than the provider's own `retry-after`.

use std::time::Duration;

/// A retry policy for one request's in-process retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: none).
    pub max_retries: u32,
    /// The first backoff; each later one doubles.
    pub base: Duration,
    /// No backoff is longer.
    pub cap: Duration,
    /// A `retry-after` longer than this is not waited out in-process: the caller hands the
    /// item back to the queue, which retries it after that long without holding a worker slot.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 2,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(8),
            max_wait: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based): base × 2^(retry−1), capped, scaled by a
    /// random 50–100 %, and at least `retry_after`. `None` when no retry should follow in
    /// process (out of retries, or the wait is longer than `max_wait`).
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        let wait = abridge_core::backoff::exponential(
            retry,
            self.base,
            self.cap,
            abridge_core::backoff::jitter(),
        )
        .max(retry_after.unwrap_or_default());
        (wait <= self.max_wait).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_with_jitter_and_honours_retry_after() {
        let p = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_millis(350),
            max_wait: Duration::from_secs(2),
        };
        for _ in 0..50 {
            let w1 = p.wait(1, None).unwrap();
            assert!(
                (Duration::from_millis(50)..=Duration::from_millis(100)).contains(&w1),
                "{w1:?}"
            );
            let w2 = p.wait(2, None).unwrap();
            assert!(
                (Duration::from_millis(100)..=Duration::from_millis(200)).contains(&w2),
                "{w2:?}"
            );
            let w5 = p.wait(5, None).unwrap();
            assert!(w5 <= Duration::from_millis(350), "capped: {w5:?}");
        }
        assert_eq!(
            p.wait(1, Some(Duration::from_millis(1500))),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            p.wait(1, Some(Duration::from_secs(3))),
            None,
            "too long to wait in process"
        );
        assert_eq!(p.wait(6, None), None, "out of retries");
    }
}
