//! Parts of split messages that Telegram already accepted, so that a retry
//! of the same notification in this process resumes after them instead of
//! showing them in the chat twice.
//!
//! The record lives in this process only. A retry that another instance
//! consumes, or one after a restart, sends every part again.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use notify_core::ParseMode;
use uuid::Uuid;

/// Most notifications whose progress is kept at once.
const MAX_ENTRIES: usize = 10_000;

/// Age after which a record no longer counts: longer than the default retry
/// delays, whose largest tier is one hour.
const MAX_AGE: Duration = Duration::from_secs(6 * 60 * 60);

/// Parts sent before a failure, per notification.
#[derive(Debug, Default)]
pub(super) struct SentParts {
    entries: Mutex<HashMap<Uuid, Progress>>,
}

#[derive(Debug)]
struct Progress {
    /// Fingerprint of the chat, text and parse mode the parts came from, so
    /// that a changed message starts over.
    fingerprint: u64,
    /// Parts Telegram accepted, from the first.
    sent: usize,
    message_ids: Vec<i64>,
    recorded: Instant,
}

/// Fingerprint of the message a notification's parts are cut from.
pub(super) fn fingerprint(chat: &str, text: &str, parse_mode: ParseMode) -> u64 {
    let mut hasher = DefaultHasher::new();
    chat.hash(&mut hasher);
    text.hash(&mut hasher);
    std::mem::discriminant(&parse_mode).hash(&mut hasher);
    hasher.finish()
}

impl SentParts {
    /// Returns how many parts of the notification's message were sent
    /// already, and their message ids; none when nothing is recorded for
    /// this message.
    pub(super) fn resume(&self, notification_id: Uuid, fingerprint: u64) -> (usize, Vec<i64>) {
        let mut entries = self.lock();
        match entries.remove(&notification_id) {
            Some(progress) if progress.fingerprint == fingerprint && progress.recorded.elapsed() < MAX_AGE => {
                (progress.sent, progress.message_ids)
            }
            _ => (0, Vec::new()),
        }
    }

    /// Records that the first `sent` parts were accepted before a failure.
    pub(super) fn record(&self, notification_id: Uuid, fingerprint: u64, sent: usize, message_ids: Vec<i64>) {
        if sent == 0 {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, progress| progress.recorded.elapsed() < MAX_AGE);
        }
        if entries.len() >= MAX_ENTRIES {
            let oldest = entries.iter().min_by_key(|(_, progress)| progress.recorded).map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                entries.remove(&oldest);
            }
        }
        let progress = Progress { fingerprint, sent, message_ids, recorded: Instant::now() };
        entries.insert(notification_id, progress);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Progress>> {
        // Every change under the lock is one insert, remove or retain, so a
        // poisoned map is still consistent.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_progress_is_resumed_once() {
        let parts = SentParts::default();
        let id = Uuid::new_v4();
        let print = fingerprint("42", "text", ParseMode::Plain);
        parts.record(id, print, 2, vec![7, 8]);

        assert_eq!(parts.resume(id, print), (2, vec![7, 8]));
        assert_eq!(parts.resume(id, print), (0, Vec::new()), "a resumed record is gone");
    }

    #[test]
    fn changed_message_starts_over() {
        let parts = SentParts::default();
        let id = Uuid::new_v4();
        parts.record(id, fingerprint("42", "old text", ParseMode::Plain), 1, vec![7]);

        assert_eq!(parts.resume(id, fingerprint("42", "new text", ParseMode::Plain)), (0, Vec::new()));
    }

    #[test]
    fn full_map_drops_the_oldest() {
        let parts = SentParts::default();
        let print = fingerprint("42", "text", ParseMode::Plain);
        let first = Uuid::new_v4();
        parts.record(first, print, 1, vec![1]);
        for _ in 1..MAX_ENTRIES {
            parts.record(Uuid::new_v4(), print, 1, vec![1]);
        }
        let last = Uuid::new_v4();
        parts.record(last, print, 1, vec![1]);

        assert_eq!(parts.lock().len(), MAX_ENTRIES);
        assert_eq!(parts.resume(first, print), (0, Vec::new()));
        assert_eq!(parts.resume(last, print), (1, vec![1]));
    }
}
