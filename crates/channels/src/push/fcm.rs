//! Sending through the FCM HTTP v1 API and classifying its responses.

use std::time::Duration;

use notify_core::recipient::mask_tail;
use notify_core::{DeliveryError, FailureKind, Notification, Receipt};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use super::config::FcmConfig;
use super::error::{classify_transport_error, code_part, excerpt, ReadResponse};
use super::token::{AccessTokenSource, BearerToken};

/// Provider name in receipts.
pub const PROVIDER: &str = "fcm";

const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";
/// The field that a `BadRequest` violation names when the device token
/// itself is invalid.
const TOKEN_FIELD: &str = "message.token";

/// Sends FCM messages for one Firebase project.
#[derive(Debug)]
pub(super) struct FcmSender {
    client: reqwest::Client,
    send_url: Url,
    tokens: AccessTokenSource,
    timeout: Duration,
    options: MessageOptions,
}

/// The per-platform parts of every message, fixed by configuration.
#[derive(Debug, Clone)]
pub(super) struct MessageOptions {
    pub android: serde_json::Value,
    pub apns: serde_json::Value,
}

impl MessageOptions {
    pub fn from_config(config: &FcmConfig) -> MessageOptions {
        let mut android = json!({ "priority": config.android.priority.as_fcm_str() });
        if let Some(ttl) = config.android.ttl_secs {
            // FCM takes durations as decimal seconds with an `s` suffix.
            android["ttl"] = json!(format!("{ttl}s"));
        }
        let apns = json!({
            "headers": {
                "apns-priority": config.apns.priority.to_string(),
                "apns-push-type": "alert",
            }
        });
        MessageOptions { android, apns }
    }
}

impl FcmSender {
    pub fn new(
        client: reqwest::Client,
        send_url: Url,
        tokens: AccessTokenSource,
        timeout: Duration,
        options: MessageOptions,
    ) -> FcmSender {
        FcmSender {
            client,
            send_url,
            tokens,
            timeout,
            options,
        }
    }

    /// Sends one notification to one FCM registration token.
    ///
    /// When FCM responds 401 the access token is replaced and the request
    /// is made once more, because FCM may revoke a token before its expiry.
    pub async fn send(
        &self,
        notification: &Notification,
        device_token: &str,
        title: &str,
        body: &str,
    ) -> Result<Receipt, DeliveryError> {
        let masked_token = mask_tail(device_token, 6);
        let notification_id = notification.notification_id.to_string();
        // FCM has no idempotency key. The notification id as Android's tag
        // and as the APNs collapse id makes a repeated send replace the
        // shown notification instead of showing it twice.
        let mut android = self.options.android.clone();
        android["notification"] = json!({ "tag": notification_id });
        let mut apns = self.options.apns.clone();
        apns["headers"]["apns-collapse-id"] = json!(notification_id);
        let message = json!({
            "message": {
                "token": device_token,
                "notification": { "title": title, "body": body },
                "data": { "notification_id": notification_id },
                "android": android,
                "apns": apns,
            }
        });

        let token = self.tokens.token().await?;
        let mut response = self.post(&token, &message).await?;

        if response.status == StatusCode::UNAUTHORIZED && !is_third_party_auth_error(&response.body)
        {
            tracing::info!(
                notification_id = %notification.notification_id,
                "FCM rejected the access token; retrying once with a new one"
            );
            let token = self.tokens.replace(&token).await?;
            response = self.post(&token, &message).await?;

            if response.status == StatusCode::UNAUTHORIZED
                && !is_third_party_auth_error(&response.body)
            {
                let error = classify_failure(&response, device_token, &masked_token);
                return Err(DeliveryError::permanent(
                    FailureKind::Configuration,
                    format!(
                        "{}; a newly fetched access token was rejected too, so check that the \
                         service account may send messages for the project",
                        error.message()
                    ),
                )
                .with_code(error.code().unwrap_or("http_401").to_owned()));
            }
        }

        if !response.status.is_success() {
            return Err(classify_failure(&response, device_token, &masked_token));
        }

        let name = serde_json::from_slice::<SendResponse>(&response.body)
            .ok()
            .map(|parsed| parsed.name)
            .filter(|name| !name.is_empty());
        if name.is_none() {
            // The 2xx status means FCM accepted the message, so sending it
            // again would deliver it twice.
            tracing::warn!(
                notification_id = %notification.notification_id,
                status = response.status.as_u16(),
                "FCM accepted the message without returning its name"
            );
        }
        tracing::debug!(
            notification_id = %notification.notification_id,
            device = %masked_token,
            status = response.status.as_u16(),
            "FCM accepted the message"
        );

        let receipt = Receipt::new(PROVIDER).with_detail("status", response.status.as_u16());
        Ok(match name {
            Some(name) => receipt.with_message_id(name),
            None => receipt,
        })
    }

    async fn post(
        &self,
        token: &BearerToken,
        message: &serde_json::Value,
    ) -> Result<ReadResponse, DeliveryError> {
        let result = self
            .client
            .post(self.send_url.clone())
            .header(AUTHORIZATION, token.header().clone())
            .header(CONTENT_TYPE, "application/json")
            .json(message)
            .send()
            .await;
        match result {
            Ok(response) => Ok(ReadResponse::read(response).await),
            Err(error) => Err(classify_transport_error("FCM", error, self.timeout)),
        }
    }
}

#[derive(Deserialize)]
struct SendResponse {
    name: String,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: ErrorStatus,
}

/// A `google.rpc.Status`, the error object of Google APIs.
#[derive(Deserialize, Default)]
struct ErrorStatus {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "@type", default)]
    type_url: String,
    #[serde(rename = "errorCode", default)]
    error_code: String,
    #[serde(rename = "fieldViolations", default)]
    field_violations: Vec<FieldViolation>,
}

#[derive(Deserialize)]
struct FieldViolation {
    #[serde(default)]
    field: String,
}

impl ErrorStatus {
    fn parse(body: &[u8]) -> ErrorStatus {
        serde_json::from_slice::<ErrorResponse>(body)
            .map(|parsed| parsed.error)
            .unwrap_or_default()
    }

    /// Returns the `errorCode` of the `FcmError` detail, such as `UNREGISTERED`.
    fn fcm_error_code(&self) -> Option<&str> {
        self.details
            .iter()
            .find(|detail| detail.type_url == FCM_ERROR_TYPE)
            .and_then(|detail| code_part(&detail.error_code))
    }

    /// Returns true if a `BadRequest` detail names the device token as invalid.
    fn names_token_field(&self) -> bool {
        self.details
            .iter()
            .filter(|detail| detail.type_url == BAD_REQUEST_TYPE)
            .flat_map(|detail| &detail.field_violations)
            .any(|violation| violation.field == TOKEN_FIELD)
    }
}

/// Returns true if a 401 reports that FCM's own credentials for APNs or web
/// push are wrong. A new access token cannot fix that.
fn is_third_party_auth_error(body: &[u8]) -> bool {
    ErrorStatus::parse(body).fcm_error_code() == Some("THIRD_PARTY_AUTH_ERROR")
}

/// Maps a non-2xx FCM response to a delivery error.
///
/// `UNREGISTERED` and an `INVALID_ARGUMENT` that names `message.token` mark
/// the device token as gone. Other 400s are about the content. 429, 5xx and
/// 408 are transient and keep `Retry-After`.
fn classify_failure(
    response: &ReadResponse,
    device_token: &str,
    masked_token: &str,
) -> DeliveryError {
    let status = response.status;
    let error = ErrorStatus::parse(&response.body);
    let fcm_code = error.fcm_error_code();
    let code = match (fcm_code, code_part(&error.status)) {
        (Some(fcm_code), _) => format!("fcm_{fcm_code}"),
        (None, Some(status)) => format!("fcm_{status}"),
        (None, None) => format!("http_{}", status.as_u16()),
    };

    let mut message = format!("FCM responded {status} for device {masked_token}");
    if let Some(name) = fcm_code.or(code_part(&error.status)) {
        message.push_str(&format!(": {name}"));
    }
    let detail = excerpt(&error.message, device_token, masked_token);
    if !detail.is_empty() {
        message.push_str(&format!(" ({detail})"));
    }

    let permanent = |kind: FailureKind, message: String| {
        DeliveryError::permanent(kind, message).with_code(code.clone())
    };
    let transient = |kind: FailureKind| {
        response
            .transient(kind, message.clone())
            .with_code(code.clone())
    };

    match (status, fcm_code) {
        (_, Some("UNREGISTERED")) => permanent(FailureKind::RecipientGone, message),
        (StatusCode::BAD_REQUEST, _) if error.names_token_field() => {
            permanent(FailureKind::RecipientGone, message)
        }
        // Marking the token gone would be wrong when `project_id` is what
        // is misconfigured, because then every token would be affected.
        (_, Some("SENDER_ID_MISMATCH")) => permanent(FailureKind::Rejected, message),
        (_, Some("THIRD_PARTY_AUTH_ERROR")) => permanent(
            FailureKind::Configuration,
            format!("{message}; check the APNs or web push credentials of the Firebase project"),
        ),
        (StatusCode::TOO_MANY_REQUESTS, _) | (_, Some("QUOTA_EXCEEDED")) => {
            transient(FailureKind::RateLimited)
        }
        (StatusCode::REQUEST_TIMEOUT, _) => transient(FailureKind::Timeout),
        (status, _) if status.is_server_error() => transient(FailureKind::Unavailable),
        (StatusCode::BAD_REQUEST, _) => permanent(FailureKind::InvalidContent, message),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => permanent(
            FailureKind::Configuration,
            format!("{message}; check the service account and `channels.push.fcm.project_id`"),
        ),
        (status, _) if status.is_client_error() || status.is_redirection() => {
            permanent(FailureKind::Rejected, message)
        }
        // A final 1xx or an unknown status comes from a broken proxy or server.
        _ => transient(FailureKind::Unavailable),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::Version;

    use super::*;
    use crate::push::config::{AndroidPriority, FcmAndroidConfig, FcmApnsConfig};

    const DEVICE: &str = "fcm-device-token-0123456789";

    fn response(status: u16, body: serde_json::Value) -> ReadResponse {
        ReadResponse {
            status: StatusCode::from_u16(status).unwrap(),
            version: Version::HTTP_11,
            headers: Default::default(),
            retry_after: Some(Duration::from_secs(12)),
            body: body.to_string().into_bytes(),
        }
    }

    fn google_error(
        code: u16,
        status: &str,
        message: &str,
        details: serde_json::Value,
    ) -> serde_json::Value {
        json!({"error": {"code": code, "status": status, "message": message, "details": details}})
    }

    fn fcm_detail(error_code: &str) -> serde_json::Value {
        json!({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
    }

    fn classify(status: u16, body: serde_json::Value) -> DeliveryError {
        classify_failure(&response(status, body), DEVICE, "***456789")
    }

    #[test]
    fn unregistered_is_recipient_gone() {
        let body = google_error(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            json!([fcm_detail("UNREGISTERED")]),
        );

        let error = classify(404, body);

        assert!(!error.is_transient());
        assert_eq!(error.kind(), FailureKind::RecipientGone);
        assert_eq!(error.code(), Some("fcm_UNREGISTERED"));
    }

    #[test]
    fn token_field_violation_is_recipient_gone() {
        let details = json!([
            {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]},
            fcm_detail("INVALID_ARGUMENT"),
        ]);

        let error = classify(
            400,
            google_error(400, "INVALID_ARGUMENT", "invalid token", details),
        );

        assert_eq!(error.kind(), FailureKind::RecipientGone);
        assert_eq!(error.code(), Some("fcm_INVALID_ARGUMENT"));
    }

    #[test]
    fn payload_violation_is_invalid_content() {
        let details = json!([
            {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": "message.data[0].value"}]},
        ]);

        let error = classify(
            400,
            google_error(400, "INVALID_ARGUMENT", "Invalid value", details),
        );

        assert!(!error.is_transient());
        assert_eq!(error.kind(), FailureKind::InvalidContent);
        assert_eq!(error.code(), Some("fcm_INVALID_ARGUMENT"));
    }

    #[test]
    fn server_errors_and_quota_are_transient() {
        let cases = [
            (
                503,
                "UNAVAILABLE",
                FailureKind::Unavailable,
                "fcm_UNAVAILABLE",
            ),
            (500, "INTERNAL", FailureKind::Unavailable, "fcm_INTERNAL"),
            (
                429,
                "QUOTA_EXCEEDED",
                FailureKind::RateLimited,
                "fcm_QUOTA_EXCEEDED",
            ),
        ];

        for (status, name, kind, code) in cases {
            let error = classify(
                status,
                google_error(status, name, "try later", json!([fcm_detail(name)])),
            );

            assert!(error.is_transient(), "{status}");
            assert_eq!(error.kind(), kind, "{status}");
            assert_eq!(error.code(), Some(code), "{status}");
            assert_eq!(
                error.retry_after(),
                Some(Duration::from_secs(12)),
                "{status}"
            );
        }
    }

    #[test]
    fn sender_id_mismatch_is_not_recipient_gone() {
        let body = google_error(
            403,
            "PERMISSION_DENIED",
            "SenderId mismatch",
            json!([fcm_detail("SENDER_ID_MISMATCH")]),
        );

        let error = classify(403, body);

        assert!(!error.is_transient());
        assert_eq!(error.kind(), FailureKind::Rejected);
        assert_eq!(error.code(), Some("fcm_SENDER_ID_MISMATCH"));
    }

    #[test]
    fn body_without_google_error_uses_http_code() {
        let error = classify_failure(
            &ReadResponse {
                body: b"<html>Bad Gateway</html>".to_vec(),
                ..response(502, json!(null))
            },
            DEVICE,
            "***456789",
        );

        assert!(error.is_transient());
        assert_eq!(error.code(), Some("http_502"));
    }

    #[test]
    fn message_masks_device_token() {
        let body = google_error(
            400,
            "INVALID_ARGUMENT",
            &format!("token {DEVICE} is malformed"),
            json!([]),
        );

        let error = classify(400, body);

        assert!(!error.message().contains(DEVICE), "{error}");
        assert!(error.message().contains("***456789"), "{error}");
    }

    #[test]
    fn third_party_auth_error_is_detected() {
        let body = google_error(
            401,
            "UNAUTHENTICATED",
            "APNs auth",
            json!([fcm_detail("THIRD_PARTY_AUTH_ERROR")]),
        );

        assert!(is_third_party_auth_error(body.to_string().as_bytes()));
        assert!(!is_third_party_auth_error(b"{}"));
    }

    #[test]
    fn options_from_config() {
        let config = FcmConfig {
            project_id: "demo".into(),
            service_account_file: None,
            service_account_json_env: None,
            base_url: "https://fcm.googleapis.com".into(),
            token_url: None,
            android: FcmAndroidConfig {
                priority: AndroidPriority::Normal,
                ttl_secs: Some(3600),
            },
            apns: FcmApnsConfig { priority: 5 },
        };

        let options = MessageOptions::from_config(&config);

        assert_eq!(
            options.android,
            json!({"priority": "NORMAL", "ttl": "3600s"})
        );
        assert_eq!(
            options.apns,
            json!({"headers": {"apns-priority": "5", "apns-push-type": "alert"}})
        );
    }
}
