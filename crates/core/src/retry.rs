//! The retry schedule: how long a failed attempt waits, and which delay tier
//! queue holds it meanwhile.
//!
//! Retries travel through the broker, never through in-process sleeps: a
//! message waits in a tier queue whose TTL dead-letters it back to its
//! channel queue. Each message carries its own jittered expiration, at most
//! its tier's TTL. RabbitMQ expires messages only from the head of a queue, so
//! a message can wait behind a longer one in the same tier; the extra wait is
//! at most the gap between its tier and the tier below, and never shortens a
//! provider's Retry-After.

use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

/// Retry settings, as configured under `[retry]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// `x-max-retries` for messages that do not set it.
    pub default_max_retries: u32,
    /// Delay before the first retry, in milliseconds.
    pub base_delay_ms: u64,
    /// Each further retry waits this many times longer than the one before.
    pub multiplier: f64,
    /// Longest computed delay, in milliseconds, before jitter.
    pub max_delay_ms: u64,
    /// Relative spread of each delay: 0.2 draws from 80% to 120%.
    pub jitter: f64,
    /// TTLs of the delay tier queues, in milliseconds, ascending.
    pub tiers_ms: Vec<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            default_max_retries: 3,
            base_delay_ms: 5_000,
            multiplier: 6.0,
            max_delay_ms: 3_600_000,
            jitter: 0.2,
            tiers_ms: vec![1_000, 5_000, 30_000, 120_000, 600_000, 3_600_000],
        }
    }
}

/// An invalid `[retry]` setting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid retry.{key}: {reason}")]
pub struct RetryConfigError {
    pub key: &'static str,
    pub reason: String,
}

/// The wait of a retried message: its own expiration and its tier queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDelay {
    /// The message's own expiration.
    pub delay: Duration,
    /// TTL of the tier queue it waits in; at least `delay`.
    pub tier: Duration,
}

/// The validated retry schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    base: Duration,
    multiplier: f64,
    max_delay: Duration,
    jitter: f64,
    tiers: Vec<Duration>,
}

impl RetryPolicy {
    /// Builds a policy from configuration.
    ///
    /// # Errors
    ///
    /// Returns [`RetryConfigError`] naming the first invalid key.
    pub fn from_config(config: &RetryConfig) -> Result<RetryPolicy, RetryConfigError> {
        let invalid = |key, reason: &str| Err(RetryConfigError { key, reason: reason.to_owned() });
        if config.tiers_ms.is_empty() {
            return invalid("tiers_ms", "at least one tier is required");
        }
        if config.tiers_ms.windows(2).any(|pair| pair[0] >= pair[1]) || config.tiers_ms[0] == 0 {
            return invalid("tiers_ms", "tiers must be positive and strictly ascending");
        }
        if config.base_delay_ms == 0 {
            return invalid("base_delay_ms", "must be positive");
        }
        if !(config.multiplier >= 1.0 && config.multiplier.is_finite()) {
            return invalid("multiplier", "must be at least 1.0");
        }
        if !(0.0..1.0).contains(&config.jitter) {
            return invalid("jitter", "must be at least 0.0 and below 1.0");
        }
        if config.max_delay_ms < config.base_delay_ms {
            return invalid("max_delay_ms", "must be at least base_delay_ms");
        }
        Ok(RetryPolicy {
            base: Duration::from_millis(config.base_delay_ms),
            multiplier: config.multiplier,
            max_delay: Duration::from_millis(config.max_delay_ms),
            jitter: config.jitter,
            tiers: config.tiers_ms.iter().copied().map(Duration::from_millis).collect(),
        })
    }

    /// Returns the tier queue TTLs, ascending.
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// Computes the wait before retry number `retry` (1 for the first retry), never
    /// shorter than the provider's `retry_after`.
    ///
    /// A wait longer than the longest tier is cut to that tier.
    pub fn delay_for(&self, retry: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> RetryDelay {
        let exponent = retry.saturating_sub(1).min(64) as i32;
        let backoff = self.base.as_secs_f64() * self.multiplier.powi(exponent);
        let backoff = backoff.min(self.max_delay.as_secs_f64());
        let spread = if self.jitter > 0.0 { rng.random_range(-self.jitter..=self.jitter) } else { 0.0 };
        let jittered = Duration::from_secs_f64(backoff * (1.0 + spread));

        let longest = self.tiers[self.tiers.len() - 1];
        let delay = jittered.max(retry_after.unwrap_or_default()).min(longest);
        let tier = self.tiers.iter().copied().find(|tier| *tier >= delay).unwrap_or(longest);
        RetryDelay { delay: delay.max(Duration::from_millis(1)), tier }
    }
}

impl RetryPolicy {
    /// Chooses where a message waits `delay`: the smallest tier at least that
    /// long, or the longest tier when none is.
    pub fn tier_for(&self, delay: Duration) -> RetryDelay {
        let longest = self.tiers[self.tiers.len() - 1];
        let delay = delay.clamp(Duration::from_millis(1), longest);
        let tier = self.tiers.iter().copied().find(|tier| *tier >= delay).unwrap_or(longest);
        RetryDelay { delay, tier }
    }
}

/// Formats a tier for its queue name: `500ms`, `30s`, `2m`, `1h`.
pub fn tier_label(tier: Duration) -> String {
    let ms = tier.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy::from_config(&RetryConfig { jitter, ..RetryConfig::default() }).unwrap()
    }

    #[test]
    fn delays_grow_exponentially_without_jitter() {
        let policy = policy(0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<Duration> = (1..=3).map(|n| policy.delay_for(n, None, &mut rng).delay).collect();
        assert_eq!(delays, [Duration::from_secs(5), Duration::from_secs(30), Duration::from_secs(180)]);
    }

    #[test]
    fn delay_waits_in_smallest_tier_that_holds_it() {
        let policy = policy(0.0);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(policy.delay_for(1, None, &mut rng).tier, Duration::from_secs(5));
        assert_eq!(policy.delay_for(3, None, &mut rng).tier, Duration::from_secs(600));
    }

    #[test]
    fn jitter_stays_within_its_spread() {
        let policy = policy(0.2);
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let delay = policy.delay_for(2, None, &mut rng);
            assert!(delay.delay >= Duration::from_secs(24), "{delay:?}");
            assert!(delay.delay <= Duration::from_secs(36), "{delay:?}");
            assert!(delay.tier >= delay.delay);
            seen.insert(delay.delay.as_millis());
        }
        assert!(seen.len() > 50, "jitter must spread delays, saw {} values", seen.len());
    }

    #[test]
    fn retry_after_is_a_floor() {
        let policy = policy(0.2);
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let delay = policy.delay_for(1, Some(Duration::from_secs(30)), &mut rng);
            assert!(delay.delay >= Duration::from_secs(30), "{delay:?}");
            assert_eq!(delay.tier, Duration::from_secs(30).max(delay.tier));
        }
    }

    #[test]
    fn delay_beyond_longest_tier_is_capped() {
        let policy = policy(0.0);
        let mut rng = StdRng::seed_from_u64(3);
        let delay = policy.delay_for(1, Some(Duration::from_secs(86_400)), &mut rng);
        assert_eq!(delay.delay, Duration::from_secs(3_600));
        assert_eq!(delay.tier, Duration::from_secs(3_600));
    }

    #[test]
    fn huge_retry_numbers_do_not_overflow() {
        let policy = policy(0.2);
        let mut rng = StdRng::seed_from_u64(3);
        let delay = policy.delay_for(u32::MAX, None, &mut rng);
        assert!(delay.delay <= Duration::from_secs(3_600));
    }

    #[test]
    fn invalid_tiers_are_rejected() {
        let config = RetryConfig { tiers_ms: vec![5_000, 1_000], ..RetryConfig::default() };
        assert_eq!(RetryPolicy::from_config(&config).unwrap_err().key, "tiers_ms");
    }

    #[test]
    fn tier_labels_use_the_largest_whole_unit() {
        assert_eq!(tier_label(Duration::from_millis(500)), "500ms");
        assert_eq!(tier_label(Duration::from_secs(30)), "30s");
        assert_eq!(tier_label(Duration::from_secs(120)), "2m");
        assert_eq!(tier_label(Duration::from_secs(3_600)), "1h");
    }
}
