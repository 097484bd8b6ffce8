//! Recipients per channel, parsed from a dispatch message's `recipient`
//! object, and their masked form for logs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::channel::ChannelKind;

/// A Telegram chat: a numeric id or a public `@channel_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChatId {
    Id(i64),
    Username(String),
}

/// Push provider of a device token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushPlatform {
    Fcm,
    Apns,
}

/// Where one notification goes, in the form its channel needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Recipient {
    Email { email: String, name: Option<String> },
    Sms { phone: String },
    Telegram { chat_id: ChatId },
    Push { device_token: String, platform: PushPlatform },
    Webhook { url: String },
}

/// A `recipient` object that does not fit its channel.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {channel} recipient: {reason}")]
pub struct InvalidRecipient {
    pub channel: ChannelKind,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmailFields {
    email: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsFields {
    phone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TelegramFields {
    chat_id: ChatId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PushFields {
    device_token: String,
    platform: PushPlatform,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookFields {
    url: String,
}

impl Recipient {
    /// Parses the `recipient` object of a message on `channel`'s queue.
    ///
    /// Checks the shape and the cheap invariants every plugin relies on (no
    /// control characters, a plausible address); a plugin may check more.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidRecipient`] naming the field at fault.
    pub fn parse(channel: ChannelKind, value: &serde_json::Value) -> Result<Recipient, InvalidRecipient> {
        let invalid = |reason: String| InvalidRecipient { channel, reason };
        let recipient = match channel {
            ChannelKind::Email => {
                let fields: EmailFields = from_value(value).map_err(invalid)?;
                Recipient::Email { email: fields.email, name: fields.name }
            }
            ChannelKind::Sms => {
                let fields: SmsFields = from_value(value).map_err(invalid)?;
                Recipient::Sms { phone: fields.phone }
            }
            ChannelKind::Telegram => {
                let fields: TelegramFields = from_value(value).map_err(invalid)?;
                Recipient::Telegram { chat_id: fields.chat_id }
            }
            ChannelKind::Push => {
                let fields: PushFields = from_value(value).map_err(invalid)?;
                Recipient::Push { device_token: fields.device_token, platform: fields.platform }
            }
            ChannelKind::Webhook => {
                let fields: WebhookFields = from_value(value).map_err(invalid)?;
                Recipient::Webhook { url: fields.url }
            }
        };
        recipient.validate().map_err(invalid)?;
        Ok(recipient)
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Recipient::Email { email, name } => {
                reject_control_chars("email", email)?;
                if let Some(name) = name {
                    reject_control_chars("name", name)?;
                }
                let valid = email
                    .split_once('@')
                    .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
                if !valid || email.len() > 254 {
                    return Err("`email` is not an address of the form local@domain".to_owned());
                }
            }
            Recipient::Sms { phone } => {
                let digits = phone.strip_prefix('+').unwrap_or("");
                let valid = (8..=15).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !digits.starts_with('0');
                if !valid {
                    return Err("`phone` is not an E.164 number (`+` then 8 to 15 digits)".to_owned());
                }
            }
            Recipient::Telegram { chat_id } => {
                if let ChatId::Username(username) = chat_id {
                    let name = username.strip_prefix('@').unwrap_or("");
                    let valid = (5..=32).contains(&name.len())
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !valid {
                        return Err("`chat_id` is neither a number nor an `@channel_name`".to_owned());
                    }
                }
            }
            Recipient::Push { device_token, .. } => {
                let valid = !device_token.is_empty()
                    && device_token.len() <= 4096
                    && device_token.bytes().all(|b| b.is_ascii_graphic());
                if !valid {
                    return Err("`device_token` is empty, too long or has characters outside printable ASCII".to_owned());
                }
            }
            Recipient::Webhook { url } => {
                reject_control_chars("url", url)?;
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("https://") || lower.starts_with("http://")) || url.len() > 2048 {
                    return Err("`url` is not an http or https URL of at most 2048 bytes".to_owned());
                }
            }
        }
        Ok(())
    }

    /// A form of the address safe to log: enough to tell recipients apart
    /// while debugging, not enough to contact them.
    pub fn masked(&self) -> MaskedRecipient<'_> {
        MaskedRecipient(self)
    }
}

fn from_value<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> Result<T, String> {
    T::deserialize(value).map_err(|err| err.to_string())
}

fn reject_control_chars(field: &str, value: &str) -> Result<(), String> {
    if value.chars().any(char::is_control) {
        return Err(format!("`{field}` contains a control character such as CR or LF"));
    }
    Ok(())
}

/// [`Recipient`] displayed with most of the address hidden.
pub struct MaskedRecipient<'a>(&'a Recipient);

impl fmt::Display for MaskedRecipient<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Recipient::Email { email, .. } => f.write_str(&mask_email(email)),
            Recipient::Sms { phone } => f.write_str(&mask_tail(phone, 3)),
            Recipient::Telegram { chat_id: ChatId::Id(id) } => f.write_str(&mask_tail(&id.to_string(), 3)),
            Recipient::Telegram { chat_id: ChatId::Username(name) } => f.write_str(name),
            Recipient::Push { device_token, platform } => {
                write!(f, "{platform:?}:{}", mask_tail(device_token, 6))
            }
            Recipient::Webhook { url } => f.write_str(&mask_url(url)),
        }
    }
}

/// Keeps the first character of the local part and the domain: `u***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Keeps the last `visible` characters: `***100`.
pub fn mask_tail(value: &str, visible: usize) -> String {
    let count = value.chars().count();
    let tail: String = value.chars().skip(count.saturating_sub(visible)).collect();
    format!("***{tail}")
}

/// Keeps scheme and host, drops path and query, which may carry tokens.
pub fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/***")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn email_recipient_parses_with_optional_name() {
        let recipient = Recipient::parse(ChannelKind::Email, &json!({"email": "user@example.com"})).unwrap();
        assert_eq!(recipient, Recipient::Email { email: "user@example.com".into(), name: None });
    }

    #[test]
    fn email_name_with_line_break_is_invalid() {
        let value = json!({"email": "user@example.com", "name": "Ann\r\nBcc: intruder@example.net"});
        let err = Recipient::parse(ChannelKind::Email, &value).unwrap_err();
        assert!(err.reason.contains("control character"), "{err}");
    }

    #[test]
    fn recipient_of_another_channel_is_invalid() {
        let err = Recipient::parse(ChannelKind::Email, &json!({"phone": "+15550100"})).unwrap_err();
        assert_eq!(err.channel, ChannelKind::Email);
    }

    #[test]
    fn sms_phone_must_be_e164() {
        assert!(Recipient::parse(ChannelKind::Sms, &json!({"phone": "+15550100"})).is_ok());
        for bad in ["15550100", "+1555", "+1555010O", "+0155501000"] {
            assert!(Recipient::parse(ChannelKind::Sms, &json!({"phone": bad})).is_err(), "{bad}");
        }
    }

    #[test]
    fn telegram_chat_id_is_number_or_username() {
        assert!(Recipient::parse(ChannelKind::Telegram, &json!({"chat_id": 123456789})).is_ok());
        assert!(Recipient::parse(ChannelKind::Telegram, &json!({"chat_id": "@channel_name"})).is_ok());
        assert!(Recipient::parse(ChannelKind::Telegram, &json!({"chat_id": "channel name"})).is_err());
    }

    #[test]
    fn webhook_url_must_be_http() {
        assert!(Recipient::parse(ChannelKind::Webhook, &json!({"url": "https://example.com/hook"})).is_ok());
        assert!(Recipient::parse(ChannelKind::Webhook, &json!({"url": "file:///etc/passwd"})).is_err());
    }

    #[test]
    fn masked_forms_hide_the_address() {
        let email = Recipient::Email { email: "user@example.com".into(), name: None };
        assert_eq!(email.masked().to_string(), "u***@example.com");
        let sms = Recipient::Sms { phone: "+15550100".into() };
        assert_eq!(sms.masked().to_string(), "***100");
        let hook = Recipient::Webhook { url: "https://user:pw@example.com/hook?token=abc".into() };
        assert_eq!(hook.masked().to_string(), "https://example.com/***");
    }
}
