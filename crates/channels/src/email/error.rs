//! Errors of the email channel and their classification into
//! [`DeliveryError`]s.
//!
//! Messages never contain the SMTP password or a full recipient address:
//! addresses in server replies are masked before they are stored here.

use std::fmt;

use notify_core::recipient::mask_email;
use notify_core::{DeliveryError, FailureKind, Retryability};
use tokio_rustls::rustls;

/// Maximum number of characters of a server reply quoted in a message.
const REPLY_EXCERPT_CHARS: usize = 200;

/// A header field whose value comes from the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderField {
    Subject,
    RecipientName,
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderField::Subject => "subject",
            HeaderField::RecipientName => "recipient name",
        })
    }
}

/// A failure of the email channel: invalid configuration, a notification
/// that cannot be sent as an email, or a failed SMTP exchange.
#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("invalid `{}.{key}`: {reason}", super::EmailConfig::SECTION)]
    InvalidConfig { key: &'static str, reason: String },

    #[error("failed to set up TLS for SMTP host `{host}`: {reason}")]
    TlsSetup { host: String, reason: String },

    #[error("notification content is not an email")]
    ContentNotEmail,

    #[error("notification recipient is not an email recipient")]
    RecipientNotEmail,

    #[error("recipient address {masked} is invalid: {reason}")]
    InvalidAddress { masked: String, reason: String },

    #[error("{field} contains a line break (CR or LF), which could inject a header field; the email was not sent")]
    LineBreak { field: HeaderField },

    #[error("{field} contains the control character U+{code_point:04X}; the email was not sent")]
    ControlCharacter { field: HeaderField, code_point: u32 },

    #[error("recipient name has {length} characters; the maximum is {max}")]
    NameTooLong { length: usize, max: usize },

    #[error("failed to build the email: {0}")]
    Build(#[source] lettre::error::Error),

    /// The server rejected a command with a 4xx or 5xx reply.
    #[error("SMTP server replied {code}: {text}")]
    Reply { code: u16, text: String },

    #[error("SMTP connection to {server} failed: {reason}")]
    Connection { server: String, reason: String },

    /// The server's TLS certificate failed verification: a wrong `host`, a
    /// missing `ca_file`, or an expired certificate.
    #[error("SMTP server {server} presented a certificate that failed verification: {reason}; check `host` and `ca_file`")]
    Certificate { server: String, reason: String },

    #[error("SMTP server {server} did not accept the email within {seconds} s")]
    Timeout { server: String, seconds: u64 },

    /// lettre stopped before sending because the server lacks something the
    /// configuration or the email needs: STARTTLS with `tls = "starttls"`, an
    /// AUTH mechanism lettre supports, or SMTPUTF8 for a non-ASCII address.
    #[error("SMTP client did not send the email: {reason}")]
    Client { reason: String },
}

impl EmailError {
    /// Converts an error of lettre's SMTP transport, masking addresses in
    /// the server's text. `server` is `host:port`.
    pub(super) fn from_smtp(
        err: &lettre::transport::smtp::Error,
        server: &str,
        timeout_secs: u64,
    ) -> EmailError {
        if let Some(code) = err.status() {
            let text = std::error::Error::source(err)
                .map(ToString::to_string)
                .unwrap_or_default();
            return EmailError::Reply {
                code: u16::from(code),
                text: sanitize_server_text(&text),
            };
        }
        if err.is_timeout() {
            return EmailError::Timeout {
                server: server.to_owned(),
                seconds: timeout_secs,
            };
        }
        if err.is_client() {
            return EmailError::Client {
                reason: sanitize_server_text(&err.to_string()),
            };
        }
        if let Some(reason) = certificate_failure(err) {
            return EmailError::Certificate {
                server: server.to_owned(),
                reason,
            };
        }
        // Connection, network, TLS and reply-parsing errors, and a shut-down transport.
        EmailError::Connection {
            server: server.to_owned(),
            reason: sanitize_server_text(&err.to_string()),
        }
    }

    /// Returns the failure kind and whether retrying can help.
    fn classify(&self) -> (FailureKind, Retryability) {
        const PERMANENT: Retryability = Retryability::Permanent;
        const TRANSIENT: Retryability = Retryability::Transient { retry_after: None };
        match self {
            EmailError::InvalidConfig { .. } | EmailError::TlsSetup { .. } => {
                (FailureKind::Configuration, PERMANENT)
            }
            EmailError::ContentNotEmail | EmailError::Build(_) => {
                (FailureKind::InvalidContent, PERMANENT)
            }
            EmailError::RecipientNotEmail
            | EmailError::InvalidAddress { .. }
            | EmailError::NameTooLong { .. } => (FailureKind::InvalidRecipient, PERMANENT),
            EmailError::LineBreak { field } | EmailError::ControlCharacter { field, .. } => {
                match field {
                    HeaderField::Subject => (FailureKind::InvalidContent, PERMANENT),
                    HeaderField::RecipientName => (FailureKind::InvalidRecipient, PERMANENT),
                }
            }
            EmailError::Reply { code, .. } => match code / 100 {
                5 if is_authentication_code(*code) => (FailureKind::Configuration, PERMANENT),
                5 => (FailureKind::Rejected, PERMANENT),
                _ => (FailureKind::Unavailable, TRANSIENT),
            },
            EmailError::Connection { .. } => (FailureKind::Unavailable, TRANSIENT),
            EmailError::Certificate { .. } => (FailureKind::Configuration, PERMANENT),
            EmailError::Timeout { .. } => (FailureKind::Timeout, TRANSIENT),
            EmailError::Client { .. } => (FailureKind::Configuration, PERMANENT),
        }
    }
}

/// Returns the reason when `err` or one of its causes is a failed
/// verification of the server's certificate. rustls reports it as
/// `InvalidCertificate`, which tokio-rustls wraps in an `io::Error`.
pub(super) fn certificate_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(err);
    while let Some(error) = current {
        if let Some(rustls::Error::InvalidCertificate(reason)) = error.downcast_ref::<rustls::Error>() {
            return Some(format!("{reason:?}"));
        }
        if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            if let Some(reason) = certificate_failure(inner) {
                return Some(reason);
            }
        }
        current = error.source();
    }
    None
}

/// Reply codes of SMTP AUTH (RFC 4954) that mean the configured credentials
/// or security settings are wrong, not the email.
fn is_authentication_code(code: u16) -> bool {
    matches!(code, 530 | 534 | 535 | 538)
}

impl From<EmailError> for DeliveryError {
    /// Classifies the error: 4xx replies, connection failures and timeouts
    /// are transient; 5xx replies, invalid notifications and invalid
    /// configuration are permanent. SMTP replies carry the code `smtp_<code>`.
    fn from(err: EmailError) -> DeliveryError {
        let (kind, retryability) = err.classify();
        let message = err.to_string();
        let delivery_error = match retryability {
            Retryability::Transient { .. } => DeliveryError::transient(kind, message),
            Retryability::Permanent => DeliveryError::permanent(kind, message),
        };
        match err {
            EmailError::Reply { code, .. } => delivery_error.with_code(format!("smtp_{code}")),
            EmailError::Certificate { .. } => delivery_error.with_code("tls_certificate"),
            _ => delivery_error,
        }
    }
}

/// Makes server text safe for events and logs: masks every word that
/// contains `@` as an address, turns control characters into spaces,
/// collapses whitespace and cuts the result to [`REPLY_EXCERPT_CHARS`].
pub(super) fn sanitize_server_text(text: &str) -> String {
    let words: Vec<String> = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .map(mask_word)
        .collect();
    let joined = words.join(" ");
    match joined.char_indices().nth(REPLY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}

/// Masks the address in a word such as `<user@example.com>:`, keeping the
/// punctuation around it.
fn mask_word(word: &str) -> String {
    if !word.contains('@') {
        return word.to_owned();
    }
    let is_wrapper = |c: char| {
        matches!(
            c,
            '<' | '>' | '"' | '\'' | '(' | ')' | '[' | ']' | ',' | ';' | ':' | '.'
        )
    };
    let start = word.len() - word.trim_start_matches(is_wrapper).len();
    let end = word.trim_end_matches(is_wrapper).len().max(start);
    format!(
        "{}{}{}",
        &word[..start],
        mask_email(&word[start..end]),
        &word[end..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_addresses_are_masked() {
        let text = "5.1.1 <user@example.com>: Recipient address rejected:\r\n user unknown";

        let sanitized = sanitize_server_text(text);

        assert_eq!(
            sanitized,
            "5.1.1 <u***@example.com>: Recipient address rejected: user unknown"
        );
    }

    #[test]
    fn server_text_is_cut_to_excerpt_length() {
        let sanitized = sanitize_server_text(&"é".repeat(500));

        assert_eq!(sanitized.chars().count(), REPLY_EXCERPT_CHARS + 3);
        assert!(sanitized.ends_with("..."));
    }

    #[test]
    fn reply_codes_are_classified() {
        let cases = [
            (421, FailureKind::Unavailable, true),
            (450, FailureKind::Unavailable, true),
            (452, FailureKind::Unavailable, true),
            (535, FailureKind::Configuration, false),
            (550, FailureKind::Rejected, false),
            (554, FailureKind::Rejected, false),
        ];
        for (code, kind, transient) in cases {
            let err = DeliveryError::from(EmailError::Reply {
                code,
                text: "text".to_owned(),
            });

            assert_eq!(err.kind(), kind, "{code}");
            assert_eq!(err.is_transient(), transient, "{code}");
            assert_eq!(err.code(), Some(format!("smtp_{code}").as_str()), "{code}");
        }
    }

    #[test]
    fn line_break_in_name_is_an_invalid_recipient() {
        let err = DeliveryError::from(EmailError::LineBreak {
            field: HeaderField::RecipientName,
        });

        assert_eq!(err.kind(), FailureKind::InvalidRecipient);
        assert!(!err.is_transient());
        assert!(err.message().contains("line break"), "{}", err.message());
    }
}
