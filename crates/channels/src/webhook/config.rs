//! Configuration of the webhook channel, the `channels.webhook` section.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Settings of the webhook channel.
///
/// Secrets are Standard Webhooks secrets of the form `whsec_<base64 key>`.
/// [`WebhookChannel::new`](super::WebhookChannel::new) validates them, and
/// `Debug` prints `<redacted>` in their place.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Whether the service registers the webhook channel. Default `false`.
    pub enabled: bool,
    /// Maximum time in seconds for one request, from connecting until the
    /// response has been read. Default 10.
    pub timeout_secs: u64,
    /// `User-Agent` header of every request. Default `flatrender-notify/<version>`.
    pub user_agent: String,
    /// Secret for tenants without an entry in `tenant_secret_env`. Usually
    /// set through the environment variable
    /// `NOTIFY__CHANNELS__WEBHOOK__SIGNING_SECRET`. Default none.
    pub signing_secret: Option<String>,
    /// Map from tenant UUID to the name of the environment variable that
    /// contains the tenant's secret. The secrets themselves are not keyed by
    /// UUID because environment variable names cannot contain the `-` of a
    /// UUID. Default empty.
    pub tenant_secret_env: BTreeMap<String, String>,
    /// Whether receivers on loopback and private addresses are allowed, for
    /// development. Default `false`.
    ///
    /// With `false`, the channel rejects loopback, private (RFC 1918 and
    /// fc00::/7), carrier-grade NAT (100.64.0.0/10) and unspecified addresses,
    /// also in IPv4-mapped form, and the name `localhost`. Link-local,
    /// multicast and broadcast addresses and cloud metadata endpoints (such
    /// as 169.254.169.254, `fd00:ec2::254` and `metadata.google.internal`)
    /// are rejected whatever this setting is.
    ///
    /// The check applies to IP literals in the URL and to every address a
    /// host name resolves to. The request connects only to the allowed
    /// addresses of the DNS answer, and a host with none fails permanently
    /// with the code `destination_forbidden`. Redirects are never followed,
    /// so a receiver cannot send the request on to a forbidden address.
    pub allow_loopback: bool,
}

impl WebhookConfig {
    /// Key of [`WebhookConfig::signing_secret`] in the service configuration,
    /// used in error messages.
    pub const SIGNING_SECRET_KEY: &'static str = "channels.webhook.signing_secret";
    /// Key of [`WebhookConfig::tenant_secret_env`] in the service configuration.
    pub const TENANT_SECRET_ENV_KEY: &'static str = "channels.webhook.tenant_secret_env";
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enabled: false,
            timeout_secs: 10,
            user_agent: default_user_agent(),
            signing_secret: None,
            tenant_secret_env: BTreeMap::new(),
            allow_loopback: false,
        }
    }
}

/// `flatrender-notify/` followed by the version of this crate.
pub fn default_user_agent() -> String {
    format!("flatrender-notify/{}", env!("CARGO_PKG_VERSION"))
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("enabled", &self.enabled)
            .field("timeout_secs", &self.timeout_secs)
            .field("user_agent", &self.user_agent)
            .field(
                "signing_secret",
                &self.signing_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("tenant_secret_env", &self.tenant_secret_env)
            .field("allow_loopback", &self.allow_loopback)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gets_defaults() {
        let config: WebhookConfig = serde_json::from_str("{}").unwrap();

        assert!(!config.enabled);
        assert_eq!(config.timeout_secs, 10);
        assert_eq!(
            config.user_agent,
            format!("flatrender-notify/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(config.signing_secret, None);
        assert!(config.tenant_secret_env.is_empty());
        assert!(!config.allow_loopback);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = serde_json::from_str::<WebhookConfig>(r#"{"signing_secrets": "whsec_AAAA"}"#)
            .unwrap_err();

        assert!(err.to_string().contains("signing_secrets"), "{err}");
    }

    #[test]
    fn debug_hides_signing_secret() {
        let config = WebhookConfig {
            signing_secret: Some("whsec_c2VjcmV0LWtleS1ieXRlcw==".to_owned()),
            ..WebhookConfig::default()
        };

        let debug = format!("{config:?}");

        assert!(!debug.contains("c2VjcmV0"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
