//! The retry policy, applied by the api when a worker reports a retryable failure: capped
//! exponential backoff with jitter, honouring the target's `Retry-After`, bounded by attempts and age.

use crate::config::RetryConfig;

/// A target's `Retry-After` is honoured up to this long (25 hours); beyond it the answer is taken
/// as a mistake. A day and a little: a daily budget (Alma's) comes back at the next midnight,
/// wherever that is, and a job must wait for it in one step, not spend an attempt every hour.
pub const MAX_RETRY_AFTER_MS: u64 = 25 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again in this many milliseconds.
    RetryIn(u64),
    /// Attempts or age are used up: the job ends in `error` (`MAX_ATTEMPTS_EXCEEDED`).
    GiveUp,
}

/// `attempts` is how many attempts have been made (the failed one included), `age_ms` how old the
/// job is, `unit` a uniform random number in [0, 1) for the jitter, `after_ms` the target's
/// `Retry-After`.
pub fn decide(
    cfg: &RetryConfig,
    attempts: u32,
    age_ms: u64,
    unit: f64,
    after_ms: Option<u64>,
) -> Decision {
    if attempts >= cfg.max_attempts || age_ms >= cfg.max_age_hours.saturating_mul(3_600_000) {
        return Decision::GiveUp;
    }
    let exp = attempts.saturating_sub(1).min(32);
    let ceiling = cfg
        .base_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.max_backoff_ms);
    // "Equal jitter": never less than half the ceiling, so backoff still grows, but spread out so
    // that jobs failing together do not come back together.
    let half = ceiling / 2;
    let jittered = half + ((ceiling - half) as f64 * unit.clamp(0.0, 1.0)) as u64;
    let honoured = after_ms.map_or(0, |a| a.min(MAX_RETRY_AFTER_MS));
    Decision::RetryIn(jittered.max(honoured))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            max_attempts: 5,
            base_ms: 1000,
            max_backoff_ms: 10_000,
            max_age_hours: 48,
        }
    }

    #[test]
    fn backoff_doubles_within_its_jitter_band_and_is_capped() {
        let c = cfg();
        for (attempts, lo, hi) in [
            (1, 500, 1000),
            (2, 1000, 2000),
            (3, 2000, 4000),
            (4, 4000, 8000),
        ] {
            for unit in [0.0, 0.5, 0.999] {
                let Decision::RetryIn(d) = decide(&c, attempts, 0, unit, None) else {
                    panic!("gave up at {attempts}")
                };
                assert!((lo..=hi).contains(&d), "attempt {attempts}: {d}");
            }
        }
        let big = RetryConfig {
            max_attempts: 100,
            ..c
        };
        assert!(matches!(decide(&big, 60, 0, 1.0, None), Decision::RetryIn(d) if d <= 10_000));
    }

    #[test]
    fn retry_after_is_honoured_when_longer_than_the_backoff() {
        assert_eq!(
            decide(&cfg(), 1, 0, 0.0, Some(7_000)),
            Decision::RetryIn(7_000)
        );
        assert_eq!(
            decide(&cfg(), 1, 0, 0.0, Some(u64::MAX)),
            Decision::RetryIn(MAX_RETRY_AFTER_MS)
        );
        // Until a daily budget comes back, in one step.
        assert_eq!(
            decide(&cfg(), 1, 0, 0.0, Some(23 * 3_600_000)),
            Decision::RetryIn(23 * 3_600_000)
        );
    }

    #[test]
    fn attempts_or_age_exhausted_give_up() {
        assert_eq!(decide(&cfg(), 5, 0, 0.5, None), Decision::GiveUp);
        assert_eq!(
            decide(&cfg(), 1, 48 * 3_600_000, 0.5, None),
            Decision::GiveUp
        );
    }
}
