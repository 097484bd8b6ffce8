//! The real `flatrender-notify` binary, started with a configuration that
//! points it at a test's own slice of the broker.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::broker::{TestBroker, BROKER_URL, PATIENCE};

/// Retry tiers used in tests, in milliseconds: short ones so retries happen
/// within a test, and 30 s / 60 s ones for Retry-After checks.
pub const TEST_TIERS_MS: [u64; 6] = [100, 200, 400, 800, 30_000, 60_000];

/// What a test changes in the service's configuration.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// TOML for the `[channels]` section and below.
    pub channels_toml: String,
    pub prefetch: u16,
    pub concurrency: usize,
    pub max_message_bytes: usize,
    pub templates_dir: PathBuf,
    /// Port of the admin listener on 127.0.0.1, free when the settings were made.
    pub admin_port: u16,
    /// TOML of the `[idempotency]` section, when a test sets one.
    pub idempotency_toml: String,
    pub breaker_failure_threshold: u32,
    pub breaker_cooldown_ms: u64,
    /// TOML of the `[fanout]` section, when a test runs the fan-out stage.
    pub fanout_toml: String,
    /// TOML of the `[rate_limits]` section, when a test sets limits.
    pub rate_limits_toml: String,
    pub confirm_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// The broker's AMQP URL; a test may point it at a proxy.
    pub broker_url: String,
}

impl ServiceSettings {
    pub fn new(channels_toml: impl Into<String>) -> ServiceSettings {
        ServiceSettings {
            channels_toml: channels_toml.into(),
            prefetch: 16,
            concurrency: 8,
            max_message_bytes: 64 * 1024,
            templates_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"),
            admin_port: free_port(),
            idempotency_toml: String::new(),
            breaker_failure_threshold: 5,
            breaker_cooldown_ms: 30_000,
            fanout_toml: String::new(),
            rate_limits_toml: String::new(),
            confirm_timeout_secs: 5,
            connect_timeout_secs: 10,
            broker_url: BROKER_URL.to_owned(),
        }
    }

    pub fn webhook() -> ServiceSettings {
        ServiceSettings::new(format!(
            "[channels.webhook]\nenabled = true\ntimeout_secs = 2\nallow_loopback = true\nsigning_secret = \"{}\"\n",
            WEBHOOK_SECRET
        ))
    }

    pub fn email(smtp_port: u16) -> ServiceSettings {
        ServiceSettings::new(format!(
            "[channels.email]\nenabled = true\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
             from = \"Flatrender <no-reply@flatrender.test>\"\ntimeout_secs = 5\n"
        ))
    }
}

/// Standard Webhooks secret the tests sign with.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A running service process; killed on drop.
pub struct ServiceProcess {
    child: Option<Child>,
    config_path: PathBuf,
    pub log_path: PathBuf,
    /// Base URL of the admin listener, e.g. `http://127.0.0.1:40123`.
    pub admin_url: String,
    queues: Vec<String>,
}

impl ServiceProcess {
    /// Starts the binary and waits until it consumes every enabled channel queue.
    pub async fn start(broker: &TestBroker, settings: ServiceSettings, channels: &[&str]) -> ServiceProcess {
        let mut process = ServiceProcess::spawn(broker, settings, channels);
        process.wait_ready(broker, channels).await;
        process
    }

    /// Waits until the service consumes the queue of every channel in `channels`.
    pub async fn wait_ready(&mut self, broker: &TestBroker, channels: &[&str]) {
        for channel in channels {
            self.wait_consuming(broker, &broker.channel_queue(channel)).await;
        }
    }

    /// Starts the binary without waiting for it to consume.
    pub fn spawn(broker: &TestBroker, settings: ServiceSettings, channels: &[&str]) -> ServiceProcess {
        let dir = std::env::temp_dir().join("flatrender-notify-it");
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join(format!("{}.toml", broker.id));
        let log_path = dir.join(format!("{}.log", broker.id));
        std::fs::File::create(&config_path)
            .unwrap()
            .write_all(config_toml(broker, &settings).as_bytes())
            .unwrap();
        let log = std::fs::File::create(&log_path).unwrap();

        let child = Command::new(env!("CARGO_BIN_EXE_flatrender-notify"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info,notify_core=debug,notify_channels=debug")
            .env_remove("LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the flatrender-notify binary must start");

        let mut queues = vec![format!("{}flatrender.dlq", broker.queue_prefix())];
        for channel in channels {
            let queue = broker.channel_queue(channel);
            for tier in TEST_TIERS_MS {
                queues.push(format!("{queue}.retry.{}", tier_label(tier)));
            }
            queues.push(queue);
        }
        let admin_url = format!("http://127.0.0.1:{}", settings.admin_port);
        ServiceProcess { child: Some(child), config_path, log_path, admin_url, queues }
    }

    async fn wait_consuming(&mut self, broker: &TestBroker, queue: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if broker.consumer_count(queue).await.unwrap_or(0) >= 1 {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("service exited with {status} before consuming {queue}; log:\n{}", self.log());
            }
            assert!(tokio::time::Instant::now() < deadline, "service never consumed {queue}; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Counts the process's threads named `name`, as Linux lists them.
    pub fn threads_named(&self, name: &str) -> usize {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return 0;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return 0;
        };
        tasks
            .filter_map(Result::ok)
            .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name))
            .count()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("service did not stop within {PATIENCE:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the service and removes its queues and the test's exchanges.
    pub async fn shutdown(mut self, broker: &TestBroker) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        broker.cleanup(&self.queues).await;
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.config_path);
    }
}

fn config_toml(broker: &TestBroker, settings: &ServiceSettings) -> String {
    let tiers: Vec<String> = TEST_TIERS_MS.iter().map(u64::to_string).collect();
    format!(
        r#"[broker]
url = "{broker_url}"
queue_prefix = "{prefix}"
confirm_timeout_secs = {confirm_timeout}
connect_timeout_secs = {connect_timeout}
reconnect_initial_ms = 100
reconnect_max_ms = 2000

[broker.exchanges]
events = "{events}"
notify = "{notify}"
dlq = "{dlq}"

[dispatcher]
prefetch = {prefetch}
concurrency = {concurrency}
max_message_bytes = {max_bytes}
breaker_failure_threshold = {breaker_threshold}
breaker_cooldown_ms = {breaker_cooldown}

[retry]
default_max_retries = 3
base_delay_ms = 50
multiplier = 2.0
max_delay_ms = 800
jitter = 0.1
tiers_ms = [{tiers}]

[templates]
dir = "{templates}"
default_locale = "en"

[service]
shutdown_timeout_secs = 10

[admin]
listen = "127.0.0.1:{admin_port}"

{idempotency}

{fanout}

{rate_limits}

{channels}
"#,
        prefix = broker.queue_prefix(),
        events = broker.events_exchange(),
        notify = broker.notify_exchange(),
        dlq = broker.dlq_exchange(),
        prefetch = settings.prefetch,
        concurrency = settings.concurrency,
        max_bytes = settings.max_message_bytes,
        tiers = tiers.join(", "),
        templates = settings.templates_dir.display(),
        channels = settings.channels_toml,
        admin_port = settings.admin_port,
        idempotency = settings.idempotency_toml,
        fanout = settings.fanout_toml,
        rate_limits = settings.rate_limits_toml,
        confirm_timeout = settings.confirm_timeout_secs,
        connect_timeout = settings.connect_timeout_secs,
        broker_url = settings.broker_url,
        breaker_threshold = settings.breaker_failure_threshold,
        breaker_cooldown = settings.breaker_cooldown_ms,
    )
}

/// A port nothing listens on right now; another process could take it before
/// the service binds it, which would fail the test loudly, not silently.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn tier_label(ms: u64) -> String {
    notify_core::retry::tier_label(Duration::from_millis(ms))
}

/// Lists every queue the service declares with [`TEST_TIERS_MS`] for `channels`:
/// the dead letter queue, and each channel's queue and retry queues.
pub fn declared_queues(broker: &TestBroker, channels: &[&str]) -> Vec<String> {
    let mut queues = vec![format!("{}flatrender.dlq", broker.queue_prefix())];
    for channel in channels {
        let queue = broker.channel_queue(channel);
        for tier in TEST_TIERS_MS {
            queues.push(format!("{queue}.retry.{}", tier_label(tier)));
        }
        queues.push(queue);
    }
    queues
}

/// Returns the configuration that [`ServiceProcess::start`] runs the service
/// with, for the binary's other commands, which must use the same broker names.
pub fn config_text(broker: &TestBroker, settings: &ServiceSettings) -> String {
    config_toml(broker, settings)
}

impl ServiceSettings {
    /// SMS through a Twilio stand-in at `twilio_url`.
    pub fn sms(twilio_url: &str) -> ServiceSettings {
        ServiceSettings::new(format!(
            "[channels.sms]\nenabled = true\ntimeout_secs = 2\n\n[[channels.sms.providers]]\ntype = \"twilio\"\n\
             base_url = \"{twilio_url}\"\naccount_sid = \"{TWILIO_SID}\"\nauth_token = \"test-auth-token\"\nfrom = \"+15550199\"\n"
        ))
    }
}

/// Account SID of the Twilio stand-in.
pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";

/// Bot token of the Telegram stand-in; shaped like a real one, valid nowhere.
pub const TELEGRAM_TOKEN: &str = "4839574812:AAFd-test-token-not-real_0123456789xyz";

/// FCM project of the push stand-in.
pub const FCM_PROJECT: &str = "flatrender-it";

impl ServiceSettings {
    /// Telegram through a Bot API stand-in at `api_url`, without send-rate waits.
    pub fn telegram(api_url: &str) -> ServiceSettings {
        ServiceSettings::new(format!(
            "[channels.telegram]\nenabled = true\nbot_token = \"{TELEGRAM_TOKEN}\"\napi_url = \"{api_url}\"\n\
             timeout_secs = 2\nper_chat_interval_ms = 0\n"
        ))
    }

    /// Push through an FCM stand-in at `fcm_url`, whose `/token` path issues access tokens.
    pub fn fcm(fcm_url: &str) -> ServiceSettings {
        let key = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crates/channels/tests/fixtures/test-only-fcm-service-account.json");
        ServiceSettings::new(format!(
            "[channels.push]\nenabled = true\ntimeout_secs = 2\n\n[channels.push.fcm]\nproject_id = \"{FCM_PROJECT}\"\n\
             service_account_file = \"{}\"\nbase_url = \"{fcm_url}\"\ntoken_url = \"{fcm_url}/token\"\n",
            key.display()
        ))
    }
}

impl ServiceSettings {
    /// Runs the fan-out stage too, with the shipped routing rules, a fresh
    /// SQLite database at `database` and the contacts API on `api_port`.
    pub fn with_fanout(mut self, database: &std::path::Path, api_port: u16) -> ServiceSettings {
        let routes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/routes.toml");
        self.fanout_toml = format!(
            "[fanout]\nenabled = true\nroutes_file = \"{}\"\nqueue = \"notify.fanout.events\"\n\
             database_url = \"sqlite://{}?mode=rwc\"\napi_listen = \"127.0.0.1:{api_port}\"\n",
            routes.display(),
            database.display()
        );
        self
    }
}
