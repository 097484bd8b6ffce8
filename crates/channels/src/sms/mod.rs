//! The SMS channel: checks the number and the body's length in segments,
//! then sends through a list of providers with failover.
//!
//! - [`config`]: the `channels.sms` settings, their defaults and [`Secret`].
//! - [`segments`]: GSM-7 and UCS-2 encoding and segment counting.
//! - `twilio`: Twilio's Messages API and its error codes.
//! - `generic`: a JSON-over-HTTP gateway with a configured body template.
//! - `failover`: trying providers in order within one send.
//! - [`error`]: configuration errors and the shared parts of classification.
//! - This module: [`SmsChannel`], which validates the configuration once at
//!   construction and checks each message before any provider is called.
//!
//! A configuration with a Twilio account and a backup gateway:
//!
//! ```toml
//! [channels.sms]
//! enabled = true
//!
//! [[channels.sms.providers]]
//! type = "twilio"
//! account_sid = "AC0123456789abcdef0123456789abcdef"
//! auth_token_env = "TWILIO_AUTH_TOKEN"
//! messaging_service_sid = "MG0123456789abcdef0123456789abcdef"
//!
//! [[channels.sms.providers]]
//! type = "http"
//! name = "backup-gateway"
//! url = "https://sms-gateway.example.com/v1/messages"
//! auth_header = "Authorization"
//! auth_value_env = "SMS_GATEWAY_AUTHORIZATION"
//! body_template = '{"recipient": "{{to}}", "text": "{{body}}"}'
//! message_id_pointer = "/id"
//! ```
//!
//! Receipts name the provider that accepted the message, carry its message
//! id (Twilio's `sid`), and have the details `segments`, `encoding` (`gsm7` or
//! `ucs2`), `status` (the provider's HTTP status) and `provider_attempts`.

pub mod config;
pub mod error;
mod failover;
mod generic;
pub mod segments;
mod twilio;

use std::collections::HashMap;
use std::env::VarError;
use std::time::Duration;

use async_trait::async_trait;
use notify_core::{
    Channel, ChannelKind, Content, DeliveryError, FailureKind, Notification, Receipt, Recipient,
};
use reqwest::redirect;
use uuid::Uuid;

pub use config::{HttpProviderConfig, ProviderConfig, Secret, SmsConfig, TwilioConfig};
pub use error::SmsError;
pub use segments::{Encoding, Segmentation};

use failover::{OutgoingSms, Provider};
use generic::HttpProvider;
use twilio::TwilioProvider;

/// Reads an environment variable, with the contract of [`std::env::var`].
type ReadEnv<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// Concatenated SMS count their parts in one octet, so no message can have
/// more than 255 segments.
const MAX_CONCATENATED_SEGMENTS: u32 = 255;

/// The SMS [`Channel`] plugin.
#[derive(Debug)]
pub struct SmsChannel {
    max_segments: usize,
    max_chars: usize,
    providers: Vec<Provider>,
    tenant_providers: HashMap<Uuid, Vec<Provider>>,
}

impl SmsChannel {
    /// Builds the channel, reading secrets named by `auth_token_env` and
    /// `auth_value_env` from the process environment.
    ///
    /// # Errors
    ///
    /// Returns [`SmsError`] naming the `channels.sms.…` key at fault: no
    /// provider, an invalid limit, SID, URL, header or body template, a
    /// secret set twice or not at all, or a secret variable that is not set.
    pub fn new(config: &SmsConfig) -> Result<SmsChannel, SmsError> {
        SmsChannel::with_env(config, |name| std::env::var(name))
    }

    /// Builds the channel, reading secret variables through `read_env`,
    /// which has the contract of [`std::env::var`].
    ///
    /// # Errors
    ///
    /// The same as [`SmsChannel::new`].
    pub fn with_env<F>(config: &SmsConfig, read_env: F) -> Result<SmsChannel, SmsError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        if config.timeout_secs == 0 {
            return Err(SmsError::Invalid {
                key: "channels.sms.timeout_secs".to_owned(),
                reason: "is 0; it must be at least 1".to_owned(),
            });
        }
        if !(1..=MAX_CONCATENATED_SEGMENTS).contains(&config.max_segments) {
            return Err(SmsError::Invalid {
                key: "channels.sms.max_segments".to_owned(),
                reason: format!(
                    "is {}; it must be between 1 and {MAX_CONCATENATED_SEGMENTS}",
                    config.max_segments
                ),
            });
        }
        if config.max_chars == 0 {
            return Err(SmsError::Invalid {
                key: "channels.sms.max_chars".to_owned(),
                reason: "is 0; it must be at least 1".to_owned(),
            });
        }
        if config.providers.is_empty() {
            return Err(SmsError::NoProviders);
        }

        let timeout = Duration::from_secs(config.timeout_secs);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(redirect::Policy::none())
            // NOTE: proxy variables of the environment are ignored, as in the
            // webhook channel, so a host that can only reach providers through
            // an egress proxy cannot send SMS.
            .no_proxy()
            .user_agent(crate::webhook::config::default_user_agent())
            .build()
            .map_err(SmsError::Client)?;
        let build = |key: &str, list: &[ProviderConfig]| {
            build_providers(key, list, &read_env, &client, timeout)
        };

        let providers = build("channels.sms.providers", &config.providers)?;
        let mut tenant_providers = HashMap::new();
        for (tenant_key, list) in &config.tenant_providers {
            let tenant =
                Uuid::parse_str(tenant_key).map_err(|source| SmsError::InvalidTenantId {
                    key: tenant_key.clone(),
                    source,
                })?;
            let key = format!("channels.sms.tenant_providers.{tenant_key}");
            if list.is_empty() {
                return Err(SmsError::NoTenantProviders { key });
            }
            // Keys are compared as UUIDs, so upper- and lower-case spellings collide.
            if tenant_providers
                .insert(tenant, build(&key, list)?)
                .is_some()
            {
                return Err(SmsError::DuplicateTenant { tenant });
            }
        }

        Ok(SmsChannel {
            max_segments: config.max_segments as usize,
            max_chars: config.max_chars as usize,
            providers,
            tenant_providers,
        })
    }

    /// Returns the tenant's own providers, or else the default list.
    fn providers_for(&self, tenant_id: Uuid) -> &[Provider] {
        self.tenant_providers
            .get(&tenant_id)
            .unwrap_or(&self.providers)
    }

    /// Checks the body against the configured limits and splits it.
    fn check_body<'b>(&self, body: &'b str) -> Result<Segmentation<'b>, DeliveryError> {
        if body.is_empty() {
            return Err(
                DeliveryError::permanent(FailureKind::InvalidContent, "SMS body is empty")
                    .with_code("empty_body"),
            );
        }
        let chars = body.chars().count();
        if chars > self.max_chars {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidContent,
                format!(
                    "SMS body has {chars} characters, more than the limit `channels.sms.max_chars` = {}",
                    self.max_chars
                ),
            )
            .with_code("too_many_characters"));
        }

        let segmentation = segments::segment(body);
        if segmentation.count() > self.max_segments {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidContent,
                format!(
                    "SMS body needs {} segments in {}, more than the limit `channels.sms.max_segments` = {}",
                    segmentation.count(),
                    segmentation.encoding,
                    self.max_segments
                ),
            )
            .with_code("too_many_segments"));
        }
        Ok(segmentation)
    }
}

/// Validates one list of providers. `key` is the list's key, such as
/// `channels.sms.providers`.
fn build_providers(
    key: &str,
    list: &[ProviderConfig],
    read_env: ReadEnv<'_>,
    client: &reqwest::Client,
    timeout: Duration,
) -> Result<Vec<Provider>, SmsError> {
    let mut providers: Vec<Provider> = Vec::with_capacity(list.len());
    for (index, entry) in list.iter().enumerate() {
        let entry_key = format!("{key}[{index}]");
        let provider = match entry {
            ProviderConfig::Twilio(twilio) => Provider::Twilio(TwilioProvider::from_config(
                twilio,
                &entry_key,
                read_env,
                client.clone(),
                timeout,
            )?),
            ProviderConfig::Http(http) => Provider::Http(HttpProvider::from_config(
                http,
                &entry_key,
                read_env,
                client.clone(),
                timeout,
            )?),
        };
        if providers
            .iter()
            .any(|other| other.name() == provider.name())
        {
            return Err(SmsError::DuplicateProviderName {
                key: key.to_owned(),
                name: provider.name().to_owned(),
            });
        }
        providers.push(provider);
    }
    Ok(providers)
}

/// Returns the secret set inline or read from the named environment
/// variable. Exactly one of the two must be set. `fields` names the inline
/// and the environment key, such as `("auth_token", "auth_token_env")`.
fn resolve_secret(
    inline: Option<&Secret>,
    env_name: Option<&str>,
    key: &str,
    fields: (&str, &str),
    read_env: ReadEnv<'_>,
) -> Result<Secret, SmsError> {
    let (inline_field, env_field) = fields;
    let inline_key = format!("{key}.{inline_field}");
    let env_key = format!("{key}.{env_field}");

    let secret = match (inline, env_name) {
        (Some(_), Some(_)) => {
            return Err(SmsError::Conflict {
                first: inline_key,
                second: env_key,
            })
        }
        (None, None) => {
            return Err(SmsError::Missing {
                key: env_key,
                hint: "set it to the name of the environment variable that contains the secret",
            })
        }
        (Some(secret), None) => secret.clone(),
        (None, Some(variable)) => match read_env(variable) {
            Ok(value) => Secret::new(value),
            Err(VarError::NotPresent) => {
                return Err(SmsError::MissingEnv {
                    key: env_key,
                    variable: variable.to_owned(),
                })
            }
            Err(VarError::NotUnicode(_)) => {
                return Err(SmsError::NonUnicodeEnv {
                    key: env_key,
                    variable: variable.to_owned(),
                })
            }
        },
    };

    if secret.expose().trim().is_empty() {
        let key = if inline.is_some() {
            inline_key
        } else {
            env_key
        };
        return Err(SmsError::Invalid {
            key,
            reason: "the secret is empty".to_owned(),
        });
    }
    Ok(secret)
}

/// Returns true if `phone` is `+` followed by 8 to 15 digits, the first not
/// 0: the same E.164 rule that [`Recipient::parse`] applies.
pub fn is_e164(phone: &str) -> bool {
    phone.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

#[async_trait]
impl Channel for SmsChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Sms
    }

    async fn send(&self, notification: &Notification) -> Result<Receipt, DeliveryError> {
        let Recipient::Sms { phone } = &notification.recipient else {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidRecipient,
                format!(
                    "notification {} reached the SMS channel without an SMS recipient",
                    notification.notification_id
                ),
            ));
        };
        let Content::Sms { body } = &notification.content else {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidContent,
                format!(
                    "notification {} reached the SMS channel without SMS content",
                    notification.notification_id
                ),
            ));
        };
        if !is_e164(phone) {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidRecipient,
                format!(
                    "phone number {} is not an E.164 number (`+` then 8 to 15 digits)",
                    notification.recipient.masked()
                ),
            )
            .with_code("invalid_phone"));
        }
        let segmentation = self.check_body(body)?;

        let sms = OutgoingSms {
            notification_id: notification.notification_id,
            tenant_id: notification.tenant_id,
            to: phone,
            body,
        };
        let delivery = failover::send(self.providers_for(notification.tenant_id), &sms).await?;

        tracing::debug!(
            notification_id = %notification.notification_id,
            tenant_id = %notification.tenant_id,
            recipient = %notification.recipient.masked(),
            provider = %delivery.provider.name(),
            message_id = delivery.accepted.message_id.as_deref().unwrap_or(""),
            segments = segmentation.count(),
            encoding = %segmentation.encoding,
            "SMS delivered"
        );
        let mut receipt = Receipt::new(delivery.provider.name())
            .with_detail("segments", segmentation.count())
            .with_detail("encoding", segmentation.encoding.as_str())
            .with_detail("status", delivery.accepted.status)
            .with_detail("provider_attempts", delivery.attempts);
        if let Some(id) = delivery.accepted.message_id {
            receipt = receipt.with_message_id(id);
        }
        Ok(receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
    const TENANT: &str = "7d444840-9dc0-41a1-8ad4-7e4c7c5b3f10";

    fn twilio() -> TwilioConfig {
        TwilioConfig {
            account_sid: ACCOUNT_SID.to_owned(),
            auth_token: Some("twilio-secret-value".into()),
            from: Some("+15550199".to_owned()),
            ..TwilioConfig::default()
        }
    }

    fn gateway(name: &str) -> HttpProviderConfig {
        HttpProviderConfig {
            name: name.to_owned(),
            url: "https://sms.example.com/send".to_owned(),
            ..HttpProviderConfig::default()
        }
    }

    fn config(providers: Vec<ProviderConfig>) -> SmsConfig {
        SmsConfig {
            enabled: true,
            providers,
            ..SmsConfig::default()
        }
    }

    fn no_env(_: &str) -> Result<String, VarError> {
        Err(VarError::NotPresent)
    }

    fn build_error(config: &SmsConfig) -> String {
        SmsChannel::with_env(config, no_env)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn valid_config_builds() {
        let config = config(vec![
            ProviderConfig::Twilio(twilio()),
            ProviderConfig::Http(gateway("backup")),
        ]);

        let channel = SmsChannel::with_env(&config, no_env).unwrap();

        let names: Vec<&str> = channel.providers.iter().map(Provider::name).collect();
        assert_eq!(names, ["twilio", "backup"]);
    }

    #[test]
    fn no_providers_is_an_error() {
        assert!(build_error(&config(Vec::new())).contains("`channels.sms.providers` is empty"));
    }

    #[test]
    fn limits_are_checked() {
        let cases = [
            (
                SmsConfig {
                    max_segments: 0,
                    ..config(vec![ProviderConfig::Twilio(twilio())])
                },
                "channels.sms.max_segments",
            ),
            (
                SmsConfig {
                    max_segments: 256,
                    ..config(vec![ProviderConfig::Twilio(twilio())])
                },
                "channels.sms.max_segments",
            ),
            (
                SmsConfig {
                    max_chars: 0,
                    ..config(vec![ProviderConfig::Twilio(twilio())])
                },
                "channels.sms.max_chars",
            ),
            (
                SmsConfig {
                    timeout_secs: 0,
                    ..config(vec![ProviderConfig::Twilio(twilio())])
                },
                "channels.sms.timeout_secs",
            ),
        ];

        for (config, key) in cases {
            assert!(build_error(&config).contains(key), "{key}");
        }
    }

    #[test]
    fn invalid_twilio_entries_name_their_key() {
        let cases = [
            (TwilioConfig { account_sid: String::new(), ..twilio() }, "`channels.sms.providers[0].account_sid`"),
            (TwilioConfig { auth_token: None, ..twilio() }, "`channels.sms.providers[0].auth_token_env` is missing"),
            (TwilioConfig { auth_token: Some("  ".into()), ..twilio() }, "`channels.sms.providers[0].auth_token`"),
            (
                TwilioConfig { auth_token_env: Some("TOKEN".to_owned()), ..twilio() },
                "`channels.sms.providers[0].auth_token` and `channels.sms.providers[0].auth_token_env` are both set",
            ),
            (TwilioConfig { from: None, ..twilio() }, "`channels.sms.providers[0].messaging_service_sid` is missing"),
            (
                TwilioConfig { messaging_service_sid: Some("MG123".to_owned()), from: None, ..twilio() },
                "`channels.sms.providers[0].messaging_service_sid`",
            ),
            (TwilioConfig { base_url: "not a url".to_owned(), ..twilio() }, "`channels.sms.providers[0].base_url`"),
        ];

        for (entry, expected) in cases {
            let error = build_error(&config(vec![ProviderConfig::Twilio(entry)]));

            assert!(error.contains(expected), "expected {expected} in: {error}");
        }
    }

    #[test]
    fn invalid_http_entries_name_their_key() {
        let cases = [
            (
                HttpProviderConfig {
                    name: String::new(),
                    ..gateway("g")
                },
                "`channels.sms.providers[0].name`",
            ),
            (
                HttpProviderConfig {
                    url: "ftp://sms.example.com".to_owned(),
                    ..gateway("g")
                },
                "`channels.sms.providers[0].url`",
            ),
            (
                HttpProviderConfig {
                    body_template: "{}".to_owned(),
                    ..gateway("g")
                },
                "`channels.sms.providers[0].body_template`",
            ),
            (
                HttpProviderConfig {
                    auth_value: Some("x".into()),
                    ..gateway("g")
                },
                "`channels.sms.providers[0].auth_header` is missing",
            ),
            (
                HttpProviderConfig {
                    auth_header: Some("Bad Header".to_owned()),
                    auth_value: Some("x".into()),
                    ..gateway("g")
                },
                "`channels.sms.providers[0].auth_header`",
            ),
            (
                HttpProviderConfig {
                    auth_header: Some("Authorization".to_owned()),
                    auth_value: Some("a\nb".into()),
                    ..gateway("g")
                },
                "`channels.sms.providers[0].auth_value`",
            ),
            (
                HttpProviderConfig {
                    message_id_pointer: Some("id".to_owned()),
                    ..gateway("g")
                },
                "`channels.sms.providers[0].message_id_pointer`",
            ),
        ];

        for (entry, expected) in cases {
            let error = build_error(&config(vec![ProviderConfig::Http(entry)]));

            assert!(error.contains(expected), "expected {expected} in: {error}");
        }
    }

    #[test]
    fn secret_is_read_from_named_variable() {
        let entry = TwilioConfig {
            auth_token: None,
            auth_token_env: Some("TWILIO_TOKEN_TEST".to_owned()),
            ..twilio()
        };
        let config = config(vec![ProviderConfig::Twilio(entry)]);

        let missing = build_error(&config);
        let built = SmsChannel::with_env(&config, |name| {
            assert_eq!(name, "TWILIO_TOKEN_TEST");
            Ok("token-from-env".to_owned())
        });

        assert!(
            missing.contains("environment variable `TWILIO_TOKEN_TEST`"),
            "{missing}"
        );
        assert!(
            missing.contains("channels.sms.providers[0].auth_token_env"),
            "{missing}"
        );
        assert!(built.is_ok());
    }

    #[test]
    fn duplicate_provider_names_are_rejected() {
        let config = config(vec![
            ProviderConfig::Http(gateway("same")),
            ProviderConfig::Http(gateway("same")),
        ]);

        let error = build_error(&config);

        assert!(error.contains("two providers named `same`"), "{error}");
    }

    #[test]
    fn tenant_lists_are_validated() {
        let mut bad_id = config(vec![ProviderConfig::Twilio(twilio())]);
        bad_id.tenant_providers.insert(
            "tenant-a".to_owned(),
            vec![ProviderConfig::Twilio(twilio())],
        );
        let mut empty = config(vec![ProviderConfig::Twilio(twilio())]);
        empty.tenant_providers.insert(TENANT.to_owned(), Vec::new());
        let mut duplicate = config(vec![ProviderConfig::Twilio(twilio())]);
        duplicate
            .tenant_providers
            .insert(TENANT.to_owned(), vec![ProviderConfig::Twilio(twilio())]);
        duplicate.tenant_providers.insert(
            TENANT.to_uppercase(),
            vec![ProviderConfig::Twilio(twilio())],
        );
        let mut invalid_entry = config(vec![ProviderConfig::Twilio(twilio())]);
        invalid_entry
            .tenant_providers
            .insert(TENANT.to_owned(), vec![ProviderConfig::Http(gateway(""))]);

        assert!(build_error(&bad_id).contains("`tenant-a`"));
        assert!(build_error(&empty).contains(&format!(
            "`channels.sms.tenant_providers.{TENANT}` is empty"
        )));
        assert!(build_error(&duplicate).contains("more than once"));
        assert!(build_error(&invalid_entry)
            .contains(&format!("channels.sms.tenant_providers.{TENANT}[0].name")));
    }

    #[test]
    fn error_messages_do_not_contain_secrets() {
        let entry = HttpProviderConfig {
            auth_header: Some("Authorization".to_owned()),
            auth_value: Some("Bearer secret-value\n".into()),
            ..gateway("g")
        };

        let error = build_error(&config(vec![ProviderConfig::Http(entry)]));

        assert!(!error.contains("secret-value"), "{error}");
    }

    #[test]
    fn debug_hides_secrets() {
        let entry = HttpProviderConfig {
            auth_header: Some("Authorization".to_owned()),
            auth_value: Some("Bearer gateway-secret".into()),
            ..gateway("backup")
        };
        let config = config(vec![
            ProviderConfig::Twilio(twilio()),
            ProviderConfig::Http(entry),
        ]);
        let channel = SmsChannel::with_env(&config, no_env).unwrap();

        let debug = format!("{channel:?}");

        assert!(!debug.contains("gateway-secret"), "{debug}");
        assert!(!debug.contains("twilio-secret-value"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn e164_rule_matches_core() {
        for valid in ["+15550100", "+491701234567", "+123456789012345"] {
            assert!(is_e164(valid), "{valid}");
        }
        for invalid in [
            "15550100",
            "+1555",
            "+1555010O",
            "+0155501000",
            "+1234567890123456",
            "+",
            "",
        ] {
            assert!(!is_e164(invalid), "{invalid}");
        }
    }
}
