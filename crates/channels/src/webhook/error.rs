//! Configuration errors of the webhook channel, and the classification of
//! failed requests into [`DeliveryError`]s.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use notify_core::{DeliveryError, FailureKind};
use reqwest::header::RETRY_AFTER;
use reqwest::{Response, StatusCode};
use uuid::Uuid;

use super::resolver::DestinationForbidden;
use super::signature::SecretFormatError;

/// Maximum `Retry-After` delay honoured. Longer delays are capped to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// Maximum number of response body bytes read for an error message.
const BODY_READ_LIMIT: usize = 1024;
/// Maximum number of characters of the response body quoted in an error message.
const BODY_EXCERPT_CHARS: usize = 200;

/// Invalid webhook channel configuration, found by
/// [`WebhookChannel::new`](super::WebhookChannel::new). Messages name keys
/// and environment variables, never secret values.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook signing secret in `{key}`: {reason}")]
    InvalidSecret {
        key: &'static str,
        reason: SecretFormatError,
    },

    #[error("invalid webhook signing secret of tenant {tenant} in environment variable `{variable}`: {reason}")]
    InvalidTenantSecret {
        tenant: Uuid,
        variable: String,
        reason: SecretFormatError,
    },

    #[error(
        "environment variable `{variable}` with the webhook signing secret of tenant {tenant} is not set; \
         set it or remove the tenant from `channels.webhook.tenant_secret_env`"
    )]
    MissingTenantSecretEnv { tenant: Uuid, variable: String },

    #[error("environment variable `{variable}` with the webhook signing secret of tenant {tenant} is not valid Unicode")]
    NonUnicodeTenantSecretEnv { tenant: Uuid, variable: String },

    #[error("key `{key}` of `channels.webhook.tenant_secret_env` is not a tenant UUID")]
    InvalidTenantId {
        key: String,
        #[source]
        source: uuid::Error,
    },

    #[error("`channels.webhook.tenant_secret_env` lists tenant {tenant} more than once")]
    DuplicateTenant { tenant: Uuid },

    #[error("`channels.webhook.timeout_secs` is 0; it must be at least 1")]
    ZeroTimeout,

    #[error("`channels.webhook.user_agent` is not a valid HTTP header value")]
    InvalidUserAgent,

    #[error("failed to build the webhook HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Classifies a response whose status is not 2xx.
///
/// Reads at most [`BODY_READ_LIMIT`] bytes of the body for the message.
/// `masked_url` is the receiver URL as [`notify_core::recipient::mask_url`]
/// returns it.
pub(super) async fn classify_failed_response(
    mut response: Response,
    masked_url: &str,
) -> DeliveryError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, Utc::now()));

    let mut body = Vec::new();
    while body.len() < BODY_READ_LIMIT {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            // An unreadable body only shortens the message, because the status decides the outcome.
            Ok(None) | Err(_) => break,
        }
    }

    classify_status(status, retry_after, &body_excerpt(&body), masked_url)
}

/// Maps a non-2xx status to a delivery error.
///
/// 408, 429 and 5xx are transient and keep `retry_after`. 3xx, 410 and other
/// 4xx are permanent, because the same request gets the same response.
fn classify_status(
    status: StatusCode,
    retry_after: Option<Duration>,
    excerpt: &str,
    masked_url: &str,
) -> DeliveryError {
    let code = format!("http_{}", status.as_u16());
    let response = if excerpt.is_empty() {
        format!("receiver {masked_url} responded {status}")
    } else {
        format!("receiver {masked_url} responded {status}: {excerpt}")
    };

    let transient = |kind: FailureKind| {
        let error = DeliveryError::transient(kind, response.clone()).with_code(code.clone());
        match retry_after {
            Some(delay) => error.with_retry_after(delay),
            None => error,
        }
    };

    match status {
        StatusCode::REQUEST_TIMEOUT => transient(FailureKind::Timeout),
        StatusCode::TOO_MANY_REQUESTS => transient(FailureKind::RateLimited),
        status if status.is_server_error() => transient(FailureKind::Unavailable),
        status if status.is_redirection() => DeliveryError::permanent(
            FailureKind::Rejected,
            format!(
                "receiver {masked_url} responded {status} (redirect); redirects are not followed, \
                 so the webhook URL must be the final address"
            ),
        )
        .with_code(code),
        StatusCode::GONE => {
            DeliveryError::permanent(FailureKind::RecipientGone, response).with_code(code)
        }
        status if status.is_client_error() => {
            DeliveryError::permanent(FailureKind::Rejected, response).with_code(code)
        }
        // A final 1xx status or a code above 599 comes from a broken receiver, which may recover.
        _ => transient(FailureKind::Unavailable),
    }
}

/// Returns the permanent error for a destination that the channel's address
/// policy rejects.
pub(super) fn destination_forbidden(
    masked_url: &str,
    forbidden: DestinationForbidden,
) -> DeliveryError {
    DeliveryError::permanent(
        FailureKind::InvalidRecipient,
        format!("webhook URL {masked_url} is forbidden: {forbidden}"),
    )
    .with_code("destination_forbidden")
    .with_source(forbidden)
}

/// Classifies a request that got no response. A host whose DNS answer
/// contains only forbidden addresses is permanent. A timeout, a failed
/// connection (refused, DNS, TLS) or a broken exchange is transient.
pub(super) fn classify_transport_error(
    error: reqwest::Error,
    masked_url: &str,
    timeout: Duration,
) -> DeliveryError {
    if let Some(forbidden) = find_destination_forbidden(&error) {
        return destination_forbidden(masked_url, forbidden.clone());
    }

    // The full URL may carry tokens in its path or query, so it must not
    // reach the error chain that ends up in events and logs.
    let error = error.without_url();
    let cause = root_cause(&error);

    if error.is_timeout() {
        DeliveryError::transient(
            FailureKind::Timeout,
            format!(
                "request to {masked_url} timed out after {} s",
                timeout.as_secs()
            ),
        )
        .with_code("timeout")
        .with_source(error)
    } else if error.is_connect() {
        DeliveryError::transient(
            FailureKind::Unavailable,
            format!("failed to connect to {masked_url}: {cause}"),
        )
        .with_code("connect_failed")
        .with_source(error)
    } else {
        DeliveryError::transient(
            FailureKind::Unavailable,
            format!("request to {masked_url} failed: {cause}"),
        )
        .with_code("request_failed")
        .with_source(error)
    }
}

/// Returns the [`DestinationForbidden`] that the webhook resolver raised, if
/// it is in the source chain of `error`.
fn find_destination_forbidden(error: &reqwest::Error) -> Option<&DestinationForbidden> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(forbidden) = current.downcast_ref::<DestinationForbidden>() {
            return Some(forbidden);
        }
        cause = current.source();
    }
    None
}

/// Returns the innermost error of the chain, which names the cause
/// (`Connection refused`, a DNS failure) without reqwest's wrapping.
fn root_cause(error: &reqwest::Error) -> String {
    crate::http::root_cause(error)
}

/// Parses a `Retry-After` value, which is either delay seconds or an
/// HTTP-date in IMF-fixdate, RFC 850 or asctime form.
///
/// Returns `None` for an invalid value, zero for a date in the past, and at
/// most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();

    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for u64 is still a valid, very long delay.
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let date = parse_http_date(value)?;
        (date - now).to_std().unwrap_or(Duration::ZERO)
    };

    Some(delay.min(MAX_RETRY_AFTER))
}

fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(date) = DateTime::parse_from_rfc2822(value) {
        return Some(date.with_timezone(&Utc));
    }
    // RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .into_iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|date| date.and_utc())
}

/// Returns the start of a response body as one line of at most
/// [`BODY_EXCERPT_CHARS`] characters, with runs of whitespace and control
/// characters collapsed to one space.
fn body_excerpt(body: &[u8]) -> String {
    crate::http::one_line(&String::from_utf8_lossy(body), BODY_EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn retry_after_seconds() {
        assert_eq!(
            parse_retry_after("30", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_imf_fixdate() {
        let delay = parse_retry_after("Fri, 01 Mar 2024 12:02:00 GMT", now());

        assert_eq!(delay, Some(Duration::from_secs(120)));
    }

    #[test]
    fn retry_after_obsolete_date_forms() {
        assert_eq!(
            parse_retry_after("Friday, 01-Mar-24 12:00:45 GMT", now()),
            Some(Duration::from_secs(45))
        );
        assert_eq!(
            parse_retry_after("Fri Mar  1 12:00:10 2024", now()),
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let delay = parse_retry_after("Fri, 01 Mar 2024 11:00:00 GMT", now());

        assert_eq!(delay, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_is_capped() {
        assert_eq!(parse_retry_after("86400", now()), Some(MAX_RETRY_AFTER));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(
            parse_retry_after("Sat, 02 Mar 2024 12:00:00 GMT", now()),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_invalid_is_ignored() {
        for value in ["", "-5", "1.5", "soon", "Fri, 32 Mar 2024 12:00:00 GMT"] {
            assert_eq!(parse_retry_after(value, now()), None, "{value:?}");
        }
    }

    #[test]
    fn excerpt_collapses_whitespace_and_truncates() {
        assert_eq!(
            body_excerpt(b"  <h1>Bad\r\n\tRequest</h1>\n"),
            "<h1>Bad Request</h1>"
        );

        let long = "x".repeat(500);
        let excerpt = body_excerpt(long.as_bytes());
        assert_eq!(excerpt.chars().count(), BODY_EXCERPT_CHARS);
        assert!(excerpt.ends_with('…'));
    }

    #[test]
    fn status_classes() {
        let cases = [
            (408, true, FailureKind::Timeout),
            (429, true, FailureKind::RateLimited),
            (500, true, FailureKind::Unavailable),
            (503, true, FailureKind::Unavailable),
            (301, false, FailureKind::Rejected),
            (400, false, FailureKind::Rejected),
            (401, false, FailureKind::Rejected),
            (404, false, FailureKind::Rejected),
            (410, false, FailureKind::RecipientGone),
        ];

        for (code, transient, kind) in cases {
            let status = StatusCode::from_u16(code).unwrap();
            let error = classify_status(status, None, "", "https://hooks.example.com/***");
            assert_eq!(error.is_transient(), transient, "{code}");
            assert_eq!(error.kind(), kind, "{code}");
            assert_eq!(
                error.code(),
                Some(format!("http_{code}").as_str()),
                "{code}"
            );
        }
    }

    #[test]
    fn status_message_has_status_and_excerpt() {
        let error = classify_status(
            StatusCode::BAD_REQUEST,
            None,
            "missing field order",
            "https://hooks.example.com/***",
        );

        assert_eq!(
            error.message(),
            "receiver https://hooks.example.com/*** responded 400 Bad Request: missing field order"
        );
    }

    #[test]
    fn retry_after_kept_on_transient_status_only() {
        let delay = Some(Duration::from_secs(30));

        let unavailable =
            classify_status(StatusCode::SERVICE_UNAVAILABLE, delay, "", "https://h/***");
        let rejected = classify_status(StatusCode::BAD_REQUEST, delay, "", "https://h/***");

        assert_eq!(unavailable.retry_after(), delay);
        assert_eq!(rejected.retry_after(), None);
    }

    #[test]
    fn secret_errors_name_key_not_value() {
        let error = WebhookError::InvalidSecret {
            key: "channels.webhook.signing_secret",
            reason: SecretFormatError::InvalidBase64,
        };

        assert_eq!(
            error.to_string(),
            "invalid webhook signing secret in `channels.webhook.signing_secret`: \
             the part after `whsec_` is not valid padded base64"
        );
    }
}
