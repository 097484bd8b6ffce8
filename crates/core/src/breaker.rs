//! Circuit breakers per provider endpoint: after consecutive transient
//! failures an endpoint is left alone for a cool-down, then one probe
//! decides whether it is back.
//!
//! While a breaker is open, messages for its endpoint are not sent: the
//! dispatcher puts them back through a delay queue without spending one of
//! their retries, so an outage longer than the retry schedule loses nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::channel::{ChannelKind, Notification};
use crate::recipient::Recipient;

/// Whether a send to an endpoint may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The endpoint is healthy.
    Allowed,
    /// The cool-down is over: this send is the one probe.
    Probe,
    /// Open: try again after this long.
    Rejected { retry_in: Duration },
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    /// A probe is out; everything else waits for its outcome.
    HalfOpen { since: Instant },
}

/// The breakers of every endpoint seen.
#[derive(Debug)]
pub struct CircuitBreakers {
    states: Mutex<HashMap<String, State>>,
    threshold: u32,
    cooldown: Duration,
}

impl CircuitBreakers {
    /// `threshold` consecutive transient failures open a breaker for
    /// `cooldown`; a threshold of 0 disables the breakers.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreakers { states: Mutex::new(HashMap::new()), threshold, cooldown }
    }

    /// Decides whether a send to `endpoint` may go ahead now.
    pub fn admit(&self, endpoint: &str, now: Instant) -> Admission {
        if self.threshold == 0 {
            return Admission::Allowed;
        }
        let mut states = self.lock();
        let state = states.entry(endpoint.to_owned()).or_insert(State::Closed { failures: 0 });
        match *state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now < until => Admission::Rejected { retry_in: until - now },
            State::Open { .. } => {
                *state = State::HalfOpen { since: now };
                Admission::Probe
            }
            // A probe that never reported back (its task died) must not keep
            // the endpoint closed off forever.
            State::HalfOpen { since } if now.duration_since(since) >= self.cooldown => {
                *state = State::HalfOpen { since: now };
                Admission::Probe
            }
            State::HalfOpen { .. } => Admission::Rejected { retry_in: self.cooldown },
        }
    }

    /// Records that the endpoint responded (a success or a permanent rejection).
    pub fn record_answer(&self, endpoint: &str) {
        if self.threshold == 0 {
            return;
        }
        self.lock().insert(endpoint.to_owned(), State::Closed { failures: 0 });
    }

    /// Records a transient failure; returns true when it opened the breaker.
    pub fn record_failure(&self, endpoint: &str, now: Instant) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut states = self.lock();
        let state = states.entry(endpoint.to_owned()).or_insert(State::Closed { failures: 0 });
        let failures = match *state {
            State::Closed { failures } => failures + 1,
            State::HalfOpen { .. } | State::Open { .. } => self.threshold,
        };
        if failures >= self.threshold {
            let was_open = matches!(*state, State::Open { .. });
            *state = State::Open { until: now + self.cooldown };
            !was_open
        } else {
            *state = State::Closed { failures };
            false
        }
    }

    /// Number of endpoints whose breaker is open or probing.
    pub fn open_count(&self) -> usize {
        self.lock().values().filter(|state| !matches!(state, State::Closed { .. })).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        // Every update is a single insert, so a poisoned map is still consistent.
        self.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The endpoint a notification goes to, as far as breakers are concerned:
/// the receiver's scheme, host and port for webhooks, whose endpoints differ
/// per tenant, and the channel's provider otherwise.
pub fn endpoint_of(notification: &Notification) -> String {
    match &notification.recipient {
        Recipient::Webhook { url } => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("webhook:{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase())
        }
        _ => notification.channel.as_str().to_owned(),
    }
}

/// Returns the channel an endpoint key belongs to.
pub fn channel_of(endpoint: &str) -> Option<ChannelKind> {
    endpoint.split(':').next().and_then(|name| name.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOLDOWN: Duration = Duration::from_secs(10);

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let breakers = CircuitBreakers::new(3, COOLDOWN);
        let now = Instant::now();
        assert!(!breakers.record_failure("sms", now));
        assert!(!breakers.record_failure("sms", now));
        assert_eq!(breakers.admit("sms", now), Admission::Allowed);
        assert!(breakers.record_failure("sms", now), "the third failure opens it");
        assert_eq!(breakers.admit("sms", now + Duration::from_secs(4)), Admission::Rejected { retry_in: Duration::from_secs(6) });
        assert_eq!(breakers.open_count(), 1);
    }

    #[test]
    fn response_resets_failure_count() {
        let breakers = CircuitBreakers::new(2, COOLDOWN);
        let now = Instant::now();
        breakers.record_failure("sms", now);
        breakers.record_answer("sms");
        assert!(!breakers.record_failure("sms", now), "failures must be consecutive");
    }

    #[test]
    fn one_probe_after_cooldown_then_closed_on_answer() {
        let breakers = CircuitBreakers::new(1, COOLDOWN);
        let start = Instant::now();
        breakers.record_failure("sms", start);
        let later = start + COOLDOWN;
        assert_eq!(breakers.admit("sms", later), Admission::Probe);
        assert!(matches!(breakers.admit("sms", later), Admission::Rejected { .. }), "only one probe at a time");
        breakers.record_answer("sms");
        assert_eq!(breakers.admit("sms", later), Admission::Allowed);
        assert_eq!(breakers.open_count(), 0);
    }

    #[test]
    fn failed_probe_opens_again() {
        let breakers = CircuitBreakers::new(2, COOLDOWN);
        let start = Instant::now();
        breakers.record_failure("sms", start);
        breakers.record_failure("sms", start);
        let later = start + COOLDOWN;
        assert_eq!(breakers.admit("sms", later), Admission::Probe);
        breakers.record_failure("sms", later);
        assert!(matches!(breakers.admit("sms", later + Duration::from_secs(1)), Admission::Rejected { .. }));
    }

    #[test]
    fn lost_probe_is_replaced_after_cooldown() {
        let breakers = CircuitBreakers::new(1, COOLDOWN);
        let start = Instant::now();
        breakers.record_failure("sms", start);
        assert_eq!(breakers.admit("sms", start + COOLDOWN), Admission::Probe);
        assert_eq!(breakers.admit("sms", start + COOLDOWN * 2), Admission::Probe);
    }

    #[test]
    fn endpoints_are_independent_and_zero_disables() {
        let breakers = CircuitBreakers::new(1, COOLDOWN);
        let now = Instant::now();
        breakers.record_failure("webhook:https://a.example", now);
        assert_eq!(breakers.admit("webhook:https://b.example", now), Admission::Allowed);
        let disabled = CircuitBreakers::new(0, COOLDOWN);
        disabled.record_failure("sms", now);
        assert_eq!(disabled.admit("sms", now), Admission::Allowed);
    }

    #[test]
    fn webhook_endpoint_is_scheme_and_host() {
        let notification = Notification {
            notification_id: uuid::Uuid::nil(),
            tenant_id: uuid::Uuid::nil(),
            channel: ChannelKind::Webhook,
            template: "t".into(),
            locale: "en".into(),
            recipient: Recipient::Webhook { url: "HTTPS://user:pw@Hooks.Example.com:8443/a/b?token=x".into() },
            content: crate::Content::Sms { body: String::new() },
            attempt: 1,
        };
        assert_eq!(endpoint_of(&notification), "webhook:https://hooks.example.com:8443");
        assert_eq!(channel_of(&endpoint_of(&notification)), Some(ChannelKind::Webhook));
    }
}
