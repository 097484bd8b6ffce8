//! Configuration of the Telegram channel, the `channels.telegram` section.

use std::fmt;

use serde::Deserialize;

/// Settings of the Telegram channel.
///
/// [`TelegramChannel::new`](super::TelegramChannel::new) validates them, and
/// `Debug` prints `<redacted>` in place of the bot token.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// Whether the service registers the Telegram channel. Default `false`.
    pub enabled: bool,
    /// Bot token from @BotFather, of the form `<bot id>:<secret>`. Usually set
    /// through the environment variable `NOTIFY__CHANNELS__TELEGRAM__BOT_TOKEN`.
    /// Default none.
    pub bot_token: Option<String>,
    /// Base URL of the Bot API, without the `/bot<token>/<method>` path.
    /// Default `https://api.telegram.org`.
    pub api_url: String,
    /// Maximum time in seconds for one `sendMessage` request, from connecting
    /// until the response has been read. Default 10.
    pub timeout_secs: u64,
    /// Minimum time in milliseconds between two messages to the same chat.
    /// 0 turns the per-chat limit off. Default 1000.
    ///
    /// NOTE: Telegram allows only 20 messages per minute to one group, so a
    /// deployment that sends mostly to groups needs 3000 here.
    pub per_chat_interval_ms: u64,
    /// Maximum number of messages per second over all chats. Default 30.
    pub global_per_second: u32,
    /// Whether Telegram should skip the link preview under each message.
    /// Default `false`.
    pub disable_link_preview: bool,
}

impl TelegramConfig {
    /// Key of [`TelegramConfig::bot_token`] in the service configuration.
    pub const BOT_TOKEN_KEY: &'static str = "channels.telegram.bot_token";
    /// Environment variable that normally sets [`TelegramConfig::bot_token`].
    pub const BOT_TOKEN_ENV: &'static str = "NOTIFY__CHANNELS__TELEGRAM__BOT_TOKEN";
    /// Key of [`TelegramConfig::api_url`] in the service configuration.
    pub const API_URL_KEY: &'static str = "channels.telegram.api_url";
    /// Key of [`TelegramConfig::timeout_secs`] in the service configuration.
    pub const TIMEOUT_SECS_KEY: &'static str = "channels.telegram.timeout_secs";
    /// Key of [`TelegramConfig::global_per_second`] in the service configuration.
    pub const GLOBAL_PER_SECOND_KEY: &'static str = "channels.telegram.global_per_second";
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            enabled: false,
            bot_token: None,
            api_url: teloxide::net::TELEGRAM_API_URL.to_owned(),
            timeout_secs: 10,
            per_chat_interval_ms: 1000,
            global_per_second: 30,
            disable_link_preview: false,
        }
    }
}

impl fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("enabled", &self.enabled)
            .field("bot_token", &self.bot_token.as_ref().map(|_| "<redacted>"))
            .field("api_url", &self.api_url)
            .field("timeout_secs", &self.timeout_secs)
            .field("per_chat_interval_ms", &self.per_chat_interval_ms)
            .field("global_per_second", &self.global_per_second)
            .field("disable_link_preview", &self.disable_link_preview)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gets_defaults() {
        let config: TelegramConfig = serde_json::from_str("{}").unwrap();

        assert!(!config.enabled);
        assert_eq!(config.bot_token, None);
        assert_eq!(config.api_url, "https://api.telegram.org");
        assert_eq!(config.timeout_secs, 10);
        assert_eq!(config.per_chat_interval_ms, 1000);
        assert_eq!(config.global_per_second, 30);
        assert!(!config.disable_link_preview);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = serde_json::from_str::<TelegramConfig>(r#"{"token": "123:abc"}"#).unwrap_err();

        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn debug_hides_bot_token() {
        let config = TelegramConfig {
            bot_token: Some("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw".to_owned()),
            ..TelegramConfig::default()
        };

        let debug = format!("{config:?}");

        assert!(!debug.contains("AAHdqTcv"), "{debug}");
        assert!(!debug.contains("123456789"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
