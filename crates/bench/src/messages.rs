//! Dispatch messages as the stack's producers publish them, numbered so that
//! the observer can match each outcome event to its request.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::BasicProperties;
use notify_core::envelope::DISPATCH_EVENT_TYPE;
use notify_core::headers::{outgoing_properties, MAX_RETRIES};
use notify_core::ChannelKind;
use serde_json::{json, Value};
use uuid::Uuid;

/// Template of every benchmark message. It exists for every channel.
pub const TEMPLATE: &str = "render_completed";

/// Builds the messages of one run and remembers when each was published.
///
/// A notification id is `run_tag` in its high 64 bits and the message's index
/// in its low 64 bits, so the observer finds the index without a lookup.
pub struct MessageFactory {
    run_tag: u64,
    channel: ChannelKind,
    recipient: Value,
    padding: String,
    /// `event_time` of each published message in microseconds since the Unix
    /// epoch; 0 until the message is built.
    sent_at_micros: Vec<AtomicI64>,
}

impl MessageFactory {
    /// Prepares `count` messages for `channel` whose bodies are `size` bytes
    /// long, or as short as the message allows when `size` is smaller.
    pub fn new(channel: ChannelKind, recipient: Value, size: usize, count: usize) -> MessageFactory {
        let mut factory = MessageFactory {
            run_tag: rand_tag(),
            channel,
            recipient,
            padding: String::new(),
            sent_at_micros: (0..count).map(|_| AtomicI64::new(0)).collect(),
        };
        let unpadded = factory.body(0, Utc::now()).len();
        factory.padding = "x".repeat(size.saturating_sub(unpadded));
        factory
    }

    pub fn count(&self) -> usize {
        self.sent_at_micros.len()
    }

    /// Body length of every message of this factory, in bytes.
    pub fn body_len(&self) -> usize {
        self.body(0, Utc::now()).len()
    }

    pub fn notification_id(&self, index: u64) -> Uuid {
        Uuid::from_u64_pair(self.run_tag, index)
    }

    /// Returns the index of a notification id of this factory, or `None` for another run's id.
    pub fn index_of(&self, notification_id: Uuid) -> Option<usize> {
        let (tag, index) = notification_id.as_u64_pair();
        let index = usize::try_from(index).ok()?;
        (tag == self.run_tag && index < self.count()).then_some(index)
    }

    /// Returns the `event_time` of a published message in microseconds, or
    /// `None` before it was built.
    pub fn sent_at_micros(&self, index: usize) -> Option<i64> {
        let micros = self.sent_at_micros.get(index)?.load(Ordering::Acquire);
        (micros != 0).then_some(micros)
    }

    /// Builds message `index` with `event_time` set to now, and records that time.
    pub fn build(&self, index: usize) -> (Vec<u8>, BasicProperties) {
        let now = Utc::now();
        if let Some(slot) = self.sent_at_micros.get(index) {
            slot.store(now.timestamp_micros(), Ordering::Release);
        }
        let body = self.body(index as u64, now);
        (body, self.properties(index as u64))
    }

    fn body(&self, index: u64, event_time: DateTime<Utc>) -> Vec<u8> {
        let envelope = json!({
            "event_id": self.event_id(index),
            "event_type": DISPATCH_EVENT_TYPE,
            // Microseconds keep every body the same length.
            "event_time": event_time.to_rfc3339_opts(SecondsFormat::Micros, true),
            "tenant_id": self.tenant_id(index),
            "user_id": Uuid::from_u64_pair(self.run_tag ^ 3, index),
            "trace_id": self.trace_id(index).to_string(),
            "correlation_id": Uuid::from_u64_pair(self.run_tag ^ 4, index),
            "producer": "bench",
            "data": {
                "notification_id": self.notification_id(index),
                "channel": self.channel.as_str(),
                "template": TEMPLATE,
                "locale": "en",
                "recipient": self.recipient,
                "variables": {
                    "project_name": "Riverside Loft",
                    "download_url": "https://app.example.com/renders/8f3a2c1e/download",
                    "padding": self.padding,
                },
            }
        });
        // Serializing a `Value` built from strings and objects cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    fn properties(&self, index: u64) -> BasicProperties {
        let properties = outgoing_properties(
            DISPATCH_EVENT_TYPE,
            &self.tenant_id(index).to_string(),
            &self.trace_id(index).to_string(),
            &self.event_id(index).to_string(),
        );
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(ShortString::from(MAX_RETRIES), AMQPValue::LongString(LongString::from("3")));
        properties.with_headers(headers)
    }

    fn event_id(&self, index: u64) -> Uuid {
        Uuid::from_u64_pair(self.run_tag ^ 1, index)
    }

    fn tenant_id(&self, index: u64) -> Uuid {
        Uuid::from_u64_pair(self.run_tag ^ 2, index % 16)
    }

    fn trace_id(&self, index: u64) -> Uuid {
        Uuid::from_u64_pair(self.run_tag ^ 5, index)
    }
}

fn rand_tag() -> u64 {
    Uuid::new_v4().as_u64_pair().0
}
