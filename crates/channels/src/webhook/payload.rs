//! The JSON body of a webhook request.
//!
//! The body depends only on the notification, so every retry of a
//! notification sends the same bytes. The send time travels in the
//! `webhook-timestamp` header instead.

use notify_core::{Content, DeliveryError, FailureKind, Notification};
use serde::Serialize;
use uuid::Uuid;

/// Body fields in the order they are serialized.
#[derive(Serialize)]
struct WebhookPayload<'a> {
    /// `notification.<template>`.
    #[serde(rename = "type")]
    event_type: String,
    notification_id: Uuid,
    tenant_id: Uuid,
    template: &'a str,
    locale: &'a str,
    message: &'a str,
    data: &'a serde_json::Value,
}

/// Serializes the request body of `notification`.
///
/// Keys inside `data` are written in the iteration order of
/// `serde_json::Map`: sorted by default, or insertion order when serde_json's
/// `preserve_order` feature is enabled. Either way, equal notifications
/// produce equal bytes.
///
/// # Errors
///
/// Returns a permanent [`FailureKind::InvalidContent`] error when the content
/// is not [`Content::Webhook`] or cannot be serialized.
pub fn build_body(notification: &Notification) -> Result<Vec<u8>, DeliveryError> {
    let Content::Webhook { message, data } = &notification.content else {
        return Err(DeliveryError::permanent(
            FailureKind::InvalidContent,
            format!(
                "notification {} reached the webhook channel without webhook content",
                notification.notification_id
            ),
        ));
    };

    let payload = WebhookPayload {
        event_type: format!("notification.{}", notification.template),
        notification_id: notification.notification_id,
        tenant_id: notification.tenant_id,
        template: &notification.template,
        locale: &notification.locale,
        message,
        data,
    };

    serde_json::to_vec(&payload).map_err(|err| {
        DeliveryError::permanent(
            FailureKind::InvalidContent,
            format!(
                "failed to serialize the webhook body of notification {}",
                notification.notification_id
            ),
        )
        .with_source(err)
    })
}

#[cfg(test)]
mod tests {
    use notify_core::{ChannelKind, Recipient};
    use serde_json::json;

    use super::*;

    fn notification(content: Content) -> Notification {
        Notification {
            notification_id: Uuid::from_u128(0x0b3c6e1a_5d7f_4a2b_9c8d_1e2f3a4b5c6d),
            tenant_id: Uuid::from_u128(0x7d444840_9dc0_41a1_8ad4_7e4c7c5b3f10),
            channel: ChannelKind::Webhook,
            template: "order_shipped".to_owned(),
            locale: "de-DE".to_owned(),
            recipient: Recipient::Webhook {
                url: "https://hooks.example.com/in".to_owned(),
            },
            content,
            attempt: 1,
        }
    }

    #[test]
    fn body_has_documented_fields() {
        let content = Content::Webhook {
            message: "Order 42 shipped".to_owned(),
            data: json!({"order": 42, "carrier": "DHL"}),
        };

        let body = build_body(&notification(content)).unwrap();

        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            json!({
                "type": "notification.order_shipped",
                "notification_id": "0b3c6e1a-5d7f-4a2b-9c8d-1e2f3a4b5c6d",
                "tenant_id": "7d444840-9dc0-41a1-8ad4-7e4c7c5b3f10",
                "template": "order_shipped",
                "locale": "de-DE",
                "message": "Order 42 shipped",
                "data": {"order": 42, "carrier": "DHL"},
            })
        );
    }

    #[test]
    fn body_starts_with_type_field() {
        let content = Content::Webhook {
            message: String::new(),
            data: json!(null),
        };

        let body = build_body(&notification(content)).unwrap();

        assert!(body.starts_with(br#"{"type":"notification.order_shipped","notification_id":"#));
    }

    #[test]
    fn body_is_same_on_retry() {
        let content = Content::Webhook {
            message: "m".to_owned(),
            data: json!({"b": 1, "a": [1, 2]}),
        };
        let first = notification(content);
        let mut retry = first.clone();
        retry.attempt = 2;

        assert_eq!(build_body(&first).unwrap(), build_body(&retry).unwrap());
    }

    #[test]
    fn non_webhook_content_is_invalid() {
        let content = Content::Sms {
            body: "hi".to_owned(),
        };

        let err = build_body(&notification(content)).unwrap_err();

        assert!(!err.is_transient());
        assert_eq!(err.kind(), FailureKind::InvalidContent);
    }
}
