//! The observer: a consumer of the run's outcome events that timestamps each
//! one on arrival.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use notify_core::events::{DELIVERED, FAILED};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::messages::MessageFactory;
use crate::slice::{Slice, BROKER_URL};

/// A `notification.delivered.v1` event the observer received.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    /// From the request's `event_time` to the event's arrival, in microseconds.
    pub latency_micros: i64,
    pub arrived: Instant,
}

/// Everything the observer received in one run.
#[derive(Debug, Default)]
pub struct Outcomes {
    /// First delivered event of each message, in order of arrival.
    pub delivered: Vec<Delivered>,
    /// Failed events, counted once per message.
    pub failed: usize,
    /// Outcome events for a message that already had one.
    pub duplicates: usize,
    /// Events that name no message of this run, or that cannot be parsed.
    pub unknown: usize,
}

impl Outcomes {
    /// Messages with an outcome, delivered or failed.
    pub fn settled(&self) -> usize {
        self.delivered.len() + self.failed
    }

    /// Delivered events per second from the first to the last arrival.
    pub fn throughput(&self) -> Option<f64> {
        let first = self.delivered.first()?.arrived;
        let last = self.delivered.last()?.arrived;
        let seconds = last.duration_since(first).as_secs_f64();
        (self.delivered.len() > 1 && seconds > 0.0).then(|| (self.delivered.len() - 1) as f64 / seconds)
    }
}

/// The running observer of one slice.
pub struct Observer {
    settled: watch::Receiver<usize>,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<Outcomes>>,
    connection: Connection,
}

#[derive(Deserialize)]
struct EventBody {
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    notification_id: Uuid,
}

impl Observer {
    /// Declares an exclusive queue bound to the slice's events exchange for
    /// delivered and failed events, and starts consuming it.
    ///
    /// # Errors
    ///
    /// Returns the broker's error.
    pub async fn start(slice: &Slice, factory: Arc<MessageFactory>) -> anyhow::Result<Observer> {
        let connection = Connection::connect(BROKER_URL, ConnectionProperties::default())
            .await
            .context("the observer cannot connect to RabbitMQ")?;
        let channel = connection.create_channel().await?;
        let queue = format!("{}bench.observer", slice.prefix);
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await?;
        for routing_key in [DELIVERED, FAILED] {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    slice.topology.events_exchange().into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let options = BasicConsumeOptions { no_ack: true, ..BasicConsumeOptions::default() };
        let mut consumer = channel.basic_consume(queue.as_str().into(), "bench-observer".into(), options, FieldTable::default()).await?;

        let (progress, settled) = watch::channel(0);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut outcomes = Outcomes::default();
            let mut seen = vec![false; factory.count()];
            loop {
                let delivery = tokio::select! {
                    () = stopped.cancelled() => return Ok(outcomes),
                    next = consumer.next() => match next {
                        Some(delivery) => delivery.context("the observer's consumer failed")?,
                        None => return Ok(outcomes),
                    },
                };
                let arrived = Instant::now();
                let arrived_micros = Utc::now().timestamp_micros();
                let index = serde_json::from_slice::<EventBody>(&delivery.data)
                    .ok()
                    .and_then(|event| factory.index_of(event.data.notification_id));
                let Some(index) = index else {
                    outcomes.unknown += 1;
                    continue;
                };
                if seen[index] {
                    outcomes.duplicates += 1;
                    continue;
                }
                seen[index] = true;
                if delivery.routing_key.as_str() == DELIVERED {
                    let sent = factory.sent_at_micros(index).unwrap_or(arrived_micros);
                    outcomes.delivered.push(Delivered { latency_micros: arrived_micros - sent, arrived });
                } else {
                    outcomes.failed += 1;
                }
                progress.send_replace(outcomes.settled());
            }
        });
        Ok(Observer { settled, stop, task, connection })
    }

    /// Waits until `count` messages have an outcome or `timeout` passes, then
    /// keeps listening for `linger` to catch duplicates, and returns everything received.
    ///
    /// # Errors
    ///
    /// Returns the consumer's error; a timeout is not an error, the caller
    /// sees the missing outcomes.
    pub async fn finish(mut self, count: usize, timeout: Duration, linger: Duration) -> anyhow::Result<Outcomes> {
        let _ = tokio::time::timeout(timeout, self.settled.wait_for(|settled| *settled >= count)).await;
        tokio::time::sleep(linger).await;
        self.stop.cancel();
        let outcomes = self.task.await.context("the observer task panicked")??;
        let _ = self.connection.close(200, "bench observer done".into()).await;
        Ok(outcomes)
    }
}
