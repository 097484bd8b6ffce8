//! A generic JSON-over-HTTP gateway: the URL, the auth header and the body
//! template come from configuration, so a team can point the channel at
//! its own gateway.
//!
//! Outcomes: 2xx is delivered. 408, 429, 5xx, timeouts and connection
//! failures are transient. 401 and 403 are configuration errors, and
//! redirects (never followed) and other 4xx are permanent rejections.

use std::time::Duration;

use notify_core::recipient::mask_url;
use notify_core::{DeliveryError, FailureKind};
use reqwest::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use url::Url;

use super::config::{HttpProviderConfig, Secret};
use super::error::{self, Redactor, SmsError};
use super::failover::{Accepted, OutgoingSms};
use super::{resolve_secret, ReadEnv};

/// Header carrying the notification id, for gateways that drop repeated
/// requests with the same key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Placeholders of a body template.
const PLACEHOLDERS: [&str; 4] = ["to", "body", "notification_id", "tenant_id"];

/// One configured gateway.
#[derive(Debug)]
pub(super) struct HttpProvider {
    name: String,
    url: Url,
    masked_url: String,
    /// Header name, value marked sensitive, and the value again for redaction.
    auth: Option<(HeaderName, HeaderValue, Secret)>,
    template: BodyTemplate,
    message_id_pointer: Option<String>,
    client: Client,
    timeout: Duration,
}

impl HttpProvider {
    /// Validates one `type = "http"` entry. `key` is the entry's key, such
    /// as `channels.sms.providers[1]`.
    pub(super) fn from_config(
        config: &HttpProviderConfig,
        key: &str,
        read_env: ReadEnv<'_>,
        client: Client,
        timeout: Duration,
    ) -> Result<HttpProvider, SmsError> {
        let invalid = |field: &str, reason: String| SmsError::Invalid {
            key: format!("{key}.{field}"),
            reason,
        };

        if config.name.trim().is_empty() {
            return Err(SmsError::Missing {
                key: format!("{key}.name"),
                hint: "name the provider; receipts and logs show the name",
            });
        }
        let url = Url::parse(&config.url)
            .map_err(|err| invalid("url", format!("not a valid URL ({err})")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                "url",
                "expected an http or https URL with a host".to_owned(),
            ));
        }
        let auth = auth_of(config, key, read_env)?;
        let template = BodyTemplate::parse(&config.body_template)
            .map_err(|reason| invalid("body_template", reason))?;
        if let Some(pointer) = &config.message_id_pointer {
            if !pointer.starts_with('/') {
                return Err(invalid(
                    "message_id_pointer",
                    "expected a JSON pointer such as `/id` or `/messages/0/id`".to_owned(),
                ));
            }
        }

        Ok(HttpProvider {
            name: config.name.clone(),
            masked_url: mask_url(url.as_str()),
            url,
            auth,
            template,
            message_id_pointer: config.message_id_pointer.clone(),
            client,
            timeout,
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Sends one message and classifies the outcome.
    pub(super) async fn send(&self, sms: &OutgoingSms<'_>) -> Result<Accepted, DeliveryError> {
        let notification_id = sms.notification_id.to_string();
        let tenant_id = sms.tenant_id.to_string();
        let body = self.template.render(&|name| match name {
            "to" => Some(sms.to),
            "body" => Some(sms.body),
            "notification_id" => Some(&notification_id),
            "tenant_id" => Some(&tenant_id),
            _ => None,
        });
        let body = serde_json::to_vec(&body).map_err(|err| {
            DeliveryError::permanent(
                FailureKind::Internal,
                format!(
                    "failed to serialize the body for SMS provider `{}`",
                    self.name
                ),
            )
            .with_source(err)
        })?;

        let mut request = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            // A gateway that honours the key drops a repeat of a send whose
            // response was lost, such as one cut off by a crash.
            .header(IDEMPOTENCY_KEY, &notification_id)
            .body(body);
        if let Some((name, value, _)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        let response = request.send().await.map_err(|err| {
            error::classify_transport_error(err, &self.name, &self.masked_url, self.timeout)
        })?;

        let status = response.status();
        if !status.is_success() {
            let retry_after = error::retry_after_of(response.headers());
            let body = error::read_body(response, error::ERROR_BODY_LIMIT).await;
            let secrets: Vec<&str> = self
                .auth
                .iter()
                .map(|(_, _, secret)| secret.expose())
                .collect();
            let redactor = Redactor {
                phone: sms.to,
                secrets: &secrets,
            };
            let text = error::excerpt(&redactor.redact(&String::from_utf8_lossy(&body)));
            return Err(classify_status(
                &self.name,
                &self.masked_url,
                status,
                retry_after,
                &text,
            ));
        }

        let message_id = match &self.message_id_pointer {
            Some(pointer) => {
                let body = error::read_body(response, error::SUCCESS_BODY_LIMIT).await;
                let id = message_id_at(&body, pointer);
                if id.is_none() {
                    // The gateway accepted the message, so failing the send
                    // would only lead to a retry that sends it a second time.
                    tracing::warn!(
                        notification_id = %sms.notification_id,
                        tenant_id = %sms.tenant_id,
                        provider = %self.name,
                        pointer = %pointer,
                        "SMS gateway accepted the message but its response has no string or \
                         number at `message_id_pointer`; the receipt has no provider message id"
                    );
                }
                id
            }
            None => None,
        };
        Ok(Accepted {
            message_id,
            status: status.as_u16(),
        })
    }
}

/// Reads `auth_header` with its value from `auth_value` or `auth_value_env`.
fn auth_of(
    config: &HttpProviderConfig,
    key: &str,
    read_env: ReadEnv<'_>,
) -> Result<Option<(HeaderName, HeaderValue, Secret)>, SmsError> {
    let Some(header) = &config.auth_header else {
        if config.auth_value.is_some() || config.auth_value_env.is_some() {
            return Err(SmsError::Missing {
                key: format!("{key}.auth_header"),
                hint: "set the header name that carries `auth_value`, or remove the value",
            });
        }
        return Ok(None);
    };

    let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| SmsError::Invalid {
        key: format!("{key}.auth_header"),
        reason: "not a valid HTTP header name".to_owned(),
    })?;
    let secret = resolve_secret(
        config.auth_value.as_ref(),
        config.auth_value_env.as_deref(),
        key,
        ("auth_value", "auth_value_env"),
        read_env,
    )?;
    let mut value = HeaderValue::from_str(secret.expose()).map_err(|_| SmsError::Invalid {
        key: format!("{key}.auth_value"),
        reason:
            "not a valid HTTP header value (it contains a line break or another control character)"
                .to_owned(),
    })?;
    // Keeps the value out of the Debug output of requests and HTTP/2 header tables.
    value.set_sensitive(true);
    Ok(Some((name, value, secret)))
}

/// Returns the string or number at `pointer` in a JSON body.
fn message_id_at(body: &[u8], pointer: &str) -> Option<String> {
    let document: Value = serde_json::from_slice(body).ok()?;
    match document.pointer(pointer)? {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Number(id) => Some(id.to_string()),
        _ => None,
    }
}

/// Maps a non-2xx status to a delivery error. `excerpt` is the start of the
/// response body, already redacted.
fn classify_status(
    provider: &str,
    masked_url: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    excerpt: &str,
) -> DeliveryError {
    let code = format!("http_{}", status.as_u16());
    let response = if excerpt.is_empty() {
        format!("SMS provider `{provider}` at {masked_url} responded {status}")
    } else {
        format!("SMS provider `{provider}` at {masked_url} responded {status}: {excerpt}")
    };

    match status {
        StatusCode::REQUEST_TIMEOUT => {
            error::transient(FailureKind::Timeout, response, code, retry_after)
        }
        StatusCode::TOO_MANY_REQUESTS => {
            error::transient(FailureKind::RateLimited, response, code, retry_after)
        }
        status if status.is_server_error() => {
            error::transient(FailureKind::Unavailable, response, code, retry_after)
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => DeliveryError::permanent(
            FailureKind::Configuration,
            format!("{response} (check `auth_header` and the auth value)"),
        )
        .with_code(code),
        status if status.is_redirection() => DeliveryError::permanent(
            FailureKind::Rejected,
            format!("{response}; redirects are not followed, so `url` must be the final address"),
        )
        .with_code(code),
        status if status.is_client_error() => {
            DeliveryError::permanent(FailureKind::Rejected, response).with_code(code)
        }
        // A final 1xx status or a code above 599 comes from a broken server, which may recover.
        _ => error::transient(FailureKind::Unavailable, response, code, retry_after),
    }
}

/// A parsed JSON body template. Placeholders are filled in string values
/// only, and the filled document is serialized by `serde_json`, so a value
/// can never change the document's structure.
#[derive(Debug, Clone)]
pub(super) struct BodyTemplate {
    document: Value,
}

impl BodyTemplate {
    /// Parses a template and checks its placeholders.
    ///
    /// # Errors
    ///
    /// Returns the reason when the template is not JSON, has a placeholder
    /// in an object key or an unknown placeholder, or lacks `{{to}}` or
    /// `{{body}}`.
    pub(super) fn parse(template: &str) -> Result<BodyTemplate, String> {
        let document: Value =
            serde_json::from_str(template).map_err(|err| format!("not a JSON document ({err})"))?;

        let mut found = Vec::new();
        collect_placeholders(&document, &mut found)?;
        for required in ["to", "body"] {
            if !found.iter().any(|name| name == required) {
                return Err(format!("has no `{{{{{required}}}}}` placeholder"));
            }
        }
        Ok(BodyTemplate { document })
    }

    /// Returns the document with every placeholder replaced by `value_of(name)`.
    pub(super) fn render<'v>(&self, value_of: &dyn Fn(&str) -> Option<&'v str>) -> Value {
        fill_value(&self.document, value_of)
    }
}

fn collect_placeholders(value: &Value, found: &mut Vec<String>) -> Result<(), String> {
    match value {
        Value::String(text) => {
            for name in placeholder_names(text) {
                if !PLACEHOLDERS.contains(&name) {
                    return Err(format!(
                        "unknown placeholder `{{{{{name}}}}}`; the placeholders are {{{{to}}}}, \
                         {{{{body}}}}, {{{{notification_id}}}} and {{{{tenant_id}}}}"
                    ));
                }
                found.push(name.to_owned());
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_placeholders(item, found)?;
            }
        }
        Value::Object(fields) => {
            for (key, item) in fields {
                if !placeholder_names(key).is_empty() {
                    return Err(format!(
                        "object key `{key}` has a placeholder; placeholders are only filled in string values"
                    ));
                }
                collect_placeholders(item, found)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

fn fill_value<'v>(value: &Value, value_of: &dyn Fn(&str) -> Option<&'v str>) -> Value {
    match value {
        Value::String(text) => Value::String(fill_text(text, value_of)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| fill_value(item, value_of))
                .collect(),
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, item)| (key.clone(), fill_value(item, value_of)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Returns the trimmed names of the `{{name}}` placeholders in `text`.
fn placeholder_names(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some((_, name, after)) = next_placeholder(rest) {
        names.push(name);
        rest = after;
    }
    names
}

/// Finds the first `{{name}}` in `text`. Returns the text before it, the
/// trimmed name and the text after it.
fn next_placeholder(text: &str) -> Option<(&str, &str, &str)> {
    let start = text.find("{{")?;
    let inner_start = start + 2;
    let length = text[inner_start..].find("}}")?;
    let name = text[inner_start..inner_start + length].trim();
    Some((&text[..start], name, &text[inner_start + length + 2..]))
}

/// Replaces placeholders in one pass over the template text, so text that a
/// value brings in (a body containing `{{to}}`, say) is never filled itself.
fn fill_text<'v>(text: &str, value_of: &dyn Fn(&str) -> Option<&'v str>) -> String {
    let mut filled = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, name, after)) = next_placeholder(rest) {
        filled.push_str(before);
        match value_of(name) {
            Some(value) => filled.push_str(value),
            // Unreachable after `BodyTemplate::parse`, which rejects unknown names.
            None => filled.push_str(&rest[before.len()..rest.len() - after.len()]),
        }
        rest = after;
    }
    filled.push_str(rest);
    filled
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn values(name: &str) -> Option<&'static str> {
        match name {
            "to" => Some("+15550100"),
            "body" => Some("Line \"one\"\n{{to}} \\ </script>"),
            "notification_id" => Some("0b3c6e1a-5d7f-4a2b-9c8d-1e2f3a4b5c6d"),
            "tenant_id" => Some("7d444840-9dc0-41a1-8ad4-7e4c7c5b3f10"),
            _ => None,
        }
    }

    #[test]
    fn default_template_fills_to_and_body() {
        let template = BodyTemplate::parse(HttpProviderConfig::DEFAULT_BODY_TEMPLATE).unwrap();

        let body = template.render(&values);

        assert_eq!(
            body,
            json!({"to": "+15550100", "body": "Line \"one\"\n{{to}} \\ </script>"})
        );
    }

    #[test]
    fn body_text_is_escaped_and_not_filled_again() {
        let template =
            BodyTemplate::parse(r#"{"msg": {"text": "{{body}}"}, "dest": ["{{to}}"]}"#).unwrap();

        let serialized = serde_json::to_string(&template.render(&values)).unwrap();

        assert_eq!(
            serialized,
            r#"{"dest":["+15550100"],"msg":{"text":"Line \"one\"\n{{to}} \\ </script>"}}"#
        );
    }

    #[test]
    fn placeholders_fill_inside_longer_strings() {
        let template = BodyTemplate::parse(
            r#"{"to": "tel:{{ to }}", "body": "{{body}}", "ref": "{{tenant_id}}/{{notification_id}}", "n": 1}"#,
        )
        .unwrap();

        let body = template.render(&values);

        assert_eq!(body["to"], "tel:+15550100");
        assert_eq!(
            body["ref"],
            "7d444840-9dc0-41a1-8ad4-7e4c7c5b3f10/0b3c6e1a-5d7f-4a2b-9c8d-1e2f3a4b5c6d"
        );
        assert_eq!(body["n"], 1);
    }

    #[test]
    fn template_errors_name_the_problem() {
        let cases = [
            (
                r#"{"to": "{{to}}", "body": {{body}}}"#,
                "not a JSON document",
            ),
            (
                r#"{"to": "{{to}}", "body": "{{text}}"}"#,
                "unknown placeholder `{{text}}`",
            ),
            (r#"{"{{to}}": "{{body}}"}"#, "object key"),
            (r#"{"to": "{{to}}"}"#, "no `{{body}}` placeholder"),
            (r#"{"body": "{{body}}"}"#, "no `{{to}}` placeholder"),
        ];

        for (template, expected) in cases {
            let reason = BodyTemplate::parse(template).unwrap_err();

            assert!(reason.contains(expected), "{template}: {reason}");
        }
    }

    #[test]
    fn unclosed_braces_stay_literal() {
        let template =
            BodyTemplate::parse(r#"{"to": "{{to}}", "body": "{{body}}", "x": "a {{ b"}"#).unwrap();

        let body = template.render(&values);

        assert_eq!(body["x"], "a {{ b");
    }

    #[test]
    fn message_id_is_read_at_pointer() {
        let body = br#"{"messages": [{"id": "gw-123"}], "count": 7}"#;

        assert_eq!(
            message_id_at(body, "/messages/0/id"),
            Some("gw-123".to_owned())
        );
        assert_eq!(message_id_at(body, "/count"), Some("7".to_owned()));
        assert_eq!(message_id_at(body, "/missing"), None);
        assert_eq!(message_id_at(b"not json", "/id"), None);
    }

    #[test]
    fn statuses_are_classified() {
        let cases = [
            (408, true, FailureKind::Timeout),
            (429, true, FailureKind::RateLimited),
            (503, true, FailureKind::Unavailable),
            (401, false, FailureKind::Configuration),
            (403, false, FailureKind::Configuration),
            (302, false, FailureKind::Rejected),
            (422, false, FailureKind::Rejected),
        ];

        for (status, transient, kind) in cases {
            let error = classify_status(
                "gateway",
                "https://sms.example.com/***",
                StatusCode::from_u16(status).unwrap(),
                None,
                "",
            );

            assert_eq!(error.is_transient(), transient, "{status}: {error}");
            assert_eq!(error.kind(), kind, "{status}: {error}");
            assert_eq!(error.code(), Some(format!("http_{status}").as_str()));
        }
    }
}
