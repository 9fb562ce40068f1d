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

/// Waits that double from a first one up to a longest, for a loop that retries while a store
/// is away: every such loop in abridge waits this way.
#[derive(Clone, Copy, Debug)]
pub struct Doubling {
    first: Duration,
    longest: Duration,
    next: Duration,
}

impl Doubling {
    /// A loop that retries a write while its store is away: soon at first, then every few
    /// seconds, well inside a lease.
    pub const WHILE_AWAY: Doubling =
        Doubling::new(Duration::from_millis(50), Duration::from_secs(5));

    pub const fn new(first: Duration, longest: Duration) -> Self {
        Self {
            first,
            longest,
            next: first,
        }
    }

    /// The wait before the next try; the one after it is twice as long (up to the longest).
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.longest);
        wait
    }

    /// Starts again from the first wait (after a try that worked).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
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

    #[test]
    fn doubling_waits_double_up_to_the_longest_and_start_again_after_a_reset() {
        let ms = Duration::from_millis;
        let mut waits = Doubling::new(ms(50), ms(300));
        let seen: Vec<_> = (0..5).map(|_| waits.next_wait()).collect();
        assert_eq!(seen, [ms(50), ms(100), ms(200), ms(300), ms(300)]);
        waits.reset();
        assert_eq!(waits.next_wait(), ms(50));
    }
}
