//! The fan-out stage of flatrender-notify: consumes domain events from the
//! events exchange and publishes one `notification.created.v1` dispatch
//! message per matching rule, channel and recipient address to the notify
//! exchange, where the dispatcher delivers it.
//!
//! - [`rules`] reads the routing rules (`config/routes.toml`);
//! - [`store`] keeps contacts and preferences in SQLite or PostgreSQL,
//!   current from identity events and the [`api`];
//! - [`fanout`] handles one event;
//! - [`Stage`] connects to the broker, consumes, and reconnects with backoff.

pub mod api;
pub mod error;
pub mod fanout;
pub mod quiet;
pub mod rules;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use notify_core::config::{redact_url, BrokerConfig, Config, FanoutConfig};
use notify_core::connection::SessionConnections;
use notify_core::publisher::Publisher;
use notify_core::topology::Topology;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub use error::{RoutesError, StartError, StoreError};
pub use fanout::{BrokerNames, Fanout, Settlement};
pub use rules::Routes;
pub use store::ContactStore;

/// Unacknowledged domain events the broker may push to the stage at once.
const PREFETCH: u16 = 32;

/// Parts of the service configuration the stage uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub broker: BrokerConfig,
    pub fanout: FanoutConfig,
    pub producer: String,
}

impl Settings {
    pub fn from_config<C>(config: &Config<C>) -> Settings {
        Settings { broker: config.broker.clone(), fanout: config.fanout.clone(), producer: config.service.producer.clone() }
    }
}

/// The fan-out stage, with its rules loaded, its database migrated and its
/// API listener bound.
pub struct Stage {
    fanout: Arc<Fanout>,
    broker: BrokerConfig,
    queue: String,
    api: Option<tokio::net::TcpListener>,
    /// `fanout.api_token`, unless empty.
    api_token: Option<Arc<str>>,
}

impl Stage {
    /// Loads the rules, opens the contacts database and binds the API.
    ///
    /// # Errors
    ///
    /// Returns [`StartError`] for invalid rules, an unreachable database or
    /// an API address that cannot be bound; the broker is not contacted yet.
    pub async fn open(settings: Settings) -> Result<Stage, StartError> {
        let routes = Routes::load(&settings.fanout.routes_file)?;
        if settings.fanout.queue.is_empty() || settings.fanout.queue.len() > 200 {
            return Err(StartError::InvalidQueue);
        }
        let api = if settings.fanout.api_listen.is_empty() {
            None
        } else {
            let address: SocketAddr = settings
                .fanout
                .api_listen
                .parse()
                .map_err(|_| StartError::InvalidListen { address: settings.fanout.api_listen.clone() })?;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind { address: address.to_string(), source })?;
            info!(address = %address, token = !settings.fanout.api_token.is_empty(), "contacts API listening");
            if settings.fanout.api_token.is_empty() && !address.ip().is_loopback() {
                warn!(
                    address = %address,
                    "the contacts API listens beyond this host without fanout.api_token; anyone who reaches it can read and change contacts"
                );
            }
            Some(listener)
        };
        let api_token = (!settings.fanout.api_token.is_empty()).then(|| Arc::from(settings.fanout.api_token.as_str()));
        let store = ContactStore::connect(&settings.fanout.database_url).await?;
        match store.prune_push_records().await {
            Ok(pruned) if pruned > 0 => info!(pruned, "forgot old push notification records"),
            Ok(_) => {}
            Err(err) => warn!(error = %err, "cannot prune old push notification records"),
        }
        let names = BrokerNames {
            events_exchange: settings.broker.exchanges.events.clone(),
            notify_exchange: settings.broker.exchanges.notify.clone(),
            dlq_exchange: settings.broker.exchanges.dlq.clone(),
            queue_prefix: settings.broker.queue_prefix.clone(),
        };
        info!(rules = routes.rules().len(), keys = ?routes.binding_keys(), "fan-out rules loaded");
        Ok(Stage {
            fanout: Arc::new(Fanout::new(routes, store, names, settings.producer)),
            queue: format!("{}{}", settings.broker.queue_prefix, settings.fanout.queue),
            broker: settings.broker,
            api,
            api_token,
        })
    }

    /// The address the contacts API listens on, if enabled.
    pub fn api_address(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The durable queue the stage consumes, with the broker's queue prefix.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn store(&self) -> &ContactStore {
        self.fanout.store()
    }

    /// Serves the API and consumes domain events until `shutdown` is
    /// cancelled, reconnecting to the broker with capped exponential backoff.
    /// Errors are logged, never returned.
    pub async fn run(mut self, shutdown: CancellationToken) {
        if let Some(listener) = self.api.take() {
            let store = self.fanout.store().clone();
            let token = self.api_token.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                if let Err(err) = api::serve(listener, store, token, stop).await {
                    error!(error = %err, "fan-out contacts API stopped");
                }
            });
        }
        let initial = Duration::from_millis(self.broker.reconnect_initial_ms.max(1));
        let max = Duration::from_millis(self.broker.reconnect_max_ms).max(initial);
        let mut backoff = initial;
        loop {
            let result = self.session(&shutdown).await;
            if shutdown.is_cancelled() {
                info!("fan-out stage stopped");
                return;
            }
            match result {
                Ok(err) => {
                    backoff = initial;
                    warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "fan-out broker session lost; reconnecting");
                }
                Err(err) => {
                    warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "fan-out broker session could not start; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    info!("fan-out stage stopped");
                    return;
                }
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }

    /// One broker session; returns the error that ended an established
    /// session, or `Err` when it could not start.
    async fn session(&self, shutdown: &CancellationToken) -> Result<SessionEnd, SessionEnd> {
        let opening = SessionConnections::open(
            ["fan-out consume", "fan-out publish"],
            self.connect("fan-out consume"),
            self.connect("fan-out publish"),
        );
        let connections = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Stopped),
            connections = opening => connections?,
        };
        let result = self.consume(&connections, shutdown).await;
        // A session that ran has closed its connections already. This ends
        // them after an early error, a shutdown or a set-up timeout.
        connections.end(matches!(result, Err(SessionEnd::SetupTimedOut(_)))).await;
        result
    }

    async fn consume(&self, connections: &SessionConnections, shutdown: &CancellationToken) -> Result<SessionEnd, SessionEnd> {
        let SessionConnections { consuming, publishing, .. } = connections;
        // A lapin call can wait forever when its connection fails during
        // set-up, so set-up has the connect timeout as its deadline.
        let timeout = self.connect_timeout();
        let setup = tokio::time::timeout(timeout, self.subscribe(consuming, publishing));
        let mut subscription = tokio::select! {
            () = shutdown.cancelled() => return Ok(SessionEnd::Stopped),
            subscribed = setup => match subscribed {
                Ok(subscription) => subscription?,
                Err(_) => return Err(SessionEnd::SetupTimedOut(timeout)),
            },
        };
        info!(queue = %self.queue, "fan-out stage consuming");
        let result = self.handle_events(&mut subscription, shutdown).await;
        // Closing the connections while the session's channels are still
        // open lets lapin close them together. Dropped first, a channel's own
        // close races the connection's, and lapin logs the loser as an error.
        connections.close().await;
        drop(subscription);
        result
    }

    /// Handles events one at a time, in queue order, until shutdown or
    /// until the session fails.
    async fn handle_events(&self, subscription: &mut Subscription, shutdown: &CancellationToken) -> Result<SessionEnd, SessionEnd> {
        let Subscription { publisher, setup, consumer, .. } = subscription;
        loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => return Ok(SessionEnd::Stopped),
                next = consumer.next() => next,
            };
            let delivery = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => return Ok(SessionEnd::Broker(err)),
                None => return Ok(SessionEnd::Cancelled),
            };
            match self.fanout.handle(&delivery, publisher, setup).await {
                Ok(Settlement::Ack) => {
                    delivery.ack(BasicAckOptions::default()).await.map_err(SessionEnd::Broker)?;
                }
                Ok(Settlement::Requeue) => {
                    // NOTE: a store outage requeues the event after this
                    // pause, so the stage retries about once a second.
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    let options = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                    delivery.nack(options).await.map_err(SessionEnd::Broker)?;
                }
                Err(err) => {
                    let options = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                    let _ = delivery.nack(options).await;
                    return Ok(SessionEnd::Publish(err));
                }
            }
        }
    }

    /// Declares the topology and the stage's queue with its bindings, opens
    /// the publisher and starts consuming.
    async fn subscribe(&self, consuming: &Connection, publishing: &Connection) -> Result<Subscription, SessionEnd> {
        let setup = publishing.create_channel().await.map_err(SessionEnd::Broker)?;
        // Exchanges and the dead letter queue, shared with the dispatcher.
        Topology::new(&self.broker, Vec::new(), &[]).declare(&setup).await.map_err(SessionEnd::Broker)?;
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        setup
            .queue_declare(self.queue.as_str().into(), options, FieldTable::default())
            .await
            .map_err(SessionEnd::Broker)?;
        // NOTE: keys of rules removed from the file stay bound until someone
        // unbinds them; their events are acked and ignored.
        for key in self.fanout.routes().binding_keys() {
            setup
                .queue_bind(
                    self.queue.as_str().into(),
                    self.broker.exchanges.events.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(SessionEnd::Broker)?;
        }
        let publisher = Publisher::open(publishing, Duration::from_secs(self.broker.confirm_timeout_secs.max(1)))
            .await
            .map_err(SessionEnd::Broker)?;

        let channel = consuming.create_channel().await.map_err(SessionEnd::Broker)?;
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.map_err(SessionEnd::Broker)?;
        let tag = format!("flatrender-notify.fanout.{}", uuid::Uuid::new_v4());
        let consumer = channel
            .basic_consume(self.queue.as_str().into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(SessionEnd::Broker)?;
        Ok(Subscription { publisher, setup, _channel: channel, consumer })
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.broker.connect_timeout_secs.max(1))
    }

    async fn connect(&self, role: &str) -> Result<Connection, SessionEnd> {
        let name = format!("flatrender-notify {role} (pid {})", std::process::id());
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let timeout = self.connect_timeout();
        match tokio::time::timeout(timeout, Connection::connect(&self.broker.url, properties)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(err)) => Err(SessionEnd::Connect(redact_url(&self.broker.url), err)),
            Err(_) => Err(SessionEnd::ConnectTimedOut(redact_url(&self.broker.url), timeout)),
        }
    }
}

/// The channels and consumer of a started session.
struct Subscription {
    publisher: Publisher,
    /// Channel for declarations while events are handled.
    setup: lapin::Channel,
    /// The consumer's channel, kept for the whole session.
    _channel: lapin::Channel,
    consumer: lapin::Consumer,
}

/// Reason a broker session ended or could not start.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("shutdown requested")]
    Stopped,
    #[error("the broker cancelled the fan-out consumer")]
    Cancelled,
    #[error("cannot connect to the broker at {0}: {1}")]
    Connect(String, #[source] lapin::Error),
    #[error("no connection to the broker at {0} within {1:?}")]
    ConnectTimedOut(String, Duration),
    #[error("setting up the fan-out broker session timed out after {0:?}: no reply to opening channels, declaring queues or starting the consumer; check the broker with `rabbitmqctl status`")]
    SetupTimedOut(Duration),
    #[error("broker error: {0}")]
    Broker(#[source] lapin::Error),
    #[error("publishing failed: {0}")]
    Publish(#[source] notify_core::publisher::PublishError),
}
