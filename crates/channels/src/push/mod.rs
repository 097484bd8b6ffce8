//! The push channel: sends each notification to a mobile device through
//! Firebase Cloud Messaging or the Apple Push Notification service, chosen
//! by the recipient's `platform`.
//!
//! - [`config`]: the `channels.push` settings and their defaults.
//! - [`token`]: cached credentials, OAuth2 access tokens for FCM and ES256
//!   provider tokens for APNs, and the [`Clock`] they are aged by.
//! - `fcm` and `apns`: the requests and the classification of each
//!   provider's responses.
//! - [`error`]: [`PushError`] for invalid configuration.
//! - This module: [`PushChannel`], which loads and checks the keys once at
//!   construction and routes each send.
//!
//! Outcomes, with codes such as `fcm_UNREGISTERED` and `apns_BadDeviceToken`:
//!
//! - FCM `UNREGISTERED`, an FCM `INVALID_ARGUMENT` whose field violation
//!   names `message.token`, APNs `BadDeviceToken`, `Unregistered` and 410 are
//!   permanent [`FailureKind::RecipientGone`], the mark for a dead token.
//! - Other FCM 400s and APNs `PayloadTooLarge` are permanent
//!   [`FailureKind::InvalidContent`].
//! - 429, 5xx, timeouts and connection failures are transient, with the
//!   provider's `Retry-After` when it sends one.
//! - An FCM 401 or an APNs `ExpiredProviderToken` replaces the token and
//!   repeats the request once within the same send.
//!
//! APNs accepts only HTTP/2. With `http2_prior_knowledge = true`, the
//! default, the client (reqwest 0.12 with rustls) offers only `h2` in TLS
//! ALPN, and on a plain `http` base URL it starts with the HTTP/2 preface.
//! Tests use the default against a local wiremock server, which accepts
//! HTTP/2 without TLS, and also check that `false` works over HTTP/1.1.

pub mod config;
pub mod error;
pub mod token;

mod apns;
mod fcm;

use std::env::VarError;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify_core::{
    Channel, ChannelKind, Content, DeliveryError, FailureKind, Notification, PushPlatform, Receipt,
    Recipient,
};
use reqwest::header::HeaderValue;
use reqwest::redirect;
use url::Url;

pub use config::{
    AndroidPriority, ApnsConfig, ApnsEnvironment, FcmAndroidConfig, FcmApnsConfig, FcmConfig,
    PushConfig,
};
pub use error::PushError;
pub use token::{Clock, SystemClock};

use apns::{ApnsSender, CollapseId};
use config::keys;
use fcm::{FcmSender, MessageOptions};
use token::{read_key_text, AccessTokenSource, ProviderTokenSigner, ServiceAccount};

/// Maximum time-to-live FCM accepts for an Android message: four weeks.
const MAX_ANDROID_TTL_SECS: u64 = 28 * 24 * 60 * 60;

/// The push [`Channel`] plugin.
#[derive(Debug)]
pub struct PushChannel {
    fcm: Option<FcmSender>,
    apns: Option<ApnsSender>,
}

impl PushChannel {
    /// Builds the channel, reading keys from files and from the process
    /// environment.
    ///
    /// # Errors
    ///
    /// Returns [`PushError`] naming the `channels.push.…` key at fault when
    /// no provider is configured, a value is invalid, or a key cannot be
    /// read or cannot sign.
    pub fn new(config: &PushConfig) -> Result<PushChannel, PushError> {
        PushChannel::with_env(config, |name| std::env::var(name))
    }

    /// Builds the channel, reading the variables named by
    /// `service_account_json_env` and `key_env` through `read_env`, which has
    /// the contract of [`std::env::var`].
    ///
    /// # Errors
    ///
    /// The same as [`PushChannel::new`].
    pub fn with_env<F>(config: &PushConfig, read_env: F) -> Result<PushChannel, PushError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        PushChannel::with_env_and_clock(config, read_env, Arc::new(SystemClock))
    }

    /// Builds the channel like [`PushChannel::with_env`], with `clock` as the
    /// time that tokens are issued and aged by.
    ///
    /// # Errors
    ///
    /// The same as [`PushChannel::new`].
    pub fn with_env_and_clock<F>(
        config: &PushConfig,
        read_env: F,
        clock: Arc<dyn Clock>,
    ) -> Result<PushChannel, PushError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        if config.fcm.is_none() && config.apns.is_none() {
            return Err(PushError::NoProvider);
        }
        if config.timeout_secs == 0 {
            return Err(invalid(keys::TIMEOUT_SECS, "it is 0; set at least 1"));
        }
        let timeout = Duration::from_secs(config.timeout_secs);

        let fcm = config
            .fcm
            .as_ref()
            .map(|fcm| build_fcm(fcm, timeout, &read_env, clock.clone()))
            .transpose()?;
        let apns = config
            .apns
            .as_ref()
            .map(|apns| build_apns(apns, timeout, &read_env, clock.clone()))
            .transpose()?;

        Ok(PushChannel { fcm, apns })
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> PushError {
    PushError::InvalidConfig {
        key,
        reason: reason.into(),
    }
}

fn build_fcm<F>(
    config: &FcmConfig,
    timeout: Duration,
    read_env: &F,
    clock: Arc<dyn Clock>,
) -> Result<FcmSender, PushError>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    let project_id = config.project_id.as_str();
    // Project ids are lowercase letters, digits and hyphens; older
    // domain-scoped ones also contain `.` and `:`.
    let valid_project_id = !project_id.is_empty()
        && project_id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
        });
    if !valid_project_id {
        return Err(invalid(
            keys::FCM_PROJECT_ID,
            "expected a Firebase project id of lowercase letters, digits and hyphens",
        ));
    }
    if config
        .android
        .ttl_secs
        .is_some_and(|ttl| ttl > MAX_ANDROID_TTL_SECS)
    {
        return Err(invalid(
            keys::FCM_ANDROID_TTL_SECS,
            format!("it is above FCM's maximum of {MAX_ANDROID_TTL_SECS} seconds (four weeks)"),
        ));
    }
    check_apns_priority(keys::FCM_APNS_PRIORITY, config.apns.priority)?;

    let key = read_key_text(
        (
            keys::FCM_SERVICE_ACCOUNT_FILE,
            config.service_account_file.as_deref(),
        ),
        (
            keys::FCM_SERVICE_ACCOUNT_JSON_ENV,
            config.service_account_json_env.as_deref(),
        ),
        read_env,
    )?;
    let key_setting = if config.service_account_file.is_some() {
        keys::FCM_SERVICE_ACCOUNT_FILE
    } else {
        keys::FCM_SERVICE_ACCOUNT_JSON_ENV
    };
    let account = ServiceAccount::parse(&key.text).map_err(|reason| PushError::InvalidKey {
        key: key_setting,
        source_name: key.source_name.clone(),
        reason,
    })?;

    let base_url = parse_http_url(keys::FCM_BASE_URL, &config.base_url)?;
    let send_url = format!(
        "{}/v1/projects/{project_id}/messages:send",
        base_url.as_str().trim_end_matches('/')
    );
    let send_url = Url::parse(&send_url).map_err(|_| {
        invalid(
            keys::FCM_BASE_URL,
            "joined with the project id, it does not form a valid URL",
        )
    })?;
    let token_url = match &config.token_url {
        Some(url) => parse_http_url(keys::FCM_TOKEN_URL, url)?,
        None => {
            parse_http_url(key_setting, &account.token_uri).map_err(|_| PushError::InvalidKey {
                key: key_setting,
                source_name: key.source_name.clone(),
                reason: "`token_uri` is not an http or https URL".to_owned(),
            })?
        }
    };

    let client = base_client(timeout)
        .build()
        .map_err(|source| PushError::Client {
            provider: "FCM",
            source,
        })?;
    let tokens = AccessTokenSource::new(client.clone(), account, token_url, timeout, clock);

    Ok(FcmSender::new(
        client,
        send_url,
        tokens,
        timeout,
        MessageOptions::from_config(config),
    ))
}

fn build_apns<F>(
    config: &ApnsConfig,
    timeout: Duration,
    read_env: &F,
    clock: Arc<dyn Clock>,
) -> Result<ApnsSender, PushError>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    for (key, value) in [
        (keys::APNS_TEAM_ID, &config.team_id),
        (keys::APNS_KEY_ID, &config.key_id),
    ] {
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(
                key,
                "expected the 10-character id from the Apple developer account, letters and digits only",
            ));
        }
    }
    let topic = HeaderValue::from_str(&config.topic)
        .ok()
        .filter(|_| !config.topic.is_empty() && !config.topic.contains(char::is_whitespace))
        .ok_or_else(|| {
            invalid(
                keys::APNS_TOPIC,
                "expected the app's bundle id, such as `com.example.app`",
            )
        })?;
    check_apns_priority(keys::APNS_PRIORITY, config.priority)?;
    let collapse_id = collapse_id(config)?;

    let base_url = config
        .base_url
        .as_deref()
        .unwrap_or(config.environment.base_url());
    let base_url = parse_http_url(keys::APNS_BASE_URL, base_url)?;

    let key = read_key_text(
        (keys::APNS_KEY_FILE, config.key_file.as_deref()),
        (keys::APNS_KEY_ENV, config.key_env.as_deref()),
        read_env,
    )?;
    let key_setting = if config.key_file.is_some() {
        keys::APNS_KEY_FILE
    } else {
        keys::APNS_KEY_ENV
    };
    let signer = ProviderTokenSigner::new(
        &key.text,
        config.key_id.clone(),
        config.team_id.clone(),
        clock,
    )
    .map_err(|reason| PushError::InvalidKey {
        key: key_setting,
        source_name: key.source_name.clone(),
        reason,
    })?;

    let mut builder = base_client(timeout);
    if config.http2_prior_knowledge {
        builder = builder.http2_prior_knowledge();
    }
    let client = builder.build().map_err(|source| PushError::Client {
        provider: "APNs",
        source,
    })?;

    Ok(ApnsSender::new(
        client,
        base_url.as_str(),
        topic,
        config.priority,
        collapse_id,
        signer,
        timeout,
    ))
}

/// Client settings shared by FCM and APNs. Proxy variables of the
/// environment apply, because egress to Google and Apple often needs one.
fn base_client(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(redirect::Policy::none())
        .user_agent(crate::webhook::config::default_user_agent())
}

fn check_apns_priority(key: &'static str, priority: u8) -> Result<(), PushError> {
    if matches!(priority, 5 | 10) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("it is {priority}; APNs priorities are 10 (immediate) and 5 (power-saving)"),
        ))
    }
}

fn collapse_id(config: &ApnsConfig) -> Result<CollapseId, PushError> {
    match (&config.collapse_id, config.collapse_id_from_template) {
        (Some(_), true) => Err(invalid(
            keys::APNS_COLLAPSE_ID,
            "set either `collapse_id` or `collapse_id_from_template = true`, not both",
        )),
        (Some(value), false) => {
            if value.is_empty() || value.len() > apns::MAX_COLLAPSE_ID_BYTES {
                return Err(invalid(keys::APNS_COLLAPSE_ID, "expected 1 to 64 bytes"));
            }
            HeaderValue::from_str(value)
                .map(CollapseId::Fixed)
                .map_err(|_| {
                    invalid(
                        keys::APNS_COLLAPSE_ID,
                        "it is not a valid HTTP header value",
                    )
                })
        }
        (None, true) => Ok(CollapseId::Template),
        (None, false) => Ok(CollapseId::None),
    }
}

/// Parses an absolute `http` or `https` URL with a host.
fn parse_http_url(key: &'static str, value: &str) -> Result<Url, PushError> {
    let url = Url::parse(value).map_err(|_| invalid(key, "it is not a valid URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(key, "expected an http or https URL with a host"));
    }
    Ok(url)
}

#[async_trait]
impl Channel for PushChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Push
    }

    async fn send(&self, notification: &Notification) -> Result<Receipt, DeliveryError> {
        let Recipient::Push {
            device_token,
            platform,
        } = &notification.recipient
        else {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidRecipient,
                format!(
                    "notification {} reached the push channel without a push recipient",
                    notification.notification_id
                ),
            ));
        };
        let Content::Push { title, body } = &notification.content else {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidContent,
                format!(
                    "notification {} reached the push channel without push content",
                    notification.notification_id
                ),
            ));
        };

        match platform {
            PushPlatform::Fcm => match &self.fcm {
                Some(fcm) => fcm.send(notification, device_token, title, body).await,
                None => Err(not_configured("FCM", "channels.push.fcm")),
            },
            PushPlatform::Apns => match &self.apns {
                Some(apns) => apns.send(notification, device_token, title, body).await,
                None => Err(not_configured("APNs", "channels.push.apns")),
            },
        }
    }
}

fn not_configured(provider: &str, section: &str) -> DeliveryError {
    DeliveryError::permanent(
        FailureKind::Configuration,
        format!(
            "the notification is for an {provider} device token, but `{section}` is not configured"
        ),
    )
    .with_code("platform_not_configured")
}
