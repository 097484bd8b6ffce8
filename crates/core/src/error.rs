//! Delivery errors as the dispatcher sees them: transient or permanent, with
//! a failure kind that names the cause in events and dead letters.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a notification failed, as named in `notification.failed.v1` events and
/// in the `x-failure-kind` header of dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The body is not a valid envelope, or a required header is missing or
    /// contradicts the body.
    InvalidMessage,
    /// The message's `channel` is not the channel of the queue it came from.
    ChannelMismatch,
    /// No template of that name exists for the channel.
    UnknownTemplate,
    /// The template needs a variable the message does not provide, or the
    /// rendered text cannot be sent as it is.
    InvalidContent,
    /// The recipient is malformed for the channel.
    InvalidRecipient,
    /// The recipient no longer exists (dead device token, deleted endpoint).
    RecipientGone,
    /// The message was past its `expires_at` before it could be delivered.
    Expired,
    /// The provider refused the notification and retrying cannot help.
    Rejected,
    /// The service lacks configuration it needs for this message (a signing
    /// secret, credentials); fix the configuration and replay the dead letter.
    Configuration,
    /// The provider is unreachable, overloaded or responded with a server error.
    Unavailable,
    /// The provider asked us to slow down.
    RateLimited,
    /// The provider did not respond in time.
    Timeout,
    /// Every allowed attempt failed with a transient error.
    RetriesExhausted,
    /// A bug in the service or a channel plugin, such as a panic; report it.
    Internal,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidMessage => "invalid_message",
            FailureKind::ChannelMismatch => "channel_mismatch",
            FailureKind::UnknownTemplate => "unknown_template",
            FailureKind::InvalidContent => "invalid_content",
            FailureKind::InvalidRecipient => "invalid_recipient",
            FailureKind::RecipientGone => "recipient_gone",
            FailureKind::Expired => "expired",
            FailureKind::Rejected => "rejected",
            FailureKind::Configuration => "configuration",
            FailureKind::Unavailable => "unavailable",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Timeout => "timeout",
            FailureKind::RetriesExhausted => "retries_exhausted",
            FailureKind::Internal => "internal",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether retrying a failed delivery can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryability {
    /// Retry later; `retry_after` is the provider's own minimum wait, if it gave one.
    Transient { retry_after: Option<Duration> },
    /// Do not retry: the same request will fail the same way.
    Permanent,
}

/// A failed delivery attempt, classified by the channel that made it.
///
/// Messages must not contain secrets or full recipient addresses: they end up
/// in events, dead-letter headers and logs.
#[derive(Debug)]
pub struct DeliveryError {
    retryability: Retryability,
    kind: FailureKind,
    code: Option<String>,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl DeliveryError {
    /// Creates a failure that may succeed on a later attempt.
    pub fn transient(kind: FailureKind, message: impl Into<String>) -> Self {
        DeliveryError::new(Retryability::Transient { retry_after: None }, kind, message)
    }

    /// A failure that will not succeed however often it is retried.
    pub fn permanent(kind: FailureKind, message: impl Into<String>) -> Self {
        DeliveryError::new(Retryability::Permanent, kind, message)
    }

    fn new(retryability: Retryability, kind: FailureKind, message: impl Into<String>) -> Self {
        DeliveryError {
            retryability,
            kind,
            code: None,
            message: message.into(),
            source: None,
        }
    }

    /// Sets the provider's minimum wait; only meaningful on transient errors.
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        if let Retryability::Transient { retry_after } = &mut self.retryability {
            *retry_after = Some(delay);
        }
        self
    }

    /// Sets the provider's own code for the failure, e.g. `http_503` or `smtp_550`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn retryability(&self) -> Retryability {
        self.retryability
    }

    pub fn is_transient(&self) -> bool {
        matches!(self.retryability, Retryability::Transient { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self.retryability {
            Retryability::Transient { retry_after } => retry_after,
            Retryability::Permanent => None,
        }
    }

    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for DeliveryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_applies_to_transient_errors_only() {
        let transient = DeliveryError::transient(FailureKind::RateLimited, "slow down")
            .with_retry_after(Duration::from_secs(30));
        assert_eq!(transient.retry_after(), Some(Duration::from_secs(30)));
        assert!(transient.is_transient());

        let permanent = DeliveryError::permanent(FailureKind::Rejected, "no")
            .with_retry_after(Duration::from_secs(30));
        assert_eq!(permanent.retry_after(), None);
        assert!(!permanent.is_transient());
    }

    #[test]
    fn failure_kind_serializes_as_its_name() {
        for kind in [FailureKind::InvalidMessage, FailureKind::RecipientGone, FailureKind::RetriesExhausted] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }
}
