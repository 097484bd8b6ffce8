//! The long-running service: connects to the broker, declares the topology,
//! runs one consumer per channel, and starts over with capped exponential
//! backoff whenever the broker session is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::channel::ChannelRegistry;
use crate::config::{redact_url, Config};
use crate::connection::SessionConnections;
use crate::dispatcher::{ConsumerError, Dispatcher, DispatcherSettings};
use crate::admin::{self, AdminState};
use crate::config::IdempotencyBackend;
use crate::idempotency::{IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore, StoreError};
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::retry::RetryPolicy;
use crate::templates::TemplateHandle;
use crate::topology::Topology;

/// Cause of a broker session ending or failing to start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot connect to the broker at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("no connection to the broker at {url} within {timeout:?}")]
    ConnectTimedOut { url: String, timeout: Duration },
    #[error("setting up the broker session timed out after {timeout:?}: no reply to opening channels, declaring the topology or starting consumers; check the broker with `rabbitmqctl status`")]
    SetupTimedOut { timeout: Duration },
    #[error("cannot declare the topology: {0}")]
    Topology(#[source] lapin::Error),
    #[error("cannot open a channel: {0}")]
    Channel(#[source] lapin::Error),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

/// Configuration that stops the service from starting.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("no channel is enabled; enable at least one under [channels]")]
    NoChannels,
    #[error(transparent)]
    Retry(#[from] crate::retry::RetryConfigError),
    #[error("idempotency.redis_url: {0}")]
    Idempotency(#[from] StoreError),
    #[error(transparent)]
    RateLimit(#[from] crate::rate_limit::RateLimitError),
}

fn idempotency_store(config: &crate::config::IdempotencyConfig) -> Result<Arc<dyn IdempotencyStore>, ServiceError> {
    let ttl = Duration::from_secs(config.ttl_secs);
    Ok(match config.backend {
        IdempotencyBackend::Memory => {
            let lease = Duration::from_secs(config.claim_lease_secs);
            Arc::new(MemoryIdempotencyStore::new(config.max_entries, ttl).with_claim_lease(lease))
        }
        IdempotencyBackend::Redis => {
            let lease = Duration::from_secs(config.claim_lease_secs);
            Arc::new(RedisIdempotencyStore::new(&config.redis_url, &config.key_prefix, lease, ttl)?)
        }
    })
}

/// The service, ready to run.
pub struct Service {
    dispatcher: Arc<Dispatcher>,
    url: String,
    connect_timeout: Duration,
    confirm_timeout: Duration,
    reconnect_initial: Duration,
    reconnect_max: Duration,
    prefetch: u16,
    concurrency: usize,
    shutdown_timeout: Duration,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    admin_address: Option<std::net::SocketAddr>,
    templates: Arc<TemplateHandle>,
    /// Tells this instance's connections apart in the broker's connection list.
    connection_label: String,
}

impl Service {
    /// Assembles the service from its configuration, plugins and templates.
    ///
    /// # Errors
    ///
    /// Returns [`ServiceError`] when no channel is registered or the retry
    /// settings are invalid.
    pub fn new<C>(config: &Config<C>, registry: ChannelRegistry, templates: Arc<TemplateHandle>) -> Result<Service, ServiceError> {
        let channels = registry.kinds();
        if channels.is_empty() {
            return Err(ServiceError::NoChannels);
        }
        let retry = RetryPolicy::from_config(&config.retry)?;
        config.rate_limits.validate()?;
        let topology = Topology::new(&config.broker, channels, retry.tiers());
        let idempotency = idempotency_store(&config.idempotency)?;
        let settings = DispatcherSettings {
            producer: config.service.producer.clone(),
            default_max_retries: config.retry.default_max_retries,
            max_message_bytes: config.dispatcher.max_message_bytes,
            breaker_failure_threshold: config.dispatcher.breaker_failure_threshold,
            breaker_cooldown: Duration::from_millis(config.dispatcher.breaker_cooldown_ms),
            claim_lease: Duration::from_secs(config.idempotency.claim_lease_secs),
            rate_limits: config.rate_limits.clone(),
        };
        let metrics = Arc::new(Metrics::new());
        let dispatcher = Dispatcher::new(registry, Arc::clone(&templates), topology, retry, idempotency, Arc::clone(&metrics), settings);
        Ok(Service {
            dispatcher: Arc::new(dispatcher),
            url: config.broker.url.clone(),
            connect_timeout: config.connect_timeout(),
            confirm_timeout: config.confirm_timeout(),
            reconnect_initial: Duration::from_millis(config.broker.reconnect_initial_ms),
            reconnect_max: Duration::from_millis(config.broker.reconnect_max_ms),
            prefetch: config.dispatcher.prefetch,
            concurrency: config.dispatcher.concurrency,
            shutdown_timeout: Duration::from_secs(config.service.shutdown_timeout_secs),
            ready: Arc::new(AtomicBool::new(false)),
            metrics,
            admin_address: config.admin.address(),
            templates,
            connection_label: connection_label(&config.broker.queue_prefix),
        })
    }

    /// True while connected and consuming every channel queue.
    pub fn readiness(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ready)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown` is cancelled, reconnecting as often as needed.
    ///
    /// # Errors
    ///
    /// Returns the error of binding the admin listener's address.
    pub async fn run(&self, shutdown: CancellationToken) -> std::io::Result<()> {
        if let Some(address) = self.admin_address {
            let state = AdminState { ready: self.readiness(), metrics: self.metrics() };
            admin::serve(address, state, shutdown.clone()).await?;
        }
        self.watch_templates(&shutdown);
        let mut backoff = self.reconnect_initial;
        loop {
            let result = self.session(&shutdown).await;
            self.set_ready(false);
            if shutdown.is_cancelled() {
                info!("service stopped");
                return Ok(());
            }
            match result {
                Ok(Session::Established(err)) => {
                    backoff = self.reconnect_initial;
                    self.metrics.reconnected();
                    warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "broker session lost; reconnecting");
                }
                Ok(Session::Stopped) => return Ok(()),
                Err(err) => {
                    warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "broker session could not start; retrying");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.reconnect_max);
        }
    }

    /// Runs one broker session: connect, declare, consume until something
    /// ends it, then close both connections, or retire them after a set-up
    /// timeout.
    async fn session(&self, shutdown: &CancellationToken) -> Result<Session, SessionError> {
        let opening = SessionConnections::open(["consume", "publish"], self.connect("consume"), self.connect("publish"));
        let connections = tokio::select! {
            () = shutdown.cancelled() => return Ok(Session::Stopped),
            connections = opening => connections?,
        };
        let result = self.serve(&connections, shutdown).await;
        // A session that ran has closed its connections already. This ends
        // them after an early error, a shutdown or a set-up timeout.
        connections.end(matches!(result, Err(SessionError::SetupTimedOut { .. }))).await;
        result
    }

    /// Sets up the session, then consumes until shutdown or until a consumer ends.
    async fn serve(&self, connections: &SessionConnections, shutdown: &CancellationToken) -> Result<Session, SessionError> {
        let SessionConnections { consuming, publishing, .. } = connections;
        let stop = CancellationToken::new();
        // Cancels `stop` on every way out, also an early error return, so
        // that the tasks following this session end with it.
        let _stop_on_exit = stop.clone().drop_guard();
        let mut consumers = JoinSet::new();
        // A lapin call can wait forever when its connection fails during
        // set-up, so set-up has the connect timeout as its deadline.
        let setup = tokio::time::timeout(self.connect_timeout, self.start_consumers(consuming, publishing, &stop, &mut consumers));
        let started = tokio::select! {
            () = shutdown.cancelled() => None,
            started = setup => Some(started),
        };
        let open_channels = match started {
            Some(Ok(started)) => started?,
            Some(Err(_)) => return Err(SessionError::SetupTimedOut { timeout: self.connect_timeout }),
            None => {
                // Consumers started before the shutdown may have messages in flight.
                stop.cancel();
                finish_consumers(&mut consumers, self.shutdown_timeout).await;
                return Ok(Session::Stopped);
            }
        };
        self.set_ready(true);
        info!(channels = ?self.dispatcher.topology().channels(), prefetch = self.prefetch, concurrency = self.concurrency, "consuming");

        let ended = tokio::select! {
            () = shutdown.cancelled() => None,
            Some(joined) = consumers.join_next() => Some(joined),
        };
        self.set_ready(false);
        stop.cancel();

        let deadline = if ended.is_none() { self.shutdown_timeout } else { self.confirm_timeout };
        finish_consumers(&mut consumers, deadline).await;
        // Closing the connections while their channels are still open lets
        // lapin close the channels with them. A channel dropped first closes
        // on its own, which races the connection's close, and lapin logs the
        // loser as a connection error.
        connections.close().await;
        drop(open_channels);

        match ended {
            None => Ok(Session::Stopped),
            Some(Ok(Ok(()))) => Ok(Session::Established(ConsumerError::Cancelled("a channel queue".to_owned()).into())),
            Some(Ok(Err(err))) => Ok(Session::Established(err.into())),
            Some(Err(join_error)) => {
                error!(error = %join_error, "consumer task failed");
                Ok(Session::Established(ConsumerError::Cancelled("a channel queue".to_owned()).into()))
            }
        }
    }

    /// Declares the topology, opens the publisher and starts one consumer
    /// task per channel queue in `consumers`.
    async fn start_consumers(
        &self,
        consuming: &Connection,
        publishing: &Connection,
        stop: &CancellationToken,
        consumers: &mut JoinSet<Result<(), ConsumerError>>,
    ) -> Result<OpenChannels, SessionError> {
        let setup = publishing.create_channel().await.map_err(SessionError::Channel)?;
        self.dispatcher.topology().declare(&setup).await.map_err(SessionError::Topology)?;
        let _ = setup.close(200, "topology declared".into()).await;
        let publisher = Publisher::open(publishing, self.confirm_timeout).await.map_err(SessionError::Channel)?;
        self.report_flow(publisher.flow(), stop.clone());
        let mut consumer_channels = Vec::new();
        for &channel in self.dispatcher.topology().channels() {
            let (broker_channel, consumer) = self.subscribe(consuming, channel).await?;
            consumer_channels.push(broker_channel.clone());
            let dispatcher = Arc::clone(&self.dispatcher);
            consumers.spawn(dispatcher.consume(channel, broker_channel, consumer, publisher.clone(), self.concurrency, stop.clone()));
        }
        Ok(OpenChannels { _publisher: publisher, _consumer_channels: consumer_channels })
    }

    /// Reloads templates on file changes and on SIGHUP.
    fn watch_templates(&self, shutdown: &CancellationToken) {
        if let Err(err) = self.templates.watch(shutdown.clone()) {
            warn!(error = %err, "cannot watch the templates folder; edits apply on SIGHUP only");
        }
        let templates = Arc::clone(&self.templates);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(hangups) => hangups,
                Err(err) => {
                    warn!(error = %err, "cannot listen for SIGHUP; templates reload on file changes only");
                    return;
                }
            };
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = hangups.recv() => {
                        info!("SIGHUP received; reloading templates");
                        let reloading = Arc::clone(&templates);
                        let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
                    }
                }
            }
        });
    }

    /// Keeps `notify_broker_blocked` current until `stop` is cancelled.
    fn report_flow(&self, mut flow: crate::flow_control::FlowControl, stop: CancellationToken) {
        let metrics = Arc::clone(&self.metrics);
        metrics.broker_blocked(flow.state().blocked);
        tokio::spawn(async move {
            loop {
                let state = tokio::select! {
                    () = stop.cancelled() => break,
                    state = flow.next_state() => state,
                };
                match state {
                    Some(state) => metrics.broker_blocked(state.blocked),
                    None => break,
                }
            }
            metrics.broker_blocked(false);
        });
    }

    fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.metrics.broker_connected(ready);
    }

    async fn connect(&self, role: &str) -> Result<Connection, SessionError> {
        let url = redact_url(&self.url);
        let name = format!("flatrender-notify {role} ({})", self.connection_label);
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        match tokio::time::timeout(self.connect_timeout, Connection::connect(&self.url, properties)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(source)) => Err(SessionError::Connect { url, source }),
            Err(_) => Err(SessionError::ConnectTimedOut { url, timeout: self.connect_timeout }),
        }
    }

    /// Opens a channel of its own for the queue of `channel` and consumes it.
    async fn subscribe(&self, connection: &Connection, channel: crate::ChannelKind) -> Result<(lapin::Channel, lapin::Consumer), SessionError> {
        let amqp_channel = connection.create_channel().await.map_err(SessionError::Channel)?;
        amqp_channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(SessionError::Channel)?;
        let queue = self.dispatcher.topology().channel_queue(channel);
        let tag = format!("flatrender-notify.{channel}.{}", uuid::Uuid::new_v4());
        let consumer = amqp_channel
            .basic_consume(queue.as_str().into(), tag.as_str().into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(SessionError::Channel)?;
        Ok((amqp_channel, consumer))
    }
}

fn connection_label(queue_prefix: &str) -> String {
    if queue_prefix.is_empty() {
        format!("pid {}", std::process::id())
    } else {
        format!("pid {}, queue prefix {queue_prefix}", std::process::id())
    }
}

/// The channels of a started session, held open until its connections close.
struct OpenChannels {
    _publisher: Publisher,
    /// Clones of the channels that the consumer tasks own.
    _consumer_channels: Vec<lapin::Channel>,
}

/// The end of a session that did not fail to start.
enum Session {
    /// Shutdown was requested, maybe before the session started.
    Stopped,
    /// The session ran and then failed.
    Established(SessionError),
}

/// Waits up to `deadline` for stopped consumers to settle the messages in
/// flight, then aborts those still running.
async fn finish_consumers(consumers: &mut JoinSet<Result<(), ConsumerError>>, deadline: Duration) {
    if tokio::time::timeout(deadline, drain(consumers)).await.is_err() {
        warn!(timeout_secs = deadline.as_secs(), "in-flight messages did not finish in time; the broker will redeliver them");
        consumers.abort_all();
    }
}

async fn drain(consumers: &mut JoinSet<Result<(), ConsumerError>>) {
    while let Some(joined) = consumers.join_next().await {
        if let Ok(Err(err)) = joined {
            warn!(error = %err, "consumer stopped with an error while the session was ending");
        }
    }
}
