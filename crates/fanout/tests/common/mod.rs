//! Test support: the fan-out stage in this process against the real
//! RabbitMQ on 127.0.0.1:5672, with its own exchanges and queues under a
//! unique prefix, the notify queues a dispatcher would declare, and an
//! observer of the events the stage publishes.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use notify_core::config::{BrokerConfig, ExchangeNames, FanoutConfig};
use notify_fanout::{ContactStore, Settings, Stage};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const BROKER_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Database the PostgreSQL tests create their own databases from.
pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long a test waits for something the stage should do.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub const CHANNELS: [&str; 5] = ["email", "sms", "telegram", "push", "webhook"];

/// A message received from a queue.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub routing_key: String,
    pub body: Value,
    pub properties: BasicProperties,
}

impl ReceivedMessage {
    pub fn header(&self, name: &str) -> Option<String> {
        let headers = self.properties.headers().as_ref()?;
        notify_core::headers::string_value(headers.inner().get(name)?)
    }
}

/// The running stage and its slice of the broker.
pub struct Harness {
    pub id: String,
    pub connection: Connection,
    channel: Channel,
    pub store: ContactStore,
    pub api: SocketAddr,
    pub stage_queue: String,
    shutdown: CancellationToken,
    stage: Option<tokio::task::JoinHandle<()>>,
    database: PathBuf,
    queues: Vec<String>,
    observed: Mutex<Vec<ReceivedMessage>>,
    pub tenant_id: Uuid,
}

impl Harness {
    /// Starts the stage with the shipped rules and a fresh SQLite database,
    /// and waits until it consumes.
    pub async fn start() -> Harness {
        Harness::start_with_routes(None).await
    }

    /// Starts the stage with the rules in `routes` in place of the shipped ones.
    pub async fn start_with_routes(routes: Option<&str>) -> Harness {
        Harness::start_with(routes, "").await
    }

    /// Starts the stage with the shipped rules and a contacts API that
    /// requires `api_token`.
    pub async fn start_with_api_token(api_token: &str) -> Harness {
        Harness::start_with(None, api_token).await
    }

    async fn start_with(routes: Option<&str>, api_token: &str) -> Harness {
        let id = format!("fanout-it-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let routes_file = match routes {
            Some(text) => {
                let path = std::env::temp_dir().join(format!("{id}-routes.toml"));
                std::fs::write(&path, text).unwrap();
                path
            }
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/routes.toml"),
        };
        let connection = Connection::connect(BROKER_URL, ConnectionProperties::default())
            .await
            .expect("RabbitMQ must run on 127.0.0.1:5672");
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();

        let broker = BrokerConfig {
            url: BROKER_URL.to_owned(),
            queue_prefix: format!("{id}."),
            exchanges: ExchangeNames { events: format!("{id}.events"), notify: format!("{id}.notify"), dlq: format!("{id}.dlq") },
            reconnect_initial_ms: 100,
            reconnect_max_ms: 1000,
            confirm_timeout_secs: 5,
            ..BrokerConfig::default()
        };
        let database = std::env::temp_dir().join(format!("{id}.db"));
        let fanout = FanoutConfig {
            enabled: true,
            routes_file,
            queue: "notify.fanout.events".to_owned(),
            database_url: format!("sqlite://{}?mode=rwc", database.display()),
            api_listen: "127.0.0.1:0".to_owned(),
            api_token: api_token.to_owned(),
        };
        let settings = Settings { broker, fanout, producer: "notification-service".to_owned() };
        let stage = Stage::open(settings).await.expect("the stage must open");
        let store = stage.store().clone();
        let api = stage.api_address().expect("the API listens");
        let stage_queue = stage.queue().to_owned();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(stage.run(shutdown.clone()));

        let mut harness = Harness {
            id: id.clone(),
            connection,
            channel,
            store,
            api,
            stage_queue: stage_queue.clone(),
            shutdown,
            stage: Some(handle),
            database,
            queues: vec![stage_queue.clone(), format!("{id}.flatrender.dlq")],
            observed: Mutex::new(Vec::new()),
            tenant_id: Uuid::new_v4(),
        };
        harness.wait_consuming(&stage_queue).await;
        // The stage declared the exchanges; add what a dispatcher and an
        // events consumer would.
        for channel_name in CHANNELS {
            let queue = harness.channel_queue(channel_name);
            harness.declare_bound(&queue, &format!("{id}.notify"), &format!("notify.channel.{channel_name}")).await;
        }
        harness.declare_bound(&harness.observer_queue(), &format!("{id}.events"), "notification.#").await;
        harness
    }

    pub fn channel_queue(&self, channel: &str) -> String {
        format!("{}.notify.channel.{channel}", self.id)
    }

    pub fn observer_queue(&self) -> String {
        format!("{}.observer.events", self.id)
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.flatrender.dlq", self.id)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    async fn declare_bound(&mut self, queue: &str, exchange: &str, key: &str) {
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        self.channel.queue_declare(queue.into(), options, FieldTable::default()).await.unwrap();
        self.channel
            .queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .unwrap();
        self.queues.push(queue.to_owned());
    }

    async fn wait_consuming(&self, queue: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some((_, consumers)) = self.queue_counts(queue).await {
                if consumers >= 1 {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "the stage does not consume {queue}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ready messages and consumers of a queue, or `None` when it does not exist.
    pub async fn queue_counts(&self, queue: &str) -> Option<(u32, u32)> {
        let channel = self.connection.create_channel().await.ok()?;
        let options = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let declared = channel.queue_declare(queue.into(), options, FieldTable::default()).await.ok()?;
        let _ = channel.close(200, "".into()).await;
        Some((declared.message_count(), declared.consumer_count()))
    }

    /// Builds a domain event envelope of `event_type` for `user_id` in the test's tenant.
    pub fn event(&self, event_type: &str, user_id: Option<Uuid>, data: Value) -> Value {
        let mut event = json!({
            "event_id": Uuid::new_v4(),
            "event_type": event_type,
            "event_time": Utc::now().to_rfc3339(),
            "tenant_id": self.tenant_id,
            "trace_id": Uuid::new_v4().to_string(),
            "correlation_id": Uuid::new_v4(),
            "producer": "identity-service",
            "data": data,
        });
        if let Some(user_id) = user_id {
            event["user_id"] = json!(user_id);
        }
        event
    }

    /// Publishes an envelope on the events exchange with the contract's headers.
    pub async fn publish_event(&self, event: &Value) {
        let event_type = event["event_type"].as_str().unwrap();
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from("x-event-type"), long_string(event_type));
        headers.insert(ShortString::from("x-tenant-id"), long_string(event["tenant_id"].as_str().unwrap()));
        headers.insert(ShortString::from("x-trace-id"), long_string(event["trace_id"].as_str().unwrap()));
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_headers(headers);
        self.publish_raw(&format!("{}.events", self.id), event_type, &serde_json::to_vec(event).unwrap(), properties).await;
    }

    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8], properties: BasicProperties) {
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirmation = self
            .channel
            .basic_publish(exchange.into(), routing_key.into(), options, body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirmation.is_ack(), "broker did not confirm the test message");
        assert!(confirmation.take_message().is_none(), "test message {routing_key} was unroutable");
    }

    /// Takes every message now ready in a queue.
    pub async fn take_all(&self, queue: &str) -> Vec<ReceivedMessage> {
        let mut received = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|err| panic!("basic.get on {queue} failed: {err}"))
        {
            let delivery = message.delivery;
            received.push(ReceivedMessage {
                routing_key: delivery.routing_key.to_string(),
                body: serde_json::from_slice(&delivery.data).unwrap_or(Value::Null),
                properties: delivery.properties,
            });
        }
        received
    }

    /// Waits until `queue` contains `count` messages, then takes them all.
    pub async fn wait_for(&self, queue: &str, count: u32) -> Vec<ReceivedMessage> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let ready = self.queue_counts(queue).await.map_or(0, |(ready, _)| ready);
            if ready >= count {
                return self.take_all(queue).await;
            }
            assert!(tokio::time::Instant::now() < deadline, "{queue} holds {ready} messages after {PATIENCE:?}, expected {count}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for an event on the observer queue that `wanted` accepts,
    /// keeping the others for later calls.
    pub async fn wait_event(&self, wanted: impl Fn(&ReceivedMessage) -> bool) -> ReceivedMessage {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let mut observed = self.observed.lock().await;
            observed.extend(self.take_all(&self.observer_queue()).await);
            if let Some(index) = observed.iter().position(&wanted) {
                return observed.remove(index);
            }
            drop(observed);
            assert!(tokio::time::Instant::now() < deadline, "the expected event did not arrive within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes every event observed so far.
    pub async fn observed_events(&self) -> Vec<ReceivedMessage> {
        let mut observed = self.observed.lock().await;
        observed.extend(self.take_all(&self.observer_queue()).await);
        observed.drain(..).collect()
    }

    /// Waits until the stage has handled every event published before:
    /// publishes an event for an unknown user and waits for its
    /// `no_recipient` failures, which the stage's in-order handling
    /// publishes only after everything queued before it.
    pub async fn barrier(&self) {
        // In a tenant of its own, which no test suspends.
        let mut event = self.event("render.job.completed.v1", Some(Uuid::new_v4()), json!({}));
        event["tenant_id"] = json!(Uuid::new_v4());
        let event_id = event["event_id"].clone();
        self.publish_event(&event).await;
        // One failure for each user channel of the shipped rule: email and push.
        for _ in 0..2 {
            self.wait_event(|received| received.body["data"]["source_event_id"] == event_id).await;
        }
    }

    /// Adds a queue the stage declared to those [`Harness::cleanup`] deletes.
    pub fn track_queue(&mut self, queue: &str) {
        self.queues.push(queue.to_owned());
    }

    /// Stops the stage and deletes everything the test declared.
    pub async fn cleanup(mut self) {
        self.shutdown.cancel();
        if let Some(stage) = self.stage.take() {
            let _ = tokio::time::timeout(PATIENCE, stage).await;
        }
        self.store.close().await;
        let channel = self.connection.create_channel().await.unwrap();
        for queue in &self.queues {
            let _ = channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await;
        }
        for exchange in ["events", "notify", "dlq"] {
            let name = format!("{}.{exchange}", self.id);
            let _ = channel.exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default()).await;
        }
        let _ = self.connection.close(200, "test done".into()).await;
        let _ = std::fs::remove_file(&self.database);
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{}-routes.toml", self.id)));
    }
}

pub fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// A database URL of each backend for store tests, plus how to remove it.
pub enum TestDatabase {
    Sqlite(PathBuf),
    Postgres { name: String },
}

impl TestDatabase {
    pub fn sqlite() -> TestDatabase {
        TestDatabase::Sqlite(std::env::temp_dir().join(format!("fanout-store-{}.db", Uuid::new_v4().simple())))
    }

    /// Creates a database of its own on the local PostgreSQL server.
    pub async fn postgres() -> TestDatabase {
        let name = format!("fanout_store_{}", Uuid::new_v4().simple());
        sqlx::any::install_default_drivers();
        let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(POSTGRES_ADMIN_URL)
            .await
            .expect("PostgreSQL must run on 127.0.0.1:5432 with trust authentication");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
        let _ = sqlx::Connection::close(admin).await;
        TestDatabase::Postgres { name }
    }

    pub fn url(&self) -> String {
        match self {
            TestDatabase::Sqlite(path) => format!("sqlite://{}?mode=rwc", path.display()),
            TestDatabase::Postgres { name } => format!("postgres://postgres@127.0.0.1:5432/{name}"),
        }
    }

    pub async fn remove(self) {
        match self {
            TestDatabase::Sqlite(path) => {
                let _ = std::fs::remove_file(path);
            }
            TestDatabase::Postgres { name } => {
                let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(POSTGRES_ADMIN_URL).await.unwrap();
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
                let _ = sqlx::Connection::close(admin).await;
            }
        }
    }
}
