//! The webhook channel: POSTs each notification as signed JSON to the
//! recipient's URL.
//!
//! - [`config`]: the `channels.webhook` settings and their defaults.
//! - [`payload`]: the JSON body, identical on every retry.
//! - [`signature`]: Standard Webhooks signing (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`) and a receiver-side check.
//! - [`error`]: configuration errors and the mapping of HTTP outcomes to
//!   [`DeliveryError`]s.
//! - [`resolver`]: the address ranges and host names a webhook must not
//!   reach, and the DNS resolver that drops forbidden addresses.
//! - This module: [`WebhookChannel`], which validates the secrets once at
//!   construction and sends.
//!
//! Outcomes: 2xx is delivered. 408, 429, 5xx, timeouts and connection
//! failures are transient. Redirects (never followed), 410, other 4xx and
//! forbidden destinations are permanent.

pub mod config;
pub mod error;
pub mod payload;
pub mod resolver;
pub mod signature;

use std::collections::HashMap;
use std::env::VarError;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify_core::recipient::mask_url;
use notify_core::{
    Channel, ChannelKind, DeliveryError, FailureKind, Notification, Receipt, Recipient,
};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::redirect;
use url::{Host, Url};
use uuid::Uuid;

pub use config::WebhookConfig;
pub use error::WebhookError;
pub use resolver::{DestinationForbidden, ForbiddenRange, LookupFuture};
pub use signature::{SignatureMismatch, SigningSecret};

use resolver::{FilteringResolver, Lookup};
use signature::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

/// Provider name in receipts.
const PROVIDER: &str = "webhook";

/// The webhook [`Channel`] plugin.
#[derive(Debug)]
pub struct WebhookChannel {
    client: reqwest::Client,
    timeout: Duration,
    default_secret: Option<SigningSecret>,
    tenant_secrets: HashMap<Uuid, SigningSecret>,
    allow_loopback: bool,
}

impl WebhookChannel {
    /// Builds the channel, reading per-tenant secrets from the process environment.
    ///
    /// # Errors
    ///
    /// Returns [`WebhookError`] for an invalid secret, a tenant whose secret
    /// variable is not set, a zero timeout or an invalid user agent.
    pub fn new(config: &WebhookConfig) -> Result<WebhookChannel, WebhookError> {
        WebhookChannel::with_env(config, |name| std::env::var(name))
    }

    /// Builds the channel, reading per-tenant secrets through `read_env`,
    /// which has the contract of [`std::env::var`].
    ///
    /// # Errors
    ///
    /// The same as [`WebhookChannel::new`].
    pub fn with_env<F>(config: &WebhookConfig, read_env: F) -> Result<WebhookChannel, WebhookError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        WebhookChannel::build(config, read_env, resolver::system_lookup())
    }

    /// Builds the channel like [`WebhookChannel::new`], but resolves host
    /// names through `lookup` in place of the system resolver. The channel
    /// filters the addresses that `lookup` returns as it filters those of the
    /// system resolver. Tests use it to resolve names without DNS.
    ///
    /// # Errors
    ///
    /// The same as [`WebhookChannel::new`].
    pub fn with_lookup<L, Fut>(
        config: &WebhookConfig,
        lookup: L,
    ) -> Result<WebhookChannel, WebhookError>
    where
        L: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<Vec<IpAddr>>> + Send + 'static,
    {
        let lookup: Lookup =
            Arc::new(move |host: String| -> LookupFuture { Box::pin(lookup(host)) });
        WebhookChannel::build(config, |name| std::env::var(name), lookup)
    }

    fn build<F>(
        config: &WebhookConfig,
        read_env: F,
        lookup: Lookup,
    ) -> Result<WebhookChannel, WebhookError>
    where
        F: Fn(&str) -> Result<String, VarError>,
    {
        if config.timeout_secs == 0 {
            return Err(WebhookError::ZeroTimeout);
        }
        let timeout = Duration::from_secs(config.timeout_secs);
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .map_err(|_| WebhookError::InvalidUserAgent)?;

        let default_secret = config
            .signing_secret
            .as_deref()
            .map(|secret| {
                SigningSecret::parse(secret).map_err(|reason| WebhookError::InvalidSecret {
                    key: WebhookConfig::SIGNING_SECRET_KEY,
                    reason,
                })
            })
            .transpose()?;
        let tenant_secrets = read_tenant_secrets(config, read_env)?;

        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(redirect::Policy::none())
            // Proxy variables of the environment would send every tenant's
            // webhook through a host nobody configured for it.
            .no_proxy()
            // Host names reach only the addresses this resolver lets through.
            // IP literal hosts skip it and are checked in `parse_destination`.
            .dns_resolver(Arc::new(FilteringResolver::new(
                lookup,
                config.allow_loopback,
            )))
            .user_agent(user_agent)
            .build()
            .map_err(WebhookError::Client)?;

        Ok(WebhookChannel {
            client,
            timeout,
            default_secret,
            tenant_secrets,
            allow_loopback: config.allow_loopback,
        })
    }

    /// Returns the tenant's own secret, or else the default secret.
    fn secret_for(&self, tenant_id: Uuid) -> Result<&SigningSecret, DeliveryError> {
        self.tenant_secrets
            .get(&tenant_id)
            .or(self.default_secret.as_ref())
            .ok_or_else(|| {
                DeliveryError::permanent(
                    FailureKind::Configuration,
                    format!(
                        "no webhook signing secret for tenant {tenant_id}; set `{}` or add the tenant to `{}`",
                        WebhookConfig::SIGNING_SECRET_KEY,
                        WebhookConfig::TENANT_SECRET_ENV_KEY,
                    ),
                )
                .with_code("missing_signing_secret")
            })
    }
}

fn read_tenant_secrets<F>(
    config: &WebhookConfig,
    read_env: F,
) -> Result<HashMap<Uuid, SigningSecret>, WebhookError>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    let mut secrets = HashMap::new();
    for (key, variable) in &config.tenant_secret_env {
        let tenant = Uuid::parse_str(key).map_err(|source| WebhookError::InvalidTenantId {
            key: key.clone(),
            source,
        })?;
        let value = match read_env(variable) {
            Ok(value) => value,
            Err(VarError::NotPresent) => {
                return Err(WebhookError::MissingTenantSecretEnv {
                    tenant,
                    variable: variable.clone(),
                });
            }
            Err(VarError::NotUnicode(_)) => {
                return Err(WebhookError::NonUnicodeTenantSecretEnv {
                    tenant,
                    variable: variable.clone(),
                });
            }
        };
        let secret =
            SigningSecret::parse(&value).map_err(|reason| WebhookError::InvalidTenantSecret {
                tenant,
                variable: variable.clone(),
                reason,
            })?;
        // Keys are compared as UUIDs, so upper- and lower-case spellings collide.
        if secrets.insert(tenant, secret).is_some() {
            return Err(WebhookError::DuplicateTenant { tenant });
        }
    }
    Ok(secrets)
}

#[async_trait]
impl Channel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    async fn send(&self, notification: &Notification) -> Result<Receipt, DeliveryError> {
        let Recipient::Webhook { url } = &notification.recipient else {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidRecipient,
                format!(
                    "notification {} reached the webhook channel without a webhook recipient",
                    notification.notification_id
                ),
            ));
        };
        let masked_url = mask_url(url);
        let url = parse_destination(url, &masked_url, self.allow_loopback)?;
        let secret = self.secret_for(notification.tenant_id)?;
        let body = payload::build_body(notification)?;

        let message_id = notification.notification_id.to_string();
        let timestamp = chrono::Utc::now().timestamp();
        let signature = secret.sign(&message_id, timestamp, &body);

        let result = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(WEBHOOK_ID, &message_id)
            .header(WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(WEBHOOK_SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                return Err(error::classify_transport_error(
                    err,
                    &masked_url,
                    self.timeout,
                ))
            }
        };

        let status = response.status();
        if !status.is_success() {
            return Err(error::classify_failed_response(response, &masked_url).await);
        }

        tracing::debug!(
            notification_id = %notification.notification_id,
            tenant_id = %notification.tenant_id,
            url = %masked_url,
            status = status.as_u16(),
            "webhook delivered"
        );
        Ok(Receipt::new(PROVIDER).with_detail("status", status.as_u16()))
    }
}

/// Parses the recipient URL and rejects a host that is a forbidden name or
/// IP literal. Host names that resolve to forbidden addresses are rejected
/// later, by [`FilteringResolver`].
fn parse_destination(
    url: &str,
    masked_url: &str,
    allow_loopback: bool,
) -> Result<Url, DeliveryError> {
    let invalid = |reason: &str| {
        DeliveryError::permanent(
            FailureKind::InvalidRecipient,
            format!("webhook URL {masked_url} {reason}"),
        )
    };

    let parsed = Url::parse(url).map_err(|_| invalid("is not a valid URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("is not an http or https URL"));
    }
    let Some(host) = parsed.host() else {
        return Err(invalid("has no host"));
    };

    if let Some(forbidden) = forbidden_host(&host, allow_loopback) {
        return Err(error::destination_forbidden(masked_url, forbidden));
    }
    Ok(parsed)
}

/// Returns why the policy rejects `host` without a DNS lookup, if it does.
fn forbidden_host(host: &Host<&str>, allow_loopback: bool) -> Option<DestinationForbidden> {
    let (forbidden, range) = match *host {
        Host::Domain(name) => {
            let range = resolver::classify_name(name)?;
            let host = name.to_owned();
            (DestinationForbidden::Name { host, range }, range)
        }
        Host::Ipv4(ip) => literal_forbidden(IpAddr::V4(ip))?,
        Host::Ipv6(ip) => literal_forbidden(IpAddr::V6(ip))?,
    };

    resolver::is_rejected(range, allow_loopback).then_some(forbidden)
}

fn literal_forbidden(address: IpAddr) -> Option<(DestinationForbidden, ForbiddenRange)> {
    let range = resolver::classify_address(address)?;
    Some((DestinationForbidden::Address { address, range }, range))
}

/// Returns true if `ip` is in a range that `allow_loopback = false` rejects:
/// loopback, private, link-local, carrier-grade NAT, multicast, broadcast,
/// unspecified or a cloud metadata address, also as an IPv4 address embedded
/// in IPv6. [`resolver::classify_address`] names the range.
pub fn is_local_address(ip: IpAddr) -> bool {
    resolver::classify_address(ip).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const TENANT: &str = "7d444840-9dc0-41a1-8ad4-7e4c7c5b3f10";

    fn config_with_tenant(variable: &str) -> WebhookConfig {
        WebhookConfig {
            tenant_secret_env: [(TENANT.to_owned(), variable.to_owned())].into(),
            ..WebhookConfig::default()
        }
    }

    #[test]
    fn local_addresses_are_detected() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local_address(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_local_address(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn destination_rejects_local_hosts_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://2130706433/hook",
            "http://[::1]/hook",
            "http://LOCALHOST./hook",
            "https://api.localhost/hook",
            "http://10.0.0.5/hook",
            "http://100.64.0.1/hook",
            "http://0.0.0.0/hook",
            "http://[fd00::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://[::ffff:192.168.0.1]/hook",
        ] {
            let err = parse_destination(url, "masked", false).unwrap_err();
            assert_eq!(err.kind(), FailureKind::InvalidRecipient, "{url}");
            assert!(!err.is_transient(), "{url}");
            assert_eq!(err.code(), Some("destination_forbidden"), "{url}");

            assert!(parse_destination(url, "masked", true).is_ok(), "{url}");
        }
    }

    #[test]
    fn destination_rejects_never_allowed_hosts() {
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://169.254.1.1/hook",
            "http://[fe80::1]/hook",
            "http://[fd00:ec2::254]/latest/meta-data/",
            "http://[::ffff:169.254.169.254]/hook",
            "http://100.100.100.200/latest/meta-data/",
            "http://224.0.0.1/hook",
            "http://255.255.255.255/hook",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://METADATA/computeMetadata/v1/",
        ] {
            for allow_loopback in [false, true] {
                let err = parse_destination(url, "masked", allow_loopback).unwrap_err();
                assert_eq!(err.kind(), FailureKind::InvalidRecipient, "{url}");
                assert!(!err.is_transient(), "{url}");
                assert_eq!(err.code(), Some("destination_forbidden"), "{url}");
                assert!(err.message().contains("never allowed"), "{err}");
            }
        }
    }

    #[test]
    fn destination_accepts_public_host() {
        let url =
            parse_destination("https://hooks.example.com/in?token=abc", "masked", false).unwrap();

        assert_eq!(url.host_str(), Some("hooks.example.com"));
    }

    #[test]
    fn destination_message_has_masked_url_only() {
        let url = "http://10.0.0.5/hook?token=abc";

        let err = parse_destination(url, &mask_url(url), false).unwrap_err();

        assert_eq!(
            err.message(),
            "webhook URL http://10.0.0.5/*** is forbidden: 10.0.0.5 is a private address, \
             allowed only with `channels.webhook.allow_loopback = true`"
        );
    }

    #[test]
    fn destination_accepts_public_literals() {
        for url in [
            "http://93.184.216.34/hook",
            "https://[2606:2800:220:1::1]/hook",
            "https://[::ffff:93.184.216.34]/hook",
        ] {
            assert!(parse_destination(url, "masked", false).is_ok(), "{url}");
        }
    }

    #[test]
    fn invalid_default_secret_names_key() {
        let config = WebhookConfig {
            signing_secret: Some("whsec_not*base64".to_owned()),
            ..WebhookConfig::default()
        };

        let err = WebhookChannel::new(&config).unwrap_err().to_string();

        assert!(err.contains("channels.webhook.signing_secret"), "{err}");
        assert!(!err.contains("not*base64"), "{err}");
    }

    #[test]
    fn secret_without_prefix_is_rejected() {
        let config = WebhookConfig {
            signing_secret: Some("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            ..WebhookConfig::default()
        };

        let err = WebhookChannel::new(&config).unwrap_err();

        assert!(matches!(
            err,
            WebhookError::InvalidSecret {
                reason: signature::SecretFormatError::MissingPrefix,
                ..
            }
        ));
        assert!(!err.to_string().contains("MfKQ9r8G"), "{err}");
    }

    #[test]
    fn unset_tenant_variable_is_named() {
        let config = config_with_tenant("TENANT_A_WEBHOOK_SECRET");

        let err = WebhookChannel::with_env(&config, |_| Err(VarError::NotPresent)).unwrap_err();

        assert!(matches!(err, WebhookError::MissingTenantSecretEnv { .. }));
        assert!(err.to_string().contains("TENANT_A_WEBHOOK_SECRET"), "{err}");
        assert!(err.to_string().contains(TENANT), "{err}");
    }

    #[test]
    fn invalid_tenant_secret_names_variable_not_value() {
        let config = config_with_tenant("TENANT_A_WEBHOOK_SECRET");

        let err = WebhookChannel::with_env(&config, |_| Ok("whsec_%%%".to_owned())).unwrap_err();

        assert!(err.to_string().contains("TENANT_A_WEBHOOK_SECRET"), "{err}");
        assert!(!err.to_string().contains("%%%"), "{err}");
    }

    #[test]
    fn tenant_key_must_be_uuid() {
        let config = WebhookConfig {
            tenant_secret_env: [("tenant-a".to_owned(), "TENANT_A_WEBHOOK_SECRET".to_owned())]
                .into(),
            ..WebhookConfig::default()
        };

        let err = WebhookChannel::with_env(&config, |_| Ok(SECRET.to_owned())).unwrap_err();

        assert!(matches!(err, WebhookError::InvalidTenantId { ref key, .. } if key == "tenant-a"));
    }

    #[test]
    fn same_tenant_in_two_spellings_is_rejected() {
        let config = WebhookConfig {
            tenant_secret_env: [
                (TENANT.to_owned(), "A".to_owned()),
                (TENANT.to_ascii_uppercase(), "B".to_owned()),
            ]
            .into(),
            ..WebhookConfig::default()
        };

        let err = WebhookChannel::with_env(&config, |_| Ok(SECRET.to_owned())).unwrap_err();

        assert!(matches!(err, WebhookError::DuplicateTenant { .. }));
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let config = WebhookConfig {
            timeout_secs: 0,
            ..WebhookConfig::default()
        };

        assert!(matches!(
            WebhookChannel::new(&config),
            Err(WebhookError::ZeroTimeout)
        ));
    }

    #[test]
    fn user_agent_with_line_break_is_rejected() {
        let config = WebhookConfig {
            user_agent: "agent\r\nX-Injected: 1".to_owned(),
            ..WebhookConfig::default()
        };

        assert!(matches!(
            WebhookChannel::new(&config),
            Err(WebhookError::InvalidUserAgent)
        ));
    }

    #[test]
    fn tenant_secret_takes_precedence_over_default() {
        let tenant_secret = "whsec_c2lnbmluZy1rZXktb2YtdGVuYW50LWE=";
        let config = WebhookConfig {
            signing_secret: Some(SECRET.to_owned()),
            ..config_with_tenant("TENANT_A_WEBHOOK_SECRET")
        };
        let channel = WebhookChannel::with_env(&config, |_| Ok(tenant_secret.to_owned())).unwrap();
        let tenant: Uuid = TENANT.parse().unwrap();

        let signature = channel.secret_for(tenant).unwrap().sign("id", 1, b"{}");
        let other = channel
            .secret_for(Uuid::nil())
            .unwrap()
            .sign("id", 1, b"{}");

        assert_eq!(
            signature,
            SigningSecret::parse(tenant_secret)
                .unwrap()
                .sign("id", 1, b"{}")
        );
        assert_eq!(
            other,
            SigningSecret::parse(SECRET).unwrap().sign("id", 1, b"{}")
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let config = WebhookConfig {
            signing_secret: Some(SECRET.to_owned()),
            ..WebhookConfig::default()
        };
        let channel = WebhookChannel::new(&config).unwrap();

        let debug = format!("{channel:?}");

        assert!(!debug.contains("MfKQ9r8G"), "{debug}");
    }
}
