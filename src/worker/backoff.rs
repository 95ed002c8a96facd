//! When a failed row is tried again: exponential backoff with full jitter, capped, and a longer
//! `Retry-After` wins. The schedule is stored in the row, so a restart loses none of it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::config::RetryConfig;
use crate::store::chrono_duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl From<&RetryConfig> for RetryPolicy {
    fn from(config: &RetryConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            base_delay: config.base_delay,
            max_delay: config.max_delay,
        }
    }
}

impl RetryPolicy {
    /// Whether a row that has now been charged `attempts` attempts has no more left.
    pub fn exhausted(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }

    /// The ceiling of the wait after `attempts` charged attempts: base × 2^(attempts-1), capped.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.base_delay
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max_delay)
    }

    /// When to try again: a uniformly random wait up to the ceiling ("full jitter"), or the
    /// server's `Retry-After` if that is longer.
    pub fn next_attempt_at(
        &self,
        now: DateTime<Utc>,
        attempts: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> DateTime<Utc> {
        let ceiling = self.ceiling(attempts);
        let jittered = Duration::from_secs_f64(rng.gen_range(0.0..=ceiling.as_secs_f64()));
        now + chrono_duration(jittered.max(retry_after.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_ceiling_doubles_and_is_capped() {
        let p = policy();
        let ceilings: Vec<u64> = (1..=8).map(|n| p.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(p.ceiling(10_000), Duration::from_secs(60));
    }

    #[test]
    fn waits_stay_within_the_ceiling_and_a_longer_retry_after_wins() {
        let (p, now, mut rng) = (policy(), Utc::now(), StdRng::seed_from_u64(7));
        for attempts in 1..10 {
            let at = p.next_attempt_at(now, attempts, None, &mut rng);
            assert!(at >= now && at <= now + chrono_duration(p.ceiling(attempts)));
        }
        let at = p.next_attempt_at(now, 1, Some(Duration::from_secs(300)), &mut rng);
        assert_eq!(at, now + chrono::Duration::seconds(300));
    }

    #[test]
    fn attempts_run_out_at_the_maximum() {
        assert!(!policy().exhausted(4));
        assert!(policy().exhausted(5));
    }
}
