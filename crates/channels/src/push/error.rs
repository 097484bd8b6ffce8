//! Configuration errors of the push channel, and the parts of response
//! classification that FCM and APNs share.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use notify_core::{DeliveryError, FailureKind};
use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode, Version};

use crate::webhook::error::parse_retry_after;

/// Maximum number of response body bytes read. Success and error bodies of
/// FCM, APNs and the token endpoint are far smaller.
const BODY_READ_LIMIT: usize = 64 * 1024;
/// Maximum number of characters of a provider's error text quoted in a message.
const EXCERPT_CHARS: usize = 200;

/// Invalid push channel configuration, found by
/// [`PushChannel::new`](super::PushChannel::new). Messages name
/// configuration keys, files and environment variables, never key material.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(
        "`channels.push` configures no provider; add a `channels.push.fcm` or \
         `channels.push.apns` table, or set `channels.push.enabled = false`"
    )]
    NoProvider,

    #[error("invalid `{key}`: {reason}")]
    InvalidConfig { key: &'static str, reason: String },

    #[error("failed to read {path}, the file named by `{key}`")]
    ReadKeyFile {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("environment variable `{variable}`, named by `{key}`, is not set")]
    MissingKeyEnv { key: &'static str, variable: String },

    #[error("environment variable `{variable}`, named by `{key}`, is not valid Unicode")]
    NonUnicodeKeyEnv { key: &'static str, variable: String },

    /// The key text was read but is unusable. `source_name` names where it
    /// came from: a file path or an environment variable.
    #[error("invalid key in {source_name}, named by `{key}`: {reason}")]
    InvalidKey {
        key: &'static str,
        source_name: String,
        reason: String,
    },

    #[error("failed to build the {provider} HTTP client")]
    Client {
        provider: &'static str,
        #[source]
        source: reqwest::Error,
    },
}

/// A response read in full, up to [`BODY_READ_LIMIT`] bytes of body.
#[derive(Debug)]
pub(super) struct ReadResponse {
    pub status: StatusCode,
    pub version: Version,
    pub headers: reqwest::header::HeaderMap,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl ReadResponse {
    /// Reads status, headers and body. A body that fails halfway is kept
    /// as far as it was read, because the status decides the outcome.
    pub async fn read(mut response: Response) -> ReadResponse {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| parse_retry_after(value, Utc::now()));
        let status = response.status();
        let version = response.version();
        let headers = std::mem::take(response.headers_mut());

        let mut body = Vec::new();
        while body.len() < BODY_READ_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        body.truncate(BODY_READ_LIMIT);

        ReadResponse {
            status,
            version,
            headers,
            retry_after,
            body,
        }
    }

    /// Returns a transient error of `kind` that carries the provider's
    /// `Retry-After`, if any.
    pub fn transient(&self, kind: FailureKind, message: String) -> DeliveryError {
        let error = DeliveryError::transient(kind, message);
        match self.retry_after {
            Some(delay) => error.with_retry_after(delay),
            None => error,
        }
    }
}

/// Classifies a request that got no response. All such failures are
/// transient: a timeout, a refused or broken connection, a TLS failure.
///
/// `endpoint` names the service for the message, such as `FCM` or `the FCM
/// token endpoint`. The request URL is dropped from the error because the
/// APNs URL contains the device token.
pub(super) fn classify_transport_error(endpoint: &str, error: reqwest::Error, timeout: Duration) -> DeliveryError {
    crate::http::classify_transport_error(error, endpoint, timeout)
}

/// Returns a provider's error text as one line of at most [`EXCERPT_CHARS`]
/// characters, with every occurrence of `device_token` replaced by
/// `masked_token`.
pub(super) fn excerpt(text: &str, device_token: &str, masked_token: &str) -> String {
    let text = if device_token.is_empty() {
        text.to_owned()
    } else {
        text.replace(device_token, masked_token)
    };
    crate::http::one_line(&text, EXCERPT_CHARS)
}

/// Returns `value` if it is a plausible provider error code: ASCII letters,
/// digits and underscores, at most 64 characters. Codes end up in event
/// fields, so anything else from a provider is dropped.
pub(super) fn code_part(value: &str) -> Option<&str> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_masks_device_token() {
        let text = "token abcdef0123456789 is not registered";

        let line = excerpt(text, "abcdef0123456789", "***456789");

        assert_eq!(line, "token ***456789 is not registered");
    }

    #[test]
    fn excerpt_collapses_whitespace_and_truncates() {
        assert_eq!(excerpt("  a\r\n\tb  ", "", ""), "a b");

        let long = "y".repeat(500);
        let line = excerpt(&long, "", "");
        assert_eq!(line.chars().count(), EXCERPT_CHARS);
        assert!(line.ends_with('…'));
    }

    #[test]
    fn code_part_accepts_provider_codes_only() {
        assert_eq!(code_part("UNREGISTERED"), Some("UNREGISTERED"));
        assert_eq!(code_part("BadDeviceToken"), Some("BadDeviceToken"));
        assert_eq!(code_part(""), None);
        assert_eq!(code_part("bad code"), None);
        assert_eq!(code_part(&"A".repeat(65)), None);
    }

    #[test]
    fn config_errors_name_key() {
        let error = PushError::MissingKeyEnv {
            key: "channels.push.apns.key_env",
            variable: "APNS_KEY".to_owned(),
        };

        assert_eq!(
            error.to_string(),
            "environment variable `APNS_KEY`, named by `channels.push.apns.key_env`, is not set"
        );
    }
}
