//! Configuration of the push channel, the `channels.push` section with its
//! optional `fcm` and `apns` tables.

use std::path::PathBuf;

use serde::Deserialize;

/// Configuration keys named in error messages.
pub(crate) mod keys {
    pub const TIMEOUT_SECS: &str = "channels.push.timeout_secs";
    pub const FCM_PROJECT_ID: &str = "channels.push.fcm.project_id";
    pub const FCM_SERVICE_ACCOUNT_FILE: &str = "channels.push.fcm.service_account_file";
    pub const FCM_SERVICE_ACCOUNT_JSON_ENV: &str = "channels.push.fcm.service_account_json_env";
    pub const FCM_BASE_URL: &str = "channels.push.fcm.base_url";
    pub const FCM_TOKEN_URL: &str = "channels.push.fcm.token_url";
    pub const FCM_ANDROID_TTL_SECS: &str = "channels.push.fcm.android.ttl_secs";
    pub const FCM_APNS_PRIORITY: &str = "channels.push.fcm.apns.priority";
    pub const APNS_TEAM_ID: &str = "channels.push.apns.team_id";
    pub const APNS_KEY_ID: &str = "channels.push.apns.key_id";
    pub const APNS_KEY_FILE: &str = "channels.push.apns.key_file";
    pub const APNS_KEY_ENV: &str = "channels.push.apns.key_env";
    pub const APNS_TOPIC: &str = "channels.push.apns.topic";
    pub const APNS_BASE_URL: &str = "channels.push.apns.base_url";
    pub const APNS_PRIORITY: &str = "channels.push.apns.priority";
    pub const APNS_COLLAPSE_ID: &str = "channels.push.apns.collapse_id";
}

/// Production FCM host, the default of `channels.push.fcm.base_url`.
pub const FCM_BASE_URL: &str = "https://fcm.googleapis.com";
/// APNs host for apps signed for distribution.
pub const APNS_PRODUCTION_URL: &str = "https://api.push.apple.com";
/// APNs host for development builds of an app.
pub const APNS_SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";

/// Settings of the push channel.
///
/// Key material is never part of the configuration itself: it is read from
/// the files or environment variables that the configuration names, so
/// `Debug` shows no secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Whether the service registers the push channel. Default `false`.
    pub enabled: bool,
    /// Maximum time in seconds for one HTTP request to FCM, APNs or the
    /// OAuth2 token endpoint, from connecting until the response has been
    /// read. Default 10.
    pub timeout_secs: u64,
    /// Firebase Cloud Messaging. Without it, notifications to FCM device
    /// tokens fail with a permanent configuration error. Default none.
    pub fcm: Option<FcmConfig>,
    /// Apple Push Notification service. Without it, notifications to APNs
    /// device tokens fail with a permanent configuration error. Default none.
    pub apns: Option<ApnsConfig>,
}

impl PushConfig {
    /// Prefix of the keys of this section, used in error messages.
    pub const SECTION: &'static str = "channels.push";
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            enabled: false,
            timeout_secs: 10,
            fcm: None,
            apns: None,
        }
    }
}

/// Settings of the FCM HTTP v1 API, the `channels.push.fcm` table.
///
/// Set exactly one of `service_account_file` and `service_account_json_env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// Firebase project id, the `{project_id}` of
    /// `/v1/projects/{project_id}/messages:send`. Required.
    pub project_id: String,
    /// Path of a Google service-account key file (JSON with `client_email`,
    /// `private_key` and `token_uri`). Default none.
    #[serde(default)]
    pub service_account_file: Option<PathBuf>,
    /// Name of an environment variable that contains the service-account key
    /// JSON itself. Default none.
    #[serde(default)]
    pub service_account_json_env: Option<String>,
    /// Scheme, host and optional port of the FCM API. Default
    /// `https://fcm.googleapis.com`.
    #[serde(default = "default_fcm_base_url")]
    pub base_url: String,
    /// OAuth2 token endpoint that access tokens are requested from. Default
    /// none, which means the `token_uri` of the service-account key. The JWT
    /// assertion's `aud` claim is always that `token_uri`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Options for Android devices, the `android` object of each message.
    #[serde(default)]
    pub android: FcmAndroidConfig,
    /// Options for Apple devices reached through FCM, the `apns` object of
    /// each message.
    #[serde(default)]
    pub apns: FcmApnsConfig,
}

fn default_fcm_base_url() -> String {
    FCM_BASE_URL.to_owned()
}

/// Android delivery priority of an FCM message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AndroidPriority {
    /// Delivery may wait until the device leaves Doze mode.
    Normal,
    /// Delivery wakes a sleeping device.
    #[default]
    High,
}

impl AndroidPriority {
    /// Returns the value of `android.priority` in the FCM v1 API.
    pub fn as_fcm_str(self) -> &'static str {
        match self {
            AndroidPriority::Normal => "NORMAL",
            AndroidPriority::High => "HIGH",
        }
    }
}

/// The `channels.push.fcm.android` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcmAndroidConfig {
    /// `normal` or `high`. Default `high`.
    pub priority: AndroidPriority,
    /// How long FCM keeps an undelivered message, in seconds. Default none,
    /// which leaves FCM's own default of four weeks.
    pub ttl_secs: Option<u64>,
}

/// The `channels.push.fcm.apns` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcmApnsConfig {
    /// `apns-priority` header FCM passes to APNs: 10 sends at once, 5 lets
    /// the device save power. Default 10.
    pub priority: u8,
}

impl Default for FcmApnsConfig {
    fn default() -> Self {
        FcmApnsConfig { priority: 10 }
    }
}

/// APNs host that serves the device tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    /// `https://api.push.apple.com`, for App Store, TestFlight and ad hoc builds.
    #[default]
    Production,
    /// `https://api.sandbox.push.apple.com`, for development builds.
    Sandbox,
}

impl ApnsEnvironment {
    /// Returns the APNs base URL of this environment.
    pub fn base_url(self) -> &'static str {
        match self {
            ApnsEnvironment::Production => APNS_PRODUCTION_URL,
            ApnsEnvironment::Sandbox => APNS_SANDBOX_URL,
        }
    }
}

/// Settings of token-based APNs, the `channels.push.apns` table.
///
/// Set exactly one of `key_file` and `key_env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    /// Apple developer team id, the `iss` claim of the provider token. Required.
    pub team_id: String,
    /// Id of the APNs auth key, the `kid` header of the provider token. Required.
    pub key_id: String,
    /// Path of the `.p8` auth key (PKCS#8 PEM, EC P-256). Default none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name of an environment variable that contains the `.p8` PEM text.
    /// Default none.
    #[serde(default)]
    pub key_env: Option<String>,
    /// `apns-topic` header: the app's bundle id. Required.
    pub topic: String,
    /// `production` or `sandbox`. Default `production`.
    #[serde(default)]
    pub environment: ApnsEnvironment,
    /// Replaces the host that `environment` selects. Default none.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Whether to speak HTTP/2 without negotiating it first. Over TLS this
    /// offers only `h2` in ALPN, over plain HTTP it sends the HTTP/2
    /// preface at once. APNs accepts HTTP/2 only, so keep the default
    /// `true` in production. `false` negotiates the version, which is
    /// HTTP/1.1 on plain HTTP.
    #[serde(default = "default_true")]
    pub http2_prior_knowledge: bool,
    /// `apns-priority` header: 10 sends at once, 5 lets the device save
    /// power. Default 10.
    #[serde(default = "default_apns_priority")]
    pub priority: u8,
    /// Fixed `apns-collapse-id` of every notification, at most 64 bytes, so a
    /// device shows only the newest one. Default none.
    #[serde(default)]
    pub collapse_id: Option<String>,
    /// Whether the template name becomes the `apns-collapse-id`, so a device
    /// shows only the newest notification of each template. Names longer
    /// than 64 bytes are sent without the header. Default `false`.
    #[serde(default)]
    pub collapse_id_from_template: bool,
}

fn default_true() -> bool {
    true
}

fn default_apns_priority() -> u8 {
    10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gets_defaults() {
        let config: PushConfig = serde_json::from_str("{}").unwrap();

        assert!(!config.enabled);
        assert_eq!(config.timeout_secs, 10);
        assert!(config.fcm.is_none());
        assert!(config.apns.is_none());
    }

    #[test]
    fn fcm_table_gets_defaults() {
        let config: PushConfig = serde_json::from_str(
            r#"{"fcm": {"project_id": "demo", "service_account_json_env": "SA"}}"#,
        )
        .unwrap();

        let fcm = config.fcm.unwrap();
        assert_eq!(fcm.base_url, "https://fcm.googleapis.com");
        assert_eq!(fcm.token_url, None);
        assert_eq!(fcm.android.priority, AndroidPriority::High);
        assert_eq!(fcm.android.ttl_secs, None);
        assert_eq!(fcm.apns.priority, 10);
    }

    #[test]
    fn apns_table_gets_defaults() {
        let config: PushConfig = serde_json::from_str(
            r#"{"apns": {"team_id": "TEAM123456", "key_id": "KEY1234567", "key_env": "P8", "topic": "com.example.app"}}"#,
        )
        .unwrap();

        let apns = config.apns.unwrap();
        assert_eq!(apns.environment, ApnsEnvironment::Production);
        assert_eq!(apns.environment.base_url(), "https://api.push.apple.com");
        assert_eq!(apns.base_url, None);
        assert!(apns.http2_prior_knowledge);
        assert_eq!(apns.priority, 10);
        assert_eq!(apns.collapse_id, None);
        assert!(!apns.collapse_id_from_template);
    }

    #[test]
    fn sandbox_environment_selects_sandbox_host() {
        let environment: ApnsEnvironment = serde_json::from_str(r#""sandbox""#).unwrap();

        assert_eq!(environment.base_url(), "https://api.sandbox.push.apple.com");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        for json in [
            r#"{"fmc": {}}"#,
            r#"{"fcm": {"project_id": "demo", "projectid": "x"}}"#,
            r#"{"apns": {"team_id": "T", "key_id": "K", "topic": "t", "keyfile": "x"}}"#,
            r#"{"fcm": {"project_id": "demo", "android": {"prio": "high"}}}"#,
        ] {
            assert!(serde_json::from_str::<PushConfig>(json).is_err(), "{json}");
        }
    }
}
