//! Exchanges, queues and bindings the service declares at start-up.
//!
//! Declarations are idempotent: declaring what exists with the same
//! arguments changes nothing, so every instance declares on every start and
//! after every reconnection.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::channel::ChannelKind;
use crate::config::{BrokerConfig, QueueType};
use crate::retry::tier_label;

/// Names and shape of everything the service declares.
#[derive(Debug, Clone)]
pub struct Topology {
    broker: BrokerConfig,
    channels: Vec<ChannelKind>,
    tiers: Vec<Duration>,
}

impl Topology {
    pub fn new(broker: &BrokerConfig, channels: Vec<ChannelKind>, tiers: &[Duration]) -> Topology {
        Topology { broker: broker.clone(), channels, tiers: tiers.to_vec() }
    }

    pub fn events_exchange(&self) -> &str {
        &self.broker.exchanges.events
    }

    pub fn notify_exchange(&self) -> &str {
        &self.broker.exchanges.notify
    }

    pub fn dlq_exchange(&self) -> &str {
        &self.broker.exchanges.dlq
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}{}", self.broker.queue_prefix, self.broker.dead_letter_queue)
    }

    pub fn channels(&self) -> &[ChannelKind] {
        &self.channels
    }

    /// Returns the queue a channel's dispatch messages arrive on.
    pub fn channel_queue(&self, channel: ChannelKind) -> String {
        format!("{}{}", self.broker.queue_prefix, channel.routing_key())
    }

    /// Returns the delay queue of a channel's retries for `tier`.
    pub fn retry_queue(&self, channel: ChannelKind, tier: Duration) -> String {
        format!("{}.retry.{}", self.channel_queue(channel), tier_label(tier))
    }

    /// Declares every exchange, queue and binding.
    ///
    /// # Errors
    ///
    /// Returns the broker's error, e.g. `PRECONDITION_FAILED` when a queue
    /// exists with other arguments. The channel is closed by the broker then.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        // Durable exchanges survive a broker restart; other services share
        // them, so the kinds must match the contract.
        let exchanges = [
            (self.events_exchange(), ExchangeKind::Topic),
            (self.notify_exchange(), ExchangeKind::Direct),
            (self.dlq_exchange(), ExchangeKind::Fanout),
        ];
        for (name, kind) in exchanges {
            let options = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
            channel.exchange_declare(name.into(), kind, options, FieldTable::default()).await?;
        }

        self.declare_dead_letter_queue(channel).await?;
        for &kind in &self.channels {
            self.declare_channel_queue(channel, kind).await?;
            for &tier in &self.tiers {
                self.declare_retry_queue(channel, kind, tier).await?;
            }
        }
        Ok(())
    }

    async fn declare_dead_letter_queue(&self, channel: &Channel) -> Result<(), lapin::Error> {
        // Durable and never auto-deleted: a dead letter must outlive every
        // consumer, and a fanout exchange with no queue would drop it.
        let queue = self.dead_letter_queue();
        channel.queue_declare(queue.as_str().into(), durable(), FieldTable::default()).await?;
        channel
            .queue_bind(queue.as_str().into(), self.dlq_exchange().into(), "".into(), QueueBindOptions::default(), FieldTable::default())
            .await
    }

    async fn declare_channel_queue(&self, channel: &Channel, kind: ChannelKind) -> Result<(), lapin::Error> {
        let queue = self.channel_queue(kind);
        let mut arguments = FieldTable::default();
        if self.broker.queue_type == QueueType::Quorum {
            arguments.insert("x-queue-type".into(), long_string("quorum"));
            // A message redelivered this often has crashed consumers; the
            // broker dead-letters it instead of letting it loop.
            arguments.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit_as_i32(self.broker.delivery_limit)));
            arguments.insert("x-dead-letter-exchange".into(), long_string(self.dlq_exchange()));
        }
        channel.queue_declare(queue.as_str().into(), durable(), arguments).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                self.notify_exchange().into(),
                ShortString::from(kind.routing_key()),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }

    async fn declare_retry_queue(&self, channel: &Channel, kind: ChannelKind, tier: Duration) -> Result<(), lapin::Error> {
        // No consumer reads a retry queue: a message waits out its TTL, then the
        // broker dead-letters it to the notify exchange under the channel's
        // routing key, which puts it back on the channel queue.
        let mut arguments = FieldTable::default();
        let ttl_ms = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
        arguments.insert("x-dead-letter-exchange".into(), long_string(self.notify_exchange()));
        arguments.insert("x-dead-letter-routing-key".into(), long_string(&kind.routing_key()));
        let queue = self.retry_queue(kind, tier);
        channel.queue_declare(queue.as_str().into(), durable(), arguments).await?;
        Ok(())
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn limit_as_i32(limit: u32) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_follow_routing_keys() {
        let broker = BrokerConfig { queue_prefix: "t1.".to_owned(), ..BrokerConfig::default() };
        let topology = Topology::new(&broker, vec![ChannelKind::Email], &[Duration::from_secs(30)]);
        assert_eq!(topology.channel_queue(ChannelKind::Email), "t1.notify.channel.email");
        assert_eq!(topology.retry_queue(ChannelKind::Email, Duration::from_secs(30)), "t1.notify.channel.email.retry.30s");
        assert_eq!(topology.dead_letter_queue(), "t1.flatrender.dlq");
    }
}
