//! Reading the dead letter queue one message at a time, unacknowledged, so
//! that nothing leaves the queue unless the caller acks it.

use anyhow::Context;
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

/// A channel that takes messages from one queue with `basic.get` and manual
/// acknowledgement.
///
/// Every message taken and not acked stays reserved for this channel, so the
/// next `basic.get` returns the message behind it. Closing the channel
/// returns the unacked messages to the queue.
///
/// NOTE: AMQP does not promise where a returned message goes in the queue,
/// so callers must treat the order after a read as approximate.
pub(super) struct DeadLetterReader {
    channel: Channel,
    queue: String,
    count: u32,
    taken: u32,
}

impl DeadLetterReader {
    /// Opens a channel and counts the messages ready in `queue`.
    ///
    /// # Errors
    ///
    /// Fails when the queue does not exist.
    pub(super) async fn open(connection: &Connection, queue: &str) -> anyhow::Result<DeadLetterReader> {
        let channel = connection.create_channel().await.context("cannot open a broker channel")?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await.with_context(|| {
            format!(
                "dead letter queue {queue} not found; check broker.queue_prefix and broker.dead_letter_queue, \
                 or create it with `flatrender-notify topology declare`"
            )
        })?;
        Ok(DeadLetterReader { channel, queue: queue.to_owned(), count: declared.message_count(), taken: 0 })
    }

    /// Messages ready in the queue when it was opened.
    pub(super) fn count(&self) -> u32 {
        self.count
    }

    /// Takes the next message without acking it.
    ///
    /// Returns `None` once as many messages were taken as the queue held at
    /// open. Messages dead-lettered since then, such as a replayed message
    /// that failed again at once, are therefore not read in the same run.
    ///
    /// # Errors
    ///
    /// Returns the broker's error.
    pub(super) async fn next(&mut self) -> anyhow::Result<Option<Delivery>> {
        if self.taken >= self.count {
            return Ok(None);
        }
        let message = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .with_context(|| format!("cannot read from {}", self.queue))?;
        self.taken += 1;
        Ok(message.map(|message| message.delivery))
    }

    /// Closes the channel, which returns every unacked message to the queue.
    /// A failed close is only logged: the broker returns the messages when
    /// the connection closes too.
    pub(super) async fn close(self) {
        if let Err(err) = self.channel.close(200, "done".into()).await {
            tracing::warn!(
                error = %err,
                queue = %self.queue,
                "closing the dead letter channel failed; the broker returns its unacked messages when the connection closes"
            );
        }
    }
}
