//! The dispatcher: consumes a channel queue and takes each message through
//! its stages.
//!
//! - [`decide`]: validate, deduplicate, check expiry, render, deliver;
//! - [`settle`]: publish what the decision owes, with confirms;
//! - [`acks`]: ack the message, or nack it back to its queue when a publish
//!   failed.
//!
//! Messages are processed concurrently, up to `concurrency` at once per queue.

mod acks;
mod decide;
mod settle;


use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::Consumer;
use tokio_util::sync::CancellationToken;
use tracing::{field, info_span, Instrument};

use self::acks::{AckQueue, PendingDelivery, Settlement};
use crate::breaker::CircuitBreakers;
use crate::channel::{ChannelKind, ChannelRegistry};
use crate::idempotency::IdempotencyStore;
use crate::metrics::Metrics;
use crate::publisher::{PublishError, Publisher};
use crate::rate_limit::{RateLimiter, RateLimitsConfig};
use crate::retry::RetryPolicy;
use crate::templates::TemplateHandle;
use crate::topology::Topology;

/// Everything the dispatcher needs that outlives a broker connection.
pub struct Dispatcher {
    pub(crate) registry: ChannelRegistry,
    pub(crate) templates: Arc<TemplateHandle>,
    pub(crate) topology: Topology,
    pub(crate) retry: RetryPolicy,
    pub(crate) idempotency: Arc<dyn IdempotencyStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) breakers: CircuitBreakers,
    pub(crate) rate_limits: RateLimiter,
    /// How long a claim, or a fresh `Sent` record, keeps other copies waiting.
    pub(crate) claim_lease: chrono::TimeDelta,
    /// `producer` of published events.
    pub(crate) producer: String,
    pub(crate) default_max_retries: u32,
    pub(crate) max_message_bytes: usize,
}

/// Cause of a consumer stopping before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("consumer of {queue} failed: {source}")]
    Broker {
        queue: String,
        #[source]
        source: lapin::Error,
    },
    #[error("the broker cancelled the consumer of {0} (queue deleted?)")]
    Cancelled(String),
    #[error(transparent)]
    Publish(Box<PublishError>),
}

/// Settings of [`Dispatcher`] that come from configuration.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    pub producer: String,
    pub default_max_retries: u32,
    pub max_message_bytes: usize,
    pub breaker_failure_threshold: u32,
    pub breaker_cooldown: std::time::Duration,
    pub claim_lease: std::time::Duration,
    pub rate_limits: RateLimitsConfig,
}

impl Dispatcher {
    pub fn new(
        registry: ChannelRegistry,
        templates: Arc<TemplateHandle>,
        topology: Topology,
        retry: RetryPolicy,
        idempotency: Arc<dyn IdempotencyStore>,
        metrics: Arc<Metrics>,
        settings: DispatcherSettings,
    ) -> Dispatcher {
        Dispatcher {
            registry,
            templates,
            topology,
            retry,
            idempotency,
            metrics,
            breakers: CircuitBreakers::new(settings.breaker_failure_threshold, settings.breaker_cooldown),
            rate_limits: RateLimiter::new(settings.rate_limits),
            claim_lease: chrono::TimeDelta::from_std(settings.claim_lease).unwrap_or(chrono::TimeDelta::MAX),
            producer: settings.producer,
            default_max_retries: settings.default_max_retries,
            max_message_bytes: settings.max_message_bytes,
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Processes deliveries from `consumer`, which consumes on
    /// `broker_channel`, until `stop` is cancelled, the consumer ends, or a
    /// publish fails. Then it waits for the messages in flight to finish and
    /// for their acks to be sent.
    ///
    /// # Errors
    ///
    /// Returns why the consumer stopped when it was not asked to.
    pub async fn consume(
        self: Arc<Self>,
        channel: ChannelKind,
        broker_channel: lapin::Channel,
        consumer: Consumer,
        publisher: Publisher,
        concurrency: usize,
        stop: CancellationToken,
    ) -> Result<(), ConsumerError> {
        let (acks, ack_task) = acks::start(broker_channel);
        let outcome = Arc::clone(&self).dispatch(channel, consumer, publisher, &acks, concurrency, stop).await;
        // Every message has ended and dropped its queue handle, so the ack
        // task ends once it sent what it owes.
        drop(acks);
        if let Err(err) = ack_task.finish().await {
            tracing::error!(error = %err, "ack task failed; the broker will redeliver unacked messages");
        }
        outcome
    }

    /// Takes deliveries while fewer than `concurrency` are in flight, and
    /// drives those in flight, until one of the ends `consume` names.
    ///
    /// The messages in flight are futures of this one task, not tasks of
    /// their own. A wake-up from the broker client's threads then reaches
    /// one task, which polls every message that is ready. Spawned tasks
    /// would each need a wake-up, often on the second worker thread.
    // NOTE: the CPU-bound steps of one queue's messages (rendering, signing)
    // therefore run on one worker thread at a time. That measured faster on
    // 2 CPUs; a single busy queue on many CPUs gets one CPU's worth of them.
    async fn dispatch(
        self: Arc<Self>,
        channel: ChannelKind,
        mut consumer: Consumer,
        publisher: Publisher,
        acks: &AckQueue,
        concurrency: usize,
        stop: CancellationToken,
    ) -> Result<(), ConsumerError> {
        let queue = self.topology.channel_queue(channel);
        let mut in_flight = FuturesUnordered::new();
        let mut outcome = Ok(());

        loop {
            let room = in_flight.len() < concurrency;
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Err(err) = message_result(result) {
                        outcome = Err(err);
                        break;
                    }
                }
                next = consumer.next(), if room => match next {
                    Some(Ok(delivery)) => {
                        let pending = acks.pending(delivery.delivery_tag);
                        in_flight.push(AssertUnwindSafe(self.settled(channel, delivery, &publisher, pending)).catch_unwind());
                    }
                    Some(Err(source)) => {
                        outcome = Err(ConsumerError::Broker { queue: queue.clone(), source });
                        break;
                    }
                    None => {
                        outcome = Err(ConsumerError::Cancelled(queue.clone()));
                        break;
                    }
                },
            }
        }

        while let Some(result) = in_flight.next().await {
            if let Err(err) = message_result(result) {
                if outcome.is_ok() {
                    outcome = Err(err);
                }
            }
        }
        outcome
    }

    /// Handles one delivery and reports its outcome to the ack task.
    async fn settled(&self, channel: ChannelKind, delivery: Delivery, publisher: &Publisher, pending: PendingDelivery) -> Result<(), PublishError> {
        let result = self.handle(channel, delivery, publisher).await;
        pending.settle(if result.is_ok() { Settlement::Ack } else { Settlement::Requeue });
        result
    }

    async fn handle(&self, channel: ChannelKind, delivery: Delivery, publisher: &Publisher) -> Result<(), PublishError> {
        let span = info_span!(
            "notification",
            channel = %channel,
            trace_id = field::Empty,
            notification_id = field::Empty,
            tenant_id = field::Empty,
            redelivered = delivery.redelivered,
        );
        self.metrics.consumed(channel);
        let _in_flight = self.metrics.in_flight(channel);
        // Both stages are boxed: their futures nest the plugin's, the
        // store's and the broker client's, and a task that large is copied
        // several times over when it is spawned and when it finishes.
        async {
            let decision = Box::pin(self.decide(channel, &delivery)).await;
            Box::pin(self.settle(channel, &delivery, decision, publisher)).await
        }
        .instrument(span)
        .await
    }
}

fn message_result(result: std::thread::Result<Result<(), PublishError>>) -> Result<(), ConsumerError> {
    match result {
        Ok(result) => result.map_err(|err| ConsumerError::Publish(Box::new(err))),
        // A panic must not take the service down. Its delivery stays
        // unsettled and returns to the queue when the channel closes.
        Err(panic) => {
            let reason = decide::panic_message(panic.as_ref());
            tracing::error!(reason = %reason, "message handling panicked; the message returns to its queue when this broker session ends");
            Ok(())
        }
    }
}
