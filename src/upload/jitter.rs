//! Randomness on every timer, as the resilience talk asks: one function for periodic
//! work (an interval spread around its nominal value) and one for retry backoff
//! ("full jitter": `random(0, min(cap, base * 2^attempt))`).
//!
//! In: durations. Out: durations. Must not: sleep or read clocks.

use std::time::Duration;

/// `interval` moved by a uniformly random amount within `±fraction * interval`, so that
/// many agents started together do not upload (or rescan) in lock step. `fraction` is
/// clamped to `[0, 1]`.
pub fn jittered(interval: Duration, fraction: f64) -> Duration {
    let fraction = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
    let nanos = interval.as_nanos().min(u64::MAX as u128) as f64;
    let spread = nanos * fraction;
    let offset = (fastrand::f64() * 2.0 - 1.0) * spread;
    Duration::from_nanos((nanos + offset).max(0.0) as u64)
}

/// Full-jitter backoff before retry number `attempt` (0 for the first retry): a uniformly
/// random duration in `[0, min(cap, base * 2^attempt)]`.
pub fn full_jitter_backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let ceiling = backoff_ceiling(base, attempt, cap);
    let nanos = ceiling.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

/// The upper end of `full_jitter_backoff`: `min(cap, base * 2^attempt)`, without overflow.
pub fn backoff_ceiling(base: Duration, attempt: u32, cap: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_within_zero_and_cap() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(5);
        let mut seen_low = false;
        let mut seen_high = false;
        for attempt in 0..40 {
            let ceiling = backoff_ceiling(base, attempt, cap);
            assert!(ceiling <= cap);
            for _ in 0..200 {
                let d = full_jitter_backoff(base, attempt, cap);
                assert!(d <= ceiling, "attempt {attempt}: {d:?} over {ceiling:?}");
                seen_low |= d < ceiling / 4;
                seen_high |= d > ceiling * 3 / 4;
            }
        }
        // Full jitter spreads over the whole range, not only near the ceiling.
        assert!(seen_low && seen_high);
        assert_eq!(backoff_ceiling(base, 3, cap), Duration::from_millis(800));
        assert_eq!(backoff_ceiling(base, 200, cap), cap);
    }

    #[test]
    fn jittered_interval_stays_within_its_fraction() {
        let interval = Duration::from_secs(10);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..500 {
            let d = jittered(interval, 0.1);
            assert!(d >= Duration::from_secs(9) && d <= Duration::from_secs(11), "{d:?}");
            distinct.insert(d);
        }
        assert!(distinct.len() > 100, "jitter must actually vary");
        assert_eq!(jittered(interval, 0.0), interval);
    }
}
