//! Retry delays: exponential with jitter, never shorter than the service's own `retry-after`.

use std::time::Duration;

use rand::Rng;

/// The delay before retrying after failed attempt number `attempt` (1-based): `base * 2^(attempt-1)`
/// capped at `max`, then scaled by a random factor in [0.5, 1.0] so that items failed together
/// do not retry together; at least `retry_after` when the service sent one.
pub fn retry_delay(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base
        .checked_mul(1u32 << attempt.saturating_sub(1).min(30))
        .unwrap_or(max)
        .min(max);
    let jittered = exp.mul_f64(rand::rng().random_range(0.5..=1.0));
    match retry_after {
        Some(hint) => jittered.max(hint.min(max.max(hint))),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_within_jitter_and_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..=10u32 {
            let d = retry_delay(attempt, base, max, None);
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
        );
        assert!(d >= Duration::from_secs(7));
    }
}
