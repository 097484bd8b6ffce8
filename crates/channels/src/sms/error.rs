//! Configuration errors of the SMS channel, and the pieces of failure
//! classification that the Twilio and HTTP providers share.

use std::time::Duration;

use chrono::Utc;
use notify_core::recipient::mask_tail;
use notify_core::{DeliveryError, FailureKind};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::Response;
use uuid::Uuid;

use crate::webhook::error::parse_retry_after;

/// Maximum number of response body bytes read for an error message.
pub(super) const ERROR_BODY_LIMIT: usize = 4 * 1024;
/// Maximum number of response body bytes read from an accepted send.
pub(super) const SUCCESS_BODY_LIMIT: usize = 64 * 1024;
/// Maximum number of characters of provider text quoted in an error message.
const EXCERPT_CHARS: usize = 200;

/// Invalid SMS channel configuration, found by
/// [`SmsChannel::new`](super::SmsChannel::new). Messages name keys and
/// environment variables, never secret values.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    #[error("`channels.sms.providers` is empty; configure at least one SMS provider")]
    NoProviders,

    #[error("`{key}` is empty; list at least one provider for the tenant or remove the entry")]
    NoTenantProviders { key: String },

    #[error("`{key}` is missing; {hint}")]
    Missing { key: String, hint: &'static str },

    #[error("invalid `{key}`: {reason}")]
    Invalid { key: String, reason: String },

    #[error("`{first}` and `{second}` are both set; set only one of them")]
    Conflict { first: String, second: String },

    #[error("environment variable `{variable}` named by `{key}` is not set")]
    MissingEnv { key: String, variable: String },

    #[error("environment variable `{variable}` named by `{key}` is not valid Unicode")]
    NonUnicodeEnv { key: String, variable: String },

    #[error("key `{key}` of `channels.sms.tenant_providers` is not a tenant UUID")]
    InvalidTenantId {
        key: String,
        #[source]
        source: uuid::Error,
    },

    #[error("`channels.sms.tenant_providers` lists tenant {tenant} more than once")]
    DuplicateTenant { tenant: Uuid },

    #[error(
        "`{key}` has two providers named `{name}`; names must be unique within a list \
         because receipts and logs identify providers by name"
    )]
    DuplicateProviderName { key: String, name: String },

    #[error("failed to build the SMS HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Removes the recipient's number and the provider's secrets from text that
/// a provider sent back, before it goes into an error message.
///
/// NOTE: only the number's E.164 form and its digits without `+` are
/// replaced. A provider that formats the number another way (with spaces or
/// brackets) can still leak it through the quoted text.
#[derive(Debug)]
pub(super) struct Redactor<'a> {
    pub phone: &'a str,
    pub secrets: &'a [&'a str],
}

impl Redactor<'_> {
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in self.secrets.iter().filter(|secret| !secret.is_empty()) {
            text = text.replace(*secret, "<redacted>");
        }
        if self.phone.is_empty() {
            return text;
        }
        let masked = mask_tail(self.phone, 3);
        text = text.replace(self.phone, &masked);
        if let Some(digits) = self
            .phone
            .strip_prefix('+')
            .filter(|digits| !digits.is_empty())
        {
            text = text.replace(digits, &masked);
        }
        text
    }
}

/// Reads at most `limit` bytes of a response body. A body that breaks off
/// early is returned as far as it arrived, because the status decides the
/// outcome and the body only adds detail.
pub(super) async fn read_body(mut response: Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    body.truncate(limit);
    body
}

/// Returns the response's `Retry-After` delay, if it has a valid one.
pub(super) fn retry_after_of(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, Utc::now()))
}

/// Returns `text` as one line of at most [`EXCERPT_CHARS`] characters, with
/// runs of whitespace and control characters collapsed to one space.
pub(super) fn excerpt(text: &str) -> String {
    crate::http::one_line(text, EXCERPT_CHARS)
}

/// Builds a transient error and attaches the provider's retry-after, if any.
pub(super) fn transient(
    kind: FailureKind,
    message: String,
    code: String,
    retry_after: Option<Duration>,
) -> DeliveryError {
    let error = DeliveryError::transient(kind, message).with_code(code);
    match retry_after {
        Some(delay) => error.with_retry_after(delay),
        None => error,
    }
}

/// Classifies a request to SMS provider `provider` that got no response.
/// A timeout does not prove the provider did not accept the message, so a
/// retry or failover can deliver it twice.
pub(super) fn classify_transport_error(
    error: reqwest::Error,
    provider: &str,
    masked_url: &str,
    timeout: Duration,
) -> DeliveryError {
    crate::http::classify_transport_error(error, &format!("SMS provider `{provider}` at {masked_url}"), timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_masks_phone_in_both_forms() {
        let redactor = Redactor {
            phone: "+15005550001",
            secrets: &[],
        };

        let text = redactor.redact("The 'To' number +15005550001 (15005550001) is not valid");

        assert_eq!(text, "The 'To' number ***001 (***001) is not valid");
    }

    #[test]
    fn redactor_removes_secrets() {
        let redactor = Redactor {
            phone: "+15550100",
            secrets: &["gateway-token", ""],
        };

        let text = redactor.redact("bad header: Bearer gateway-token");

        assert_eq!(text, "bad header: Bearer <redacted>");
    }

    #[test]
    fn excerpt_collapses_whitespace_and_truncates() {
        assert_eq!(excerpt("  bad\r\n\trequest \n"), "bad request");

        let long = excerpt(&"x".repeat(500));

        assert_eq!(long.chars().count(), 200);
        assert!(long.ends_with('…'));
    }
}
