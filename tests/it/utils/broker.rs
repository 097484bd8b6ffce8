//! A test's own exchanges and queues on the real broker, with observers for
//! the events and dead letters the service publishes.

use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ExchangeKind};
use serde_json::Value;
use tokio::sync::Mutex;

pub const BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How long a test waits for something the service should do.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A message the service published, as an observer received it.
#[derive(Debug, Clone)]
pub struct Observed {
    pub routing_key: String,
    pub body: Value,
    pub raw: Vec<u8>,
    pub properties: BasicProperties,
}

impl Observed {
    fn from_delivery(delivery: Delivery) -> Observed {
        Observed {
            routing_key: delivery.routing_key.to_string(),
            body: serde_json::from_slice(&delivery.data).unwrap_or(Value::Null),
            raw: delivery.data,
            properties: delivery.properties,
        }
    }

    /// A header's value as text, for string and integer headers alike.
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = self.properties.headers().as_ref()?;
        match headers.inner().get(name)? {
            AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            AMQPValue::LongInt(n) => Some(n.to_string()),
            AMQPValue::LongLongInt(n) => Some(n.to_string()),
            AMQPValue::ShortShortUInt(n) => Some(n.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

/// A unique slice of the broker for one test.
pub struct TestBroker {
    pub id: String,
    pub connection: Connection,
    channel: Channel,
    events: Mutex<Observer>,
    dead_letters: Mutex<Observer>,
    observed_queues: Vec<String>,
}

impl TestBroker {
    pub async fn new() -> TestBroker {
        let id = format!("it-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let connection = Connection::connect(BROKER_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ must run on 127.0.0.1:5672 (see README)");
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();

        let broker_exchanges = [
            (format!("{id}.events"), ExchangeKind::Topic),
            (format!("{id}.notify"), ExchangeKind::Direct),
            (format!("{id}.dlq"), ExchangeKind::Fanout),
        ];
        for (name, kind) in broker_exchanges {
            let options = ExchangeDeclareOptions { durable: true, ..Default::default() };
            channel.exchange_declare(name.as_str().into(), kind, options, FieldTable::default()).await.unwrap();
        }
        let events_queue = format!("{id}.observer.events");
        let dead_letter_queue = format!("{id}.observer.dlq");
        for (queue, exchange, key) in [
            (&events_queue, format!("{id}.events"), "#"),
            (&dead_letter_queue, format!("{id}.dlq"), ""),
        ] {
            let options = QueueDeclareOptions { auto_delete: false, ..Default::default() };
            channel.queue_declare(queue.as_str().into(), options, FieldTable::default()).await.unwrap();
            channel
                .queue_bind(queue.as_str().into(), exchange.as_str().into(), key.into(), QueueBindOptions::default(), FieldTable::default())
                .await
                .unwrap();
        }
        let consume = |queue: String| {
            let channel = channel.clone();
            async move {
                let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
                channel.basic_consume(queue.as_str().into(), "".into(), options, FieldTable::default()).await.unwrap()
            }
        };
        let events = consume(events_queue.clone()).await;
        let dead_letters = consume(dead_letter_queue.clone()).await;
        TestBroker {
            id,
            connection,
            channel,
            events: Mutex::new(Observer::new(events)),
            dead_letters: Mutex::new(Observer::new(dead_letters)),
            observed_queues: vec![events_queue, dead_letter_queue],
        }
    }

    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.id)
    }

    pub fn notify_exchange(&self) -> String {
        format!("{}.notify", self.id)
    }

    pub fn dlq_exchange(&self) -> String {
        format!("{}.dlq", self.id)
    }

    pub fn queue_prefix(&self) -> String {
        format!("{}.", self.id)
    }

    pub fn channel_queue(&self, channel: &str) -> String {
        format!("{}.notify.channel.{channel}", self.id)
    }

    /// Publishes a raw message on the notify exchange and waits for the confirm.
    pub async fn publish(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirmation = self
            .channel
            .basic_publish(self.notify_exchange().as_str().into(), routing_key.into(), options, body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirmation.is_ack(), "broker did not confirm the test message");
        assert!(confirmation.take_message().is_none(), "test message to {routing_key} was unroutable");
    }

    /// Publishes a raw message on the dead letter exchange, as a service
    /// that dead-letters it does, and waits for the confirm.
    pub async fn publish_dead_letter(&self, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let options = BasicPublishOptions { mandatory: true, ..Default::default() };
        let confirmation = self
            .channel
            .basic_publish(self.dlq_exchange().as_str().into(), routing_key.into(), options, body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirmation.is_ack(), "broker did not confirm the test dead letter");
        assert!(confirmation.take_message().is_none(), "test dead letter was unroutable");
    }

    /// Number of ready messages in a queue, or `None` when it does not exist.
    pub async fn message_count(&self, queue: &str) -> Option<u32> {
        // A failed passive declare closes its channel, so use a throwaway one.
        let channel = self.connection.create_channel().await.ok()?;
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let queue = channel.queue_declare(queue.into(), options, FieldTable::default()).await.ok()?;
        let _ = channel.close(200, "".into()).await;
        Some(queue.message_count())
    }

    /// Waits until `queue` contains exactly `expected` ready messages. Messages
    /// that a closed channel returns may take a moment to count as ready.
    pub async fn wait_for_message_count(&self, queue: &str, expected: u32) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let count = self.message_count(queue).await;
            if count == Some(expected) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{queue} holds {count:?} messages after {PATIENCE:?}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `count` events of `event_type`, skipping events of other types.
    pub async fn events_of_type(&self, event_type: &str, count: usize) -> Vec<Observed> {
        let mut observer = self.events.lock().await;
        observer
            .collect(count, |event| event.routing_key == event_type)
            .await
            .unwrap_or_else(|got| panic!("expected {count} {event_type} events within {PATIENCE:?}, got {}", got.len()))
    }

    pub async fn dead_letters(&self, count: usize) -> Vec<Observed> {
        let mut observer = self.dead_letters.lock().await;
        observer
            .collect(count, |_| true)
            .await
            .unwrap_or_else(|got| panic!("expected {count} dead letters within {PATIENCE:?}, got {got:#?}"))
    }

    /// Events that arrive within `window`; for checking that nothing more comes.
    pub async fn events_within(&self, window: Duration) -> Vec<Observed> {
        self.events.lock().await.drain_for(window).await
    }

    pub async fn dead_letters_within(&self, window: Duration) -> Vec<Observed> {
        self.dead_letters.lock().await.drain_for(window).await
    }

    /// Takes one message from a queue the service owns, if there is one.
    pub async fn get_from(&self, queue: &str) -> Option<Observed> {
        let message = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|err| panic!("basic.get on {queue} failed: {err}"))?;
        Some(Observed::from_delivery(message.delivery))
    }

    /// Number of consumers on a queue, or `None` when it does not exist yet.
    pub async fn consumer_count(&self, queue: &str) -> Option<u32> {
        // A failed passive declare closes its channel, so use a throwaway one.
        let channel = self.connection.create_channel().await.ok()?;
        let options = QueueDeclareOptions { passive: true, ..Default::default() };
        let queue = channel.queue_declare(queue.into(), options, FieldTable::default()).await.ok()?;
        let _ = channel.close(200, "".into()).await;
        Some(queue.consumer_count())
    }

    /// Deletes a queue that the service declared beyond its channel queues.
    pub async fn delete_queue(&self, queue: &str) {
        let channel = self.connection.create_channel().await.unwrap();
        let _ = channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await;
        let _ = channel.close(200, "".into()).await;
    }

    /// Deletes everything this test and its service declared, on a new
    /// connection when the test's own did not survive (a broker restart).
    pub async fn cleanup(&self, service_queues: &[String]) {
        let channel = match self.connection.create_channel().await {
            Ok(channel) => channel,
            Err(_) => Connection::connect(BROKER_URL, ConnectionProperties::default())
                .await
                .expect("RabbitMQ must run on 127.0.0.1:5672 (see README)")
                .create_channel()
                .await
                .unwrap(),
        };
        for queue in self.observed_queues.iter().chain(service_queues) {
            let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for exchange in [self.events_exchange(), self.notify_exchange(), self.dlq_exchange()] {
            let _ = channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
    }
}

/// A consumer plus the messages it received that no caller took yet, so a
/// wait for one event type does not lose events of another.
struct Observer {
    consumer: Consumer,
    pending: Vec<Observed>,
}

impl Observer {
    fn new(consumer: Consumer) -> Observer {
        Observer { consumer, pending: Vec::new() }
    }

    async fn collect(&mut self, count: usize, wanted: impl Fn(&Observed) -> bool) -> Result<Vec<Observed>, Vec<Observed>> {
        let mut got = Vec::new();
        let mut kept = Vec::new();
        for observed in self.pending.drain(..) {
            if got.len() < count && wanted(&observed) {
                got.push(observed);
            } else {
                kept.push(observed);
            }
        }
        self.pending = kept;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while got.len() < count {
            match tokio::time::timeout_at(deadline, self.consumer.next()).await {
                Ok(Some(Ok(delivery))) => {
                    let observed = Observed::from_delivery(delivery);
                    if wanted(&observed) {
                        got.push(observed);
                    } else {
                        self.pending.push(observed);
                    }
                }
                Ok(Some(Err(err))) => panic!("observer consumer failed: {err}"),
                Ok(None) => panic!("observer consumer was cancelled"),
                Err(_) => return Err(got),
            }
        }
        Ok(got)
    }

    /// Everything pending plus what arrives within `window`.
    async fn drain_for(&mut self, window: Duration) -> Vec<Observed> {
        let mut got: Vec<Observed> = self.pending.drain(..).collect();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(deadline, self.consumer.next()).await {
            got.push(Observed::from_delivery(delivery));
        }
        got
    }
}

/// Runs `rabbitmqctl` with `args` and returns its output, failing the test
/// with the tool's own message when it fails.
pub fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed beside the broker (see README)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rabbitmqctl {} failed: {}{}",
        args.join(" "),
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}
