//! The email channel: sends each notification as one email over SMTP.
//!
//! - [`config`]: the `channels.email` settings and their defaults.
//! - [`message`]: the MIME message (text, or text and HTML as
//!   `multipart/alternative`) with a `Message-ID` that is the same on every
//!   attempt, and the header and body encoding rules.
//! - [`error`]: [`EmailError`] and its classification into
//!   [`DeliveryError`]s.
//! - [`session`]: plain, STARTTLS and implicit-TLS sessions on sockets with
//!   `TCP_NODELAY`, kept open between emails.
//! - This module: [`EmailChannel`], which validates the configuration once
//!   at construction and sends through a session.
//!
//! Outcomes: the server's final `250` is delivered. 4xx replies, connection
//! failures and timeouts are transient. 5xx replies, an invalid address and
//! a subject or name with a line break are permanent.

pub mod config;
pub mod error;
pub mod message;
mod session;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};
use lettre::transport::smtp::response::Response;
use notify_core::{Channel, ChannelKind, DeliveryError, Notification, Receipt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

pub use config::{EmailConfig, TlsMode};
pub use error::{EmailError, HeaderField};

use error::sanitize_server_text;
use message::Sender;
use session::{Security, SessionError, SmtpSessions};

/// Provider name in receipts.
const PROVIDER: &str = "smtp";

/// The email [`Channel`] plugin.
pub struct EmailChannel {
    sessions: SmtpSessions,
    sender: Sender,
    /// `host:port`, for error messages.
    server: String,
    timeout: Duration,
}

impl EmailChannel {
    /// Validates `config` and builds the SMTP transport. Connects to nothing:
    /// each [`send`](Channel::send) opens its own connection.
    ///
    /// # Errors
    ///
    /// Returns [`EmailError::InvalidConfig`] naming the key at fault, or
    /// [`EmailError::TlsSetup`] when TLS cannot be set up for `host`.
    pub fn new(config: &EmailConfig) -> Result<EmailChannel, EmailError> {
        let host = config.host.trim();
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(invalid(
                "host",
                "must be a host name or IP address without spaces",
            ));
        }
        if config.port == 0 {
            return Err(invalid("port", "must be between 1 and 65535"));
        }
        if config.timeout_secs == 0 {
            return Err(invalid("timeout_secs", "is 0; it must be at least 1"));
        }
        let sender = Sender {
            from: parse_mailbox("from", &config.from)?,
            reply_to: config
                .reply_to
                .as_deref()
                .map(|value| parse_mailbox("reply_to", value))
                .transpose()?,
            message_id_domain: validate_message_id_domain(&config.message_id_domain)?,
        };
        let credentials = credentials(config, host)?;
        let timeout = Duration::from_secs(config.timeout_secs);

        let extra_roots = match &config.ca_file {
            Some(_) if config.tls == TlsMode::None => {
                return Err(invalid("ca_file", "has no effect with `tls = \"none\"`; remove it, or use `starttls` or `tls`"));
            }
            Some(path) if path.trim().is_empty() => {
                return Err(invalid("ca_file", "is empty; name a PEM file of certificates or remove the key"));
            }
            Some(path) => read_certificates(path)?,
            None => Vec::new(),
        };
        let security = match config.tls {
            TlsMode::None => {
                if !is_loopback(host) {
                    tracing::warn!(
                        host,
                        port = config.port,
                        "email channel sends over SMTP without TLS (`tls = \"none\"`)"
                    );
                }
                Security::None
            }
            TlsMode::Starttls => {
                let mut builder = TlsParameters::builder(host.to_owned());
                for certificate in &extra_roots {
                    let certificate = Certificate::from_der(certificate.to_vec()).map_err(|err| tls_setup(host, &err))?;
                    builder = builder.add_root_certificate(certificate);
                }
                Security::StartTls(builder.build().map_err(|err| tls_setup(host, &err))?)
            }
            TlsMode::Tls => Security::ImplicitTls {
                config: implicit_tls_config(host, extra_roots)?,
                server_name: ServerName::try_from(host.to_owned()).map_err(|err| EmailError::TlsSetup {
                    host: host.to_owned(),
                    reason: err.to_string(),
                })?,
            },
        };

        Ok(EmailChannel {
            sessions: SmtpSessions::new(host, config.port, security, credentials),
            sender,
            server: format!("{host}:{}", config.port),
            timeout,
        })
    }
}

#[async_trait]
impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn send(&self, notification: &Notification) -> Result<Receipt, DeliveryError> {
        let email = message::build_message(notification, &self.sender)?;
        let message_id = message::message_id(
            &notification.notification_id,
            &self.sender.message_id_domain,
        );

        let response = match tokio::time::timeout(self.timeout, self.transmit(email)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(err.into()),
            Err(_elapsed) => {
                return Err(EmailError::Timeout {
                    server: self.server.clone(),
                    seconds: self.timeout.as_secs(),
                }
                .into());
            }
        };

        let reply_text = response.message().collect::<Vec<_>>().join(" ");
        let smtp_response = format!("{} {}", response.code(), sanitize_server_text(&reply_text));
        tracing::debug!(
            notification_id = %notification.notification_id,
            recipient = %notification.recipient.masked(),
            message_id,
            smtp_response,
            "SMTP server accepted the email"
        );
        Ok(Receipt::new(PROVIDER)
            .with_message_id(message_id)
            .with_detail("smtp_response", smtp_response))
    }
}

impl EmailChannel {
    /// Hands the email to the SMTP server.
    async fn transmit(&self, email: lettre::Message) -> Result<Response, EmailError> {
        let seconds = self.timeout.as_secs();
        let raw = email.formatted();
        self.sessions.send(email.envelope(), &raw).await.map_err(|err| match err {
            SessionError::Connect(err) => EmailError::Connection {
                server: self.server.clone(),
                reason: err.to_string(),
            },
            SessionError::Tls(err) => match error::certificate_failure(&err) {
                Some(reason) => EmailError::Certificate {
                    server: self.server.clone(),
                    reason,
                },
                None => EmailError::Connection {
                    server: self.server.clone(),
                    reason: format!("TLS handshake failed: {err}"),
                },
            },
            SessionError::Smtp(err) => EmailError::from_smtp(&err, &self.server, seconds),
        })
    }
}

impl std::fmt::Debug for EmailChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailChannel")
            .field("server", &self.server)
            .field("from", &self.sender.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> EmailError {
    EmailError::InvalidConfig {
        key,
        reason: reason.into(),
    }
}

/// Reads the certificates of `ca_file`.
fn read_certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, EmailError> {
    let pem = std::fs::read(path).map_err(|err| invalid("ca_file", format!("cannot read `{path}`: {err}")))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid("ca_file", format!("`{path}` is not a PEM file of certificates: {err}")))?;
    if certificates.is_empty() {
        return Err(invalid("ca_file", format!("`{path}` contains no certificate")));
    }
    // Parsing each one as a trust anchor now reports a broken certificate at
    // start-up, where lettre would skip it and fail every STARTTLS send.
    for (index, certificate) in certificates.iter().enumerate() {
        RootCertStore::empty()
            .add(certificate.clone())
            .map_err(|err| invalid("ca_file", format!("certificate {} of `{path}` is invalid: {err}", index + 1)))?;
    }
    Ok(certificates)
}

/// TLS 1.2 or 1.3 with the ring backend, trusting the public roots and
/// `extra_roots`, as lettre sets up STARTTLS.
fn implicit_tls_config(host: &str, extra_roots: Vec<CertificateDer<'static>>) -> Result<Arc<ClientConfig>, EmailError> {
    let setup_error = |reason: String| EmailError::TlsSetup { host: host.to_owned(), reason };
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // `read_certificates` already parsed each one as a trust anchor.
    roots.add_parsable_certificates(extra_roots);
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| setup_error(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn tls_setup(host: &str, err: &lettre::transport::smtp::Error) -> EmailError {
    EmailError::TlsSetup {
        host: host.to_owned(),
        reason: err.to_string(),
    }
}

fn parse_mailbox(key: &'static str, value: &str) -> Result<Mailbox, EmailError> {
    if value.trim().is_empty() {
        return Err(invalid(
            key,
            "is missing; set a mailbox such as `Flatrender <no-reply@example.com>`",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(
            key,
            "contains a control character such as CR or LF",
        ));
    }
    value.parse().map_err(|err: lettre::address::AddressError| {
        invalid(
            key,
            format!("`{value}` is not a mailbox such as `Name <user@example.com>`: {err}"),
        )
    })
}

/// Validates the right-hand side of a `Message-ID`: dot-separated labels of
/// letters, digits and `-`. RFC 5322 section 3.6.4 allows more, but this
/// subset needs no quoting anywhere.
fn validate_message_id_domain(domain: &str) -> Result<String, EmailError> {
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(invalid(
            "message_id_domain",
            format!("`{domain}` is not a domain such as `mail.example.com`"),
        ));
    }
    Ok(domain.to_owned())
}

/// Returns the SMTP AUTH credentials, which need both user name and password.
/// Without TLS they are allowed only for a loopback host, because they would
/// cross the network in clear text.
fn credentials(config: &EmailConfig, host: &str) -> Result<Option<Credentials>, EmailError> {
    match (&config.username, &config.password) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            "password",
            "is missing but `username` is set; set both or neither",
        )),
        (None, Some(_)) => Err(invalid(
            "username",
            "is missing but `password` is set; set both or neither",
        )),
        (Some(username), Some(password)) => {
            if config.tls == TlsMode::None && !is_loopback(host) {
                return Err(invalid(
                    "tls",
                    format!("is `none` with credentials for `{host}`, which would send the password unencrypted; use `starttls` or `tls`"),
                ));
            }
            Ok(Some(Credentials::new(username.clone(), password.clone())))
        }
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_config() -> EmailConfig {
        EmailConfig {
            from: "Flatrender <no-reply@flatrender.local>".to_owned(),
            ..EmailConfig::default()
        }
    }

    fn invalid_key(result: Result<EmailChannel, EmailError>) -> &'static str {
        match result {
            Err(EmailError::InvalidConfig { key, .. }) => key,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn defaults_with_sender_are_valid() {
        assert!(EmailChannel::new(&valid_config()).is_ok());
    }

    #[test]
    fn missing_or_malformed_from_is_rejected() {
        assert_eq!(
            invalid_key(EmailChannel::new(&EmailConfig::default())),
            "from"
        );
        let config = EmailConfig {
            from: "no angle brackets <".to_owned(),
            ..valid_config()
        };
        assert_eq!(invalid_key(EmailChannel::new(&config)), "from");
        let config = EmailConfig {
            from: "A\r\nBcc: x@example.net <a@example.com>".to_owned(),
            ..valid_config()
        };
        assert_eq!(invalid_key(EmailChannel::new(&config)), "from");
    }

    #[test]
    fn malformed_message_id_domain_is_rejected() {
        for domain in ["", "exa mple.com", "a..b", "a>b", "ex\u{e4}mple.com"] {
            let config = EmailConfig {
                message_id_domain: domain.to_owned(),
                ..valid_config()
            };
            assert_eq!(
                invalid_key(EmailChannel::new(&config)),
                "message_id_domain",
                "{domain:?}"
            );
        }
    }

    #[test]
    fn credentials_need_both_parts() {
        let config = EmailConfig {
            username: Some("mailer".to_owned()),
            ..valid_config()
        };
        assert_eq!(invalid_key(EmailChannel::new(&config)), "password");
    }

    #[test]
    fn plain_smtp_with_credentials_needs_loopback_host() {
        let remote = EmailConfig {
            host: "smtp.example.com".to_owned(),
            tls: TlsMode::None,
            username: Some("mailer".to_owned()),
            password: Some("hunter2-secret".to_owned()),
            ..valid_config()
        };
        let result = EmailChannel::new(&remote);
        let message = result
            .as_ref()
            .map(|_| String::new())
            .unwrap_or_else(ToString::to_string);
        assert_eq!(invalid_key(result), "tls");
        assert!(!message.contains("hunter2"), "{message}");

        let local = EmailConfig {
            host: "127.0.0.1".to_owned(),
            ..remote
        };
        assert!(EmailChannel::new(&local).is_ok());
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let config = EmailConfig {
            timeout_secs: 0,
            ..valid_config()
        };
        assert_eq!(invalid_key(EmailChannel::new(&config)), "timeout_secs");
    }
}
