//! The per-message stages that decide a message's fate: validate,
//! deduplicate, check expiry, render, deliver. Nothing here touches the
//! broker; [`super::settle`] carries the decision out.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use lapin::message::Delivery;
use tracing::{debug, warn, Span};
use uuid::Uuid;

use crate::breaker::{self, Admission};
use crate::channel::{ChannelKind, Notification, Receipt};
use crate::envelope::{parse_dispatch, truncate, DispatchRequest, Envelope, ParsedBody, DISPATCH_EVENT_TYPE};
use crate::error::{DeliveryError, FailureKind};
use crate::events::FailureInfo;
use crate::rate_limit::Permit;
use crate::headers::{read_dispatch_headers, DispatchHeaders};
use crate::idempotency::DeliveryRecord;
use crate::recipient::Recipient;

use super::Dispatcher;

/// Maximum length, in characters, of a failure message in events and headers.
const MAX_REASON_CHARS: usize = 1_000;

/// A message that passed validation. It travels boxed through the stages,
/// which move it several times, because it is several hundred bytes large.
#[derive(Debug)]
pub(super) struct Accepted {
    pub envelope: Envelope<DispatchRequest>,
    pub headers: DispatchHeaders,
}

impl Accepted {
    /// 1 for the first attempt.
    pub fn attempt(&self) -> u32 {
        self.headers.retry_count.saturating_add(1)
    }

    pub fn named(&self, channel: ChannelKind) -> Named {
        Named {
            ids: ids_of(&self.envelope),
            notification_id: self.envelope.data.notification_id,
            channel,
            template: Some(self.envelope.data.template.clone()),
            attempts: self.attempt(),
            webhook_url: webhook_url(&self.envelope.data.recipient),
        }
    }
}

/// The parts of a possibly invalid message that a failed event needs.
#[derive(Debug, Clone)]
pub(super) struct Named {
    pub ids: Envelope<()>,
    pub notification_id: Uuid,
    pub channel: ChannelKind,
    pub template: Option<String>,
    pub attempts: u32,
    pub webhook_url: Option<String>,
}

/// The fate of a message, decided before anything is published.
#[derive(Debug)]
pub(super) enum Decision {
    Delivered { message: Box<Accepted>, receipt: Receipt },
    /// Delivered before, by this or an earlier attempt.
    Duplicate { message: Box<Accepted>, record: DeliveryRecord },
    /// Not sent now, without counting a retry: another delivery of the same
    /// notification has the claim, or the endpoint's circuit breaker is open.
    Defer { message: Box<Accepted>, delay: Duration, reason: &'static str },
    Retry { message: Box<Accepted>, error: DeliveryError },
    /// Dead-lettered; a failed event is owed when the message is `named`.
    DeadLetter { failure: FailureInfo, named: Option<Named> },
    /// Past `expires_at`: a failed event, but no dead letter.
    Expired { named: Named },
}

impl Dispatcher {
    pub(super) async fn decide(&self, queue_channel: ChannelKind, delivery: &Delivery) -> Decision {
        let message = match self.validate(queue_channel, delivery) {
            Ok(message) => message,
            Err(decision) => return *decision,
        };
        let id = message.envelope.data.notification_id;
        match self.idempotency.claim(id, queue_channel).await {
            Ok(None) => {}
            Ok(Some(DeliveryRecord::Claimed)) => {
                let delay = self.retry.tiers()[0];
                return Decision::Defer { message, delay, reason: "another delivery of this notification is in progress" };
            }
            // Sent moments ago: its delivery is still publishing the outcome
            // events. Only a delivery that died leaves an old Sent record.
            Ok(Some(DeliveryRecord::Sent { sent_at, .. })) if Utc::now() - sent_at < self.claim_lease => {
                let delay = self.retry.tiers()[0];
                return Decision::Defer { message, delay, reason: "another delivery of this notification is recording its outcome" };
            }
            Ok(Some(record)) => {
                self.metrics.idempotency_hit(queue_channel);
                return Decision::Duplicate { message, record };
            }
            Err(err) => {
                let error = DeliveryError::transient(FailureKind::Unavailable, err.to_string()).with_code("idempotency_store");
                return self.retry_or_give_up(message, queue_channel, error);
            }
        }

        let decision = self.decide_claimed(queue_channel, message).await;
        if !matches!(decision, Decision::Delivered { .. }) {
            if let Err(err) = self.idempotency.release(id, queue_channel).await {
                warn!(error = %err, "cannot release the delivery claim; the next attempt waits for its lease to expire");
            }
        }
        decision
    }

    /// Runs the stages after the claim: expiry, rendering, delivery.
    async fn decide_claimed(&self, queue_channel: ChannelKind, message: Box<Accepted>) -> Decision {
        let request = &message.envelope.data;
        if request.expires_at.is_some_and(|expires_at| expires_at <= Utc::now()) {
            return Decision::Expired { named: message.named(queue_channel) };
        }

        let notification = match self.prepare(queue_channel, &message) {
            Ok(notification) => notification,
            Err(failure) => return Decision::DeadLetter { failure, named: Some(message.named(queue_channel)) },
        };
        self.deliver(message, notification).await
    }

    /// Checks size, headers, envelope and channel, in that order.
    fn validate(&self, queue_channel: ChannelKind, delivery: &Delivery) -> Result<Box<Accepted>, Box<Decision>> {
        if delivery.data.len() > self.max_message_bytes {
            let message = format!(
                "body of {} bytes exceeds the limit of {} bytes (dispatcher.max_message_bytes)",
                delivery.data.len(),
                self.max_message_bytes
            );
            return Err(dead_letter(FailureKind::InvalidMessage, message, None));
        }

        let headers = read_dispatch_headers(&delivery.properties, self.default_max_retries);
        let envelope = match parse_dispatch(&delivery.data) {
            ParsedBody::Valid(envelope) => envelope,
            ParsedBody::InvalidRequest { envelope, notification_id, error } => {
                let named = notification_id.map(|id| named_partial(&envelope, id, queue_channel, headers.as_ref().ok()));
                return Err(dead_letter(FailureKind::InvalidMessage, error.to_string(), named));
            }
            ParsedBody::Unreadable(error) => {
                return Err(dead_letter(FailureKind::InvalidMessage, error.to_string(), None));
            }
        };
        record_span_fields(&envelope);

        let partial = |headers: Option<&DispatchHeaders>| Named {
            ids: ids_of(&envelope),
            notification_id: envelope.data.notification_id,
            channel: queue_channel,
            template: Some(envelope.data.template.clone()),
            attempts: headers.map_or(1, |h| h.retry_count.saturating_add(1)),
            webhook_url: webhook_url(&envelope.data.recipient),
        };
        let headers = match headers {
            Ok(headers) => headers,
            Err(error) => return Err(dead_letter(FailureKind::InvalidMessage, error.to_string(), Some(partial(None)))),
        };
        if let Err(error) = headers.check_against(&envelope) {
            return Err(dead_letter(FailureKind::InvalidMessage, error.to_string(), Some(partial(Some(&headers)))));
        }
        if envelope.event_type != DISPATCH_EVENT_TYPE {
            let message = format!("event_type is {:?}, expected {DISPATCH_EVENT_TYPE:?}", truncate(&envelope.event_type, 80));
            return Err(dead_letter(FailureKind::InvalidMessage, message, Some(partial(Some(&headers)))));
        }
        if envelope.data.channel_kind() != Some(queue_channel) {
            let message = format!(
                "message asks for channel {:?} but arrived on the {queue_channel} queue",
                truncate(&envelope.data.channel, 40)
            );
            return Err(dead_letter(FailureKind::ChannelMismatch, message, Some(partial(Some(&headers)))));
        }
        Ok(Box::new(Accepted { envelope, headers }))
    }

    /// Parses the recipient and renders the template.
    fn prepare(&self, channel: ChannelKind, message: &Accepted) -> Result<Notification, FailureInfo> {
        let request = &message.envelope.data;
        let recipient = Recipient::parse(channel, &request.recipient)
            .map_err(|error| failure(FailureKind::InvalidRecipient, None, error.to_string()))?;
        debug!(recipient = %recipient.masked(), attempt = message.attempt(), "rendering notification");

        let rendered = self
            .templates
            .current()
            .render(channel, &request.template, request.locale.as_deref(), &request.variables)
            .map_err(|error| failure(error.kind(), None, error.to_string()))?;
        Ok(Notification {
            notification_id: request.notification_id,
            tenant_id: message.envelope.tenant_id,
            channel,
            template: request.template.clone(),
            locale: rendered.locale,
            recipient,
            content: rendered.content,
            attempt: message.attempt(),
        })
    }

    async fn deliver(&self, message: Box<Accepted>, notification: Notification) -> Decision {
        let Some(plugin) = self.registry.get(notification.channel) else {
            let failure = failure(FailureKind::Configuration, None, format!("no plugin registered for channel {}", notification.channel));
            return Decision::DeadLetter { failure, named: Some(message.named(notification.channel)) };
        };
        let endpoint = breaker::endpoint_of(&notification);
        match self.rate_limits.reserve(notification.channel, &endpoint, Instant::now()) {
            Permit::After(wait) if wait.is_zero() => {}
            Permit::After(wait) => {
                self.metrics.rate_limited(notification.channel);
                tokio::time::sleep(wait).await;
            }
            Permit::TooLong(wait) => {
                self.metrics.rate_limited(notification.channel);
                return Decision::Defer { message, delay: wait, reason: "the provider's rate limit is reached" };
            }
        }
        // After the limit's wait, so that an admitted breaker probe is sent.
        if let Admission::Rejected { retry_in } = self.breakers.admit(&endpoint, Instant::now()) {
            return Decision::Defer { message, delay: retry_in, reason: "the endpoint's circuit breaker is open" };
        }
        let started = Instant::now();
        let sent = AssertUnwindSafe(plugin.send(&notification)).catch_unwind().await;
        self.metrics.provider_call(notification.channel, started.elapsed());
        let sent = sent.unwrap_or_else(|panic| {
            let reason = panic_message(panic.as_ref());
            tracing::error!(reason = %reason, "channel plugin panicked; dead-lettering the message");
            Err(DeliveryError::permanent(FailureKind::Internal, format!("channel plugin panicked: {reason}")))
        });
        self.record_endpoint_health(&endpoint, &sent);
        match sent {
            Ok(receipt) => {
                let record = DeliveryRecord::Sent { receipt: receipt.clone(), sent_at: Utc::now() };
                if let Err(err) = self.idempotency.put(notification.notification_id, notification.channel, record).await {
                    tracing::error!(error = %err, "cannot record the delivery; a redelivery of this message would send it again");
                }
                Decision::Delivered { message, receipt }
            }
            Err(error) if error.is_transient() => self.retry_or_give_up(message, notification.channel, error),
            Err(error) => {
                let failure = failure(error.kind(), error.code().map(str::to_owned), error.message().to_owned());
                Decision::DeadLetter { failure, named: Some(message.named(notification.channel)) }
            }
        }
    }
}

impl Dispatcher {
    /// Feeds a send's outcome to the endpoint's circuit breaker: outages and
    /// timeouts count against it, any response from the provider resets it.
    fn record_endpoint_health(&self, endpoint: &str, sent: &Result<Receipt, DeliveryError>) {
        let outage = matches!(sent, Err(error) if matches!(error.kind(), FailureKind::Unavailable | FailureKind::Timeout));
        if outage {
            if self.breakers.record_failure(endpoint, Instant::now()) {
                warn!(endpoint, "circuit breaker opened; holding back messages for this endpoint");
            }
        } else {
            self.breakers.record_answer(endpoint);
        }
        self.metrics.circuit_breakers_open(self.breakers.open_count());
    }

    /// Schedules a retry while `x-max-retries` allows one, else dead-letters.
    fn retry_or_give_up(&self, message: Box<Accepted>, channel: ChannelKind, error: DeliveryError) -> Decision {
        if message.headers.retry_count < message.headers.max_retries {
            return Decision::Retry { message, error };
        }
        let reason = format!(
            "gave up after {} attempts; last error: {}",
            message.attempt(),
            truncate(&error.to_string(), MAX_REASON_CHARS)
        );
        let failure = failure(FailureKind::RetriesExhausted, error.code().map(str::to_owned), reason);
        Decision::DeadLetter { failure, named: Some(message.named(channel)) }
    }
}

pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

fn dead_letter(kind: FailureKind, message: String, named: Option<Named>) -> Box<Decision> {
    Box::new(Decision::DeadLetter { failure: failure(kind, None, message), named })
}

fn failure(kind: FailureKind, code: Option<String>, message: String) -> FailureInfo {
    FailureInfo { kind, code, message: truncate(&message, MAX_REASON_CHARS) }
}

/// Copies the request's ids, dropping its data.
pub(super) fn ids_of<T>(envelope: &Envelope<T>) -> Envelope<()> {
    Envelope {
        event_id: envelope.event_id,
        event_type: envelope.event_type.clone(),
        event_time: envelope.event_time,
        tenant_id: envelope.tenant_id,
        user_id: envelope.user_id,
        trace_id: envelope.trace_id.clone(),
        correlation_id: envelope.correlation_id,
        producer: envelope.producer.clone(),
        data: (),
    }
}

fn named_partial(
    envelope: &Envelope<serde_json::Value>,
    notification_id: Uuid,
    channel: ChannelKind,
    headers: Option<&DispatchHeaders>,
) -> Named {
    record_span_fields(envelope);
    Span::current().record("notification_id", tracing::field::display(notification_id));
    let template = envelope.data.get("template").and_then(serde_json::Value::as_str).map(|t| truncate(t, 64));
    Named {
        ids: ids_of(envelope),
        notification_id,
        channel,
        template,
        attempts: headers.map_or(1, |h| h.retry_count.saturating_add(1)),
        webhook_url: envelope.data.get("recipient").and_then(webhook_url),
    }
}

pub(super) fn webhook_url(recipient: &serde_json::Value) -> Option<String> {
    recipient.get("url").and_then(serde_json::Value::as_str).map(crate::recipient::mask_url)
}

fn record_span_fields<T: SpanFields>(envelope: &Envelope<T>) {
    let span = Span::current();
    span.record("trace_id", envelope.trace_id.as_str());
    span.record("tenant_id", tracing::field::display(envelope.tenant_id));
    if let Some(id) = envelope.data.notification_id() {
        span.record("notification_id", tracing::field::display(id));
    }
}

trait SpanFields {
    fn notification_id(&self) -> Option<Uuid>;
}

impl SpanFields for DispatchRequest {
    fn notification_id(&self) -> Option<Uuid> {
        Some(self.notification_id)
    }
}

impl SpanFields for serde_json::Value {
    fn notification_id(&self) -> Option<Uuid> {
        self.get("notification_id").and_then(serde_json::Value::as_str).and_then(|id| Uuid::parse_str(id).ok())
    }
}
