//! The configured providers and failover between them within one send.
//!
//! Providers are tried in their configured order. A transient failure moves
//! on to the next provider, a permanent one ends the send, because a number
//! or body that one provider rejects for good is no better at the next.

use std::time::Duration;

use notify_core::{DeliveryError, FailureKind};
use uuid::Uuid;

use super::generic::HttpProvider;
use super::twilio::TwilioProvider;

/// One message as the providers send it, after validation.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutgoingSms<'a> {
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    /// E.164 number of the recipient.
    pub to: &'a str,
    pub body: &'a str,
}

/// A provider's acceptance of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Accepted {
    /// The provider's id for the message, when its response has one.
    pub message_id: Option<String>,
    /// HTTP status of the provider's response.
    pub status: u16,
}

/// A provider of any supported type.
#[derive(Debug)]
pub(super) enum Provider {
    Twilio(TwilioProvider),
    Http(HttpProvider),
}

impl Provider {
    pub(super) fn name(&self) -> &str {
        match self {
            Provider::Twilio(provider) => provider.name(),
            Provider::Http(provider) => provider.name(),
        }
    }

    async fn send(&self, sms: &OutgoingSms<'_>) -> Result<Accepted, DeliveryError> {
        match self {
            Provider::Twilio(provider) => provider.send(sms).await,
            Provider::Http(provider) => provider.send(sms).await,
        }
    }
}

/// A message delivered by one of the providers.
#[derive(Debug)]
pub(super) struct Delivery<'p> {
    pub provider: &'p Provider,
    pub accepted: Accepted,
    /// Providers tried, counting the one that accepted.
    pub attempts: usize,
}

/// Sends `sms` through the first provider of `providers` that accepts it.
///
/// # Errors
///
/// Returns the first permanent error as it is. When every provider fails
/// transiently, returns the only error for a single provider, or else
/// a transient error that lists every failure (see [`combine`]).
pub(super) async fn send<'p>(
    providers: &'p [Provider],
    sms: &OutgoingSms<'_>,
) -> Result<Delivery<'p>, DeliveryError> {
    let mut failures: Vec<DeliveryError> = Vec::new();

    for (index, provider) in providers.iter().enumerate() {
        match provider.send(sms).await {
            Ok(accepted) => {
                return Ok(Delivery {
                    provider,
                    accepted,
                    attempts: index + 1,
                })
            }
            Err(error) if error.is_transient() => {
                let next = providers.get(index + 1).map(Provider::name);
                tracing::warn!(
                    notification_id = %sms.notification_id,
                    tenant_id = %sms.tenant_id,
                    provider = %provider.name(),
                    next_provider = next.unwrap_or("none"),
                    error = %error,
                    code = error.code().unwrap_or(""),
                    "SMS provider failed transiently"
                );
                failures.push(error);
            }
            Err(error) => return Err(error),
        }
    }

    Err(combine(failures))
}

/// Builds one transient error from the transient failures of every provider.
///
/// The kind and code are those of the last provider tried. The retry-after is
/// the shortest one when every provider gave one, because the next attempt
/// may succeed at whichever provider is ready first, and none otherwise.
fn combine(mut failures: Vec<DeliveryError>) -> DeliveryError {
    let Some(last) = failures.pop() else {
        return DeliveryError::permanent(
            FailureKind::Configuration,
            "no SMS provider is configured for this tenant",
        )
        .with_code("no_provider");
    };
    if failures.is_empty() {
        return last;
    }

    let every_failure = || failures.iter().chain(std::iter::once(&last));
    let retry_after = every_failure()
        .map(DeliveryError::retry_after)
        .collect::<Option<Vec<Duration>>>()
        .and_then(|delays| delays.into_iter().min());
    let summary: Vec<&str> = every_failure().map(DeliveryError::message).collect();
    let message = format!(
        "all {} SMS providers failed transiently: {}",
        summary.len(),
        summary.join("; ")
    );

    let mut combined = DeliveryError::transient(last.kind(), message);
    if let Some(code) = last.code() {
        combined = combined.with_code(code.to_owned());
    }
    if let Some(delay) = retry_after {
        combined = combined.with_retry_after(delay);
    }
    combined.with_source(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: FailureKind, code: &str, retry_after: Option<u64>) -> DeliveryError {
        let error = DeliveryError::transient(kind, format!("SMS provider responded {code}"))
            .with_code(code);
        match retry_after {
            Some(seconds) => error.with_retry_after(Duration::from_secs(seconds)),
            None => error,
        }
    }

    #[test]
    fn single_failure_is_returned_as_is() {
        let error = combine(vec![failure(FailureKind::RateLimited, "http_429", Some(9))]);

        assert_eq!(error.kind(), FailureKind::RateLimited);
        assert_eq!(error.code(), Some("http_429"));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(9)));
        assert_eq!(error.message(), "SMS provider responded http_429");
    }

    #[test]
    fn combined_error_lists_every_failure() {
        let error = combine(vec![
            failure(FailureKind::Unavailable, "http_503", None),
            failure(FailureKind::RateLimited, "http_429", Some(30)),
        ]);

        assert!(error.is_transient());
        assert_eq!(error.kind(), FailureKind::RateLimited);
        assert_eq!(error.code(), Some("http_429"));
        assert!(
            error
                .message()
                .starts_with("all 2 SMS providers failed transiently"),
            "{error}"
        );
        assert!(error.message().contains("http_503"), "{error}");
        assert!(error.message().contains("http_429"), "{error}");
    }

    #[test]
    fn retry_after_needs_every_provider() {
        let without = combine(vec![
            failure(FailureKind::Unavailable, "http_503", None),
            failure(FailureKind::RateLimited, "http_429", Some(30)),
        ]);
        let with = combine(vec![
            failure(FailureKind::RateLimited, "http_429", Some(60)),
            failure(FailureKind::RateLimited, "http_429", Some(30)),
        ]);

        assert_eq!(without.retry_after(), None);
        assert_eq!(with.retry_after(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn empty_provider_list_is_configuration_error() {
        let error = combine(Vec::new());

        assert!(!error.is_transient());
        assert_eq!(error.kind(), FailureKind::Configuration);
    }
}
