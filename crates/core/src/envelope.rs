//! The stack's message envelope and the `notification.created.v1` dispatch
//! request it carries on the notify queues.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::ChannelKind;

/// Event type of every message on the `notify.channel.*` queues.
pub const DISPATCH_EVENT_TYPE: &str = "notification.created.v1";

/// Maximum template name length accepted; names also appear in file paths.
const MAX_TEMPLATE_NAME_LEN: usize = 64;

/// The JSON object around every message body, in and out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub event_id: Uuid,
    pub event_type: String,
    pub event_time: DateTime<Utc>,
    pub tenant_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub trace_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    #[serde(default)]
    pub producer: String,
    pub data: T,
}

/// The `data` of a dispatch message: one delivery on one channel.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DispatchRequest {
    pub notification_id: Uuid,
    pub channel: String,
    pub template: String,
    #[serde(default)]
    pub locale: Option<String>,
    pub recipient: serde_json::Value,
    #[serde(default = "empty_object")]
    pub variables: serde_json::Value,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// A body that is not a valid dispatch message.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not valid UTF-8 JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("invalid envelope: {0}")]
    Envelope(#[source] serde_json::Error),
    #[error("invalid notification request in `data`: {0}")]
    Request(#[source] serde_json::Error),
    #[error("invalid notification request in `data`: {0}")]
    Field(String),
}

/// The readable part of a dispatch message body.
#[derive(Debug)]
pub enum ParsedBody {
    /// Envelope and request are valid.
    Valid(Envelope<DispatchRequest>),
    /// The envelope is valid but its request is not. `notification_id` is
    /// set when the request still names one, so a failed event can be sent.
    InvalidRequest {
        envelope: Envelope<serde_json::Value>,
        notification_id: Option<Uuid>,
        error: EnvelopeError,
    },
    /// Not even the envelope can be read.
    Unreadable(EnvelopeError),
}

/// Parses a dispatch message body, keeping whatever is valid.
///
/// A valid body is read once, straight into typed structs. Only a body that
/// fails that is read again step by step, to tell which part is wrong and to
/// keep the ids a failed event needs.
pub fn parse_dispatch(body: &[u8]) -> ParsedBody {
    if let Ok(envelope) = serde_json::from_slice::<Envelope<DispatchRequest>>(body) {
        if envelope.data.validate().is_ok() {
            return ParsedBody::Valid(envelope);
        }
    }
    parse_dispatch_in_steps(body)
}

fn parse_dispatch_in_steps(body: &[u8]) -> ParsedBody {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => return ParsedBody::Unreadable(EnvelopeError::Json(err)),
    };
    let envelope: Envelope<serde_json::Value> = match serde_json::from_value(value) {
        Ok(envelope) => envelope,
        Err(err) => return ParsedBody::Unreadable(EnvelopeError::Envelope(err)),
    };
    let notification_id = envelope
        .data
        .get("notification_id")
        .and_then(serde_json::Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok());

    let request = DispatchRequest::deserialize(&envelope.data)
        .map_err(EnvelopeError::Request)
        .and_then(|request| request.validate().map(|()| request));
    match request {
        Ok(request) => ParsedBody::Valid(Envelope {
            event_id: envelope.event_id,
            event_type: envelope.event_type,
            event_time: envelope.event_time,
            tenant_id: envelope.tenant_id,
            user_id: envelope.user_id,
            trace_id: envelope.trace_id,
            correlation_id: envelope.correlation_id,
            producer: envelope.producer,
            data: request,
        }),
        Err(error) => ParsedBody::InvalidRequest { envelope, notification_id, error },
    }
}

impl DispatchRequest {
    fn validate(&self) -> Result<(), EnvelopeError> {
        let field = |message: String| Err(EnvelopeError::Field(message));
        let template_ok = !self.template.is_empty()
            && self.template.len() <= MAX_TEMPLATE_NAME_LEN
            && self.template.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !template_ok {
            return field(format!(
                "`template` must be 1 to {MAX_TEMPLATE_NAME_LEN} characters of a-z, 0-9 and _, got {:?}",
                truncate(&self.template, 80)
            ));
        }
        if let Some(locale) = &self.locale {
            if !is_valid_locale(locale) {
                return field(format!("`locale` is not a language tag such as `de` or `pt-BR`: {:?}", truncate(locale, 40)));
            }
        }
        if !self.variables.is_object() {
            return field("`variables` must be a JSON object".to_owned());
        }
        if !self.recipient.is_object() {
            return field("`recipient` must be a JSON object".to_owned());
        }
        Ok(())
    }

    /// Returns the channel the request names, if the service supports it.
    pub fn channel_kind(&self) -> Option<ChannelKind> {
        self.channel.parse().ok()
    }
}

/// Accepts BCP 47 tags of the simple form `ll` or `ll-RR` (`de`, `pt-BR`, `zh-Hant`).
pub fn is_valid_locale(locale: &str) -> bool {
    let mut parts = locale.split('-');
    let language_ok = parts
        .next()
        .is_some_and(|lang| (2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_alphabetic()));
    language_ok && parts.all(|part| (2..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Cuts `value` to at most `max` characters for an error message.
pub fn truncate(value: &str, max: usize) -> String {
    match value.char_indices().nth(max) {
        Some((index, _)) => format!("{}...", &value[..index]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(data: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "event_id": "7f0c1a6e-1111-4c5e-9a1e-000000000001",
            "event_type": "notification.created.v1",
            "event_time": "2026-05-27T10:15:00Z",
            "tenant_id": "7f0c1a6e-1111-4c5e-9a1e-000000000002",
            "user_id": "7f0c1a6e-1111-4c5e-9a1e-000000000003",
            "trace_id": "7f0c1a6e-1111-4c5e-9a1e-000000000004",
            "correlation_id": "7f0c1a6e-1111-4c5e-9a1e-000000000005",
            "producer": "render-service",
            "data": data,
        }))
        .unwrap()
    }

    fn request() -> serde_json::Value {
        json!({
            "notification_id": "7f0c1a6e-1111-4c5e-9a1e-00000000000a",
            "channel": "email",
            "template": "render_completed",
            "locale": "de",
            "recipient": {"email": "user@example.com", "name": "Ada"},
            "variables": {"project_name": "Intro"},
            "expires_at": "2026-05-27T11:15:00Z"
        })
    }

    #[test]
    fn catalog_example_parses() {
        let ParsedBody::Valid(envelope) = parse_dispatch(&envelope(request())) else {
            panic!("catalog example must parse");
        };
        assert_eq!(envelope.data.template, "render_completed");
        assert_eq!(envelope.data.channel_kind(), Some(ChannelKind::Email));
        assert_eq!(envelope.data.locale.as_deref(), Some("de"));
        assert!(envelope.data.expires_at.is_some());
    }

    #[test]
    fn truncated_json_is_unreadable() {
        let parsed = parse_dispatch(br#"{"template":"welcome","recipient":"#);
        assert!(matches!(parsed, ParsedBody::Unreadable(EnvelopeError::Json(_))));
    }

    #[test]
    fn non_utf8_body_is_unreadable() {
        assert!(matches!(parse_dispatch(&[0x7b, 0xff, 0xfe, 0x7d]), ParsedBody::Unreadable(_)));
    }

    #[test]
    fn template_with_path_characters_keeps_notification_id() {
        let mut data = request();
        data["template"] = json!("../../etc/passwd");
        let ParsedBody::InvalidRequest { notification_id, error, .. } = parse_dispatch(&envelope(data)) else {
            panic!("a bad template name must be an invalid request");
        };
        assert!(notification_id.is_some());
        assert!(error.to_string().contains("`template`"), "{error}");
    }

    #[test]
    fn missing_variables_default_to_empty_object() {
        let mut data = request();
        data.as_object_mut().unwrap().remove("variables");
        let ParsedBody::Valid(envelope) = parse_dispatch(&envelope(data)) else {
            panic!("variables are optional");
        };
        assert_eq!(envelope.data.variables, json!({}));
    }

    #[test]
    fn variables_must_be_an_object() {
        let mut data = request();
        data["variables"] = json!([1, 2]);
        assert!(matches!(parse_dispatch(&envelope(data)), ParsedBody::InvalidRequest { .. }));
    }

    #[test]
    fn locales_are_checked() {
        for good in ["en", "de", "pt-BR", "zh-Hant"] {
            assert!(is_valid_locale(good), "{good}");
        }
        for bad in ["", "e", "english", "de_DE", "de-", "../en"] {
            assert!(!is_valid_locale(bad), "{bad}");
        }
    }

    #[test]
    fn fast_and_stepwise_parses_agree() {
        let mut bodies = vec![envelope(request())];
        let mut minimal = request();
        for optional in ["locale", "variables", "expires_at"] {
            minimal.as_object_mut().unwrap().remove(optional);
        }
        bodies.push(envelope(minimal));
        let mut unknown_fields = request();
        unknown_fields["priority"] = json!("high");
        bodies.push(envelope(unknown_fields));
        for body in bodies {
            let (ParsedBody::Valid(fast), ParsedBody::Valid(slow)) = (parse_dispatch(&body), parse_dispatch_in_steps(&body)) else {
                panic!("both parses must accept {}", String::from_utf8_lossy(&body));
            };
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn repeated_field_falls_back_to_stepwise() {
        // The one-pass parse rejects a repeated field. Step by step, through
        // serde_json::Value, the last value wins.
        let body = envelope(request());
        let text = String::from_utf8(body).unwrap();
        let repeated = text.replacen("\"channel\":\"email\"", "\"channel\":\"sms\",\"channel\":\"email\"", 1);
        assert!(serde_json::from_str::<Envelope<DispatchRequest>>(&repeated).is_err());
        let ParsedBody::Valid(envelope) = parse_dispatch(repeated.as_bytes()) else {
            panic!("a repeated field must not make a valid body unreadable");
        };
        assert_eq!(envelope.data.channel, "email");
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("ééé", 2), "éé...");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
