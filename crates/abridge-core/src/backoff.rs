//! The one backoff every retry in abridge uses (an item's retry, an LLM request's in-process
//! retry, a webhook delivery): capped exponential, with jitter.

use std::time::Duration;

use rand::Rng;

/// The wait before retry number `n` (1-based): `base × 2^(n−1)`, at most `cap`, scaled by
/// `jitter` (clamped to [0.5, 1.0]; [`jitter`] draws one) so that what failed together does
/// not retry together.
pub fn exponential(n: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    base.saturating_mul(1u32 << n.saturating_sub(1).min(30))
        .min(cap)
        .mul_f64(jitter.clamp(0.5, 1.0))
}

/// A random jitter factor in [0.5, 1.0].
pub fn jitter() -> f64 {
    rand::rng().random_range(0.5..=1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap_scaled_by_the_jitter() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(exponential(1, base, cap, 1.0), base);
        assert_eq!(exponential(4, base, cap, 1.0), base * 8);
        assert_eq!(exponential(4, base, cap, 0.5), base * 4);
        assert_eq!(exponential(9, base, cap, 1.0), cap);
        assert_eq!(exponential(u32::MAX, base, cap, 1.0), cap);
        assert_eq!(exponential(0, base, cap, 1.0), base);
        // A factor outside [0.5, 1.0] is clamped: never longer than the cap, never shorter
        // than half the full wait.
        assert_eq!(exponential(9, base, cap, 7.0), cap);
        assert_eq!(exponential(1, base, cap, 0.0), base / 2);
        for _ in 0..100 {
            assert!((0.5..=1.0).contains(&jitter()));
        }
    }
}
