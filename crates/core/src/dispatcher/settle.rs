//! Carrying out a [`Decision`]: every publish a message owes, each confirmed.
//! The ack task acks the message after this stage succeeds, and nacks it
//! back to its queue after it fails.

use chrono::Utc;
use futures_util::future::try_join;
use lapin::message::Delivery;
use lapin::types::{FieldTable, ShortString};
use lapin::BasicProperties;
use tracing::{debug, error, info, warn};

use crate::channel::{ChannelKind, Receipt};
use crate::error::DeliveryError;
use crate::events::{self, FailureInfo, Subject};
use crate::headers::{self, text};
use crate::idempotency::DeliveryRecord;
use crate::publisher::{PublishError, Publisher};

use super::decide::{webhook_url, Accepted, Decision, Named};
use super::Dispatcher;

/// Headers the broker adds when it dead-letters; dropped on retry so they
/// cannot pile up, since `x-retry-count` already counts attempts.
const BROKER_DEATH_HEADERS: [&str; 7] = [
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
];

impl Dispatcher {
    /// Publishes what `decision` owes.
    ///
    /// # Errors
    ///
    /// Returns the publish error; the message goes back to its queue and the
    /// broker session should be rebuilt.
    pub(super) async fn settle(
        &self,
        channel: ChannelKind,
        delivery: &Delivery,
        decision: Decision,
        publisher: &Publisher,
    ) -> Result<(), PublishError> {
        let published = match decision {
            Decision::Delivered { message, receipt } => self.record_delivery(channel, &message, &receipt, publisher).await,
            Decision::Duplicate { message, record: DeliveryRecord::Sent { receipt, .. } } => {
                debug!("already sent; publishing its outcome events");
                self.record_delivery(channel, &message, &receipt, publisher).await
            }
            Decision::Duplicate { record: DeliveryRecord::Completed, .. } => {
                debug!("already delivered; acking the redelivered message");
                Ok(())
            }
            Decision::Defer { message, delay, reason } => self.defer(channel, delivery, &message, delay, reason, publisher).await,
            Decision::Duplicate { message, record: DeliveryRecord::Claimed } => {
                let delay = self.retry.tiers()[0];
                self.defer(channel, delivery, &message, delay, "another delivery is in progress", publisher).await
            }
            Decision::Retry { message, error } => self.schedule_retry(channel, delivery, &message, &error, publisher).await,
            Decision::DeadLetter { failure, named } => {
                self.dead_letter(channel, delivery, &failure, named.as_ref(), publisher).await
            }
            Decision::Expired { named } => {
                let failure = FailureInfo {
                    kind: crate::error::FailureKind::Expired,
                    code: None,
                    message: "expires_at passed before delivery".to_owned(),
                };
                self.publish_failed(&named, &failure, publisher).await?;
                self.metrics.failed(channel, failure.kind);
                info!("notification expired before delivery; dropping it");
                Ok(())
            }
        };

        if let Err(err) = &published {
            error!(error = %err, "publish failed; returning the message to its queue");
        }
        published
    }

    async fn record_delivery(
        &self,
        channel: ChannelKind,
        message: &Accepted,
        receipt: &Receipt,
        publisher: &Publisher,
    ) -> Result<(), PublishError> {
        let request = &message.envelope.data;
        let subject = Subject {
            notification_id: request.notification_id,
            channel,
            template: Some(&request.template),
            attempts: message.attempt(),
        };
        let exchange = self.topology.events_exchange();
        let data = events::delivered_data(&subject, receipt);
        let event = events::outcome_event(&message.envelope, events::DELIVERED, &self.producer, request.notification_id, &data);
        if channel == ChannelKind::Webhook {
            let url = webhook_url(&request.recipient);
            let data = data.clone().with_url(url.as_deref());
            let fired = events::outcome_event(&message.envelope, events::WEBHOOK_FIRED, &self.producer, request.notification_id, data);
            // Both go out before either confirm is awaited: one round trip.
            try_join(publisher.publish_event(exchange, &event), publisher.publish_event(exchange, &fired)).await?;
        } else {
            publisher.publish_event(exchange, &event).await?;
        }
        if let Err(err) = self.idempotency.put(request.notification_id, channel, DeliveryRecord::Completed).await {
            warn!(error = %err, "cannot mark the delivery completed; a redelivery would publish its events again");
        }
        let latency = (chrono::Utc::now() - message.envelope.event_time).to_std().ok();
        self.metrics.delivered(channel, latency);
        debug!(provider = %receipt.provider, attempt = message.attempt(), "notification delivered");
        Ok(())
    }

    async fn schedule_retry(
        &self,
        channel: ChannelKind,
        delivery: &Delivery,
        message: &Accepted,
        error: &DeliveryError,
        publisher: &Publisher,
    ) -> Result<(), PublishError> {
        let retry = message.headers.retry_count.saturating_add(1);
        let delay = self.retry.delay_for(retry, error.retry_after(), &mut rand::rng());
        let queue = self.topology.retry_queue(channel, delay.tier);

        let mut headers = without(delivery_headers(&delivery.properties), &BROKER_DEATH_HEADERS);
        headers.insert(headers::RETRY_COUNT.into(), lapin::types::AMQPValue::LongInt(i32::try_from(retry).unwrap_or(i32::MAX)));
        set_failure_headers(&mut headers, error.kind().as_str(), error.code(), error.message());
        let expiration = delay.delay.as_millis().to_string();
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_expiration(ShortString::from(expiration));

        // The default exchange routes by queue name; mandatory, so a missing
        // retry queue fails the publish instead of losing the message.
        publisher.publish("", &queue, true, &delivery.data, properties).await?;
        self.metrics.retried(channel, error.kind());
        info!(
            retry,
            max_retries = message.headers.max_retries,
            delay_ms = delay.delay.as_millis() as u64,
            error = %error,
            "delivery failed; retry scheduled"
        );
        Ok(())
    }

    /// Puts the message back through a delay queue for about `delay`,
    /// keeping its retry count.
    async fn defer(
        &self,
        channel: ChannelKind,
        delivery: &Delivery,
        message: &Accepted,
        delay: std::time::Duration,
        reason: &str,
        publisher: &Publisher,
    ) -> Result<(), PublishError> {
        let wait = self.retry.tier_for(delay);
        let queue = self.topology.retry_queue(channel, wait.tier);
        let headers = without(delivery_headers(&delivery.properties), &BROKER_DEATH_HEADERS);
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2)
            .with_expiration(ShortString::from(wait.delay.as_millis().to_string()));
        publisher.publish("", &queue, true, &delivery.data, properties).await?;
        debug!(retry_count = message.headers.retry_count, delay_ms = wait.delay.as_millis() as u64, reason, "delivery deferred");
        Ok(())
    }

    async fn dead_letter(
        &self,
        channel: ChannelKind,
        delivery: &Delivery,
        failure: &FailureInfo,
        named: Option<&Named>,
        publisher: &Publisher,
    ) -> Result<(), PublishError> {
        let mut headers = delivery_headers(&delivery.properties);
        headers.insert(headers::ORIGINAL_ROUTING_KEY.into(), text(delivery.routing_key.as_str()));
        set_failure_headers(&mut headers, failure.kind.as_str(), failure.code.as_deref(), &failure.message);
        headers.insert(headers::FAILED_AT.into(), text(Utc::now().to_rfc3339()));
        headers.insert(headers::FAILED_BY.into(), text(self.producer.as_str()));
        let properties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);

        let exchange = self.topology.dlq_exchange();
        publisher.publish(exchange, delivery.routing_key.as_str(), true, &delivery.data, properties).await?;
        if let Some(named) = named {
            self.publish_failed(named, failure, publisher).await?;
        }
        self.metrics.dead_lettered(channel, failure.kind);
        self.metrics.failed(channel, failure.kind);
        warn!(kind = %failure.kind, reason = %failure.message, "message dead-lettered");
        Ok(())
    }

    async fn publish_failed(&self, named: &Named, failure: &FailureInfo, publisher: &Publisher) -> Result<(), PublishError> {
        let subject = Subject {
            notification_id: named.notification_id,
            channel: named.channel,
            template: named.template.as_deref(),
            attempts: named.attempts,
        };
        let exchange = self.topology.events_exchange();
        let data = events::failed_data(&subject, failure);
        let event = events::outcome_event(&named.ids, events::FAILED, &self.producer, named.notification_id, &data);
        if named.channel == ChannelKind::Webhook {
            let data = data.clone().with_url(named.webhook_url.as_deref());
            let failed = events::outcome_event(&named.ids, events::WEBHOOK_FAILED, &self.producer, named.notification_id, data);
            try_join(publisher.publish_event(exchange, &event), publisher.publish_event(exchange, &failed)).await?;
        } else {
            publisher.publish_event(exchange, &event).await?;
        }
        Ok(())
    }
}

fn delivery_headers(properties: &BasicProperties) -> FieldTable {
    properties.headers().clone().unwrap_or_default()
}

fn without(headers: FieldTable, names: &[&str]) -> FieldTable {
    let mut kept = FieldTable::default();
    for (key, value) in headers.inner() {
        if !names.contains(&key.as_str()) {
            kept.insert(key.clone(), value.clone());
        }
    }
    kept
}

/// Replaces, never appends, the failure headers.
fn set_failure_headers(headers: &mut FieldTable, kind: &str, code: Option<&str>, reason: &str) {
    let mut cleared = without(std::mem::take(headers), &[headers::FAILURE_CODE]);
    cleared.insert(headers::FAILURE_KIND.into(), text(kind));
    cleared.insert(headers::FAILURE_REASON.into(), text(reason));
    if let Some(code) = code {
        cleared.insert(headers::FAILURE_CODE.into(), text(code));
    }
    *headers = cleared;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_headers_are_replaced_not_appended() {
        let mut headers = FieldTable::default();
        set_failure_headers(&mut headers, "unavailable", Some("http_503"), "first");
        set_failure_headers(&mut headers, "timeout", None, "second");
        assert_eq!(headers.inner().len(), 2);
        assert_eq!(headers::string_value(&headers.inner()[headers::FAILURE_KIND]).unwrap(), "timeout");
        assert!(!headers.contains_key(headers::FAILURE_CODE));
    }

    #[test]
    fn broker_death_headers_are_dropped() {
        let mut headers = FieldTable::default();
        headers.insert("x-death".into(), text("anything"));
        headers.insert("x-trace-id".into(), text("t"));
        let kept = without(headers, &BROKER_DEATH_HEADERS);
        assert!(!kept.contains_key("x-death"));
        assert!(kept.contains_key("x-trace-id"));
    }
}
