//! Configuration of the email channel, the `channels.email` section.

use std::fmt;

use serde::Deserialize;

/// Transport security of the connection to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain SMTP without encryption. Never the default: it must be set
    /// explicitly, and credentials are then allowed only for loopback hosts.
    None,
    /// Plain connection upgraded with STARTTLS, which the server must offer
    /// (RFC 3207). Usually port 587.
    #[default]
    Starttls,
    /// TLS from the first byte, also called SMTPS (RFC 8314). Usually port 465.
    Tls,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::None => "none",
            TlsMode::Starttls => "starttls",
            TlsMode::Tls => "tls",
        }
    }
}

/// Settings of the email channel.
///
/// [`EmailChannel::new`](super::EmailChannel::new) validates them. `Debug`
/// prints `<redacted>` in place of the password.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// Whether the service registers the email channel. Default `false`.
    pub enabled: bool,
    /// Host name or IP address of the SMTP server. With `starttls` and `tls`
    /// the server certificate must be valid for it. Default `127.0.0.1`.
    pub host: String,
    /// TCP port of the SMTP server. Default 587, the submission port for
    /// STARTTLS; set 465 with `tls`.
    pub port: u16,
    /// `none`, `starttls` or `tls`. Default `starttls`.
    pub tls: TlsMode,
    /// PEM file of certificate authorities to trust for the server's
    /// certificate besides the public ones (Mozilla's, from webpki-roots),
    /// for a relay with a private CA. Default none.
    pub ca_file: Option<String>,
    /// SMTP AUTH user name; set together with `password`. Default none.
    pub username: Option<String>,
    /// SMTP AUTH password, usually set through the environment variable
    /// `NOTIFY__CHANNELS__EMAIL__PASSWORD`. Default none.
    pub password: Option<String>,
    /// Sender mailbox of the `From` header and the envelope, such as
    /// `Flatrender <no-reply@flatrender.example>`. Required when enabled.
    pub from: String,
    /// Mailbox for the `Reply-To` header. Default none.
    pub reply_to: Option<String>,
    /// Maximum time in seconds for one delivery, from connecting until the
    /// server has accepted the message. Default 15.
    pub timeout_secs: u64,
    /// Domain part of the `Message-ID`, which is
    /// `<{notification_id}@{message_id_domain}>` on every attempt.
    /// Default `flatrender.local`.
    pub message_id_domain: String,
}

impl EmailConfig {
    /// Prefix of the keys of this section in the service configuration, used
    /// in error messages.
    pub const SECTION: &'static str = "channels.email";
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            enabled: false,
            host: "127.0.0.1".to_owned(),
            port: 587,
            tls: TlsMode::Starttls,
            ca_file: None,
            username: None,
            password: None,
            from: String::new(),
            reply_to: None,
            timeout_secs: 15,
            message_id_domain: "flatrender.local".to_owned(),
        }
    }
}

impl fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailConfig")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("from", &self.from)
            .field("reply_to", &self.reply_to)
            .field("timeout_secs", &self.timeout_secs)
            .field("message_id_domain", &self.message_id_domain)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_gets_defaults() {
        let config: EmailConfig = serde_json::from_str("{}").unwrap();

        assert!(!config.enabled);
        assert_eq!(config.host, "127.0.0.1");
        assert_eq!(config.port, 587);
        assert_eq!(config.tls, TlsMode::Starttls);
        assert_eq!(config.username, None);
        assert_eq!(config.password, None);
        assert_eq!(config.from, "");
        assert_eq!(config.reply_to, None);
        assert_eq!(config.timeout_secs, 15);
        assert_eq!(config.message_id_domain, "flatrender.local");
    }

    #[test]
    fn tls_modes_parse_from_lowercase_names() {
        for (name, mode) in [
            ("none", TlsMode::None),
            ("starttls", TlsMode::Starttls),
            ("tls", TlsMode::Tls),
        ] {
            let config: EmailConfig =
                serde_json::from_str(&format!(r#"{{"tls": "{name}"}}"#)).unwrap();
            assert_eq!(config.tls, mode);
            assert_eq!(mode.as_str(), name);
        }
        assert!(serde_json::from_str::<EmailConfig>(r#"{"tls": "ssl"}"#).is_err());
    }

    #[test]
    fn unknown_key_is_rejected() {
        let err = serde_json::from_str::<EmailConfig>(r#"{"pasword": "x"}"#).unwrap_err();

        assert!(err.to_string().contains("pasword"), "{err}");
    }

    #[test]
    fn debug_hides_password() {
        let config = EmailConfig {
            username: Some("mailer".to_owned()),
            password: Some("hunter2-secret".to_owned()),
            ..EmailConfig::default()
        };

        let debug = format!("{config:?}");

        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("mailer"), "{debug}");
    }
}
