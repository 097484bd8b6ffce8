//! Runs of webhook notifications for the fault tests: publishing many, and
//! counting what reached the receiver per notification.

use std::collections::HashMap;

use wiremock::MockServer;

use super::{DispatchMessage, TestBroker};

/// Publishes `count` webhook notifications to `url` and returns their ids.
pub async fn publish_webhooks(broker: &TestBroker, url: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let message = DispatchMessage::render_completed_webhook(url);
        ids.push(message.notification_id.to_string());
        broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    }
    ids
}

/// Counts the requests the receiver got per notification id (`webhook-id`).
pub async fn requests_per_notification(receiver: &MockServer) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in receiver.received_requests().await.unwrap() {
        let id = request.headers.get("webhook-id").unwrap().to_str().unwrap().to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}
