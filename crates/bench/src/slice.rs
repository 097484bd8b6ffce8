//! A run's own exchanges and queues on the local broker: declared with the
//! service's own topology code, published to, and deleted afterwards.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::future::join_all;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use notify_core::config::{BrokerConfig, ExchangeNames};
use notify_core::retry::{RetryConfig, RetryPolicy};
use notify_core::topology::Topology;
use notify_core::ChannelKind;

use crate::messages::MessageFactory;

/// The local broker; the benchmark talks to no other.
pub const BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Publishes in flight before the backlog publisher waits for confirms.
const CONFIRM_WINDOW: usize = 2_000;

/// Names of what a slice declared, for deleting it.
#[derive(Debug, Clone)]
struct Declared {
    queues: Vec<String>,
    exchanges: Vec<String>,
}

/// Slices not deleted yet, so that an interrupted run can still delete them.
#[derive(Debug, Clone, Default)]
pub struct Leftovers(Arc<Mutex<Vec<(String, Declared)>>>);

impl Leftovers {
    fn add(&self, prefix: &str, declared: Declared) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push((prefix.to_owned(), declared));
    }

    fn remove(&self, prefix: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).retain(|(p, _)| p != prefix);
    }

    /// Deletes every slice still listed, on a connection of its own.
    pub async fn delete_all(&self) {
        let pending: Vec<(String, Declared)> = self.0.lock().unwrap_or_else(PoisonError::into_inner).drain(..).collect();
        if pending.is_empty() {
            return;
        }
        let Ok(connection) = Connection::connect(BROKER_URL, ConnectionProperties::default()).await else {
            eprintln!("cannot connect to RabbitMQ to delete the queues and exchanges of {} runs", pending.len());
            return;
        };
        for (prefix, declared) in pending {
            if let Err(err) = delete(&connection, &declared).await {
                eprintln!("deleting the queues and exchanges of {prefix} failed: {err:#}");
            }
        }
        let _ = connection.close(200, "bench cleanup".into()).await;
    }
}

/// One run's exchanges and queues, all named with a unique prefix.
pub struct Slice {
    /// Ends with a dot, e.g. `bench-3f2a9c1d-noop-backlog.`.
    pub prefix: String,
    pub broker: BrokerConfig,
    pub topology: Topology,
    pub channel_kind: ChannelKind,
    connection: Connection,
    publishing: Channel,
    declared: Declared,
    leftovers: Leftovers,
}

impl Slice {
    /// Declares the service's topology for `channel_kind` under a new prefix,
    /// exactly as the service declares it at start-up.
    ///
    /// # Errors
    ///
    /// Returns the broker's error.
    pub async fn create(run_id: &str, label: &str, channel_kind: ChannelKind, leftovers: &Leftovers) -> anyhow::Result<Slice> {
        let prefix = format!("bench-{run_id}-{label}.");
        let broker = BrokerConfig {
            url: BROKER_URL.to_owned(),
            queue_prefix: prefix.clone(),
            exchanges: ExchangeNames {
                events: format!("{prefix}events"),
                notify: format!("{prefix}notify"),
                dlq: format!("{prefix}dlq"),
            },
            ..BrokerConfig::default()
        };
        let retry = RetryPolicy::from_config(&RetryConfig::default()).context("the default retry settings are invalid")?;
        let topology = Topology::new(&broker, vec![channel_kind], retry.tiers());

        let mut queues = vec![topology.channel_queue(channel_kind), topology.dead_letter_queue()];
        queues.extend(retry.tiers().iter().map(|&tier| topology.retry_queue(channel_kind, tier)));
        let exchanges = vec![
            topology.events_exchange().to_owned(),
            topology.notify_exchange().to_owned(),
            topology.dlq_exchange().to_owned(),
        ];
        let declared = Declared { queues, exchanges };
        leftovers.add(&prefix, declared.clone());

        let connection = Connection::connect(BROKER_URL, ConnectionProperties::default())
            .await
            .context("cannot connect to RabbitMQ at 127.0.0.1:5672 (start it with scripts/run-local.sh)")?;
        let setup = connection.create_channel().await?;
        topology.declare(&setup).await.context("declaring the run's topology failed")?;
        let _ = setup.close(200, "declared".into()).await;
        let publishing = connection.create_channel().await?;
        publishing.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Slice { prefix, broker, topology, channel_kind, connection, publishing, declared, leftovers: leftovers.clone() })
    }

    pub fn queue(&self) -> String {
        self.topology.channel_queue(self.channel_kind)
    }

    /// Publishes every message of `factory` as fast as confirms allow.
    ///
    /// # Errors
    ///
    /// Fails when the broker does not confirm or route a message.
    pub async fn publish_backlog(&self, factory: &MessageFactory) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let mut confirms = Vec::with_capacity(CONFIRM_WINDOW);
        for index in 0..factory.count() {
            confirms.push(self.publish_one(factory, index).await?);
            if confirms.len() == CONFIRM_WINDOW {
                check_confirms(std::mem::take(&mut confirms)).await?;
            }
        }
        check_confirms(confirms).await?;
        Ok(started.elapsed())
    }

    /// Publishes the messages of `factory` at `rate` per second, each with
    /// `event_time` set when it is published, and returns the rate achieved.
    ///
    /// # Errors
    ///
    /// Fails when the broker does not confirm or route a message.
    pub async fn publish_paced(&self, factory: &MessageFactory, rate: f64) -> anyhow::Result<f64> {
        let started = Instant::now();
        let mut confirms = Vec::new();
        let mut sent = 0;
        while sent < factory.count() {
            let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(factory.count());
            while sent < due {
                confirms.push(self.publish_one(factory, sent).await?);
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let achieved = sent as f64 / started.elapsed().as_secs_f64();
        check_confirms(confirms).await?;
        Ok(achieved)
    }

    async fn publish_one(&self, factory: &MessageFactory, index: usize) -> anyhow::Result<lapin::PublisherConfirm> {
        let (body, properties) = factory.build(index);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let routing_key = self.channel_kind.routing_key();
        self.publishing
            .basic_publish(self.topology.notify_exchange().into(), routing_key.as_str().into(), options, &body, properties)
            .await
            .context("publishing a dispatch message failed")
    }

    /// Number of consumers on the channel queue.
    ///
    /// # Errors
    ///
    /// Returns the broker's error.
    pub async fn consumer_count(&self) -> anyhow::Result<u32> {
        // A failed passive declare closes its channel, so use a throwaway one.
        let channel = self.connection.create_channel().await?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let queue = channel.queue_declare(self.queue().as_str().into(), options, FieldTable::default()).await?;
        let _ = channel.close(200, "".into()).await;
        Ok(queue.consumer_count())
    }

    /// Deletes the slice's queues and exchanges.
    ///
    /// # Errors
    ///
    /// Returns the broker's error.
    pub async fn delete(self) -> anyhow::Result<()> {
        delete(&self.connection, &self.declared).await?;
        self.leftovers.remove(&self.prefix);
        let _ = self.connection.close(200, "bench run done".into()).await;
        Ok(())
    }
}

async fn check_confirms(confirms: Vec<lapin::PublisherConfirm>) -> anyhow::Result<()> {
    for confirmation in join_all(confirms).await {
        let confirmation = confirmation.context("waiting for a publisher confirm failed")?;
        if !confirmation.is_ack() {
            bail!("the broker rejected (nack) a dispatch message");
        }
        if let Some(returned) = confirmation.take_message() {
            bail!("the broker returned a dispatch message as unroutable: {} {}", returned.reply_code, returned.reply_text);
        }
    }
    Ok(())
}

async fn delete(connection: &Connection, declared: &Declared) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    for queue in &declared.queues {
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
    }
    for exchange in &declared.exchanges {
        channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await?;
    }
    let _ = channel.close(200, "".into()).await;
    Ok(())
}
