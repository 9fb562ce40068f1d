//! Retry delays: exponential with jitter, never shorter than the service's own `retry-after`,
//! never longer than the fleet's longest wait.

use std::time::Duration;

use abridge_core::backoff::{exponential, jitter};

/// The delay before retrying after failed attempt number `attempt` (1-based): `base * 2^(attempt-1)`
/// capped at `max`, then scaled by a random factor in [0.5, 1.0] so that items failed together
/// do not retry together; at least `retry_after` when the service sent one; and at most
/// `longest` (`max_wait`), whatever the service asked for.
pub fn retry_delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    longest: Duration,
) -> Duration {
    retry_delay_with(attempt, base, max, retry_after, longest, jitter())
}

/// [`retry_delay`] with its random factor given (`jitter`, in [0.5, 1.0]).
pub fn retry_delay_with(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    longest: Duration,
    jitter: f64,
) -> Duration {
    exponential(attempt, base, max, jitter)
        .max(retry_after.unwrap_or_default())
        .min(longest)
}

/// How long a deferred item (not really attempted: a breaker open, a budget spent) waits:
/// what the deferral asked for, at least `base`, at most `longest`.
pub fn defer_delay(asked: Duration, base: Duration, longest: Duration) -> Duration {
    asked.max(base).min(longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn grows_exponentially_within_jitter_and_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..=10u32 {
            let d = retry_delay(attempt, base, max, None, HOUR);
            let full = (base * 2u32.pow(attempt - 1)).min(max);
            assert!(
                d <= full && d >= full / 2,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
    }

    #[test]
    fn honours_retry_after() {
        let d = retry_delay(
            1,
            Duration::from_millis(10),
            Duration::from_secs(60),
            Some(Duration::from_secs(7)),
            HOUR,
        );
        assert!(d >= Duration::from_secs(7));
    }

    #[test]
    fn no_retry_after_parks_an_item_past_the_longest_wait() {
        let base = Duration::from_millis(10);
        for hint in [
            Duration::from_secs(2 * 3600),
            Duration::from_secs(100 * 365 * 24 * 3600),
            Duration::MAX,
        ] {
            assert_eq!(
                retry_delay(1, base, Duration::from_secs(60), Some(hint), HOUR),
                HOUR
            );
        }
        assert_eq!(defer_delay(Duration::MAX, base, HOUR), HOUR);
        assert_eq!(defer_delay(Duration::ZERO, base, HOUR), base);
    }
}
