//! What the HTTP-based channels share: the classification of a request that
//! got no response.

use std::time::Duration;

use notify_core::{DeliveryError, FailureKind};

/// Classifies a request that got no response: a timeout, a failed
/// connection (refused, DNS, TLS) or a broken exchange. All are transient.
///
/// `target` names what was called, as it may appear in events and logs
/// (for example `SMS provider `twilio` at https://api.twilio.com/***`).
pub(crate) fn classify_transport_error(error: reqwest::Error, target: &str, timeout: Duration) -> DeliveryError {
    // The full URL can carry tokens in its path or query, so it must not
    // reach the error chain that ends up in events and logs.
    let error = error.without_url();
    let cause = root_cause(&error);

    if error.is_timeout() {
        DeliveryError::transient(
            FailureKind::Timeout,
            format!("request to {target} timed out after {} s", timeout.as_secs()),
        )
        .with_code("timeout")
        .with_source(error)
    } else if error.is_connect() {
        DeliveryError::transient(FailureKind::Unavailable, format!("failed to connect to {target}: {cause}"))
            .with_code("connect_failed")
            .with_source(error)
    } else {
        DeliveryError::transient(FailureKind::Unavailable, format!("request to {target} failed: {cause}"))
            .with_code("request_failed")
            .with_source(error)
    }
}

/// Returns the innermost error of the chain, which names the cause
/// (`Connection refused`, a DNS failure) without the client's wrapping.
pub(crate) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Collapses `text` to one line of at most `max_chars` characters: runs of
/// whitespace and control characters become one space, and a cut text ends
/// with `…`. Used for provider responses quoted in errors.
pub(crate) fn one_line(text: &str, max_chars: usize) -> String {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect();
    let line = words.join(" ");

    if line.chars().count() <= max_chars {
        return line;
    }
    let mut shortened: String = line.chars().take(max_chars.saturating_sub(1)).collect();
    shortened.push('…');
    shortened
}
