//! Building the service binary, writing its configuration for a slice, and
//! running it as a child process.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use notify_core::config::DispatcherConfig;

use crate::slice::Slice;

/// How long a service may take from spawning to consuming its queue.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// [`START_TIMEOUT`] for a service under a wrapper such as valgrind.
/// Callgrind made the service about 15 times slower per message.
const WRAPPED_START_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a service may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A Standard Webhooks secret for the benchmark's receiver only.
const WEBHOOK_SECRET: &str = "whsec_YmVuY2gtb25seS13ZWJob29rLXNpZ25pbmcta2V5ISE=";

/// Returns the workspace root, where `cargo build` runs and `templates/` is.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Runs `cargo build --release` with `args` in the workspace and copies the
/// executable `name` it produced into `into`, so that another build of the
/// same target during the run cannot replace it.
///
/// # Errors
///
/// Fails when the build fails or produces no such executable.
pub fn cargo_build(args: &[&str], name: &str, into: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building: cargo build --release {}", args.join(" "));
    let output = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--message-format=json-render-diagnostics"])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("cargo build --release {} failed with {}", args.join(" "), output.status);
    }
    let built = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact" && message["target"]["name"] == name)
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo build --release {} produced no executable {name}", args.join(" ")))?;
    std::fs::create_dir_all(into)?;
    let copy = into.join(name);
    std::fs::copy(&built, &copy).with_context(|| format!("cannot copy {} to {}", built.display(), copy.display()))?;
    Ok(copy)
}

/// The `[channels]` part of the configuration for each kind of run.
pub mod channels {
    /// Returns the section that enables the no-op plugin through the factory.
    pub fn noop() -> String {
        "[channels.noop]\nenabled = true\nchannel = \"sms\"\n".to_owned()
    }

    pub fn webhook() -> String {
        format!(
            "[channels.webhook]\nenabled = true\nallow_loopback = true\ntimeout_secs = 10\nsigning_secret = \"{}\"\n",
            super::WEBHOOK_SECRET
        )
    }

    pub fn email(smtp_port: u16) -> String {
        format!(
            "[channels.email]\nenabled = true\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
             from = \"Flatrender Bench <no-reply@flatrender.test>\"\ntimeout_secs = 15\n"
        )
    }
}

/// Renders the service configuration for `slice`: the slice's names, the
/// shipped templates, the admin listener off (two instances may run at
/// once), and every other key at its default.
pub fn config_toml(slice: &Slice, channels: &str, dispatcher: &DispatcherConfig) -> String {
    let templates = workspace_root().join("templates");
    format!(
        r#"[broker]
url = "{url}"
queue_prefix = "{prefix}"

[broker.exchanges]
events = "{events}"
notify = "{notify}"
dlq = "{dlq}"

[templates]
dir = "{templates}"

[admin]
listen = ""

[dispatcher]
prefetch = {prefetch}
concurrency = {concurrency}

{channels}"#,
        url = slice.broker.url,
        prefix = slice.prefix,
        events = slice.topology.events_exchange(),
        notify = slice.topology.notify_exchange(),
        dlq = slice.topology.dlq_exchange(),
        templates = templates.display(),
        prefetch = dispatcher.prefetch,
        concurrency = dispatcher.concurrency,
    )
}

/// A running service; killed when dropped.
pub struct ServiceProcess {
    child: Option<Child>,
    pid: u32,
    log_path: PathBuf,
}

impl ServiceProcess {
    /// Starts `binary serve --config config_path` with its log in `log_path`,
    /// under `wrapper` (a command line split at spaces) when one is given.
    ///
    /// # Errors
    ///
    /// Fails when the process cannot be spawned.
    pub fn spawn(binary: &Path, wrapper: Option<&str>, config_path: &Path, log_path: &Path) -> anyhow::Result<ServiceProcess> {
        let log = File::create(log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut wrapper = wrapper.unwrap_or_default().split_whitespace();
        let mut command = match wrapper.next() {
            Some(program) => {
                let mut command = Command::new(program);
                command.args(wrapper).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .args(["serve", "--config"])
            .arg(config_path)
            .env("RUST_LOG", "info")
            .env_remove("LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // Configuration overrides from the environment would change what is measured.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("NOTIFY__") {
                command.env_remove(name);
            }
        }
        let child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let pid = child.id();
        Ok(ServiceProcess { child: Some(child), pid, log_path: log_path.to_owned() })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Returns the exit status once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Returns the last 20 lines of the service's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Peak resident set size so far (`VmHWM` of `/proc/<pid>/status`), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Sends SIGTERM and waits for the exit, killing the process after
    /// [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("service {} did not stop within {STOP_TIMEOUT:?} of SIGTERM; killing it", self.pid);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until the slice's queue has `count` consumers, failing early when a
/// service exits.
///
/// # Errors
///
/// Fails when a service exits or the start timeout passes first.
pub async fn wait_consuming(slice: &Slice, services: &mut [ServiceProcess], count: u32, wrapped: bool) -> anyhow::Result<()> {
    let timeout = if wrapped { WRAPPED_START_TIMEOUT } else { START_TIMEOUT };
    let deadline = Instant::now() + timeout;
    loop {
        if slice.consumer_count().await? >= count {
            return Ok(());
        }
        for service in services.iter_mut() {
            if let Some(status) = service.exited() {
                bail!("the service exited with {status} before consuming {}; its log ends with:\n{}", slice.queue(), service.log_tail());
            }
        }
        if Instant::now() > deadline {
            bail!("the service did not consume {} within {timeout:?}", slice.queue());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Checks whether `binary` accepts a `[channels.noop]` section, which it
/// does when its factory registers the no-op plugin.
///
/// # Errors
///
/// Fails when the binary rejects the configuration for another reason.
pub fn supports_noop(binary: &Path, dir: &Path) -> anyhow::Result<bool> {
    let config_path = dir.join("noop-probe.toml");
    std::fs::write(&config_path, format!("[templates]\ndir = \"{}\"\n\n{}", workspace_root().join("templates").display(), channels::noop()))?;
    let output = Command::new(binary)
        .args(["templates", "check", "--config"])
        .arg(&config_path)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", binary.display()))?;
    if output.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("noop") {
        return Ok(false);
    }
    bail!("`{} templates check` rejected the probe configuration: {stderr}", binary.display())
}
