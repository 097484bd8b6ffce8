//! Handling of one domain event: check it, update contacts, and publish one
//! dispatch message per matching rule, channel and recipient address.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::message::Delivery;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::Channel;
use notify_core::envelope::{is_valid_locale, Envelope, DISPATCH_EVENT_TYPE};
use notify_core::headers::{self, outgoing_properties, read_dispatch_headers, text};
use notify_core::publisher::{PublishError, Publisher};
use notify_core::ChannelKind;
use serde_json::{json, Value};
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::error::StoreError;
use crate::rules::{self, Category, Routes, Rule};
use crate::store::{platform_name, Contact, ContactStore};

/// Namespace of notification ids, which are UUID v5 of
/// `<event_id>/<channel>/<address>` in it.
const NOTIFICATION_NAMESPACE: Uuid = Uuid::from_u128(0x6c1e_4a7e_9f3b_5d21_8a40_f1d2_c3b4_a596);

/// Quiet-hours delays are rounded up to this step, so that a few delay
/// queues with one fixed message TTL each cover every delay.
const HOLD_STEP: Duration = Duration::from_secs(15 * 60);

/// Channels whose notifications wait out the user's quiet hours. Email and
/// webhooks do not interrupt anyone, so they are sent at once.
const QUIET_CHANNELS: [ChannelKind; 3] = [ChannelKind::Push, ChannelKind::Sms, ChannelKind::Telegram];

/// Kind of the failed event for an event whose user cannot be reached.
pub const NO_RECIPIENT: &str = "no_recipient";
/// Kind of the failed event for a dispatch message no queue would take.
pub const UNROUTABLE: &str = "unroutable";

/// Names on the broker.
#[derive(Debug, Clone)]
pub struct BrokerNames {
    pub events_exchange: String,
    pub notify_exchange: String,
    pub dlq_exchange: String,
    pub queue_prefix: String,
}

/// Outcome of handling a delivery, which tells the caller how to settle it.
#[derive(Debug, PartialEq, Eq)]
pub enum Settlement {
    Ack,
    /// Return it to the queue for a later attempt after a store error that may pass.
    Requeue,
}

/// The stateless part of the stage: rules, store and names.
pub struct Fanout {
    routes: Routes,
    store: ContactStore,
    names: BrokerNames,
    producer: String,
    /// Hold queues declared in this process, so each is declared once.
    declared_hold_queues: Mutex<HashSet<String>>,
}

/// One dispatch message before publishing.
struct Dispatch {
    channel: ChannelKind,
    notification_id: Uuid,
    recipient: Value,
    /// Device token of a push notification, recorded for `recipient_gone`.
    device_token: Option<String>,
}

impl Fanout {
    pub fn new(routes: Routes, store: ContactStore, names: BrokerNames, producer: String) -> Fanout {
        Fanout { routes, store, names, producer, declared_hold_queues: Mutex::new(HashSet::new()) }
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    pub fn store(&self) -> &ContactStore {
        &self.store
    }

    /// Handles one delivery and returns how to settle it. Invalid messages are
    /// dead-lettered here. An error means the broker failed, so the caller
    /// requeues the delivery and reconnects.
    pub async fn handle(&self, delivery: &Delivery, publisher: &Publisher, channel: &Channel) -> Result<Settlement, PublishError> {
        let envelope = match read_event(delivery) {
            Ok(envelope) => envelope,
            Err(reason) => {
                warn!(routing_key = %delivery.routing_key, reason, "invalid domain event; dead-lettering it");
                self.dead_letter(delivery, &reason, publisher).await?;
                return Ok(Settlement::Ack);
            }
        };
        match self.process(&envelope, publisher, channel).await {
            Ok(()) => Ok(Settlement::Ack),
            Err(ProcessError::Store(err)) => {
                warn!(error = %err, event_id = %envelope.event_id, event_type = %envelope.event_type, "contacts store failed; requeueing the event");
                Ok(Settlement::Requeue)
            }
            Err(ProcessError::Publish(err)) => Err(err),
        }
    }

    async fn process(&self, event: &Envelope<Value>, publisher: &Publisher, channel: &Channel) -> Result<(), ProcessError> {
        self.update_contacts(event).await?;
        let mut matched = false;
        for rule in self.routes.matching(&event.event_type) {
            matched = true;
            self.fan_out(rule, event, publisher, channel).await?;
        }
        if !matched {
            debug!(event_id = %event.event_id, event_type = %event.event_type, "no rule matches the event; ignored");
        }
        Ok(())
    }

    /// Applies identity events and dead-token reports to the store.
    async fn update_contacts(&self, event: &Envelope<Value>) -> Result<(), StoreError> {
        let data = &event.data;
        let text_at = |pointer: &str| data.pointer(pointer).and_then(Value::as_str).filter(|s| !s.is_empty());
        match event.event_type.as_str() {
            rules::USER_REGISTERED => {
                let Some(user_id) = event.user_id else {
                    warn!(event_id = %event.event_id, "user registered event has no user_id; contacts unchanged");
                    return Ok(());
                };
                let email = text_at("/email");
                let name = text_at("/name").or_else(|| text_at("/display_name"));
                let locale = text_at("/locale").filter(|locale| is_valid_locale(locale));
                self.store.upsert_user(event.tenant_id, user_id, email, name, locale).await?;
                info!(tenant_id = %event.tenant_id, user_id = %user_id, "contact created from registration");
            }
            rules::USER_EMAIL_VERIFIED => {
                if let Some(user_id) = event.user_id {
                    self.store.mark_email_verified(event.tenant_id, user_id, text_at("/email")).await?;
                }
            }
            rules::USER_BANNED => {
                if let Some(user_id) = event.user_id {
                    self.store.set_banned(event.tenant_id, user_id, true).await?;
                    info!(tenant_id = %event.tenant_id, user_id = %user_id, "user banned; no more notifications");
                }
            }
            rules::TENANT_SUSPENDED => {
                self.store.set_tenant_suspended(event.tenant_id, true).await?;
                info!(tenant_id = %event.tenant_id, "tenant suspended; no more notifications");
            }
            rules::FAILED_EVENT => self.forget_dead_device(event).await?,
            _ => {}
        }
        Ok(())
    }

    async fn forget_dead_device(&self, event: &Envelope<Value>) -> Result<(), StoreError> {
        let data = &event.data;
        let kind = data.pointer("/error/kind").and_then(Value::as_str);
        let channel = data.get("channel").and_then(Value::as_str);
        if kind != Some("recipient_gone") || channel != Some("push") {
            return Ok(());
        }
        let mut token = data.pointer("/recipient/device_token").and_then(Value::as_str).map(str::to_owned);
        if token.is_none() {
            if let Some(id) = data.get("notification_id").and_then(Value::as_str).and_then(|id| Uuid::parse_str(id).ok()) {
                token = self.store.push_token(id).await?;
            }
        }
        match token {
            Some(token) => {
                let removed = self.store.remove_token(&token).await?;
                info!(removed, notification_id = ?data.get("notification_id"), "device token reported gone; removed");
            }
            None => debug!(notification_id = ?data.get("notification_id"), "recipient_gone for a push notification this stage did not record"),
        }
        Ok(())
    }

    async fn fan_out(&self, rule: &Rule, event: &Envelope<Value>, publisher: &Publisher, channel: &Channel) -> Result<(), ProcessError> {
        // The suspension notice itself goes out although the event has just
        // marked the tenant suspended.
        let suspension_notice = event.event_type == rules::TENANT_SUSPENDED;
        if !suspension_notice && self.store.tenant_suspended(event.tenant_id).await? {
            info!(event_id = %event.event_id, tenant_id = %event.tenant_id, template = %rule.template, "tenant suspended; notification skipped");
            return Ok(());
        }
        let contact = match event.user_id {
            Some(user_id) => self.store.contact(event.tenant_id, user_id).await?,
            None => None,
        };
        if contact.as_ref().is_some_and(|contact| contact.banned) {
            info!(event_id = %event.event_id, user_id = ?event.user_id, template = %rule.template, "user banned; notification skipped");
            return Ok(());
        }
        let needs_user = rule.channels.iter().any(|&kind| kind != ChannelKind::Webhook);
        if needs_user && contact.is_none() {
            warn!(event_id = %event.event_id, user_id = ?event.user_id, template = %rule.template, "no contact for the event's user");
            for &kind in rule.channels.iter().filter(|&&kind| kind != ChannelKind::Webhook) {
                let id = notification_id(event.event_id, kind, "");
                let message = match event.user_id {
                    Some(user_id) => format!("no contact is stored for user {user_id} of tenant {}", event.tenant_id),
                    None => "the event names no user_id".to_owned(),
                };
                self.publish_failed(event, id, kind, &rule.template, NO_RECIPIENT, &message, publisher).await?;
            }
        }

        let variables = rule.variables_for(&event.data);
        let missing = rule.missing_variables(&variables);
        if !missing.is_empty() {
            warn!(event_id = %event.event_id, template = %rule.template, ?missing, "event lacks template variables; the template may fail to render");
        }
        let expires_at = rule
            .expires_after_secs
            .and_then(|secs| chrono::Duration::try_seconds(i64::try_from(secs).ok()?))
            .map(|ttl| event.event_time + ttl);

        for &kind in &rule.channels {
            let dispatches = self.dispatches(rule, event, contact.as_ref(), kind).await?;
            if dispatches.is_empty() {
                debug!(event_id = %event.event_id, channel = %kind, template = %rule.template, "no address on the channel, or opted out");
            }
            let delay = match &contact {
                Some(contact) if !rule.urgent && QUIET_CHANNELS.contains(&kind) => quiet_delay(contact, Utc::now()),
                _ => None,
            };
            for dispatch in dispatches {
                let locale = contact.as_ref().and_then(|contact| contact.locale.clone());
                let data = json!({
                    "notification_id": dispatch.notification_id,
                    "channel": kind.as_str(),
                    "template": rule.template,
                    "locale": locale,
                    "recipient": dispatch.recipient,
                    "variables": Value::Object(variables.clone()),
                    "expires_at": expires_at,
                    "category": rule.category.as_str(),
                    "source_event_id": event.event_id,
                    "source_event_type": event.event_type,
                });
                if let Some(token) = &dispatch.device_token {
                    self.store.record_push(dispatch.notification_id, token).await?;
                }
                self.publish_dispatch(event, &dispatch, &rule.template, data, delay, publisher, channel).await?;
            }
        }
        Ok(())
    }

    /// The dispatch messages of one channel: one per address the user (or,
    /// for webhooks, the tenant) has there, unless the user opted out.
    async fn dispatches(&self, rule: &Rule, event: &Envelope<Value>, contact: Option<&Contact>, kind: ChannelKind) -> Result<Vec<Dispatch>, StoreError> {
        if let Some(contact) = contact {
            if contact.opt_outs.contains(&(rule.category.as_str().to_owned(), kind.as_str().to_owned())) {
                debug!(event_id = %event.event_id, channel = %kind, category = rule.category.as_str(), "user opted out; channel skipped");
                return Ok(Vec::new());
            }
        }
        // Marketing needs an address the user proved to own.
        let email_allowed = |contact: &Contact| rule.category == Category::Transactional || contact.email_verified;
        let mut recipients: Vec<(String, Value, Option<String>)> = Vec::new();
        match (kind, contact) {
            (ChannelKind::Webhook, _) => {
                for url in self.store.webhooks(event.tenant_id).await? {
                    recipients.push((url.clone(), json!({ "url": url }), None));
                }
            }
            (_, None) => {}
            (ChannelKind::Email, Some(contact)) => {
                if let Some(email) = contact.email.as_ref().filter(|_| email_allowed(contact)) {
                    let recipient = match &contact.name {
                        Some(name) => json!({ "email": email, "name": name }),
                        None => json!({ "email": email }),
                    };
                    recipients.push((email.clone(), recipient, None));
                }
            }
            (ChannelKind::Sms, Some(contact)) => {
                if let Some(phone) = &contact.phone {
                    recipients.push((phone.clone(), json!({ "phone": phone }), None));
                }
            }
            (ChannelKind::Telegram, Some(contact)) => {
                if let Some(chat_id) = &contact.telegram_chat_id {
                    let value = chat_id.parse::<i64>().map_or_else(|_| json!(chat_id), |id| json!(id));
                    recipients.push((chat_id.clone(), json!({ "chat_id": value }), None));
                }
            }
            (ChannelKind::Push, Some(contact)) => {
                for device in &contact.devices {
                    let recipient = json!({ "device_token": device.token, "platform": platform_name(device.platform) });
                    recipients.push((device.token.clone(), recipient, Some(device.token.clone())));
                }
            }
        }
        Ok(recipients
            .into_iter()
            .map(|(address, recipient, device_token)| Dispatch {
                channel: kind,
                notification_id: notification_id(event.event_id, kind, &address),
                recipient,
                device_token,
            })
            .collect())
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_dispatch(
        &self,
        event: &Envelope<Value>,
        dispatch: &Dispatch,
        template: &str,
        data: Value,
        delay: Option<Duration>,
        publisher: &Publisher,
        channel: &Channel,
    ) -> Result<(), PublishError> {
        let created = self.derived_event(event, DISPATCH_EVENT_TYPE, dispatch.notification_id, data);
        let body = serde_json::to_vec(&created)?;
        let properties = outgoing_properties(DISPATCH_EVENT_TYPE, &created.tenant_id.to_string(), &created.trace_id, &created.event_id.to_string())
            .with_timestamp(u64::try_from(created.event_time.timestamp()).unwrap_or(0))
            .with_app_id(self.producer.as_str().into());
        let routing_key = dispatch.channel.routing_key();

        let published = match delay {
            Some(delay) => {
                let queue = self.declare_hold_queue(channel, dispatch.channel, delay).await?;
                info!(notification_id = %dispatch.notification_id, channel = %dispatch.channel, hold_queue = %queue, "quiet hours; dispatch held");
                publisher.publish("", &queue, true, &body, properties).await
            }
            None => publisher.publish(&self.names.notify_exchange, &routing_key, true, &body, properties).await,
        };
        match published {
            Ok(()) => {}
            Err(PublishError::Returned { reply, .. }) => {
                warn!(notification_id = %dispatch.notification_id, routing_key, reply, "no queue takes the dispatch message; is the channel's dispatcher set up?");
                let message = format!("no queue is bound to {routing_key} on {}", self.names.notify_exchange);
                return self.publish_failed(event, dispatch.notification_id, dispatch.channel, template, UNROUTABLE, &message, publisher).await;
            }
            Err(err) => return Err(err),
        }
        publisher.publish_event(&self.names.events_exchange, &created).await?;
        debug!(notification_id = %dispatch.notification_id, channel = %dispatch.channel, template, event_id = %event.event_id, "dispatch published");
        Ok(())
    }

    /// Declares the delay queue for `delay` rounded up to [`HOLD_STEP`]: a
    /// message waits out the queue's TTL, then the broker dead-letters it to
    /// the notify exchange under the channel's routing key.
    async fn declare_hold_queue(&self, channel: &Channel, kind: ChannelKind, delay: Duration) -> Result<String, PublishError> {
        let steps = delay.as_secs().div_ceil(HOLD_STEP.as_secs()).max(1);
        let ttl_ms = steps * HOLD_STEP.as_secs() * 1000;
        let queue = format!("{}notify.fanout.hold.{}.{}m", self.names.queue_prefix, kind.as_str(), steps * HOLD_STEP.as_secs() / 60);
        let known = self.declared_hold_queues.lock().map(|set| set.contains(&queue)).unwrap_or(false);
        if known {
            return Ok(queue);
        }
        let mut arguments = FieldTable::default();
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(i64::try_from(ttl_ms).unwrap_or(i64::MAX)));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(self.names.notify_exchange.as_str())));
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(LongString::from(kind.routing_key())));
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel
            .queue_declare(queue.as_str().into(), options, arguments)
            .await
            .map_err(|source| PublishError::Broker { exchange: String::new(), routing_key: queue.clone(), source })?;
        if let Ok(mut set) = self.declared_hold_queues.lock() {
            set.insert(queue.clone());
        }
        Ok(queue)
    }

    #[allow(clippy::too_many_arguments)]
    async fn publish_failed(
        &self,
        event: &Envelope<Value>,
        notification_id: Uuid,
        kind: ChannelKind,
        template: &str,
        failure_kind: &str,
        message: &str,
        publisher: &Publisher,
    ) -> Result<(), PublishError> {
        let data = json!({
            "notification_id": notification_id,
            "channel": kind.as_str(),
            "template": template,
            "attempts": 0,
            "error": { "kind": failure_kind, "message": message },
            "source_event_id": event.event_id,
            "source_event_type": event.event_type,
        });
        let failed = self.derived_event(event, rules::FAILED_EVENT, notification_id, data);
        publisher.publish_event(&self.names.events_exchange, &failed).await
    }

    /// An event about a notification, tied to the domain event it came from.
    /// Its id derives from the notification id, so a redelivery repeats it.
    fn derived_event(&self, event: &Envelope<Value>, event_type: &str, notification_id: Uuid, data: Value) -> Envelope<Value> {
        Envelope {
            event_id: Uuid::new_v5(&notification_id, event_type.as_bytes()),
            event_type: event_type.to_owned(),
            event_time: Utc::now(),
            tenant_id: event.tenant_id,
            user_id: event.user_id,
            trace_id: event.trace_id.clone(),
            correlation_id: Some(event.correlation_id.unwrap_or(event.event_id)),
            producer: self.producer.clone(),
            data,
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str, publisher: &Publisher) -> Result<(), PublishError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(headers::ORIGINAL_ROUTING_KEY.into(), text(delivery.routing_key.as_str()));
        headers.insert(headers::FAILURE_KIND.into(), text("invalid_message"));
        headers.insert(headers::FAILURE_REASON.into(), text(notify_core::envelope::truncate(reason, 500)));
        headers.insert(headers::FAILED_AT.into(), text(Utc::now().to_rfc3339()));
        headers.insert(headers::FAILED_BY.into(), text(format!("{} fan-out", self.producer)));
        let properties = delivery.properties.clone().with_headers(headers).with_delivery_mode(2);
        publisher
            .publish(&self.names.dlq_exchange, delivery.routing_key.as_str(), true, &delivery.data, properties)
            .await
    }
}

#[derive(Debug, thiserror::Error)]
enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Reads and checks a domain event's headers and envelope; the error is the
/// reason to dead-letter it.
fn read_event(delivery: &Delivery) -> Result<Envelope<Value>, String> {
    let headers = read_dispatch_headers(&delivery.properties, 0).map_err(|err| format!("invalid headers: {err}"))?;
    let envelope: Envelope<Value> = serde_json::from_slice(&delivery.data).map_err(|err| format!("invalid envelope: {err}"))?;
    headers.check_against(&envelope).map_err(|err| format!("headers contradict the body: {err}"))?;
    Ok(envelope)
}

/// The deterministic id of the notification of `event_id` on `channel` to
/// `address`: a redelivered event yields the same ids.
pub fn notification_id(event_id: Uuid, channel: ChannelKind, address: &str) -> Uuid {
    Uuid::new_v5(&NOTIFICATION_NAMESPACE, format!("{event_id}/{}/{address}", channel.as_str()).as_bytes())
}

/// How long a non-urgent notification must wait for the contact's quiet
/// hours to end; `None` without quiet hours or a known time zone.
fn quiet_delay(contact: &Contact, now: DateTime<Utc>) -> Option<Duration> {
    let quiet = contact.quiet_hours?;
    let time_zone = contact.time_zone.as_deref().unwrap_or("UTC").parse().ok()?;
    quiet.remaining(now, time_zone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_id_is_deterministic_per_address() {
        let event = Uuid::new_v4();
        let first = notification_id(event, ChannelKind::Push, "token-a");
        assert_eq!(first, notification_id(event, ChannelKind::Push, "token-a"));
        assert_ne!(first, notification_id(event, ChannelKind::Push, "token-b"));
        assert_ne!(first, notification_id(event, ChannelKind::Sms, "token-a"));
        assert_ne!(first, notification_id(Uuid::new_v4(), ChannelKind::Push, "token-a"));
    }

    #[test]
    fn quiet_delay_needs_quiet_hours() {
        let contact = Contact::default();
        assert_eq!(quiet_delay(&contact, Utc::now()), None);
    }

    #[test]
    fn quiet_delay_defaults_to_utc() {
        let contact = Contact { quiet_hours: crate::quiet::QuietHours::parse("00:00", "23:59"), ..Contact::default() };
        let now = DateTime::parse_from_rfc3339("2026-01-10T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(quiet_delay(&contact, now), Some(Duration::from_secs((23 * 60 + 59 - 12 * 60) * 60)));
    }
}
