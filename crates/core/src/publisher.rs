//! Publishing with publisher confirms: a publish succeeds only when the
//! broker confirmed it and, for mandatory publishes, routed it to a queue.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde::Serialize;

use crate::envelope::Envelope;
use crate::flow_control::FlowControl;
use crate::headers::outgoing_properties;

/// A publish the broker did not take responsibility for.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error while publishing to {exchange:?} with routing key {routing_key:?}: {source}")]
    Broker {
        exchange: String,
        routing_key: String,
        #[source]
        source: lapin::Error,
    },
    #[error("broker returned the message published to {exchange:?} with routing key {routing_key:?}: {reply}")]
    Returned { exchange: String, routing_key: String, reply: String },
    #[error("broker rejected (nack) the message published to {exchange:?} with routing key {routing_key:?}")]
    Nacked { exchange: String, routing_key: String },
    #[error("no publisher confirm within {0:?} for a message to {1:?}")]
    ConfirmTimedOut(Duration, String),
    #[error("cannot serialize event: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// A confirm-mode channel on the publishing connection.
///
/// Publishing uses a connection of its own so that, when the broker blocks
/// publishers under a memory or disk alarm, acks on the consuming connection
/// keep flowing.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
    flow: FlowControl,
}

impl Publisher {
    /// Opens a channel in confirm mode.
    ///
    /// Open one publisher per connection and clone it: each one follows the
    /// connection's flow notices, and the client hands every notice to one
    /// follower only.
    ///
    /// # Errors
    ///
    /// Returns the broker's error.
    pub async fn open(connection: &Connection, confirm_timeout: Duration) -> Result<Publisher, lapin::Error> {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Publisher { channel, confirm_timeout, flow: FlowControl::follow(connection) })
    }

    /// Publishes and waits for the broker's confirm.
    ///
    /// With `mandatory`, a message that no queue receives counts as failed:
    /// the broker returns it and then still acks it.
    ///
    /// While the broker blocks the connection (flow control), the publish
    /// waits: the confirm timeout counts only time without a block.
    ///
    /// # Errors
    ///
    /// Returns [`PublishError`] when the broker did not confirm, returned the
    /// message, or did not answer within the confirm timeout.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let broker_error = |source| PublishError::Broker { exchange: exchange.to_owned(), routing_key: routing_key.to_owned(), source };
        let options = BasicPublishOptions { mandatory, ..BasicPublishOptions::default() };
        let confirmation = async {
            let confirm = self
                .channel
                .basic_publish(exchange.into(), routing_key.into(), options, body, properties)
                .await?;
            confirm.await
        };
        let confirmation = self.await_unless_blocked(confirmation).await;
        let confirmation = confirmation
            .ok_or_else(|| PublishError::ConfirmTimedOut(self.confirm_timeout, exchange.to_owned()))?
            .map_err(broker_error)?;
        match confirmation {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => Err(PublishError::Returned {
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                reply: format!("{} {}", returned.reply_code, returned.reply_text),
            }),
            Confirmation::Nack(None) => {
                Err(PublishError::Nacked { exchange: exchange.to_owned(), routing_key: routing_key.to_owned() })
            }
        }
    }

    /// Runs `publish` to its end, or gives up after the confirm timeout.
    /// When the broker blocked the connection during that time, it waits for
    /// the block to lift and starts the timeout again.
    async fn await_unless_blocked<F: std::future::Future>(&self, publish: F) -> Option<F::Output> {
        self.flow.unblocked_now().await;
        let mut publish = std::pin::pin!(publish);
        loop {
            let before = self.flow.state();
            if let Ok(output) = tokio::time::timeout(self.confirm_timeout, publish.as_mut()).await {
                return Some(output);
            }
            let after = self.flow.state();
            if !after.blocked && after.blocks == before.blocks {
                return None;
            }
            self.flow.unblocked_now().await;
        }
    }

    /// Returns the flow state of this publisher's connection, to follow it.
    pub fn flow(&self) -> FlowControl {
        self.flow.clone()
    }

    /// Publishes an event envelope on `exchange` under its event type.
    ///
    /// Not mandatory: an event nobody subscribes to is not an error.
    ///
    /// # Errors
    ///
    /// See [`Publisher::publish`].
    pub async fn publish_event<T: Serialize>(&self, exchange: &str, event: &Envelope<T>) -> Result<(), PublishError> {
        // Outcome events take a few hundred bytes, so one allocation of this
        // size usually contains the whole body without growing.
        let mut body = Vec::with_capacity(1024);
        serde_json::to_writer(&mut body, event)?;
        let properties = outgoing_properties(
            &event.event_type,
            &event.tenant_id.to_string(),
            &event.trace_id,
            &event.event_id.to_string(),
        )
        .with_timestamp(u64::try_from(event.event_time.timestamp()).unwrap_or(0))
        .with_app_id(event.producer.as_str().into());
        self.publish(exchange, &event.event_type, false, &body, properties).await
    }
}
