//! A dead letter as its failure headers and body describe it.

use chrono::{DateTime, Utc};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use notify_core::headers::{self, string_value};
use serde_json::Value;

/// Prefix of the routing keys of this service's dispatch queues. Only dead letters with such a key are replayed.
pub(super) const NOTIFY_ROUTING_KEY_PREFIX: &str = "notify.channel.";

/// Maximum length of a shown reason, in characters. Longer reasons are cut and end in `…`.
const REASON_MAX_CHARS: usize = 120;

/// The failure details of one dead letter, read from its headers and body.
/// Every field is optional because other services of the stack share the
/// queue and may set fewer headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct DeadLetter {
    pub original_routing_key: Option<String>,
    pub kind: Option<String>,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub failed_by: Option<String>,
    /// `x-failed-at` as written, which may not parse as RFC 3339.
    pub failed_at: Option<String>,
    /// `data.notification_id` of the body, when the body is such an envelope.
    pub notification_id: Option<String>,
}

impl DeadLetter {
    pub(super) fn read(properties: &BasicProperties, body: &[u8]) -> DeadLetter {
        let empty = FieldTable::default();
        let table = properties.headers().as_ref().unwrap_or(&empty);
        let header = |name: &str| table.inner().get(name).and_then(string_value);
        DeadLetter {
            original_routing_key: header(headers::ORIGINAL_ROUTING_KEY),
            kind: header(headers::FAILURE_KIND),
            code: header(headers::FAILURE_CODE),
            reason: header(headers::FAILURE_REASON),
            failed_by: header(headers::FAILED_BY),
            failed_at: header(headers::FAILED_AT),
            notification_id: notification_id(body),
        }
    }

    /// Returns whether this service dead-lettered the message from one of its queues.
    pub(super) fn is_from_notify(&self) -> bool {
        self.original_routing_key.as_deref().is_some_and(|key| key.starts_with(NOTIFY_ROUTING_KEY_PREFIX))
    }

    /// Returns the time since `x-failed-at`, e.g. `3h 5m`. Returns `-` without
    /// the header and `invalid` when it is not an RFC 3339 time.
    pub(super) fn age(&self, now: DateTime<Utc>) -> String {
        let Some(failed_at) = &self.failed_at else {
            return "-".to_owned();
        };
        match DateTime::parse_from_rfc3339(failed_at) {
            Ok(failed_at) => format_age(now.signed_duration_since(failed_at)),
            Err(_) => "invalid".to_owned(),
        }
    }

    /// Returns the first line of the reason, cut to [`REASON_MAX_CHARS`] characters.
    pub(super) fn short_reason(&self) -> String {
        let Some(reason) = &self.reason else {
            return "-".to_owned();
        };
        let first_line = reason.lines().next().unwrap_or("").trim_end();
        let more_lines = reason.trim_end().contains('\n');
        if first_line.chars().count() > REASON_MAX_CHARS {
            let cut: String = first_line.chars().take(REASON_MAX_CHARS - 1).collect();
            format!("{cut}…")
        } else if more_lines {
            format!("{first_line} …")
        } else {
            first_line.to_owned()
        }
    }

    /// Returns the failure kind and, when there is one, the provider code: `recipient_gone (http_410)`.
    pub(super) fn kind_and_code(&self) -> String {
        let kind = self.kind.as_deref().unwrap_or("-");
        match &self.code {
            Some(code) => format!("{kind} ({code})"),
            None => kind.to_owned(),
        }
    }
}

fn notification_id(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let id = value.get("data").and_then(|data| data.get("notification_id")).or_else(|| value.get("notification_id"))?;
    id.as_str().map(str::to_owned)
}

/// Formats a duration in its two largest units: `45s`, `12m 3s`, `3h 5m`, `2d 4h`.
/// A negative duration, from clocks that disagree, shows as `0s`.
pub(super) fn format_age(age: chrono::TimeDelta) -> String {
    let seconds = age.num_seconds().max(0);
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {}s", seconds % 60)
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use lapin::types::ShortString;

    use super::*;

    fn properties(pairs: &[(&str, &str)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (name, value) in pairs {
            table.insert(ShortString::from(*name), headers::text(*value));
        }
        BasicProperties::default().with_headers(table)
    }

    #[test]
    fn headers_and_notification_id_are_read() {
        let props = properties(&[
            (headers::ORIGINAL_ROUTING_KEY, "notify.channel.webhook"),
            (headers::FAILURE_KIND, "recipient_gone"),
            (headers::FAILURE_CODE, "http_410"),
            (headers::FAILED_BY, "notification-service"),
        ]);
        let letter = DeadLetter::read(&props, br#"{"data": {"notification_id": "n-1"}}"#);
        assert_eq!(letter.original_routing_key.as_deref(), Some("notify.channel.webhook"));
        assert_eq!(letter.kind_and_code(), "recipient_gone (http_410)");
        assert_eq!(letter.notification_id.as_deref(), Some("n-1"));
        assert!(letter.is_from_notify());
    }

    #[test]
    fn foreign_or_unreadable_letters_have_no_notify_fields() {
        let props = properties(&[(headers::ORIGINAL_ROUTING_KEY, "render.jobs")]);
        let letter = DeadLetter::read(&props, b"\xff not json");
        assert_eq!(letter.notification_id, None);
        assert!(!letter.is_from_notify());
        assert!(!DeadLetter::read(&BasicProperties::default(), b"{}").is_from_notify());
    }

    #[test]
    fn reason_is_cut_to_one_line() {
        let multi = DeadLetter { reason: Some("first line\nsecond line".to_owned()), ..DeadLetter::default() };
        assert_eq!(multi.short_reason(), "first line …");
        let long = DeadLetter { reason: Some("x".repeat(500)), ..DeadLetter::default() };
        assert_eq!(long.short_reason().chars().count(), REASON_MAX_CHARS);
        assert!(long.short_reason().ends_with('…'));
        assert_eq!(DeadLetter::default().short_reason(), "-");
    }

    #[test]
    fn age_uses_the_two_largest_units() {
        assert_eq!(format_age(TimeDelta::seconds(45)), "45s");
        assert_eq!(format_age(TimeDelta::seconds(12 * 60 + 3)), "12m 3s");
        assert_eq!(format_age(TimeDelta::seconds(3 * 3_600 + 5 * 60 + 9)), "3h 5m");
        assert_eq!(format_age(TimeDelta::seconds(2 * 86_400 + 4 * 3_600)), "2d 4h");
        assert_eq!(format_age(TimeDelta::seconds(-30)), "0s");
    }

    #[test]
    fn age_of_missing_or_invalid_time() {
        let now = Utc::now();
        assert_eq!(DeadLetter::default().age(now), "-");
        let invalid = DeadLetter { failed_at: Some("yesterday".to_owned()), ..DeadLetter::default() };
        assert_eq!(invalid.age(now), "invalid");
        let minute_ago = DeadLetter { failed_at: Some((now - TimeDelta::seconds(61)).to_rfc3339()), ..DeadLetter::default() };
        assert_eq!(minute_ago.age(now), "1m 1s");
    }
}
