//! Configuration of the SMS channel, the `channels.sms` section.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Settings of the SMS channel.
///
/// `NOTIFY__CHANNELS__SMS__<KEY>` environment variables override the scalar
/// keys of this section (`enabled`, `max_segments`, `max_chars`,
/// `timeout_secs`). They cannot reach into the entries of `providers` or
/// `tenant_providers`, so every provider names the environment variable of
/// its secret in `auth_token_env` (Twilio) or `auth_value_env` (HTTP), which
/// [`SmsChannel::new`](super::SmsChannel::new) reads once at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmsConfig {
    /// Whether the service registers the SMS channel. Default `false`.
    pub enabled: bool,
    /// Maximum number of segments of one message. Longer bodies are rejected
    /// before any provider is called. Default 10, at most 255.
    pub max_segments: u32,
    /// Maximum number of characters (Unicode scalar values) of one body.
    /// Default 1600, the `Body` limit of Twilio's Messages API.
    pub max_chars: u32,
    /// Maximum time in seconds for one request to one provider, from
    /// connecting until the response has been read. Default 10.
    ///
    /// A send that fails over tries each provider in turn, so it can take up
    /// to this long once per provider.
    pub timeout_secs: u64,
    /// Providers in failover order, for tenants without an entry in
    /// `tenant_providers`. At least one is required. Default empty.
    pub providers: Vec<ProviderConfig>,
    /// Map from tenant UUID to the tenant's own providers in failover order,
    /// used in place of `providers`. Default empty.
    pub tenant_providers: BTreeMap<String, Vec<ProviderConfig>>,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            enabled: false,
            max_segments: 10,
            max_chars: 1600,
            timeout_secs: 10,
            providers: Vec::new(),
            tenant_providers: BTreeMap::new(),
        }
    }
}

/// One SMS provider, selected by its `type` key.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderConfig {
    /// Twilio's Messages API.
    Twilio(TwilioConfig),
    /// A gateway that takes a JSON body over HTTP.
    Http(HttpProviderConfig),
}

/// Settings of a Twilio provider (`type = "twilio"`).
///
/// Set exactly one of `auth_token` and `auth_token_env`, and exactly one of
/// `messaging_service_sid` and `from`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TwilioConfig {
    /// Provider name in receipts, logs and errors. Default `twilio`.
    pub name: String,
    /// Scheme and host of the API, optionally with a path prefix. Default
    /// `https://api.twilio.com`.
    pub base_url: String,
    /// Account SID: `AC` followed by 32 hexadecimal digits.
    pub account_sid: String,
    /// Auth token of the account. Prefer `auth_token_env`.
    pub auth_token: Option<Secret>,
    /// Name of the environment variable that contains the auth token.
    pub auth_token_env: Option<String>,
    /// Messaging Service SID (`MG` followed by 32 hexadecimal digits), sent as
    /// `MessagingServiceSid`.
    pub messaging_service_sid: Option<String>,
    /// Sender sent as `From`: an E.164 number, a short code or an
    /// alphanumeric sender ID.
    pub from: Option<String>,
}

impl TwilioConfig {
    /// Default of [`TwilioConfig::base_url`].
    pub const DEFAULT_BASE_URL: &'static str = "https://api.twilio.com";
    /// Default of [`TwilioConfig::name`].
    pub const DEFAULT_NAME: &'static str = "twilio";
}

impl Default for TwilioConfig {
    fn default() -> Self {
        TwilioConfig {
            name: TwilioConfig::DEFAULT_NAME.to_owned(),
            base_url: TwilioConfig::DEFAULT_BASE_URL.to_owned(),
            account_sid: String::new(),
            auth_token: None,
            auth_token_env: None,
            messaging_service_sid: None,
            from: None,
        }
    }
}

/// Settings of a generic JSON-over-HTTP gateway (`type = "http"`).
///
/// The channel POSTs `body_template` with its placeholders filled in, as
/// `application/json`. Any 2xx status means the gateway accepted the message.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpProviderConfig {
    /// Provider name in receipts, logs and errors. Required.
    pub name: String,
    /// Endpoint URL, http or https. Required.
    pub url: String,
    /// Name of the header that authenticates requests, such as
    /// `Authorization`. Default none: requests carry no credentials.
    pub auth_header: Option<String>,
    /// Value of `auth_header`, such as `Bearer <token>`. Prefer `auth_value_env`.
    pub auth_value: Option<Secret>,
    /// Name of the environment variable that contains the value of `auth_header`.
    pub auth_value_env: Option<String>,
    /// JSON document sent as the body. Placeholders `{{to}}`, `{{body}}`,
    /// `{{notification_id}}` and `{{tenant_id}}` are replaced inside string
    /// values only, and the result is serialized as JSON, so every value is
    /// escaped. Default `{"to": "{{to}}", "body": "{{body}}"}`.
    pub body_template: String,
    /// JSON pointer (RFC 6901) to the message id in a 2xx response body, such
    /// as `/messages/0/id`. Default none.
    pub message_id_pointer: Option<String>,
}

impl HttpProviderConfig {
    /// Default of [`HttpProviderConfig::body_template`].
    pub const DEFAULT_BODY_TEMPLATE: &'static str = r#"{"to": "{{to}}", "body": "{{body}}"}"#;
}

impl Default for HttpProviderConfig {
    fn default() -> Self {
        HttpProviderConfig {
            name: String::new(),
            url: String::new(),
            auth_header: None,
            auth_value: None,
            auth_value_env: None,
            body_template: HttpProviderConfig::DEFAULT_BODY_TEMPLATE.to_owned(),
            message_id_pointer: None,
        }
    }
}

/// A credential from configuration. `Debug` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Returns the secret value, for the request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gets_defaults() {
        let config: SmsConfig = serde_json::from_str("{}").unwrap();

        assert!(!config.enabled);
        assert_eq!(config.max_segments, 10);
        assert_eq!(config.max_chars, 1600);
        assert_eq!(config.timeout_secs, 10);
        assert!(config.providers.is_empty());
        assert!(config.tenant_providers.is_empty());
    }

    #[test]
    fn providers_parse_by_type() {
        let json = r#"{
            "providers": [
                {"type": "twilio", "account_sid": "AC0123", "auth_token_env": "TWILIO_TOKEN", "from": "+15550100"},
                {"type": "http", "name": "backup", "url": "https://sms.example.com/send"}
            ]
        }"#;

        let config: SmsConfig = serde_json::from_str(json).unwrap();

        let ProviderConfig::Twilio(twilio) = &config.providers[0] else {
            panic!("first provider is not Twilio: {:?}", config.providers[0]);
        };
        assert_eq!(twilio.name, "twilio");
        assert_eq!(twilio.base_url, "https://api.twilio.com");
        assert_eq!(twilio.auth_token_env.as_deref(), Some("TWILIO_TOKEN"));
        let ProviderConfig::Http(http) = &config.providers[1] else {
            panic!("second provider is not HTTP: {:?}", config.providers[1]);
        };
        assert_eq!(http.name, "backup");
        assert_eq!(
            http.body_template,
            HttpProviderConfig::DEFAULT_BODY_TEMPLATE
        );
    }

    /// The `[channels]` table of a test configuration file.
    #[derive(Debug, Deserialize)]
    struct ChannelsSection {
        sms: SmsConfig,
    }

    #[test]
    fn toml_file_loads_providers_and_tenants() {
        let toml = r#"
            [channels.sms]
            enabled = true
            max_segments = 4

            [[channels.sms.providers]]
            type = "twilio"
            account_sid = "AC0123456789abcdef0123456789abcdef"
            auth_token_env = "TWILIO_AUTH_TOKEN"
            messaging_service_sid = "MG0123456789abcdef0123456789abcdef"

            [[channels.sms.providers]]
            type = "http"
            name = "backup"
            url = "https://sms.example.com/send"
            body_template = '{"recipient": "{{to}}", "text": "{{body}}"}'

            [[channels.sms.tenant_providers."7d444840-9dc0-41a1-8ad4-7e4c7c5b3f10"]]
            type = "http"
            name = "tenant-gateway"
            url = "https://tenant.example.com/sms"
        "#;
        let path =
            std::env::temp_dir().join(format!("notify-sms-config-{}.toml", std::process::id()));
        std::fs::write(&path, toml).unwrap();

        let loaded = notify_core::config::Config::<ChannelsSection>::load(&path);
        std::fs::remove_file(&path).unwrap();

        let config = loaded.unwrap().channels.sms;
        assert!(config.enabled);
        assert_eq!(config.max_segments, 4);
        assert_eq!(config.providers.len(), 2);
        assert!(
            matches!(&config.providers[0], ProviderConfig::Twilio(twilio) if twilio.auth_token_env.as_deref() == Some("TWILIO_AUTH_TOKEN"))
        );
        assert!(
            matches!(&config.providers[1], ProviderConfig::Http(http) if http.body_template.contains("{{to}}"))
        );
        let tenant = &config.tenant_providers["7d444840-9dc0-41a1-8ad4-7e4c7c5b3f10"];
        assert!(matches!(&tenant[0], ProviderConfig::Http(http) if http.name == "tenant-gateway"));
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = serde_json::from_str::<SmsConfig>(r#"{"max_segment": 5}"#).unwrap_err();

        assert!(err.to_string().contains("max_segment"), "{err}");
    }

    #[test]
    fn unknown_provider_key_is_rejected() {
        let json = r#"{"providers": [{"type": "twilio", "account_sid": "AC0123", "token": "x"}]}"#;

        let err = serde_json::from_str::<SmsConfig>(json).unwrap_err();

        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn unknown_provider_type_is_rejected() {
        let err =
            serde_json::from_str::<SmsConfig>(r#"{"providers": [{"type": "smpp"}]}"#).unwrap_err();

        assert!(err.to_string().contains("smpp"), "{err}");
    }

    #[test]
    fn debug_hides_secrets() {
        let config = SmsConfig {
            providers: vec![
                ProviderConfig::Twilio(TwilioConfig {
                    auth_token: Some("twilio-token-value".into()),
                    ..TwilioConfig::default()
                }),
                ProviderConfig::Http(HttpProviderConfig {
                    auth_value: Some("Bearer gateway-token-value".into()),
                    ..HttpProviderConfig::default()
                }),
            ],
            ..SmsConfig::default()
        };

        let debug = format!("{config:?}");

        assert!(!debug.contains("twilio-token-value"), "{debug}");
        assert!(!debug.contains("gateway-token-value"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
