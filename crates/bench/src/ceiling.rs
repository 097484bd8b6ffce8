//! The broker ceiling: the least work any consumer of the contract must do
//! per message, so the service's throughput can be put in proportion.
//!
//! Per persistent dispatch message it reads the notification id, tenant id
//! and trace id, publishes one persistent delivered event with a publisher
//! confirm, and acks only after the confirm, as the service does. The event
//! carries what the stack's contract requires of every message: the
//! envelope's ids, `content-type`, `content-encoding`, `x-event-type`,
//! `x-tenant-id` and `x-trace-id`. Like the service it consumes and
//! publishes on separate connections, with the same prefetch and the same
//! number of messages in flight.

use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use notify_core::events::DELIVERED;
use notify_core::headers::{CONTENT_ENCODING_UTF8, CONTENT_TYPE_JSON, EVENT_TYPE, TENANT_ID, TRACE_ID};
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::slice::{Slice, BROKER_URL};

/// The running minimal consumer.
pub struct Ceiling {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    connections: [Connection; 2],
}

#[derive(Deserialize)]
struct DispatchBody {
    tenant_id: Uuid,
    trace_id: String,
    data: DispatchData,
}

#[derive(Deserialize)]
struct DispatchData {
    notification_id: Uuid,
}

impl Ceiling {
    /// Starts consuming the slice's channel queue.
    ///
    /// # Errors
    ///
    /// Returns the broker's error.
    pub async fn start(slice: &Slice, prefetch: u16, concurrency: usize) -> anyhow::Result<Ceiling> {
        let consuming = Connection::connect(BROKER_URL, ConnectionProperties::default()).await?;
        let publishing = Connection::connect(BROKER_URL, ConnectionProperties::default()).await?;
        let consume_channel = consuming.create_channel().await?;
        consume_channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let mut consumer = consume_channel
            .basic_consume(slice.queue().as_str().into(), "bench-ceiling".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let publisher = publishing.create_channel().await?;
        publisher.confirm_select(ConfirmSelectOptions::default()).await?;

        let exchange: Arc<str> = Arc::from(slice.topology.events_exchange());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(concurrency));
            let mut in_flight = JoinSet::new();
            loop {
                let slot = slots.clone().acquire_owned().await.context("the semaphore closed")?;
                let delivery = tokio::select! {
                    () = stopped.cancelled() => break,
                    next = consumer.next() => match next {
                        Some(delivery) => delivery.context("the ceiling's consumer failed")?,
                        None => break,
                    },
                };
                let publisher = publisher.clone();
                let exchange = Arc::clone(&exchange);
                in_flight.spawn(async move {
                    let _slot = slot;
                    handle(&publisher, &exchange, delivery).await
                });
                while let Some(joined) = in_flight.try_join_next() {
                    joined.context("a ceiling task panicked")??;
                }
            }
            while let Some(joined) = in_flight.join_next().await {
                joined.context("a ceiling task panicked")??;
            }
            Ok(())
        });
        Ok(Ceiling { stop, task, connections: [consuming, publishing] })
    }

    /// Stops consuming and closes the connections.
    ///
    /// # Errors
    ///
    /// Returns the first error of a message task.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let result = self.task.await.context("the ceiling task panicked")?;
        for connection in &self.connections {
            let _ = connection.close(200, "bench ceiling done".into()).await;
        }
        result
    }
}

async fn handle(publisher: &Channel, exchange: &str, delivery: Delivery) -> anyhow::Result<()> {
    let request: DispatchBody = serde_json::from_slice(&delivery.data).context("the ceiling received an invalid message")?;
    let body = format!(
        concat!(
            r#"{{"event_id":"{}","event_type":"{}","event_time":"{}","tenant_id":"{}","trace_id":{},"producer":"bench-ceiling","#,
            r#""data":{{"notification_id":"{}","channel":"webhook","template":"render_completed","attempts":1}}}}"#
        ),
        Uuid::new_v4(),
        DELIVERED,
        Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
        request.tenant_id,
        serde_json::Value::from(request.trace_id.as_str()),
        request.data.notification_id,
    );
    // The properties and headers the contract requires on every message.
    let mut headers = FieldTable::default();
    headers.insert(EVENT_TYPE.into(), AMQPValue::LongString(DELIVERED.into()));
    headers.insert(TENANT_ID.into(), AMQPValue::LongString(request.tenant_id.to_string().into()));
    headers.insert(TRACE_ID.into(), AMQPValue::LongString(request.trace_id.into()));
    let properties = BasicProperties::default()
        .with_content_type(CONTENT_TYPE_JSON.into())
        .with_content_encoding(CONTENT_ENCODING_UTF8.into())
        .with_delivery_mode(2)
        .with_headers(headers);
    let confirmation = publisher
        .basic_publish(exchange.into(), DELIVERED.into(), BasicPublishOptions::default(), body.as_bytes(), properties)
        .await?
        .await?;
    if !confirmation.is_ack() {
        bail!("the broker rejected (nack) a delivered event");
    }
    delivery.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}
