//! The Telegram channel: sends each notification with the Bot API's
//! `sendMessage`, split into several messages when it is too long.
//!
//! - [`config`]: the `channels.telegram` settings and their defaults.
//! - [`split`]: splitting of long texts on safe boundaries, with HTML and
//!   MarkdownV2 entities closed and reopened around each cut.
//! - [`limiter`]: the per-chat and global send-rate limits.
//! - [`error`]: configuration errors and the mapping of Bot API responses
//!   to [`DeliveryError`]s.
//! - This module: [`TelegramChannel`], which validates the settings once at
//!   construction and sends.
//!
//! The request body is teloxide's [`SendMessage`] payload, and known error
//! descriptions are matched through teloxide's [`teloxide::ApiError`]. The
//! HTTP exchange itself runs on the [`Bot`]'s client here rather than through
//! teloxide's `Requester`, because teloxide-core 0.13 waits 10 s after any
//! 5xx answer before it returns, and drops the `error_code` of error bodies.
//!
//! Outcomes: `ok: true` is delivered. 429, 5xx, timeouts and connection
//! failures are transient, and 429 keeps `parameters.retry_after`. A blocked
//! bot, a deactivated user, or a bot kicked from the chat is a permanent
//! `recipient_gone`. An unknown chat is a permanent `invalid_recipient`.
//! Markup that Telegram cannot parse and over-long text are a permanent
//! `invalid_content`. Error codes are `telegram_<error_code>`.

pub mod config;
pub mod error;
pub mod limiter;
mod progress;
pub mod split;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use notify_core::{
    Channel, ChannelKind, ChatId, Content, DeliveryError, FailureKind, Notification, ParseMode,
    Receipt, Recipient,
};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use serde::Deserialize;
use teloxide::payloads::SendMessage;
use teloxide::types::{LinkPreviewOptions, Recipient as TelegramRecipient};
use teloxide::Bot;
use url::{Host, Url};

pub use config::TelegramConfig;
pub use error::TelegramError;
pub use limiter::RateLimiter;
pub use split::{split_message, SplitError, MAX_MESSAGE_UTF16};

use error::{ApiFailure, Redactor, SendContext};
use progress::SentParts;

/// Provider name in receipts.
const PROVIDER: &str = "telegram";

/// Maximum number of response body bytes read. A `sendMessage` response
/// repeats the message, so it stays far below this.
const BODY_READ_LIMIT: usize = 1 << 20;

/// Maximum wait for a TCP and TLS connection, capped by the request timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The Telegram [`Channel`] plugin.
pub struct TelegramChannel {
    /// The bot token, API URL and HTTP client. `Bot`'s own `Debug` shows the
    /// token, so it must never be printed.
    bot: Bot,
    /// Origin of the API URL, for error messages.
    api_origin: String,
    timeout: Duration,
    disable_link_preview: bool,
    limiter: RateLimiter,
    redactor: Redactor,
    /// Parts of split messages sent before a failure, for their retries.
    sent_parts: SentParts,
}

impl fmt::Debug for TelegramChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramChannel")
            .field("bot_token", &"<redacted>")
            .field("api_origin", &self.api_origin)
            .field("timeout", &self.timeout)
            .field("disable_link_preview", &self.disable_link_preview)
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl TelegramChannel {
    /// Builds the channel.
    ///
    /// # Errors
    ///
    /// Returns [`TelegramError`] for a missing or malformed bot token, an
    /// invalid API URL, a zero timeout or rate, or an HTTP client that cannot
    /// be built.
    pub fn new(config: &TelegramConfig) -> Result<TelegramChannel, TelegramError> {
        let token = config.bot_token.as_deref().map(str::trim).unwrap_or("");
        if token.is_empty() {
            return Err(TelegramError::MissingToken);
        }
        error::check_token_shape(token)?;
        let api_url = parse_api_url(&config.api_url)?;
        if config.timeout_secs == 0 {
            return Err(TelegramError::ZeroTimeout);
        }
        if config.global_per_second == 0 {
            return Err(TelegramError::ZeroGlobalRate);
        }
        let timeout = Duration::from_secs(config.timeout_secs);

        let mut builder = teloxide::net::default_reqwest_settings()
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT));
        if is_loopback(&api_url) {
            // A local Bot API server must not be reached through a proxy of
            // the environment.
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(TelegramError::Client)?;

        Ok(TelegramChannel {
            api_origin: api_url.origin().ascii_serialization(),
            bot: Bot::with_client(token, client).set_api_url(api_url),
            timeout,
            disable_link_preview: config.disable_link_preview,
            limiter: RateLimiter::new(
                Duration::from_millis(config.per_chat_interval_ms),
                config.global_per_second,
            ),
            redactor: Redactor::new(token),
            sent_parts: SentParts::default(),
        })
    }

    /// Returns the URL of a Bot API method, which contains the token.
    fn method_url(&self, method: &str) -> Result<Url, DeliveryError> {
        let mut url = self.bot.api_url();
        match url.path_segments_mut() {
            Ok(mut segments) => {
                segments
                    .pop_if_empty()
                    .push(&format!("bot{}", self.bot.token()))
                    .push(method);
            }
            // `parse_api_url` rejects such URLs, so this is a bug.
            Err(()) => {
                return Err(DeliveryError::permanent(
                    FailureKind::Internal,
                    format!("Telegram API URL {} cannot take a path", self.api_origin),
                ))
            }
        }
        Ok(url)
    }

    fn payload(&self, chat_id: &ChatId, text: &str, parse_mode: ParseMode) -> SendMessage {
        let recipient = match chat_id {
            ChatId::Id(id) => TelegramRecipient::Id(teloxide::types::ChatId(*id)),
            ChatId::Username(username) => TelegramRecipient::ChannelUsername(username.clone()),
        };
        let mut payload = SendMessage::new(recipient, text);
        payload.parse_mode = match parse_mode {
            ParseMode::Plain => None,
            ParseMode::MarkdownV2 => Some(teloxide::types::ParseMode::MarkdownV2),
            ParseMode::Html => Some(teloxide::types::ParseMode::Html),
        };
        if self.disable_link_preview {
            payload.link_preview_options = Some(LinkPreviewOptions {
                is_disabled: true,
                url: None,
                prefer_small_media: false,
                prefer_large_media: false,
                show_above_text: false,
            });
        }
        payload
    }

    /// Sends one part and returns Telegram's `message_id` for it, when the
    /// response has one.
    async fn send_part(
        &self,
        payload: &SendMessage,
        context: &SendContext<'_>,
    ) -> Result<Option<i64>, DeliveryError> {
        let body = serde_json::to_vec(payload).map_err(|err| {
            DeliveryError::permanent(
                FailureKind::Internal,
                format!("failed to encode the sendMessage request: {err}"),
            )
        })?;
        let url = self.method_url("sendMessage")?;

        let result = self
            .bot
            .client()
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await;
        let mut response = match result {
            Ok(response) => response,
            Err(err) => {
                return Err(error::classify_transport_error(
                    err,
                    &self.api_origin,
                    self.timeout,
                    context,
                ))
            }
        };
        let status = response.status();

        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= BODY_READ_LIMIT => {
                    body.extend_from_slice(&chunk)
                }
                // A body over the limit is cut short, so it fails to parse
                // and is classified by its status.
                Ok(Some(_)) | Ok(None) => break,
                Err(err) => {
                    return Err(error::classify_transport_error(
                        err,
                        &self.api_origin,
                        self.timeout,
                        context,
                    ))
                }
            }
        }

        let parsed = serde_json::from_slice::<BotApiResponse>(&body).ok();
        match parsed {
            Some(answer) if answer.ok && status.is_success() => {
                Ok(answer.result.and_then(|message| {
                    message
                        .get("message_id")
                        .and_then(serde_json::Value::as_i64)
                }))
            }
            Some(answer) => {
                let parameters = answer.parameters.unwrap_or_default();
                let failure = ApiFailure {
                    status: status.as_u16(),
                    error_code: answer.error_code.and_then(|code| u16::try_from(code).ok()),
                    description: answer.description,
                    retry_after: parameters.retry_after,
                    migrate_to_chat_id: parameters.migrate_to_chat_id,
                    body_excerpt: None,
                };
                Err(error::classify_failure(&failure, context))
            }
            None if status.is_success() => Err(error::classify_malformed_success(
                status.as_u16(),
                &error::body_excerpt(&body),
                context,
            )),
            None => {
                let failure = ApiFailure {
                    status: status.as_u16(),
                    body_excerpt: Some(error::body_excerpt(&body)),
                    ..ApiFailure::default()
                };
                Err(error::classify_failure(&failure, context))
            }
        }
    }
}

/// The fields of a Bot API response that the channel reads.
#[derive(Debug, Deserialize)]
struct BotApiResponse {
    ok: bool,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

#[derive(Debug, Default, Deserialize)]
struct ResponseParameters {
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

/// Parses `channels.telegram.api_url`: an http or https URL with a host, and
/// no query or fragment, because method paths are appended to it.
fn parse_api_url(value: &str) -> Result<Url, TelegramError> {
    let invalid = |reason: &str| TelegramError::InvalidApiUrl {
        reason: reason.to_owned(),
    };
    let url = Url::parse(value.trim()).map_err(|err| TelegramError::InvalidApiUrl {
        reason: err.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme is not http or https"));
    }
    if url.host().is_none() || url.cannot_be_a_base() {
        return Err(invalid("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it has a query or fragment, but it must be a base URL such as https://api.telegram.org"));
    }
    Ok(url)
}

/// Returns true if the URL's host is `localhost` or a loopback address.
fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Returns the key under which the limiter tracks a chat. Usernames are
/// case-insensitive in Telegram.
fn limiter_key(chat_id: &ChatId) -> String {
    match chat_id {
        ChatId::Id(id) => id.to_string(),
        ChatId::Username(username) => username.to_ascii_lowercase(),
    }
}

#[async_trait]
impl Channel for TelegramChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Telegram
    }

    async fn send(&self, notification: &Notification) -> Result<Receipt, DeliveryError> {
        let Recipient::Telegram { chat_id } = &notification.recipient else {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidRecipient,
                format!(
                    "notification {} reached the Telegram channel without a Telegram recipient",
                    notification.notification_id
                ),
            ));
        };
        let Content::Telegram { text, parse_mode } = &notification.content else {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidContent,
                format!(
                    "notification {} reached the Telegram channel without Telegram content",
                    notification.notification_id
                ),
            ));
        };
        let masked_chat = notification.recipient.masked().to_string();

        let parts = split_message(text, *parse_mode, MAX_MESSAGE_UTF16).map_err(|err| {
            DeliveryError::permanent(
                FailureKind::InvalidContent,
                format!("message to chat {masked_chat}: {err}"),
            )
            .with_code("message_too_long")
        })?;
        if parts.is_empty() {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidContent,
                format!(
                    "message to chat {masked_chat} has no text: it is empty or only whitespace"
                ),
            )
            .with_code("empty_text"));
        }

        let key = limiter_key(chat_id);
        let fingerprint = progress::fingerprint(&key, text, *parse_mode);
        // NOTE: a retry resumes after the parts sent before a failure only in
        // this process. A retry that another instance consumes, or one after
        // a restart, sends the earlier parts again.
        let (already_sent, mut message_ids) = self.sent_parts.resume(notification.notification_id, fingerprint);
        if already_sent > 0 {
            tracing::info!(
                notification_id = %notification.notification_id,
                chat = %masked_chat,
                already_sent,
                parts = parts.len(),
                "resuming a split telegram message after the parts sent before"
            );
        }
        for (index, part) in parts.iter().enumerate().skip(already_sent) {
            let context = SendContext {
                masked_chat: &masked_chat,
                part: index + 1,
                parts: parts.len(),
                redactor: &self.redactor,
            };
            let payload = self.payload(chat_id, part, *parse_mode);
            self.limiter.acquire(&key).await;
            match self.send_part(&payload, &context).await {
                Ok(Some(id)) => message_ids.push(id),
                Ok(None) => {}
                Err(err) => {
                    self.sent_parts.record(notification.notification_id, fingerprint, index, message_ids);
                    return Err(err);
                }
            }
        }

        tracing::debug!(
            notification_id = %notification.notification_id,
            tenant_id = %notification.tenant_id,
            chat = %masked_chat,
            parts = parts.len(),
            "telegram message delivered"
        );
        let joined_ids = message_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut receipt = Receipt::new(PROVIDER)
            .with_detail("parts", parts.len())
            .with_detail("message_ids", message_ids);
        if !joined_ids.is_empty() {
            receipt = receipt.with_message_id(joined_ids);
        }
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";

    fn config() -> TelegramConfig {
        TelegramConfig {
            enabled: true,
            bot_token: Some(TOKEN.to_owned()),
            api_url: "http://127.0.0.1:9/".to_owned(),
            ..TelegramConfig::default()
        }
    }

    #[test]
    fn missing_token_names_key_and_variable() {
        let err = TelegramChannel::new(&TelegramConfig {
            bot_token: None,
            ..config()
        })
        .unwrap_err();

        assert!(matches!(err, TelegramError::MissingToken));
        assert!(
            err.to_string().contains("channels.telegram.bot_token"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("NOTIFY__CHANNELS__TELEGRAM__BOT_TOKEN"),
            "{err}"
        );
    }

    #[test]
    fn malformed_token_is_rejected_without_quoting_it() {
        let config = TelegramConfig {
            bot_token: Some("not-a-token-AAHdqTcv".to_owned()),
            ..config()
        };

        let err = TelegramChannel::new(&config).unwrap_err().to_string();

        assert!(err.contains("channels.telegram.bot_token"), "{err}");
        assert!(!err.contains("AAHdqTcv"), "{err}");
    }

    #[test]
    fn invalid_api_urls_name_key() {
        for url in [
            "api.telegram.org",
            "ftp://api.telegram.org",
            "https://api.telegram.org/?x=1",
            "mailto:bot@example.com",
        ] {
            let err = TelegramChannel::new(&TelegramConfig {
                api_url: url.to_owned(),
                ..config()
            })
            .unwrap_err();
            assert!(
                matches!(err, TelegramError::InvalidApiUrl { .. }),
                "{url}: {err}"
            );
            assert!(
                err.to_string().contains("channels.telegram.api_url"),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn zero_timeout_and_rate_are_rejected() {
        let timeout = TelegramChannel::new(&TelegramConfig {
            timeout_secs: 0,
            ..config()
        })
        .unwrap_err();
        let rate = TelegramChannel::new(&TelegramConfig {
            global_per_second: 0,
            ..config()
        })
        .unwrap_err();

        assert!(matches!(timeout, TelegramError::ZeroTimeout));
        assert!(matches!(rate, TelegramError::ZeroGlobalRate));
    }

    #[test]
    fn method_url_appends_token_and_method() {
        for (base, expected) in [
            (
                "http://127.0.0.1:9",
                "http://127.0.0.1:9/bot{TOKEN}/sendMessage",
            ),
            (
                "http://127.0.0.1:9/",
                "http://127.0.0.1:9/bot{TOKEN}/sendMessage",
            ),
            (
                "http://127.0.0.1:9/tg/",
                "http://127.0.0.1:9/tg/bot{TOKEN}/sendMessage",
            ),
        ] {
            let channel = TelegramChannel::new(&TelegramConfig {
                api_url: base.to_owned(),
                ..config()
            })
            .unwrap();

            let url = channel.method_url("sendMessage").unwrap();

            assert_eq!(url.as_str(), expected.replace("{TOKEN}", TOKEN), "{base}");
        }
    }

    #[test]
    fn debug_hides_token() {
        let channel = TelegramChannel::new(&config()).unwrap();

        let debug = format!("{channel:?}");

        assert!(!debug.contains("AAHdqTcv"), "{debug}");
        assert!(debug.contains("http://127.0.0.1:9"), "{debug}");
    }

    #[test]
    fn payload_sets_parse_mode_and_link_preview() {
        let channel = TelegramChannel::new(&TelegramConfig {
            disable_link_preview: true,
            ..config()
        })
        .unwrap();

        let plain =
            serde_json::to_value(channel.payload(&ChatId::Id(-100), "hi", ParseMode::Plain))
                .unwrap();
        let html = serde_json::to_value(channel.payload(
            &ChatId::Username("@alerts".into()),
            "hi",
            ParseMode::Html,
        ))
        .unwrap();
        let markdown =
            serde_json::to_value(channel.payload(&ChatId::Id(1), "hi", ParseMode::MarkdownV2))
                .unwrap();

        assert_eq!(plain["chat_id"], -100);
        assert!(plain.get("parse_mode").is_none(), "{plain}");
        assert_eq!(plain["link_preview_options"]["is_disabled"], true);
        assert_eq!(html["chat_id"], "@alerts");
        assert_eq!(html["parse_mode"], "HTML");
        assert_eq!(markdown["parse_mode"], "MarkdownV2");
    }
}
