//! Per-provider rate limits: at most `per_second` sends to one endpoint (a
//! channel's provider, or one webhook host), with bursts of up to `burst`.
//!
//! A send that would exceed the limit waits in its slot when the wait is
//! short, and otherwise goes back through a delay queue without counting an
//! attempt, so that one throttled endpoint cannot hold every slot of its
//! queue. Limits hold per service instance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::channel::ChannelKind;

/// The `[rate_limits]` section: one optional limit per channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// Maximum time a send waits for the limit in its slot, in
    /// milliseconds. Longer waits go through a delay queue.
    pub max_wait_ms: u64,
    pub email: Option<RateLimit>,
    pub sms: Option<RateLimit>,
    pub telegram: Option<RateLimit>,
    pub push: Option<RateLimit>,
    /// Applies to each webhook host separately.
    pub webhook: Option<RateLimit>,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig { max_wait_ms: 1_000, email: None, sms: None, telegram: None, push: None, webhook: None }
    }
}

impl RateLimitsConfig {
    fn limit(&self, channel: ChannelKind) -> Option<&RateLimit> {
        match channel {
            ChannelKind::Email => self.email.as_ref(),
            ChannelKind::Sms => self.sms.as_ref(),
            ChannelKind::Telegram => self.telegram.as_ref(),
            ChannelKind::Push => self.push.as_ref(),
            ChannelKind::Webhook => self.webhook.as_ref(),
        }
    }

    /// Checks every limit.
    ///
    /// # Errors
    ///
    /// Names the first limit that cannot work.
    pub fn validate(&self) -> Result<(), RateLimitError> {
        for channel in ChannelKind::ALL {
            if let Some(limit) = self.limit(channel) {
                if !(limit.per_second.is_finite() && limit.per_second > 0.0) {
                    return Err(RateLimitError { channel, problem: "per_second must be a positive number" });
                }
                if limit.burst == 0 {
                    return Err(RateLimitError { channel, problem: "burst must be at least 1" });
                }
            }
        }
        Ok(())
    }
}

/// One channel's limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained sends per second.
    pub per_second: f64,
    /// Sends allowed at once after a quiet period.
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

/// A limit that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("rate_limits.{channel}: {problem}")]
pub struct RateLimitError {
    channel: ChannelKind,
    problem: &'static str,
}

/// The result of [`RateLimiter::reserve`] for one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Send after waiting this long; the slot is reserved.
    After(Duration),
    /// The wait would exceed the maximum; nothing is reserved.
    TooLong(Duration),
}

/// The limits and the state of every endpoint seen.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitsConfig,
    max_wait: Duration,
    /// Per endpoint, the earliest time the next send could start if no
    /// burst were allowed (the generic cell rate algorithm's "theoretical
    /// arrival time").
    next: Mutex<HashMap<String, Instant>>,
}

/// Endpoints remembered before idle ones are forgotten.
const PRUNE_ABOVE: usize = 1_024;

impl RateLimiter {
    pub fn new(config: RateLimitsConfig) -> RateLimiter {
        RateLimiter { max_wait: Duration::from_millis(config.max_wait_ms), config, next: Mutex::new(HashMap::new()) }
    }

    /// Reserves a send to `endpoint` of `channel` at `now`, or returns how
    /// long it would have to wait.
    pub fn reserve(&self, channel: ChannelKind, endpoint: &str, now: Instant) -> Permit {
        let Some(limit) = self.config.limit(channel) else {
            return Permit::After(Duration::ZERO);
        };
        let interval = Duration::from_secs_f64(1.0 / limit.per_second);
        let tolerance = interval.saturating_mul(limit.burst.saturating_sub(1));

        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let arrival = next.get(endpoint).copied().unwrap_or(now).max(now);
        let wait = arrival.checked_sub(tolerance).map_or(Duration::ZERO, |start| start.saturating_duration_since(now));
        if wait > self.max_wait {
            return Permit::TooLong(wait);
        }
        if next.len() >= PRUNE_ABOVE && !next.contains_key(endpoint) {
            next.retain(|_, at| *at > now);
        }
        next.insert(endpoint.to_owned(), arrival + interval);
        Permit::After(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: f64, burst: u32, max_wait_ms: u64) -> RateLimiter {
        RateLimiter::new(RateLimitsConfig {
            max_wait_ms,
            sms: Some(RateLimit { per_second, burst }),
            webhook: Some(RateLimit { per_second, burst }),
            ..RateLimitsConfig::default()
        })
    }

    fn waits(limiter: &RateLimiter, endpoint: &str, now: Instant, count: usize) -> Vec<Duration> {
        (0..count)
            .map(|_| match limiter.reserve(ChannelKind::Sms, endpoint, now) {
                Permit::After(wait) => wait,
                Permit::TooLong(wait) => panic!("unexpected refusal, wait {wait:?}"),
            })
            .collect()
    }

    #[test]
    fn sends_are_spaced_by_the_interval() {
        let limiter = limiter(10.0, 1, 10_000);
        let now = Instant::now();
        let expected: Vec<Duration> = (0..4).map(|i| Duration::from_millis(100 * i)).collect();
        assert_eq!(waits(&limiter, "sms", now, 4), expected);
    }

    #[test]
    fn burst_then_steady_rate() {
        let limiter = limiter(10.0, 3, 10_000);
        let now = Instant::now();
        let got = waits(&limiter, "sms", now, 5);
        let expected: Vec<Duration> = [0, 0, 0, 100, 200].into_iter().map(Duration::from_millis).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn idle_endpoint_regains_burst() {
        let limiter = limiter(10.0, 2, 10_000);
        let start = Instant::now();
        waits(&limiter, "sms", start, 4);
        let later = start + Duration::from_secs(5);
        assert_eq!(waits(&limiter, "sms", later, 2), vec![Duration::ZERO, Duration::ZERO]);
    }

    #[test]
    fn refused_wait_reserves_nothing() {
        let limiter = limiter(2.0, 1, 400);
        let now = Instant::now();
        assert_eq!(limiter.reserve(ChannelKind::Sms, "sms", now), Permit::After(Duration::ZERO));
        assert_eq!(limiter.reserve(ChannelKind::Sms, "sms", now), Permit::TooLong(Duration::from_millis(500)));
        let later = now + Duration::from_millis(500);
        assert_eq!(limiter.reserve(ChannelKind::Sms, "sms", later), Permit::After(Duration::ZERO), "the refusal took no slot");
    }

    #[test]
    fn endpoints_and_unlimited_channels_are_independent() {
        let limiter = limiter(1.0, 1, 10_000);
        let now = Instant::now();
        limiter.reserve(ChannelKind::Webhook, "webhook:https://a.example", now);
        assert_eq!(limiter.reserve(ChannelKind::Webhook, "webhook:https://b.example", now), Permit::After(Duration::ZERO));
        for _ in 0..3 {
            assert_eq!(limiter.reserve(ChannelKind::Email, "email", now), Permit::After(Duration::ZERO));
        }
    }

    #[test]
    fn idle_endpoints_are_forgotten() {
        let limiter = limiter(1_000.0, 1, 10_000);
        let now = Instant::now();
        for host in 0..PRUNE_ABOVE {
            limiter.reserve(ChannelKind::Webhook, &format!("webhook:https://{host}.example"), now);
        }
        let later = now + Duration::from_secs(1);
        limiter.reserve(ChannelKind::Webhook, "webhook:https://new.example", later);
        assert_eq!(limiter.next.lock().unwrap().len(), 1);
    }

    #[test]
    fn invalid_limits_are_rejected() {
        for (per_second, burst) in [(0.0, 1), (-1.0, 1), (f64::NAN, 1), (1.0, 0)] {
            let config = RateLimitsConfig { sms: Some(RateLimit { per_second, burst }), ..RateLimitsConfig::default() };
            let error = config.validate().unwrap_err();
            assert!(error.to_string().starts_with("rate_limits.sms:"), "{error}");
        }
    }
}
