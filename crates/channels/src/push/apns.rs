//! Sending through APNs with token-based authentication and classifying its
//! responses.

use std::time::Duration;

use notify_core::recipient::mask_tail;
use notify_core::{DeliveryError, FailureKind, Notification, Receipt};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::error::{classify_transport_error, code_part, ReadResponse};
use super::token::{BearerToken, ProviderTokenSigner};

/// Provider name in receipts.
pub const PROVIDER: &str = "apns";
/// Maximum payload size of an alert notification, in bytes, as Apple
/// documents it for remote notifications other than VoIP.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Maximum length of `apns-collapse-id`, in bytes.
pub const MAX_COLLAPSE_ID_BYTES: usize = 64;

const APNS_ID: &str = "apns-id";
const APNS_TOPIC: &str = "apns-topic";
const APNS_PUSH_TYPE: &str = "apns-push-type";
const APNS_PRIORITY: &str = "apns-priority";
const APNS_COLLAPSE_ID: &str = "apns-collapse-id";
const APNS_UNIQUE_ID: &str = "apns-unique-id";

/// Source of the `apns-collapse-id` of a notification.
#[derive(Debug, Clone)]
pub(super) enum CollapseId {
    None,
    Fixed(HeaderValue),
    Template,
}

/// Sends APNs alert notifications for one app.
#[derive(Debug)]
pub(super) struct ApnsSender {
    client: reqwest::Client,
    /// Base URL without a trailing `/`.
    base_url: String,
    topic: HeaderValue,
    priority: HeaderValue,
    collapse_id: CollapseId,
    tokens: ProviderTokenSigner,
    timeout: Duration,
}

impl ApnsSender {
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        topic: HeaderValue,
        priority: u8,
        collapse_id: CollapseId,
        tokens: ProviderTokenSigner,
        timeout: Duration,
    ) -> ApnsSender {
        ApnsSender {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            topic,
            priority: HeaderValue::from(u16::from(priority)),
            collapse_id,
            tokens,
            timeout,
        }
    }

    /// Sends one notification to one APNs device token.
    ///
    /// When APNs responds `ExpiredProviderToken` a new provider token is
    /// signed and the request is made once more.
    pub async fn send(
        &self,
        notification: &Notification,
        device_token: &str,
        title: &str,
        body: &str,
    ) -> Result<Receipt, DeliveryError> {
        let masked_token = mask_tail(device_token, 6);
        // The token becomes part of the URL path, so it must not contain
        // `/`, `?` or `#`. APNs tokens are hexadecimal.
        if !device_token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DeliveryError::permanent(
                FailureKind::InvalidRecipient,
                format!("APNs device token {masked_token} is not hexadecimal"),
            )
            .with_code("invalid_device_token"));
        }

        let payload = build_payload(notification, title, body)?;
        let url = format!("{}/3/device/{device_token}", self.base_url);
        let apns_id = notification.notification_id.hyphenated().to_string();

        let token = self.tokens.token()?;
        let mut response = self
            .post(&url, &token, &apns_id, notification, &payload)
            .await?;

        if reason_of(&response) == Some("ExpiredProviderToken") {
            tracing::info!(
                notification_id = %notification.notification_id,
                "APNs rejected the provider token as expired; retrying once with a new one"
            );
            let token = self.tokens.replace(&token)?;
            response = self
                .post(&url, &token, &apns_id, notification, &payload)
                .await?;

            if reason_of(&response) == Some("ExpiredProviderToken") {
                return Err(DeliveryError::permanent(
                    FailureKind::Configuration,
                    format!(
                        "APNs responded {} for device {masked_token}: ExpiredProviderToken, \
                         also for a newly signed provider token; check the system clock",
                        response.status
                    ),
                )
                .with_code("apns_ExpiredProviderToken"));
            }
        }

        if !response.status.is_success() {
            return Err(classify_failure(&response, &masked_token));
        }

        let message_id = response
            .headers
            .get(APNS_ID)
            .and_then(|value| value.to_str().ok())
            .unwrap_or(&apns_id)
            .to_owned();
        tracing::debug!(
            notification_id = %notification.notification_id,
            device = %masked_token,
            apns_id = %message_id,
            "APNs accepted the notification"
        );

        let mut receipt = Receipt::new(PROVIDER)
            .with_message_id(message_id)
            .with_detail("status", response.status.as_u16())
            .with_detail("http_version", format!("{:?}", response.version));
        if let Some(unique_id) = response
            .headers
            .get(APNS_UNIQUE_ID)
            .and_then(|value| value.to_str().ok())
        {
            receipt = receipt.with_detail("apns_unique_id", unique_id);
        }
        Ok(receipt)
    }

    async fn post(
        &self,
        url: &str,
        token: &BearerToken,
        apns_id: &str,
        notification: &Notification,
        payload: &[u8],
    ) -> Result<ReadResponse, DeliveryError> {
        let mut request = self
            .client
            .post(url)
            .header(AUTHORIZATION, token.header().clone())
            .header(APNS_TOPIC, self.topic.clone())
            .header(APNS_PUSH_TYPE, "alert")
            .header(APNS_PRIORITY, self.priority.clone())
            .header(APNS_ID, apns_id)
            .header(CONTENT_TYPE, "application/json");
        if let Some(collapse_id) = self.collapse_id_for(notification) {
            request = request.header(APNS_COLLAPSE_ID, collapse_id);
        }

        match request.body(payload.to_vec()).send().await {
            Ok(response) => Ok(ReadResponse::read(response).await),
            Err(error) => Err(classify_transport_error("APNs", error, self.timeout)),
        }
    }

    fn collapse_id_for(&self, notification: &Notification) -> Option<HeaderValue> {
        match &self.collapse_id {
            CollapseId::None => None,
            CollapseId::Fixed(value) => Some(value.clone()),
            CollapseId::Template => {
                let name = notification.template.as_str();
                if name.len() > MAX_COLLAPSE_ID_BYTES {
                    tracing::debug!(
                        template = name,
                        "template name is longer than 64 bytes; sending without apns-collapse-id"
                    );
                    return None;
                }
                HeaderValue::from_str(name).ok()
            }
        }
    }
}

/// Builds the JSON payload: the alert and the notification id.
fn build_payload(
    notification: &Notification,
    title: &str,
    body: &str,
) -> Result<Vec<u8>, DeliveryError> {
    let payload = json!({
        "aps": { "alert": { "title": title, "body": body } },
        "notification_id": notification.notification_id.to_string(),
    });
    let bytes = serde_json::to_vec(&payload).map_err(|err| {
        DeliveryError::permanent(
            FailureKind::InvalidContent,
            format!(
                "failed to serialize the APNs payload of notification {}",
                notification.notification_id
            ),
        )
        .with_source(err)
    })?;

    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(DeliveryError::permanent(
            FailureKind::InvalidContent,
            format!(
                "APNs payload of notification {} is {} bytes, more than the maximum of {MAX_PAYLOAD_BYTES}; \
                 shorten the template's title or body",
                notification.notification_id,
                bytes.len()
            ),
        )
        .with_code("payload_too_large"));
    }
    Ok(bytes)
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: String,
}

/// Returns the `reason` of an APNs error body, if it is a plausible code.
fn reason_of(response: &ReadResponse) -> Option<&'static str> {
    if response.status.is_success() {
        return None;
    }
    let reason = serde_json::from_slice::<ErrorBody>(&response.body)
        .ok()?
        .reason;
    known_reason(&reason)
}

/// Returns `reason` as a static string if Apple documents it.
fn known_reason(reason: &str) -> Option<&'static str> {
    const REASONS: [&str; 32] = [
        "BadCollapseId",
        "BadDeviceToken",
        "BadExpirationDate",
        "BadMessageId",
        "BadPriority",
        "BadTopic",
        "DeviceTokenNotForTopic",
        "DuplicateHeaders",
        "IdleTimeout",
        "InvalidPushType",
        "MissingDeviceToken",
        "MissingTopic",
        "PayloadEmpty",
        "TopicDisallowed",
        "BadCertificate",
        "BadCertificateEnvironment",
        "ExpiredProviderToken",
        "Forbidden",
        "InvalidProviderToken",
        "MissingProviderToken",
        "UnrelatedKeyIdInToken",
        "BadEnvironmentKeyIdInToken",
        "BadPath",
        "MethodNotAllowed",
        "ExpiredToken",
        "Unregistered",
        "PayloadTooLarge",
        "TooManyProviderTokenUpdates",
        "TooManyRequests",
        "InternalServerError",
        "ServiceUnavailable",
        "Shutdown",
    ];
    REASONS.into_iter().find(|known| *known == reason)
}

/// Maps a non-2xx APNs response to a delivery error.
///
/// `BadDeviceToken`, `Unregistered`, `ExpiredToken` and any 410 mark the
/// device token as gone. Payload reasons are content errors. 429 and 5xx
/// are transient and keep `Retry-After`. Reasons about the provider token,
/// topic or environment are configuration errors.
fn classify_failure(response: &ReadResponse, masked_token: &str) -> DeliveryError {
    let status = response.status;
    let raw_reason = serde_json::from_slice::<ErrorBody>(&response.body)
        .ok()
        .map(|body| body.reason);
    let reason = raw_reason.as_deref().and_then(code_part);

    let code = match reason {
        Some(reason) => format!("apns_{reason}"),
        None => format!("http_{}", status.as_u16()),
    };
    let message = match reason {
        Some(reason) => format!("APNs responded {status} for device {masked_token}: {reason}"),
        None => format!("APNs responded {status} for device {masked_token}"),
    };

    let permanent = |kind: FailureKind, message: String| {
        DeliveryError::permanent(kind, message).with_code(code.clone())
    };
    let transient = |kind: FailureKind| {
        response
            .transient(kind, message.clone())
            .with_code(code.clone())
    };

    match (status, reason.and_then(known_reason)) {
        (_, Some("BadDeviceToken" | "Unregistered" | "ExpiredToken")) | (StatusCode::GONE, _) => {
            permanent(FailureKind::RecipientGone, message)
        }
        (_, Some("PayloadTooLarge" | "PayloadEmpty")) | (StatusCode::PAYLOAD_TOO_LARGE, _) => {
            permanent(FailureKind::InvalidContent, message)
        }
        (_, Some("TooManyRequests" | "TooManyProviderTokenUpdates")) | (StatusCode::TOO_MANY_REQUESTS, _) => {
            transient(FailureKind::RateLimited)
        }
        (_, Some("InternalServerError" | "ServiceUnavailable" | "Shutdown" | "IdleTimeout")) => {
            transient(FailureKind::Unavailable)
        }
        (status, _) if status.is_server_error() => transient(FailureKind::Unavailable),
        (
            _,
            Some(
                "ExpiredProviderToken"
                | "InvalidProviderToken"
                | "MissingProviderToken"
                | "UnrelatedKeyIdInToken"
                | "BadEnvironmentKeyIdInToken"
                | "BadCertificate"
                | "BadCertificateEnvironment"
                | "BadTopic"
                | "MissingTopic"
                | "TopicDisallowed"
                | "Forbidden",
            ),
        )
        | (StatusCode::FORBIDDEN, _) => permanent(
            FailureKind::Configuration,
            format!("{message}; check `channels.push.apns` (team_id, key_id, key, topic and environment)"),
        ),
        (status, _) if status.is_client_error() || status.is_redirection() => {
            permanent(FailureKind::Rejected, message)
        }
        _ => transient(FailureKind::Unavailable),
    }
}

#[cfg(test)]
mod tests {
    use reqwest::Version;

    use super::*;

    fn response(status: u16, reason: Option<&str>) -> ReadResponse {
        let body = reason.map_or_else(Vec::new, |reason| {
            json!({ "reason": reason }).to_string().into_bytes()
        });
        ReadResponse {
            status: StatusCode::from_u16(status).unwrap(),
            version: Version::HTTP_2,
            headers: Default::default(),
            retry_after: Some(Duration::from_secs(20)),
            body,
        }
    }

    #[test]
    fn failure_classes() {
        let cases = [
            (
                410,
                Some("Unregistered"),
                false,
                FailureKind::RecipientGone,
                "apns_Unregistered",
            ),
            (
                410,
                Some("ExpiredToken"),
                false,
                FailureKind::RecipientGone,
                "apns_ExpiredToken",
            ),
            (410, None, false, FailureKind::RecipientGone, "http_410"),
            (
                400,
                Some("BadDeviceToken"),
                false,
                FailureKind::RecipientGone,
                "apns_BadDeviceToken",
            ),
            (
                400,
                Some("PayloadTooLarge"),
                false,
                FailureKind::InvalidContent,
                "apns_PayloadTooLarge",
            ),
            (
                413,
                Some("PayloadTooLarge"),
                false,
                FailureKind::InvalidContent,
                "apns_PayloadTooLarge",
            ),
            (
                400,
                Some("DeviceTokenNotForTopic"),
                false,
                FailureKind::Rejected,
                "apns_DeviceTokenNotForTopic",
            ),
            (
                400,
                Some("BadTopic"),
                false,
                FailureKind::Configuration,
                "apns_BadTopic",
            ),
            (
                403,
                Some("InvalidProviderToken"),
                false,
                FailureKind::Configuration,
                "apns_InvalidProviderToken",
            ),
            (
                429,
                Some("TooManyRequests"),
                true,
                FailureKind::RateLimited,
                "apns_TooManyRequests",
            ),
            (
                500,
                Some("InternalServerError"),
                true,
                FailureKind::Unavailable,
                "apns_InternalServerError",
            ),
            (
                503,
                Some("ServiceUnavailable"),
                true,
                FailureKind::Unavailable,
                "apns_ServiceUnavailable",
            ),
            (502, None, true, FailureKind::Unavailable, "http_502"),
            (
                405,
                Some("MethodNotAllowed"),
                false,
                FailureKind::Rejected,
                "apns_MethodNotAllowed",
            ),
        ];

        for (status, reason, transient, kind, code) in cases {
            let error = classify_failure(&response(status, reason), "***abcdef");

            assert_eq!(error.is_transient(), transient, "{status} {reason:?}");
            assert_eq!(error.kind(), kind, "{status} {reason:?}");
            assert_eq!(error.code(), Some(code), "{status} {reason:?}");
            if transient {
                assert_eq!(
                    error.retry_after(),
                    Some(Duration::from_secs(20)),
                    "{status}"
                );
            }
        }
    }

    #[test]
    fn unknown_reason_is_kept_in_code() {
        let error = classify_failure(&response(400, Some("SomethingNew")), "***abcdef");

        assert_eq!(error.kind(), FailureKind::Rejected);
        assert_eq!(error.code(), Some("apns_SomethingNew"));
    }

    #[test]
    fn reason_of_ignores_success_and_garbage() {
        assert_eq!(
            reason_of(&response(200, Some("ExpiredProviderToken"))),
            None
        );
        assert_eq!(
            reason_of(&response(403, Some("ExpiredProviderToken"))),
            Some("ExpiredProviderToken")
        );
        assert_eq!(reason_of(&response(403, Some("not a reason"))), None);
        assert_eq!(reason_of(&response(403, None)), None);
    }
}
