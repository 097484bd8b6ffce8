//! Dispatch messages as the stack's other services publish them.

use chrono::Utc;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::{json, Value};
use uuid::Uuid;

/// A `notification.created.v1` message with the contract's headers, which a
/// test can bend out of shape before publishing.
#[derive(Debug, Clone)]
pub struct DispatchMessage {
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    pub trace_id: Uuid,
    pub envelope: Value,
    pub headers: Vec<(String, AMQPValue)>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
}

impl DispatchMessage {
    pub fn new(channel: &str, template: &str, recipient: Value, variables: Value) -> DispatchMessage {
        let notification_id = Uuid::new_v4();
        let tenant_id = Uuid::new_v4();
        let trace_id = Uuid::new_v4();
        let envelope = json!({
            "event_id": Uuid::new_v4(),
            "event_type": "notification.created.v1",
            "event_time": Utc::now().to_rfc3339(),
            "tenant_id": tenant_id,
            "user_id": Uuid::new_v4(),
            "trace_id": trace_id,
            "correlation_id": Uuid::new_v4(),
            "producer": "integration-test",
            "data": {
                "notification_id": notification_id,
                "channel": channel,
                "template": template,
                "recipient": recipient,
                "variables": variables,
            }
        });
        let headers = vec![
            ("x-event-type".to_owned(), long_string("notification.created.v1")),
            ("x-tenant-id".to_owned(), long_string(&tenant_id.to_string())),
            ("x-trace-id".to_owned(), long_string(&trace_id.to_string())),
        ];
        DispatchMessage {
            notification_id,
            tenant_id,
            trace_id,
            envelope,
            headers,
            content_type: Some("application/json".to_owned()),
            content_encoding: Some("utf-8".to_owned()),
        }
    }

    pub fn render_completed_email(address: &str) -> DispatchMessage {
        DispatchMessage::new(
            "email",
            "render_completed",
            json!({"email": address, "name": "Ada"}),
            json!({"project_name": "Intro", "download_url": "https://example.com/r/1"}),
        )
    }

    pub fn render_completed_webhook(url: &str) -> DispatchMessage {
        DispatchMessage::new(
            "webhook",
            "render_completed",
            json!({"url": url}),
            json!({"project_name": "Intro", "download_url": "https://example.com/r/1"}),
        )
    }

    pub fn data_mut(&mut self) -> &mut Value {
        &mut self.envelope["data"]
    }

    pub fn with_header(mut self, name: &str, value: AMQPValue) -> DispatchMessage {
        self.headers.retain(|(key, _)| key != name);
        self.headers.push((name.to_owned(), value));
        self
    }

    pub fn without_header(mut self, name: &str) -> DispatchMessage {
        self.headers.retain(|(key, _)| key != name);
        self
    }

    pub fn routing_key(&self) -> String {
        let channel = self.envelope["data"]["channel"].as_str().unwrap_or("email");
        format!("notify.channel.{channel}")
    }

    pub fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&self.envelope).unwrap()
    }

    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in &self.headers {
            headers.insert(ShortString::from(name.as_str()), value.clone());
        }
        let mut properties = BasicProperties::default().with_delivery_mode(2).with_headers(headers);
        if let Some(content_type) = &self.content_type {
            properties = properties.with_content_type(content_type.as_str().into());
        }
        if let Some(encoding) = &self.content_encoding {
            properties = properties.with_content_encoding(encoding.as_str().into());
        }
        properties
    }
}

pub fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}
