//! Configuration errors of the Telegram channel, and the classification of
//! failed `sendMessage` requests into [`DeliveryError`]s.

use std::time::Duration;

use notify_core::{DeliveryError, FailureKind};
use serde::de::IntoDeserializer;
use serde::Deserialize;
use teloxide::ApiError;

use super::config::TelegramConfig;

/// Maximum number of characters of a response quoted in an error message.
const EXCERPT_CHARS: usize = 200;

/// Invalid Telegram channel configuration, found by
/// [`TelegramChannel::new`](super::TelegramChannel::new). Messages name
/// configuration keys, never the bot token.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error(
        "`{}` is not set; set it through the environment variable `{}`",
        TelegramConfig::BOT_TOKEN_KEY,
        TelegramConfig::BOT_TOKEN_ENV
    )]
    MissingToken,

    #[error(
        "`{}` is not a bot token of the form `<bot id>:<secret>`: {reason}",
        TelegramConfig::BOT_TOKEN_KEY
    )]
    InvalidToken { reason: &'static str },

    #[error(
        "`{}` is not a valid Bot API base URL: {reason}",
        TelegramConfig::API_URL_KEY
    )]
    InvalidApiUrl { reason: String },

    #[error("`{}` is 0; it must be at least 1", TelegramConfig::TIMEOUT_SECS_KEY)]
    ZeroTimeout,

    #[error(
        "`{}` is 0; it must be at least 1",
        TelegramConfig::GLOBAL_PER_SECOND_KEY
    )]
    ZeroGlobalRate,

    #[error("failed to build the Telegram HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Checks that `token` looks like a bot token: digits, `:`, then letters,
/// digits, `_` or `-`. Telegram decides whether the token is valid.
pub(super) fn check_token_shape(token: &str) -> Result<(), TelegramError> {
    let invalid = |reason| Err(TelegramError::InvalidToken { reason });
    let Some((bot_id, secret)) = token.split_once(':') else {
        return invalid("it has no `:`");
    };
    if bot_id.is_empty() || !bot_id.bytes().all(|b| b.is_ascii_digit()) {
        return invalid("the part before `:` is not a number");
    }
    if secret.is_empty()
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return invalid(
            "the part after `:` is empty or has characters other than letters, digits, `_` and `-`",
        );
    }
    Ok(())
}

/// Removes the bot token from text that may quote a request URL.
#[derive(Clone)]
pub(super) struct Redactor {
    /// The part of the token after `:`, which alone grants access.
    secret: String,
}

impl Redactor {
    pub(super) fn new(token: &str) -> Redactor {
        let secret = token.split_once(':').map_or(token, |(_, secret)| secret);
        Redactor {
            secret: secret.to_owned(),
        }
    }

    pub(super) fn redact(&self, text: &str) -> String {
        if self.secret.is_empty() {
            return text.to_owned();
        }
        text.replace(&self.secret, "<redacted>")
    }
}

/// Destination and part number of a failed request, for error messages.
pub(super) struct SendContext<'a> {
    /// The chat as [`notify_core::Recipient::masked`] shows it.
    pub masked_chat: &'a str,
    /// 1-based number of the part that failed.
    pub part: usize,
    pub parts: usize,
    pub redactor: &'a Redactor,
}

impl SendContext<'_> {
    fn message_label(&self) -> String {
        if self.parts == 1 {
            format!("message to chat {}", self.masked_chat)
        } else {
            let delivered = match self.part - 1 {
                0 => "none delivered yet".to_owned(),
                1 => "part 1 already delivered".to_owned(),
                count => format!("parts 1 to {count} already delivered"),
            };
            format!(
                "part {} of {} of the message to chat {} ({delivered})",
                self.part, self.parts, self.masked_chat
            )
        }
    }
}

/// The error fields of a Bot API response (`ok: false`).
#[derive(Debug, Default, PartialEq)]
pub(super) struct ApiFailure {
    /// HTTP status of the response.
    pub status: u16,
    /// `error_code` of the body, usually equal to the status.
    pub error_code: Option<u16>,
    pub description: Option<String>,
    /// `parameters.retry_after`: seconds to wait before the next request.
    pub retry_after: Option<u64>,
    /// `parameters.migrate_to_chat_id`: the supergroup a group became.
    pub migrate_to_chat_id: Option<i64>,
    /// Start of the body when it is not a Bot API response, such as the HTML
    /// page of a proxy.
    pub body_excerpt: Option<String>,
}

/// Whether a failure is worth retrying, and how to name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Verdict {
    pub transient: bool,
    pub kind: FailureKind,
}

const fn permanent(kind: FailureKind) -> Verdict {
    Verdict {
        transient: false,
        kind,
    }
}

const fn transient(kind: FailureKind) -> Verdict {
    Verdict {
        transient: true,
        kind,
    }
}

/// Classifies a Bot API error by its code and description.
///
/// Known descriptions are matched through teloxide's [`ApiError`] catalogue.
/// Other descriptions are classified by code: 429, 5xx and codes outside 4xx
/// are transient, and every other 4xx is permanent.
pub(super) fn verdict(code: u16, description: &str) -> Verdict {
    let known = ApiError::deserialize(description.into_deserializer())
        .unwrap_or_else(|_: serde::de::value::Error| ApiError::Unknown(description.to_owned()));

    match known {
        ApiError::BotBlocked
        | ApiError::UserDeactivated
        | ApiError::BotKicked
        | ApiError::BotKickedFromSupergroup
        | ApiError::BotKickedFromChannel
        | ApiError::GroupDeactivated => permanent(FailureKind::RecipientGone),
        ApiError::ChatNotFound | ApiError::UserNotFound => permanent(FailureKind::InvalidRecipient),
        // The user never started a chat with the bot, or is a bot.
        ApiError::CantInitiateConversation | ApiError::CantTalkWithBots => {
            permanent(FailureKind::Rejected)
        }
        ApiError::CantParseEntities(_)
        | ApiError::MessageIsTooLong
        | ApiError::MessageTextIsEmpty
        | ApiError::RequestEntityTooLarge => permanent(FailureKind::InvalidContent),
        ApiError::InvalidToken => permanent(FailureKind::Configuration),
        ApiError::NotEnoughRightsToPostMessages => permanent(FailureKind::Rejected),
        _ => verdict_by_code(code, &description.to_ascii_lowercase()),
    }
}

fn verdict_by_code(code: u16, description: &str) -> Verdict {
    match code {
        429 => transient(FailureKind::RateLimited),
        408 => transient(FailureKind::Timeout),
        // The Bot API returns 401 for a revoked token and 404 for a
        // malformed one, whatever the chat.
        401 | 404 => permanent(FailureKind::Configuration),
        403 if ["blocked", "kicked", "deactivated"]
            .iter()
            .any(|word| description.contains(word)) =>
        {
            permanent(FailureKind::RecipientGone)
        }
        400 if description.contains("chat not found") || description.contains("user not found") => {
            permanent(FailureKind::InvalidRecipient)
        }
        400 if [
            "can't parse entities",
            "too long",
            "text is empty",
            "must be non-empty",
        ]
        .iter()
        .any(|phrase| description.contains(phrase)) =>
        {
            permanent(FailureKind::InvalidContent)
        }
        400..=499 => permanent(FailureKind::Rejected),
        _ => transient(FailureKind::Unavailable),
    }
}

/// Turns a failed Bot API response into a delivery error with code
/// `telegram_<error_code>`.
pub(super) fn classify_failure(failure: &ApiFailure, context: &SendContext<'_>) -> DeliveryError {
    let code = failure.error_code.unwrap_or(failure.status);
    let description = failure.description.as_deref().unwrap_or("");
    let label = context.message_label();
    let shown = match (&failure.description, &failure.body_excerpt) {
        (Some(description), _) => description.clone(),
        (None, Some(excerpt)) if !excerpt.is_empty() => {
            format!("HTTP {}: {excerpt}", failure.status)
        }
        _ => format!("HTTP {}", failure.status),
    };
    let shown = context.redactor.redact(&shown);
    let error_code = format!("telegram_{code}");

    if let Some(seconds) = failure.retry_after {
        return DeliveryError::transient(
            FailureKind::RateLimited,
            format!("Telegram Bot API rate-limited the {label}; retry after {seconds} s: {shown}"),
        )
        .with_code(error_code)
        .with_retry_after(Duration::from_secs(seconds));
    }
    if let Some(new_chat) = failure.migrate_to_chat_id {
        let masked = notify_core::recipient::mask_tail(&new_chat.to_string(), 3);
        return DeliveryError::permanent(
            FailureKind::InvalidRecipient,
            format!(
                "Telegram Bot API rejected the {label}: the group is now the supergroup {masked}; \
                 change the recipient's chat_id to the supergroup's id"
            ),
        )
        .with_code(error_code);
    }

    let verdict = verdict(code, description);
    let message = if verdict.transient {
        format!("Telegram Bot API failed to take the {label}: {shown}")
    } else {
        format!("Telegram Bot API rejected the {label}: {shown}")
    };
    let error = if verdict.transient {
        DeliveryError::transient(verdict.kind, message)
    } else {
        DeliveryError::permanent(verdict.kind, message)
    };
    error.with_code(error_code)
}

/// Classifies a request that got no complete response: a timeout, a failed
/// connection, or a broken exchange. All of them are transient.
///
/// NOTE: a request that timed out or broke after it was sent may still have
/// been delivered, so its retry may show the message twice.
pub(super) fn classify_transport_error(
    error: reqwest::Error,
    api_host: &str,
    timeout: Duration,
    context: &SendContext<'_>,
) -> DeliveryError {
    // The request URL contains the bot token, so it must not reach the
    // error chain that ends up in events and logs.
    let error = error.without_url();
    let cause = context.redactor.redact(&root_cause(&error));
    let label = context.message_label();

    if error.is_timeout() {
        DeliveryError::transient(
            FailureKind::Timeout,
            format!(
                "request to the Telegram Bot API at {api_host} with the {label} timed out after {} s",
                timeout.as_secs()
            ),
        )
        .with_code("timeout")
        .with_source(error)
    } else if error.is_connect() {
        DeliveryError::transient(
            FailureKind::Unavailable,
            format!(
                "failed to connect to the Telegram Bot API at {api_host} for the {label}: {cause}"
            ),
        )
        .with_code("connect_failed")
        .with_source(error)
    } else {
        DeliveryError::transient(
            FailureKind::Unavailable,
            format!(
                "request to the Telegram Bot API at {api_host} with the {label} failed: {cause}"
            ),
        )
        .with_code("request_failed")
        .with_source(error)
    }
}

/// Classifies a 2xx response whose body is not a successful Bot API response.
///
/// NOTE: Telegram may have sent the message anyway, so the retry that this
/// transient error allows may show it twice. Losing it is judged worse.
pub(super) fn classify_malformed_success(
    status: u16,
    excerpt: &str,
    context: &SendContext<'_>,
) -> DeliveryError {
    DeliveryError::transient(
        FailureKind::Unavailable,
        format!(
            "Telegram Bot API answered the {} with HTTP {status} but a body that is not a Bot API \
             response, so delivery is unknown: {}",
            context.message_label(),
            context.redactor.redact(excerpt)
        ),
    )
    .with_code("malformed_response")
}

/// Returns the innermost error of the chain, which names the cause
/// (`Connection refused`, a DNS failure) without reqwest's wrapping.
fn root_cause(error: &reqwest::Error) -> String {
    crate::http::root_cause(error)
}

/// Returns the start of a response body as one line of at most
/// [`EXCERPT_CHARS`] characters, with whitespace runs collapsed.
pub(super) fn body_excerpt(body: &[u8]) -> String {
    crate::http::one_line(&String::from_utf8_lossy(body), EXCERPT_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

    fn context(redactor: &Redactor) -> SendContext<'_> {
        SendContext {
            masked_chat: "***789",
            part: 1,
            parts: 1,
            redactor,
        }
    }

    #[test]
    fn token_shape_is_checked() {
        assert!(check_token_shape(TOKEN).is_ok());
        for bad in [
            "",
            "123456789",
            ":secret",
            "12a:secret",
            "123:",
            "123:sec ret",
            "123:sec/ret",
        ] {
            let err = check_token_shape(bad).unwrap_err();
            assert!(
                err.to_string().contains("channels.telegram.bot_token"),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn token_error_does_not_quote_token() {
        let err = check_token_shape("123456789:AAHdq/TcvCH1")
            .unwrap_err()
            .to_string();

        assert!(!err.contains("AAHdq"), "{err}");
    }

    #[test]
    fn redactor_removes_secret() {
        let redactor = Redactor::new(TOKEN);

        let text = redactor.redact("error sending request for url (https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage)");

        assert!(!text.contains("AAHdqTcv"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn documented_errors_are_classified() {
        let cases = [
            (403, "Forbidden: bot was blocked by the user", false, FailureKind::RecipientGone),
            (403, "Forbidden: user is deactivated", false, FailureKind::RecipientGone),
            (403, "Forbidden: bot was kicked from the supergroup chat", false, FailureKind::RecipientGone),
            (403, "Forbidden: bot was kicked from the group chat", false, FailureKind::RecipientGone),
            (403, "Forbidden: bot is not a member of the channel chat", false, FailureKind::Rejected),
            (403, "Forbidden: bot can't initiate conversation with a user", false, FailureKind::Rejected),
            (400, "Bad Request: chat not found", false, FailureKind::InvalidRecipient),
            (
                400,
                "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 3",
                false,
                FailureKind::InvalidContent,
            ),
            (400, "Bad Request: message is too long", false, FailureKind::InvalidContent),
            (400, "Bad Request: message text is empty", false, FailureKind::InvalidContent),
            (400, "Bad Request: something new", false, FailureKind::Rejected),
            (401, "Unauthorized", false, FailureKind::Configuration),
            (404, "Not Found", false, FailureKind::Configuration),
            (429, "Too Many Requests: retry later", true, FailureKind::RateLimited),
            (500, "Internal Server Error", true, FailureKind::Unavailable),
            (502, "Bad Gateway", true, FailureKind::Unavailable),
        ];

        for (code, description, transient, kind) in cases {
            let verdict = verdict(code, description);
            assert_eq!(verdict.transient, transient, "{code} {description}");
            assert_eq!(verdict.kind, kind, "{code} {description}");
        }
    }

    #[test]
    fn retry_after_makes_rate_limit() {
        let redactor = Redactor::new(TOKEN);
        let failure = ApiFailure {
            status: 429,
            error_code: Some(429),
            description: Some("Too Many Requests: retry after 17".to_owned()),
            retry_after: Some(17),
            ..ApiFailure::default()
        };

        let error = classify_failure(&failure, &context(&redactor));

        assert!(error.is_transient());
        assert_eq!(error.kind(), FailureKind::RateLimited);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(17)));
        assert_eq!(error.code(), Some("telegram_429"));
    }

    #[test]
    fn migrated_group_is_invalid_recipient() {
        let redactor = Redactor::new(TOKEN);
        let failure = ApiFailure {
            status: 400,
            error_code: Some(400),
            description: Some(
                "Bad Request: group chat was upgraded to a supergroup chat".to_owned(),
            ),
            migrate_to_chat_id: Some(-1001234567890),
            ..ApiFailure::default()
        };

        let error = classify_failure(&failure, &context(&redactor));

        assert!(!error.is_transient());
        assert_eq!(error.kind(), FailureKind::InvalidRecipient);
        assert!(error.message().contains("***890"), "{}", error.message());
        assert!(
            !error.message().contains("1001234567890"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn html_error_page_is_classified_by_status() {
        let redactor = Redactor::new(TOKEN);
        let failure = ApiFailure {
            status: 502,
            body_excerpt: Some(body_excerpt(b"<html>\r\n<h1>502 Bad Gateway</h1></html>")),
            ..ApiFailure::default()
        };

        let error = classify_failure(&failure, &context(&redactor));

        assert!(error.is_transient());
        assert_eq!(error.code(), Some("telegram_502"));
        assert!(
            error
                .message()
                .ends_with("HTTP 502: <html> <h1>502 Bad Gateway</h1></html>"),
            "{}",
            error.message()
        );
    }

    #[test]
    fn multi_part_label_names_delivered_parts() {
        let redactor = Redactor::new(TOKEN);
        let context = SendContext {
            masked_chat: "***789",
            part: 3,
            parts: 4,
            redactor: &redactor,
        };
        let failure = ApiFailure {
            status: 500,
            description: Some("Internal Server Error".to_owned()),
            ..ApiFailure::default()
        };

        let error = classify_failure(&failure, &context);

        assert_eq!(
            error.message(),
            "Telegram Bot API failed to take the part 3 of 4 of the message to chat ***789 \
             (parts 1 to 2 already delivered): Internal Server Error"
        );
    }
}
