//! Twilio's Messages API: a form-encoded POST to
//! `{base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP basic
//! auth (account SID and auth token), and the mapping of Twilio's error codes
//! to [`DeliveryError`]s.
//!
//! Error codes and their meaning are from Twilio's error dictionary,
//! <https://www.twilio.com/docs/api/errors>.

use std::time::Duration;

use notify_core::recipient::mask_url;
use notify_core::{DeliveryError, FailureKind};
use reqwest::header::ACCEPT;
use reqwest::{Client, StatusCode};
use serde::Deserialize;
use url::Url;

use super::config::{Secret, TwilioConfig};
use super::error::{self, Redactor, SmsError};
use super::failover::{Accepted, OutgoingSms};
use super::{resolve_secret, ReadEnv};

/// Path of the Messages resource below the base URL, before the account SID.
const ACCOUNTS_PATH: &str = "2010-04-01/Accounts";

/// Sender of a Twilio message.
#[derive(Debug, Clone)]
enum Sender {
    /// `MessagingServiceSid`: the service picks the number.
    MessagingService(String),
    /// `From`: a number, short code or alphanumeric sender ID.
    From(String),
}

/// One configured Twilio account.
#[derive(Debug)]
pub(super) struct TwilioProvider {
    name: String,
    endpoint: Url,
    masked_endpoint: String,
    account_sid: String,
    auth_token: Secret,
    sender: Sender,
    client: Client,
    timeout: Duration,
}

/// Twilio's Message resource, as far as the channel needs it.
#[derive(Deserialize)]
struct MessageResource {
    sid: String,
}

/// Twilio's error body: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Debug, Deserialize)]
struct TwilioErrorBody {
    code: Option<u64>,
    message: Option<String>,
}

impl TwilioProvider {
    /// Validates one `type = "twilio"` entry. `key` is the entry's key, such
    /// as `channels.sms.providers[0]`.
    pub(super) fn from_config(
        config: &TwilioConfig,
        key: &str,
        read_env: ReadEnv<'_>,
        client: Client,
        timeout: Duration,
    ) -> Result<TwilioProvider, SmsError> {
        let invalid = |field: &str, reason: &str| SmsError::Invalid {
            key: format!("{key}.{field}"),
            reason: reason.to_owned(),
        };

        if config.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if !is_sid(&config.account_sid, "AC") {
            return Err(invalid(
                "account_sid",
                "expected `AC` followed by 32 hexadecimal digits, as shown in the Twilio console",
            ));
        }
        let auth_token = resolve_secret(
            config.auth_token.as_ref(),
            config.auth_token_env.as_deref(),
            key,
            ("auth_token", "auth_token_env"),
            read_env,
        )?;
        let sender = sender_of(config, key)?;
        let endpoint = endpoint_of(&config.base_url, &config.account_sid)
            .map_err(|reason| invalid("base_url", reason))?;

        Ok(TwilioProvider {
            name: config.name.clone(),
            masked_endpoint: mask_url(endpoint.as_str()),
            endpoint,
            account_sid: config.account_sid.clone(),
            auth_token,
            sender,
            client,
            timeout,
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Sends one message and classifies the outcome.
    pub(super) async fn send(&self, sms: &OutgoingSms<'_>) -> Result<Accepted, DeliveryError> {
        let sender = match &self.sender {
            Sender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
            Sender::From(from) => ("From", from.as_str()),
        };
        let form = [("To", sms.to), ("Body", sms.body), sender];

        let result = self
            .client
            .post(self.endpoint.clone())
            .basic_auth(&self.account_sid, Some(self.auth_token.expose()))
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await;
        let response = result.map_err(|err| {
            error::classify_transport_error(err, &self.name, &self.masked_endpoint, self.timeout)
        })?;

        let status = response.status();
        let redactor = Redactor {
            phone: sms.to,
            secrets: &[self.auth_token.expose()],
        };
        if !status.is_success() {
            let retry_after = error::retry_after_of(response.headers());
            let body = error::read_body(response, error::ERROR_BODY_LIMIT).await;
            return Err(classify_failure(
                &self.name,
                status,
                &body,
                retry_after,
                &redactor,
            ));
        }

        let body = error::read_body(response, error::SUCCESS_BODY_LIMIT).await;
        let message_id = match serde_json::from_slice::<MessageResource>(&body) {
            Ok(resource) => Some(resource.sid),
            Err(err) => {
                // Twilio created the message, so failing the send would only
                // lead to a retry that sends it a second time.
                tracing::warn!(
                    notification_id = %sms.notification_id,
                    tenant_id = %sms.tenant_id,
                    provider = %self.name,
                    status = status.as_u16(),
                    error = %err,
                    "Twilio accepted the SMS but its response has no readable `sid`; \
                     the receipt has no provider message id"
                );
                None
            }
        };
        Ok(Accepted {
            message_id,
            status: status.as_u16(),
        })
    }
}

/// Returns true if `sid` is `prefix` followed by 32 hexadecimal digits, the
/// form of every Twilio SID.
fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn sender_of(config: &TwilioConfig, key: &str) -> Result<Sender, SmsError> {
    match (&config.messaging_service_sid, &config.from) {
        (Some(_), Some(_)) => Err(SmsError::Conflict {
            first: format!("{key}.messaging_service_sid"),
            second: format!("{key}.from"),
        }),
        (None, None) => Err(SmsError::Missing {
            key: format!("{key}.messaging_service_sid"),
            hint: "set `messaging_service_sid` or `from` to choose the sender",
        }),
        (Some(sid), None) => {
            if !is_sid(sid, "MG") {
                return Err(SmsError::Invalid {
                    key: format!("{key}.messaging_service_sid"),
                    reason: "expected `MG` followed by 32 hexadecimal digits".to_owned(),
                });
            }
            Ok(Sender::MessagingService(sid.clone()))
        }
        (None, Some(from)) => {
            if from.trim().is_empty() || from.chars().any(char::is_control) {
                return Err(SmsError::Invalid {
                    key: format!("{key}.from"),
                    reason: "expected an E.164 number, a short code or an alphanumeric sender ID"
                        .to_owned(),
                });
            }
            Ok(Sender::From(from.clone()))
        }
    }
}

/// Builds the Messages endpoint below `base_url`.
fn endpoint_of(base_url: &str, account_sid: &str) -> Result<Url, &'static str> {
    let base = Url::parse(base_url).map_err(|_| "not a valid URL")?;
    if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
        return Err("expected an http or https URL with a host");
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err("must not have a query or fragment");
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err("must not contain credentials; set `auth_token_env` instead");
    }

    let base = base.as_str().trim_end_matches('/');
    Url::parse(&format!(
        "{base}/{ACCOUNTS_PATH}/{account_sid}/Messages.json"
    ))
    .map_err(|_| "not a valid URL")
}

/// Maps a non-2xx response to a delivery error.
///
/// 429, Twilio error 20429 and 5xx are transient and keep `retry_after`, and
/// so is 408. Known Twilio error codes pick the failure kind of a permanent
/// error, a 401 without a known code is a configuration error, and every
/// other status is permanent and `Rejected`.
fn classify_failure(
    provider: &str,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
    redactor: &Redactor<'_>,
) -> DeliveryError {
    let parsed = serde_json::from_slice::<TwilioErrorBody>(body).ok();
    let twilio_code = parsed.as_ref().and_then(|body| body.code);
    let code = match twilio_code {
        Some(twilio_code) => format!("twilio_{twilio_code}"),
        None => format!("http_{}", status.as_u16()),
    };

    let detail = match (&parsed, twilio_code) {
        (
            Some(TwilioErrorBody {
                message: Some(text),
                ..
            }),
            Some(twilio_code),
        ) => {
            format!(
                " with Twilio error {twilio_code}: {}",
                error::excerpt(&redactor.redact(text))
            )
        }
        (_, Some(twilio_code)) => format!(" with Twilio error {twilio_code}"),
        _ => {
            let text = error::excerpt(&redactor.redact(&String::from_utf8_lossy(body)));
            if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            }
        }
    };
    let response = format!("SMS provider `{provider}` responded {status}{detail}");

    if status == StatusCode::TOO_MANY_REQUESTS || twilio_code == Some(20429) {
        return error::transient(FailureKind::RateLimited, response, code, retry_after);
    }
    if status.is_server_error() {
        return error::transient(FailureKind::Unavailable, response, code, retry_after);
    }
    if status == StatusCode::REQUEST_TIMEOUT {
        return error::transient(FailureKind::Timeout, response, code, retry_after);
    }
    if let Some((kind, explanation)) = twilio_code.and_then(known_error) {
        return DeliveryError::permanent(kind, format!("{response} ({explanation})"))
            .with_code(code);
    }
    if status == StatusCode::UNAUTHORIZED {
        return DeliveryError::permanent(
            FailureKind::Configuration,
            format!("{response} (authentication failed; check the account SID and auth token)"),
        )
        .with_code(code);
    }
    if status.is_redirection() {
        return DeliveryError::permanent(
            FailureKind::Rejected,
            format!(
                "{response}; redirects are not followed, so `base_url` must be the API's final address"
            ),
        )
        .with_code(code);
    }
    if status.is_client_error() {
        return DeliveryError::permanent(FailureKind::Rejected, response).with_code(code);
    }
    // A final 1xx status or a code above 599 comes from a broken server, which may recover.
    error::transient(FailureKind::Unavailable, response, code, retry_after)
}

/// Failure kind and explanation of the Twilio error codes that a send to one
/// number can return and that retrying cannot fix.
fn known_error(code: u64) -> Option<(FailureKind, &'static str)> {
    let known = match code {
        20003 => (
            FailureKind::Configuration,
            "authentication failed; check the account SID and auth token",
        ),
        21211 => (FailureKind::InvalidRecipient, "the number is not a valid phone number"),
        21614 => (FailureKind::InvalidRecipient, "the number is not a mobile number"),
        21635 => (FailureKind::InvalidRecipient, "the number is a landline"),
        21612 => (FailureKind::Rejected, "Twilio cannot reach the number by SMS from this sender"),
        21610 => (
            FailureKind::Rejected,
            "the recipient has opted out of messages from this sender by replying STOP",
        ),
        21408 => (
            FailureKind::Configuration,
            "the account's SMS geo permissions exclude the number's country; enable it in the Twilio console",
        ),
        21606 => (
            FailureKind::Configuration,
            "the `from` sender cannot send messages to this destination",
        ),
        21608 => (
            FailureKind::Configuration,
            "a trial account can only send to numbers verified in the Twilio console",
        ),
        21617 => (FailureKind::InvalidContent, "the body exceeds Twilio's limit of 1600 characters"),
        _ => return None,
    };
    Some(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: &str = "+15005550001";

    fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> DeliveryError {
        let redactor = Redactor {
            phone: PHONE,
            secrets: &["auth-token-value"],
        };
        classify_failure(
            "twilio",
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
            retry_after,
            &redactor,
        )
    }

    fn twilio_body(code: u64, status: u16) -> String {
        serde_json::json!({
            "code": code,
            "message": format!("The 'To' number {PHONE} failed with {code}"),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        })
        .to_string()
    }

    #[test]
    fn known_codes_are_permanent_with_their_kind() {
        let cases = [
            (21211, 400, FailureKind::InvalidRecipient),
            (21614, 400, FailureKind::InvalidRecipient),
            (21635, 400, FailureKind::InvalidRecipient),
            (21612, 400, FailureKind::Rejected),
            (21610, 400, FailureKind::Rejected),
            (21408, 400, FailureKind::Configuration),
            (21606, 400, FailureKind::Configuration),
            (21608, 400, FailureKind::Configuration),
            (21617, 400, FailureKind::InvalidContent),
            (20003, 401, FailureKind::Configuration),
        ];

        for (twilio_code, status, kind) in cases {
            let error = classify(status, &twilio_body(twilio_code, status), None);

            assert!(!error.is_transient(), "{twilio_code}: {error}");
            assert_eq!(error.kind(), kind, "{twilio_code}: {error}");
            assert_eq!(error.code(), Some(format!("twilio_{twilio_code}").as_str()));
        }
    }

    #[test]
    fn message_masks_the_number() {
        let error = classify(400, &twilio_body(21211, 400), None);

        assert!(error.message().contains("***001"), "{error}");
        assert!(!error.message().contains("5005550001"), "{error}");
        assert!(error.message().contains("Twilio error 21211"), "{error}");
    }

    #[test]
    fn rate_limit_code_is_transient() {
        let error = classify(429, &twilio_body(20429, 429), Some(Duration::from_secs(5)));

        assert!(error.is_transient(), "{error}");
        assert_eq!(error.kind(), FailureKind::RateLimited);
        assert_eq!(error.code(), Some("twilio_20429"));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn server_errors_are_transient() {
        for status in [500, 502, 503, 504] {
            let error = classify(status, "", Some(Duration::from_secs(2)));

            assert!(error.is_transient(), "{status}: {error}");
            assert_eq!(error.kind(), FailureKind::Unavailable);
            assert_eq!(error.code(), Some(format!("http_{status}").as_str()));
            assert_eq!(error.retry_after(), Some(Duration::from_secs(2)));
        }
    }

    #[test]
    fn unknown_client_error_is_rejected() {
        let error = classify(400, &twilio_body(21999, 400), None);

        assert!(!error.is_transient(), "{error}");
        assert_eq!(error.kind(), FailureKind::Rejected);
        assert_eq!(error.code(), Some("twilio_21999"));
    }

    #[test]
    fn status_without_twilio_body_uses_http_code() {
        let error = classify(404, "<html>Not Found</html>", None);

        assert_eq!(error.kind(), FailureKind::Rejected);
        assert_eq!(error.code(), Some("http_404"));
        assert!(
            error.message().contains("<html>Not Found</html>"),
            "{error}"
        );
    }

    #[test]
    fn unauthorized_without_code_is_configuration() {
        let error = classify(401, "", None);

        assert!(!error.is_transient(), "{error}");
        assert_eq!(error.kind(), FailureKind::Configuration);
        assert_eq!(error.code(), Some("http_401"));
    }

    #[test]
    fn sid_format_is_checked() {
        assert!(is_sid("AC0123456789abcdef0123456789ABCDEF", "AC"));
        assert!(!is_sid("AC0123456789abcdef0123456789ABCDE", "AC"));
        assert!(!is_sid("MG0123456789abcdef0123456789abcdef", "AC"));
        assert!(!is_sid("AC0123456789abcdef0123456789abcdeg", "AC"));
    }

    #[test]
    fn endpoint_keeps_path_prefix() {
        let sid = "AC0123456789abcdef0123456789abcdef";

        let plain = endpoint_of("https://api.twilio.com", sid).unwrap();
        let prefixed = endpoint_of("http://127.0.0.1:8080/twilio/", sid).unwrap();

        assert_eq!(
            plain.as_str(),
            format!("https://api.twilio.com/2010-04-01/Accounts/{sid}/Messages.json")
        );
        assert_eq!(
            prefixed.as_str(),
            format!("http://127.0.0.1:8080/twilio/2010-04-01/Accounts/{sid}/Messages.json")
        );
    }

    #[test]
    fn endpoint_rejects_odd_base_urls() {
        let sid = "AC0123456789abcdef0123456789abcdef";

        for base in [
            "api.twilio.com",
            "ftp://api.twilio.com",
            "https://u:p@api.twilio.com",
            "https://api.twilio.com/?x=1",
        ] {
            assert!(endpoint_of(base, sid).is_err(), "{base}");
        }
    }
}
