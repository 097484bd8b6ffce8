//! The binary's operator commands, run as a process with a generated
//! configuration file.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::broker::{TestBroker, PATIENCE};
use super::service::{config_text, ServiceSettings};

/// What a finished command printed, and how it exited.
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Shows everything, so an assertion message explains a failure.
impl fmt::Display for CliOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `flatrender-notify ARGS` from the package folder and waits for it to
/// exit; kills it and fails the test when it runs longer than [`PATIENCE`].
pub async fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> CliOutput {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flatrender-notify"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .env_remove("LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the flatrender-notify binary must start");
    // Reading on threads keeps a full pipe from blocking the child.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });

    let deadline = tokio::time::Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flatrender-notify did not exit within {PATIENCE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    CliOutput {
        status,
        stdout: stdout_reader.join().unwrap().unwrap(),
        stderr: stderr_reader.join().unwrap().unwrap(),
    }
}

/// A configuration file in the temporary folder, removed on drop.
pub struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    /// Writes the configuration that [`ServiceProcess::start`](super::ServiceProcess::start) gives the service.
    pub fn for_broker(broker: &TestBroker, settings: &ServiceSettings) -> ConfigFile {
        ConfigFile::write(&config_text(broker, settings))
    }

    /// Writes a configuration for commands that need no broker: defaults,
    /// the shipped templates and `channels_toml` (sections under
    /// `[channels]`, or empty).
    pub fn without_broker(channels_toml: &str) -> ConfigFile {
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        ConfigFile::write(&format!(
            "[templates]\ndir = \"{}\"\ndefault_locale = \"en\"\n\n[channels]\n{channels_toml}\n",
            templates.display()
        ))
    }

    fn write(text: &str) -> ConfigFile {
        let dir = std::env::temp_dir().join("flatrender-notify-it");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("cli-{}.toml", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, text).unwrap();
        ConfigFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
