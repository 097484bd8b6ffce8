//! Template hot reload: operators' edits under the templates folder are
//! compiled and swapped in atomically, on a file change or on SIGHUP. A
//! broken edit keeps the previous templates serving and logs every problem
//! with its file and line.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{TemplateLoadError, TemplateStore};

/// Wait after the last file event before reloading, so an editor's burst of
/// writes becomes one reload.
const SETTLE_TIME: Duration = Duration::from_millis(300);

/// The templates in service, replaceable while messages are rendered.
pub struct TemplateHandle {
    current: RwLock<Arc<TemplateStore>>,
    dir: PathBuf,
    default_locale: String,
}

impl TemplateHandle {
    /// Loads the templates of `dir` for the first time.
    ///
    /// # Errors
    ///
    /// Returns every problem found, with file and line.
    pub fn load(dir: &Path, default_locale: &str) -> Result<TemplateHandle, TemplateLoadError> {
        let store = TemplateStore::load(dir, default_locale)?;
        Ok(TemplateHandle::new(store, dir, default_locale))
    }

    pub fn new(store: TemplateStore, dir: &Path, default_locale: &str) -> TemplateHandle {
        TemplateHandle { current: RwLock::new(Arc::new(store)), dir: dir.to_owned(), default_locale: default_locale.to_owned() }
    }

    /// The templates in service now.
    pub fn current(&self) -> Arc<TemplateStore> {
        // Writers only swap an `Arc`, so a poisoned lock still holds a valid store.
        let guard = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// Loads the folder again and swaps the result in; on failure the
    /// previous templates stay in service.
    ///
    /// # Errors
    ///
    /// Returns every problem of the new version, with file and line.
    pub fn reload(&self) -> Result<(), TemplateLoadError> {
        match TemplateStore::load(&self.dir, &self.default_locale) {
            Ok(store) => {
                let mut guard = self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                *guard = Arc::new(store);
                info!(dir = %self.dir.display(), "templates reloaded");
                Ok(())
            }
            Err(problems) => {
                error!(
                    dir = %self.dir.display(),
                    problems = %problems,
                    "template edit is invalid; the previous templates stay in service"
                );
                Err(problems)
            }
        }
    }

    /// Reloads whenever a file under the folder changes, until `shutdown`.
    ///
    /// # Errors
    ///
    /// Returns the file watcher's error when the folder cannot be watched.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken) -> notify::Result<()> {
        let (changed, mut changes) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = event.is_ok_and(|event| !event.kind.is_access());
            if relevant {
                let _ = changed.send(());
            }
        })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;

        let handle = Arc::clone(self);
        tokio::spawn(async move {
            // The watcher stops when dropped, so this task keeps it.
            let _watcher = watcher;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    change = changes.recv() => if change.is_none() { return },
                }
                settle(&mut changes).await;
                let reloading = Arc::clone(&handle);
                // Loading renders every template: keep it off the async workers.
                if let Err(err) = tokio::task::spawn_blocking(move || reloading.reload()).await {
                    warn!(error = %err, "template reload task failed");
                }
            }
        });
        Ok(())
    }
}

/// Waits until no file event arrived for [`SETTLE_TIME`].
async fn settle(changes: &mut mpsc::UnboundedReceiver<()>) {
    while let Ok(Some(())) = tokio::time::timeout(SETTLE_TIME, changes.recv()).await {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChannelKind;

    fn write(dir: &Path, relative: &str, text: &str) {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn sample_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("notify-reload-{}", uuid::Uuid::new_v4()));
        write(&dir, "sms/welcome/en/body.hbs", "Hi {{user_name}}\n");
        write(&dir, "samples/welcome.json", r#"{"user_name": "Ada"}"#);
        dir
    }

    fn render(handle: &TemplateHandle) -> String {
        let variables = serde_json::json!({"user_name": "Ada"});
        match handle.current().render(ChannelKind::Sms, "welcome", None, &variables).unwrap().content {
            crate::Content::Sms { body } => body,
            other => panic!("unexpected content {other:?}"),
        }
    }

    #[test]
    fn valid_edit_is_swapped_in() {
        let dir = sample_dir();
        let handle = TemplateHandle::load(&dir, "en").unwrap();
        write(&dir, "sms/welcome/en/body.hbs", "Hello {{user_name}}\n");
        handle.reload().unwrap();
        assert_eq!(render(&handle), "Hello Ada");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn broken_edit_keeps_previous_templates() {
        let dir = sample_dir();
        let handle = TemplateHandle::load(&dir, "en").unwrap();
        write(&dir, "sms/welcome/en/body.hbs", "Hello {{user_name\n");
        let err = handle.reload().unwrap_err();
        assert!(err.to_string().contains("sms/welcome/en/body.hbs"), "{err}");
        assert_eq!(render(&handle), "Hi Ada");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn file_change_triggers_reload() {
        let dir = sample_dir();
        let handle = Arc::new(TemplateHandle::load(&dir, "en").unwrap());
        let shutdown = CancellationToken::new();
        handle.watch(shutdown.clone()).unwrap();
        write(&dir, "sms/welcome/en/body.hbs", "Welcome {{user_name}}\n");

        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while render(&handle) != "Welcome Ada" {
            assert!(tokio::time::Instant::now() < deadline, "edit was never picked up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
