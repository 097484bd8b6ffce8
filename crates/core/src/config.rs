//! Service configuration: defaults, then a TOML file, then `NOTIFY__SECTION__KEY`
//! environment variables, validated once at start-up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::retry::{RetryConfig, RetryConfigError, RetryPolicy};

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "NOTIFY";
/// Separator between prefix, section and key: `NOTIFY__BROKER__URL`.
pub const ENV_SEPARATOR: &str = "__";

/// The whole configuration. `C` is the channel plugins' own section,
/// defined by the crate that provides them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config<C> {
    #[serde(default)]
    pub service: ServiceConfig,
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub dispatcher: DispatcherConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub templates: TemplatesConfig,
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub fanout: FanoutConfig,
    #[serde(default)]
    pub rate_limits: crate::rate_limit::RateLimitsConfig,
    pub channels: C,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// `producer` of every event the service publishes.
    pub producer: String,
    /// How long in-flight deliveries may run after SIGTERM, in seconds.
    pub shutdown_timeout_secs: u64,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig { producer: "notification-service".to_owned(), shutdown_timeout_secs: 30 }
    }
}

/// Queue type of the channel queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    /// Replicated; counts deliveries and dead-letters a message that keeps
    /// coming back after `delivery_limit` deliveries.
    Quorum,
}

#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// AMQP URI; may carry credentials, so it is never logged.
    pub url: String,
    /// Maximum wait to open a connection, and again to set up a session on
    /// it (channels, topology, consumers), in seconds.
    pub connect_timeout_secs: u64,
    /// Maximum wait for a publisher confirm, in seconds.
    pub confirm_timeout_secs: u64,
    /// First wait before reconnecting after the broker is lost, in milliseconds.
    pub reconnect_initial_ms: u64,
    /// Maximum wait between reconnection attempts, in milliseconds.
    pub reconnect_max_ms: u64,
    pub exchanges: ExchangeNames,
    /// Prepended to every queue name the service declares; empty in production.
    pub queue_prefix: String,
    /// Durable queue bound to the dead-letter exchange, holding dead letters.
    pub dead_letter_queue: String,
    pub queue_type: QueueType,
    /// With quorum queues: deliveries after which the broker itself
    /// dead-letters a message, catching one that crashes the consumer.
    pub delivery_limit: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            connect_timeout_secs: 10,
            confirm_timeout_secs: 10,
            reconnect_initial_ms: 500,
            reconnect_max_ms: 30_000,
            exchanges: ExchangeNames::default(),
            queue_prefix: String::new(),
            dead_letter_queue: "flatrender.dlq".to_owned(),
            queue_type: QueueType::Classic,
            delivery_limit: 20,
        }
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &redact_url(&self.url))
            .field("exchanges", &self.exchanges)
            .field("queue_prefix", &self.queue_prefix)
            .field("dead_letter_queue", &self.dead_letter_queue)
            .field("queue_type", &self.queue_type)
            .finish_non_exhaustive()
    }
}

/// Replaces the password of a URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}{}", &rest[authority_end..])
        }
        None => url.to_owned(),
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeNames {
    /// Topic exchange for domain events, including ours.
    pub events: String,
    /// Direct exchange for notification dispatch.
    pub notify: String,
    /// Fanout exchange for dead letters of every service.
    pub dlq: String,
}

impl Default for ExchangeNames {
    fn default() -> Self {
        ExchangeNames {
            events: "flatrender.events".to_owned(),
            notify: "flatrender.notify".to_owned(),
            dlq: "flatrender.dlq".to_owned(),
        }
    }
}

/// Highest accepted `dispatcher.prefetch`. The service keeps every
/// prefetched message in memory, so a higher prefetch only moves a backlog
/// from the broker into the service's memory. With a 20,000-message backlog
/// of 1 KiB messages, the webhook run took 68 MiB at prefetch 20,000 and 41
/// to 43 MiB at 1,000 (`cargo run --release -p bench -- --prefetch N`, 2 CPUs).
pub const MAX_PREFETCH: u16 = 1_000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// Unacknowledged messages the broker may push per channel queue, at most
    /// [`MAX_PREFETCH`]. Each stays in memory until it is settled.
    pub prefetch: u16,
    /// Messages processed at once per channel queue.
    pub concurrency: usize,
    /// Larger bodies are dead-lettered unread, in bytes.
    pub max_message_bytes: usize,
    /// Consecutive transient failures of one endpoint that open its circuit
    /// breaker; 0 disables the breakers.
    pub breaker_failure_threshold: u32,
    /// How long an open breaker keeps messages back before one probe, in milliseconds.
    pub breaker_cooldown_ms: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            prefetch: 256,
            concurrency: 32,
            max_message_bytes: 256 * 1024,
            breaker_failure_threshold: 5,
            breaker_cooldown_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    pub dir: PathBuf,
    /// Locale used when a template lacks the requested one.
    pub default_locale: String,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        TemplatesConfig { dir: PathBuf::from("templates"), default_locale: "en".to_owned() }
    }
}

/// Storage of delivery records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdempotencyBackend {
    /// In this process: enough for one instance.
    Memory,
    /// In Redis, shared by every instance on the same queues.
    Redis,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    pub backend: IdempotencyBackend,
    /// With the memory backend: most deliveries remembered; the oldest are forgotten first.
    pub max_entries: usize,
    /// How long a delivery is remembered, in seconds.
    pub ttl_secs: u64,
    /// How long a delivery in progress holds its claim, in seconds; a claim
    /// of a crashed instance frees up after this.
    pub claim_lease_secs: u64,
    /// With the redis backend: the server's URL.
    pub redis_url: String,
    /// With the redis backend: prefix of every key.
    pub key_prefix: String,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            backend: IdempotencyBackend::Memory,
            max_entries: 100_000,
            ttl_secs: 24 * 3600,
            claim_lease_secs: 300,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            key_prefix: "flatrender-notify:delivery:".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the `/healthz`, `/readyz` and `/metrics` listener; empty disables it.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { listen: "127.0.0.1:9464".to_owned() }
    }
}

impl AdminConfig {
    /// Returns the listen address, or `None` when the listener is disabled.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

/// The fan-out stage: domain events in, dispatch messages out.
///
/// `Debug` prints `<redacted>` in place of the database URL and the API token.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FanoutConfig {
    /// Whether this instance runs the fan-out stage.
    pub enabled: bool,
    /// Routing rules: which events become which notifications.
    pub routes_file: PathBuf,
    /// Durable queue bound to the events exchange with the keys the rules need.
    pub queue: String,
    /// Contacts and preferences: `sqlite://PATH?mode=rwc` (one instance) or
    /// `postgres://…` (several instances). May carry credentials.
    pub database_url: String,
    /// Address of the contacts HTTP API; empty disables it.
    pub api_listen: String,
    /// Bearer token that every contacts API request must present as
    /// `Authorization: Bearer <token>`, usually set through the environment
    /// variable `NOTIFY__FANOUT__API_TOKEN`. Empty accepts requests without
    /// one.
    pub api_token: String,
}

impl std::fmt::Debug for FanoutConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |value: &str| if value.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("FanoutConfig")
            .field("enabled", &self.enabled)
            .field("routes_file", &self.routes_file)
            .field("queue", &self.queue)
            .field("database_url", &redacted(&self.database_url))
            .field("api_listen", &self.api_listen)
            .field("api_token", &redacted(&self.api_token))
            .finish()
    }
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            enabled: false,
            routes_file: PathBuf::from("config/routes.toml"),
            queue: "notify.fanout.events".to_owned(),
            database_url: "sqlite://data/contacts.db?mode=rwc".to_owned(),
            api_listen: "127.0.0.1:9465".to_owned(),
            api_token: String::new(),
        }
    }
}

/// Configuration that cannot be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration from {path}: {source}")]
    Load {
        path: PathBuf,
        #[source]
        source: config::ConfigError,
    },
    #[error("invalid configuration key {key}: {reason}")]
    Invalid { key: String, reason: String },
    #[error(transparent)]
    Retry(#[from] RetryConfigError),
}

impl<C: DeserializeOwned> Config<C> {
    /// Loads the file at `path`, then applies `NOTIFY__SECTION__KEY`
    /// environment variables, and validates the result.
    ///
    /// # Errors
    ///
    /// Returns [`ConfigError`] naming the file or key at fault.
    pub fn load(path: &Path) -> Result<Config<C>, ConfigError> {
        let load_error = |source| ConfigError::Load { path: path.to_owned(), source };
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("retry.tiers_ms");
        let loaded = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(environment)
            .build()
            .map_err(load_error)?;
        let config: Config<C> = loaded.try_deserialize().map_err(load_error)?;
        config.validate()?;
        Ok(config)
    }
}

impl<C> Config<C> {
    /// Checks values that parse but cannot work.
    ///
    /// # Errors
    ///
    /// Returns the first invalid key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| Err(ConfigError::Invalid { key: key.to_owned(), reason: reason.to_owned() });
        // HTTP strips spaces around header values, so such a token could
        // never match and would lock every client out.
        if self.fanout.api_token.trim() != self.fanout.api_token {
            return invalid("fanout.api_token", "has spaces or a line break at its start or end; remove them");
        }
        if self.dispatcher.prefetch == 0 || self.dispatcher.prefetch > MAX_PREFETCH {
            return invalid("dispatcher.prefetch", &format!("must be from 1 to {MAX_PREFETCH}"));
        }
        if self.dispatcher.concurrency == 0 || self.dispatcher.concurrency > usize::from(self.dispatcher.prefetch) {
            let reason = format!(
                "is {}, but must be from 1 to dispatcher.prefetch, which is {}; the defaults are {} and {}",
                self.dispatcher.concurrency,
                self.dispatcher.prefetch,
                DispatcherConfig::default().concurrency,
                DispatcherConfig::default().prefetch,
            );
            return invalid("dispatcher.concurrency", &reason);
        }
        if self.dispatcher.max_message_bytes < 1024 {
            return invalid("dispatcher.max_message_bytes", "must be at least 1024");
        }
        if !self.broker.url.starts_with("amqp://") && !self.broker.url.starts_with("amqps://") {
            return invalid("broker.url", "must start with amqp:// or amqps://");
        }
        if self.broker.connect_timeout_secs == 0 || self.broker.confirm_timeout_secs == 0 {
            return invalid("broker.connect_timeout_secs", "timeouts must be positive");
        }
        if self.broker.reconnect_initial_ms == 0 || self.broker.reconnect_max_ms < self.broker.reconnect_initial_ms {
            return invalid("broker.reconnect_max_ms", "must be at least broker.reconnect_initial_ms, which must be positive");
        }
        let names = [
            ("broker.exchanges.events", &self.broker.exchanges.events),
            ("broker.exchanges.notify", &self.broker.exchanges.notify),
            ("broker.exchanges.dlq", &self.broker.exchanges.dlq),
            ("broker.dead_letter_queue", &self.broker.dead_letter_queue),
        ];
        for (key, name) in names {
            if name.is_empty() || name.len() > 200 {
                return invalid(key, "must be 1 to 200 bytes long");
            }
        }
        if self.broker.queue_prefix.len() > 100 {
            return invalid("broker.queue_prefix", "must be at most 100 bytes long");
        }
        if !crate::envelope::is_valid_locale(&self.templates.default_locale) {
            return invalid("templates.default_locale", "must be a language tag such as `en`");
        }
        if !self.admin.listen.is_empty() && self.admin.address().is_none() {
            return invalid("admin.listen", "must be an IP address and port such as 127.0.0.1:9464, or empty");
        }
        RetryPolicy::from_config(&self.retry)?;
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.broker.connect_timeout_secs)
    }

    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_secs(self.broker.confirm_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoChannels {}

    fn write_config(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("notify-config-{name}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn minimal_file_gets_defaults() {
        let path = write_config("minimal", "[channels]\n");
        let config: Config<NoChannels> = Config::load(&path).unwrap();
        assert_eq!(config.broker.exchanges.notify, "flatrender.notify");
        assert_eq!(config.retry.default_max_retries, 3);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let path = write_config("unknown", "[broker]\nprefetch_count = 3\n[channels]\n");
        let err = Config::<NoChannels>::load(&path).unwrap_err().to_string();
        assert!(err.contains("prefetch_count"), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn concurrency_above_prefetch_is_rejected() {
        let path = write_config("concurrency", "[dispatcher]\nprefetch = 4\nconcurrency = 8\n[channels]\n");
        let err = Config::<NoChannels>::load(&path).unwrap_err().to_string();
        assert!(err.contains("dispatcher.concurrency"), "{err}");
        std::fs::remove_file(path).unwrap();
    }

    /// Returns the error of loading a configuration file with `text`.
    fn load_error(name: &str, text: &str) -> String {
        let path = write_config(name, text);
        let err = Config::<NoChannels>::load(&path).unwrap_err().to_string();
        std::fs::remove_file(path).unwrap();
        err
    }

    #[test]
    fn concurrency_error_names_both_values() {
        let err = load_error("concurrency-values", "[dispatcher]\nprefetch = 16\n[channels]\n");
        assert!(err.contains("is 32"), "{err}");
        assert!(err.contains("which is 16"), "{err}");
    }

    #[test]
    fn api_token_with_outer_spaces_is_rejected() {
        let err = load_error("token-spaces", "[fanout]\napi_token = \" \"\n[channels]\n");
        assert!(err.contains("fanout.api_token"), "{err}");
    }

    #[test]
    fn fanout_debug_hides_secrets() {
        let fanout = FanoutConfig {
            database_url: "postgres://notify:hunter2@db/contacts".to_owned(),
            api_token: "t0ken".to_owned(),
            ..FanoutConfig::default()
        };
        let printed = format!("{fanout:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains("t0ken"), "{printed}");
        assert!(printed.contains("api_listen"), "{printed}");
    }

    #[test]
    fn prefetch_above_maximum_is_rejected() {
        let err = load_error("prefetch", "[dispatcher]\nprefetch = 1001\n[channels]\n");
        assert!(err.contains("dispatcher.prefetch"), "{err}");
        assert!(err.contains("1000"), "{err}");
    }

    #[test]
    fn redacted_url_hides_password() {
        assert_eq!(redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }
}
