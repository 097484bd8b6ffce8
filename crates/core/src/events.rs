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
pub fn outcome_event<T, D>(request: &Envelope<T>, event_type: &str, producer: &str, notification_id: Uuid, data: D) -> Envelope<D> {
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

/// `data` of an outcome event, written straight to JSON without building a
/// `serde_json::Value` first.
#[derive(Debug, Clone)]
pub struct OutcomeData<'a> {
    subject: &'a Subject<'a>,
    outcome: Outcome<'a>,
    /// The masked webhook URL, on the `tenant.webhook.*` events.
    url: Option<&'a str>,
}

#[derive(Debug, Clone)]
enum Outcome<'a> {
    Delivered(&'a Receipt),
    Failed(&'a FailureInfo),
}

/// Keys every outcome event writes itself; receipt details cannot replace them.
const OWN_KEYS: [&str; 8] = ["notification_id", "channel", "template", "attempts", "provider", "provider_message_id", "error", "url"];

/// `data` of `notification.delivered.v1`: the subject, the provider, its
/// message id and the receipt's details.
pub fn delivered_data<'a>(subject: &'a Subject<'a>, receipt: &'a Receipt) -> OutcomeData<'a> {
    OutcomeData { subject, outcome: Outcome::Delivered(receipt), url: None }
}

/// `data` of `notification.failed.v1`: the subject and the error.
pub fn failed_data<'a>(subject: &'a Subject<'a>, failure: &'a FailureInfo) -> OutcomeData<'a> {
    OutcomeData { subject, outcome: Outcome::Failed(failure), url: None }
}

impl<'a> OutcomeData<'a> {
    /// Adds the webhook's masked URL, for `tenant.webhook.fired.v1` and
    /// `tenant.webhook.failed.v1`.
    #[must_use]
    pub fn with_url(mut self, url: Option<&'a str>) -> Self {
        self.url = url;
        self
    }
}

impl Serialize for OutcomeData<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;

        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("notification_id", &self.subject.notification_id)?;
        map.serialize_entry("channel", self.subject.channel.as_str())?;
        map.serialize_entry("template", &self.subject.template)?;
        map.serialize_entry("attempts", &self.subject.attempts)?;
        match self.outcome {
            Outcome::Delivered(receipt) => {
                map.serialize_entry("provider", &receipt.provider)?;
                map.serialize_entry("provider_message_id", &receipt.provider_message_id)?;
                for (key, value) in &receipt.details {
                    if !OWN_KEYS.contains(&key.as_str()) {
                        map.serialize_entry(key, value)?;
                    }
                }
            }
            Outcome::Failed(failure) => map.serialize_entry("error", failure)?,
        }
        if let Some(url) = self.url {
            map.serialize_entry("url", url)?;
        }
        map.end()
    }
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
        let data = serde_json::to_value(failed_data(&subject, &failure)).unwrap();
        assert_eq!(data["error"]["kind"], "retries_exhausted");
        assert_eq!(data["error"]["code"], "http_503");
        assert_eq!(data["attempts"], 4);
        assert_eq!(data["channel"], "webhook");
    }

    #[test]
    fn delivered_data_carries_receipt_details() {
        let subject = Subject { notification_id: Uuid::nil(), channel: ChannelKind::Sms, template: Some("welcome"), attempts: 1 };
        let receipt = Receipt::new("twilio").with_message_id("SM1").with_detail("segments", 2);
        let data = serde_json::to_value(delivered_data(&subject, &receipt)).unwrap();
        assert_eq!(data["provider"], "twilio");
        assert_eq!(data["provider_message_id"], "SM1");
        assert_eq!(data["segments"], 2);
    }

    #[test]
    fn receipt_details_keep_own_fields() {
        let subject = Subject { notification_id: Uuid::nil(), channel: ChannelKind::Webhook, template: None, attempts: 2 };
        let receipt = Receipt::new("webhook")
            .with_detail("provider", "spoofed")
            .with_detail("url", "https://spoofed.example")
            .with_detail("http_status", 204);
        let data = delivered_data(&subject, &receipt).with_url(Some("https://hooks.example/***"));
        let text = serde_json::to_string(&data).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["provider"], "webhook");
        assert_eq!(value["url"], "https://hooks.example/***");
        assert_eq!(value["http_status"], 204);
        assert_eq!(value["template"], serde_json::Value::Null);
        assert_eq!(value["notification_id"], Uuid::nil().to_string());
        assert_eq!(text.matches("\"provider\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"url\"").count(), 1, "{text}");
    }

    #[test]
    fn failed_data_has_no_url_unless_given() {
        let subject = Subject { notification_id: Uuid::nil(), channel: ChannelKind::Email, template: Some("welcome"), attempts: 1 };
        let failure = FailureInfo { kind: FailureKind::InvalidRecipient, code: None, message: "bad".into() };
        let data = serde_json::to_value(failed_data(&subject, &failure)).unwrap();
        assert!(data.get("url").is_none());
        assert!(data["error"].get("code").is_none());
    }
}
