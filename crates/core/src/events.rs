//! The outcome events the dispatcher publishes on the events exchange.

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::channel::{ChannelKind, Receipt};
use crate::envelope::Envelope;
use crate::error::FailureKind;

pub const DELIVERED: &str = "notification.delivered.v1";
pub const FAILED: &str = "notification.failed.v1";
pub const WEBHOOK_FIRED: &str = "tenant.webhook.fired.v1";
pub const WEBHOOK_FAILED: &str = "tenant.webhook.failed.v1";

/// Why a notification will not be delivered, as told in failed events.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureInfo {
    pub kind: FailureKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub message: String,
}

/// What an outcome event says about its notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject<'a> {
    pub notification_id: Uuid,
    pub channel: ChannelKind,
    pub template: Option<&'a str>,
    pub attempts: u32,
}

/// Builds the outcome event for a notification, copying the ids that tie it
/// to the request.
///
/// The event id is derived from the notification id and the event type, so
/// a repeat of the same outcome (after a redelivery) carries the same id and
/// consumers can drop it.
pub fn outcome_event<T>(
    request: &Envelope<T>,
    event_type: &str,
    producer: &str,
    notification_id: Uuid,
    data: serde_json::Value,
) -> Envelope<serde_json::Value> {
    Envelope {
        event_id: Uuid::new_v5(&notification_id, event_type.as_bytes()),
        event_type: event_type.to_owned(),
        event_time: Utc::now(),
        tenant_id: request.tenant_id,
        user_id: request.user_id,
        trace_id: request.trace_id.clone(),
        correlation_id: request.correlation_id,
        producer: producer.to_owned(),
        data,
    }
}

fn subject_data(subject: &Subject<'_>) -> serde_json::Map<String, serde_json::Value> {
    let mut data = serde_json::Map::new();
    data.insert("notification_id".into(), subject.notification_id.to_string().into());
    data.insert("channel".into(), subject.channel.as_str().into());
    data.insert("template".into(), subject.template.map_or(serde_json::Value::Null, Into::into));
    data.insert("attempts".into(), subject.attempts.into());
    data
}

/// `data` of `notification.delivered.v1`.
pub fn delivered_data(subject: &Subject<'_>, receipt: &Receipt) -> serde_json::Value {
    let mut data = subject_data(subject);
    data.insert("provider".into(), receipt.provider.clone().into());
    data.insert(
        "provider_message_id".into(),
        receipt.provider_message_id.clone().map_or(serde_json::Value::Null, Into::into),
    );
    for (key, value) in &receipt.details {
        data.entry(key.clone()).or_insert_with(|| value.clone());
    }
    serde_json::Value::Object(data)
}

/// `data` of `notification.failed.v1`.
pub fn failed_data(subject: &Subject<'_>, failure: &FailureInfo) -> serde_json::Value {
    let mut data = subject_data(subject);
    data.insert("error".into(), serde_json::to_value(failure).unwrap_or_default());
    serde_json::Value::Object(data)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request() -> Envelope<()> {
        Envelope {
            event_id: Uuid::new_v4(),
            event_type: "notification.created.v1".into(),
            event_time: Utc::now(),
            tenant_id: Uuid::new_v4(),
            user_id: Some(Uuid::new_v4()),
            trace_id: "trace-1".into(),
            correlation_id: Some(Uuid::new_v4()),
            producer: "fan-out".into(),
            data: (),
        }
    }

    #[test]
    fn outcome_copies_request_ids_with_new_event_id() {
        let request = request();
        let id = Uuid::new_v4();
        let event = outcome_event(&request, DELIVERED, "notification-service", id, json!({}));
        assert_ne!(event.event_id, request.event_id);
        assert_eq!(event.tenant_id, request.tenant_id);
        assert_eq!(event.user_id, request.user_id);
        assert_eq!(event.trace_id, request.trace_id);
        assert_eq!(event.correlation_id, request.correlation_id);
        assert_eq!(event.producer, "notification-service");
    }

    #[test]
    fn same_outcome_gets_same_event_id() {
        let request = request();
        let id = Uuid::new_v4();
        let first = outcome_event(&request, FAILED, "svc", id, json!({}));
        let second = outcome_event(&request, FAILED, "svc", id, json!({}));
        let other = outcome_event(&request, DELIVERED, "svc", id, json!({}));
        assert_eq!(first.event_id, second.event_id);
        assert_ne!(first.event_id, other.event_id);
    }

    #[test]
    fn failed_data_names_kind_code_and_message() {
        let subject = Subject { notification_id: Uuid::nil(), channel: ChannelKind::Webhook, template: Some("welcome"), attempts: 4 };
        let failure = FailureInfo { kind: FailureKind::RetriesExhausted, code: Some("http_503".into()), message: "down".into() };
        let data = failed_data(&subject, &failure);
        assert_eq!(data["error"]["kind"], "retries_exhausted");
        assert_eq!(data["error"]["code"], "http_503");
        assert_eq!(data["attempts"], 4);
        assert_eq!(data["channel"], "webhook");
    }

    #[test]
    fn delivered_data_carries_receipt_details() {
        let subject = Subject { notification_id: Uuid::nil(), channel: ChannelKind::Sms, template: Some("welcome"), attempts: 1 };
        let receipt = Receipt::new("twilio").with_message_id("SM1").with_detail("segments", 2);
        let data = delivered_data(&subject, &receipt);
        assert_eq!(data["provider"], "twilio");
        assert_eq!(data["provider_message_id"], "SM1");
        assert_eq!(data["segments"], 2);
    }
}
