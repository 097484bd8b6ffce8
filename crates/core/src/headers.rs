//! AMQP message properties and headers of the contract: reading and checking
//! them on the way in, writing them on the way out.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crate::envelope::Envelope;

pub const EVENT_TYPE: &str = "x-event-type";
pub const TENANT_ID: &str = "x-tenant-id";
pub const TRACE_ID: &str = "x-trace-id";
pub const RETRY_COUNT: &str = "x-retry-count";
pub const MAX_RETRIES: &str = "x-max-retries";
/// Routing key a dead letter was first published with.
pub const ORIGINAL_ROUTING_KEY: &str = "x-original-routing-key";
/// Failure kind of a dead letter, or of the last failed attempt of a retry.
pub const FAILURE_KIND: &str = "x-failure-kind";
/// Human-readable reason to go with [`FAILURE_KIND`].
pub const FAILURE_REASON: &str = "x-failure-reason";
/// Provider code of the failure, when there is one.
pub const FAILURE_CODE: &str = "x-failure-code";
/// RFC 3339 time at which the message was dead-lettered.
pub const FAILED_AT: &str = "x-failed-at";
/// Service that dead-lettered the message.
pub const FAILED_BY: &str = "x-failed-by";

pub const CONTENT_TYPE_JSON: &str = "application/json";
pub const CONTENT_ENCODING_UTF8: &str = "utf-8";

/// Highest `x-max-retries` a message may ask for; more is a producer bug.
pub const MAX_RETRIES_LIMIT: u32 = 50;

/// The contract's headers of a dispatch message, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DispatchHeaders {
    pub event_type: String,
    pub tenant_id: String,
    pub trace_id: String,
    pub retry_count: u32,
    pub max_retries: u32,
}

/// A missing, malformed or contradictory header.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("header {name} is {header:?} but the body's {field} is {body:?}")]
    Contradicts { name: &'static str, field: &'static str, header: String, body: String },
}

/// Reads and checks the properties and headers the contract requires.
///
/// # Errors
///
/// Returns the first [`HeaderError`] found.
pub fn read_dispatch_headers(properties: &BasicProperties, default_max_retries: u32) -> Result<DispatchHeaders, HeaderError> {
    check_content_type(properties)?;
    check_content_encoding(properties)?;

    let empty = FieldTable::default();
    let headers = properties.headers().as_ref().unwrap_or(&empty);
    let max_retries = match optional_count(headers, MAX_RETRIES)? {
        Some(count) if count > MAX_RETRIES_LIMIT => {
            return Err(HeaderError::Invalid {
                name: MAX_RETRIES,
                reason: format!("{count} exceeds the limit of {MAX_RETRIES_LIMIT}"),
            })
        }
        Some(count) => count,
        None => default_max_retries,
    };
    Ok(DispatchHeaders {
        event_type: required_string(headers, EVENT_TYPE)?,
        tenant_id: required_string(headers, TENANT_ID)?,
        trace_id: required_string(headers, TRACE_ID)?,
        retry_count: optional_count(headers, RETRY_COUNT)?.unwrap_or(0),
        max_retries,
    })
}

impl DispatchHeaders {
    /// Checks that the headers agree with the body they travel with.
    ///
    /// # Errors
    ///
    /// Returns [`HeaderError::Contradicts`] for the first header that differs.
    pub fn check_against<T>(&self, envelope: &Envelope<T>) -> Result<(), HeaderError> {
        let pairs = [
            (EVENT_TYPE, "event_type", &self.event_type, envelope.event_type.clone()),
            (TENANT_ID, "tenant_id", &self.tenant_id, envelope.tenant_id.to_string()),
            (TRACE_ID, "trace_id", &self.trace_id, envelope.trace_id.clone()),
        ];
        for (name, field, header, body) in pairs {
            if !header.eq_ignore_ascii_case(&body) {
                return Err(HeaderError::Contradicts { name, field, header: header.clone(), body });
            }
        }
        Ok(())
    }
}

fn check_content_type(properties: &BasicProperties) -> Result<(), HeaderError> {
    let value = properties.content_type().as_ref().ok_or(HeaderError::Missing("content-type property"))?;
    let media_type = value.as_str().split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case(CONTENT_TYPE_JSON) {
        return Err(HeaderError::Invalid {
            name: "content-type property",
            reason: format!("expected {CONTENT_TYPE_JSON}, got {:?}", value.as_str()),
        });
    }
    Ok(())
}

fn check_content_encoding(properties: &BasicProperties) -> Result<(), HeaderError> {
    let value = properties
        .content_encoding()
        .as_ref()
        .ok_or(HeaderError::Missing("content-encoding property"))?;
    if !value.as_str().eq_ignore_ascii_case(CONTENT_ENCODING_UTF8) {
        return Err(HeaderError::Invalid {
            name: "content-encoding property",
            reason: format!("expected {CONTENT_ENCODING_UTF8}, got {:?}", value.as_str()),
        });
    }
    Ok(())
}

fn required_string(headers: &FieldTable, name: &'static str) -> Result<String, HeaderError> {
    let value = headers.inner().get(name).ok_or(HeaderError::Missing(name))?;
    let text = string_value(value).ok_or_else(|| HeaderError::Invalid { name, reason: "not a string".to_owned() })?;
    if text.trim().is_empty() || text.len() > 255 || text.chars().any(char::is_control) {
        return Err(HeaderError::Invalid {
            name,
            reason: "empty, longer than 255 bytes or containing control characters".to_owned(),
        });
    }
    Ok(text)
}

fn optional_count(headers: &FieldTable, name: &'static str) -> Result<Option<u32>, HeaderError> {
    let Some(value) = headers.inner().get(name) else {
        return Ok(None);
    };
    let invalid = || HeaderError::Invalid { name, reason: format!("expected a whole number from 0, got {value:?}") };
    let number = match value {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        other => string_value(other).and_then(|s| s.trim().parse().ok()).ok_or_else(invalid)?,
    };
    u32::try_from(number).map(Some).map_err(|_| invalid())
}

/// The text of a string header, whichever AMQP string type carries it.
pub fn string_value(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Builds a long-string header value.
pub fn text(value: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.into()))
}

/// Properties of every message the service publishes: persistent JSON with
/// the contract's headers.
pub fn outgoing_properties(event_type: &str, tenant_id: &str, trace_id: &str, message_id: &str) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from(EVENT_TYPE), text(event_type));
    headers.insert(ShortString::from(TENANT_ID), text(tenant_id));
    headers.insert(ShortString::from(TRACE_ID), text(trace_id));
    BasicProperties::default()
        .with_content_type(ShortString::from(CONTENT_TYPE_JSON))
        .with_content_encoding(ShortString::from(CONTENT_ENCODING_UTF8))
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(message_id))
        .with_headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_properties() -> BasicProperties {
        outgoing_properties("notification.created.v1", "tenant-1", "trace-1", "m-1")
    }

    fn with_header(properties: BasicProperties, name: &str, value: AMQPValue) -> BasicProperties {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(ShortString::from(name), value);
        properties.with_headers(headers)
    }

    #[test]
    fn contract_headers_are_read_with_defaults() {
        let headers = read_dispatch_headers(&valid_properties(), 3).unwrap();
        assert_eq!(headers.event_type, "notification.created.v1");
        assert_eq!(headers.tenant_id, "tenant-1");
        assert_eq!(headers.retry_count, 0);
        assert_eq!(headers.max_retries, 3);
    }

    #[test]
    fn counts_accept_any_integer_type_and_digit_strings() {
        let properties = with_header(valid_properties(), RETRY_COUNT, AMQPValue::ShortShortUInt(2));
        let properties = with_header(properties, MAX_RETRIES, text("5"));
        let headers = read_dispatch_headers(&properties, 3).unwrap();
        assert_eq!(headers.retry_count, 2);
        assert_eq!(headers.max_retries, 5);
    }

    #[test]
    fn negative_retry_count_is_invalid() {
        let properties = with_header(valid_properties(), RETRY_COUNT, AMQPValue::LongInt(-1));
        let err = read_dispatch_headers(&properties, 3).unwrap_err();
        assert!(matches!(err, HeaderError::Invalid { name: RETRY_COUNT, .. }), "{err}");
    }

    #[test]
    fn max_retries_above_limit_is_invalid() {
        let properties = with_header(valid_properties(), MAX_RETRIES, AMQPValue::LongInt(1000));
        assert!(read_dispatch_headers(&properties, 3).is_err());
    }

    #[test]
    fn missing_trace_id_is_reported() {
        let mut headers = valid_properties().headers().clone().unwrap();
        let mut stripped = FieldTable::default();
        for (key, value) in headers.inner() {
            if key.as_str() != TRACE_ID {
                stripped.insert(key.clone(), value.clone());
            }
        }
        headers = stripped;
        let properties = valid_properties().with_headers(headers);
        assert_eq!(read_dispatch_headers(&properties, 3).unwrap_err(), HeaderError::Missing(TRACE_ID));
    }

    #[test]
    fn content_type_must_be_json() {
        let properties = valid_properties().with_content_type(ShortString::from("text/plain"));
        assert!(matches!(read_dispatch_headers(&properties, 3), Err(HeaderError::Invalid { .. })));
        let with_charset = valid_properties().with_content_type(ShortString::from("application/json; charset=utf-8"));
        assert!(read_dispatch_headers(&with_charset, 3).is_ok());
    }

    #[test]
    fn missing_content_encoding_is_reported() {
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from(CONTENT_TYPE_JSON))
            .with_headers(valid_properties().headers().clone().unwrap());
        assert_eq!(
            read_dispatch_headers(&properties, 3).unwrap_err(),
            HeaderError::Missing("content-encoding property")
        );
    }
}
