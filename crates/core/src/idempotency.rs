//! Which notifications were already sent, so a redelivered message is not
//! sent twice.
//!
//! The key is (notification id, channel). A record is written right after
//! the provider accepts and updated once the outcome events are confirmed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::channel::{ChannelKind, Receipt};

/// How far a delivery got.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryRecord {
    /// The provider accepted it; its outcome events may not be published yet.
    Sent(Receipt),
    /// Its outcome events are confirmed too: nothing is left to do.
    Completed,
}

/// Remembers deliveries for a bounded time and count.
#[derive(Debug)]
pub struct MemoryIdempotencyStore {
    inner: Mutex<Entries>,
    max_entries: usize,
    ttl: Duration,
}

#[derive(Debug, Default)]
struct Entries {
    records: HashMap<(Uuid, ChannelKind), (DeliveryRecord, Instant)>,
    /// Insertion order, for evicting the oldest first.
    order: VecDeque<((Uuid, ChannelKind), Instant)>,
}

impl MemoryIdempotencyStore {
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        MemoryIdempotencyStore { inner: Mutex::new(Entries::default()), max_entries: max_entries.max(1), ttl }
    }

    /// The record of a delivery, unless it is unknown or expired.
    pub fn get(&self, notification_id: Uuid, channel: ChannelKind) -> Option<DeliveryRecord> {
        let entries = self.lock();
        let (record, written) = entries.records.get(&(notification_id, channel))?;
        (written.elapsed() < self.ttl).then(|| record.clone())
    }

    /// Writes or replaces the record of a delivery.
    pub fn put(&self, notification_id: Uuid, channel: ChannelKind, record: DeliveryRecord) {
        let now = Instant::now();
        let key = (notification_id, channel);
        let mut entries = self.lock();
        entries.records.insert(key, (record, now));
        entries.order.push_back((key, now));
        self.evict(&mut entries, now);
    }

    fn evict(&self, entries: &mut Entries, now: Instant) {
        while let Some(&(key, written)) = entries.order.front() {
            let expired = now.duration_since(written) >= self.ttl;
            let over = entries.records.len() > self.max_entries;
            if !expired && !over {
                break;
            }
            entries.order.pop_front();
            // A key written again later has a newer order entry; keep it.
            if entries.records.get(&key).is_some_and(|(_, at)| *at == written) {
                entries.records.remove(&key);
            }
        }
        // Rewrites of one key leave stale order entries behind; drop them
        // when they outnumber live records, so the queue stays bounded.
        if entries.order.len() > 2 * entries.records.len() + 16 {
            let records = &entries.records;
            let kept: VecDeque<_> = entries
                .order
                .iter()
                .copied()
                .filter(|(key, at)| records.get(key).is_some_and(|(_, written)| written == at))
                .collect();
            entries.order = kept;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves the maps consistent (every
        // write is a single insert or remove), so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records currently held.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_kept_per_notification_and_channel() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        let id = Uuid::new_v4();
        store.put(id, ChannelKind::Email, DeliveryRecord::Completed);
        assert_eq!(store.get(id, ChannelKind::Email), Some(DeliveryRecord::Completed));
        assert_eq!(store.get(id, ChannelKind::Sms), None);
    }

    #[test]
    fn oldest_records_are_evicted_beyond_capacity() {
        let store = MemoryIdempotencyStore::new(2, Duration::from_secs(60));
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            store.put(*id, ChannelKind::Email, DeliveryRecord::Completed);
        }
        assert_eq!(store.len(), 2);
        assert_eq!(store.get(ids[0], ChannelKind::Email), None);
        assert!(store.get(ids[2], ChannelKind::Email).is_some());
    }

    #[test]
    fn expired_records_are_not_returned() {
        let store = MemoryIdempotencyStore::new(10, Duration::ZERO);
        let id = Uuid::new_v4();
        store.put(id, ChannelKind::Email, DeliveryRecord::Completed);
        assert_eq!(store.get(id, ChannelKind::Email), None);
    }

    #[test]
    fn rewriting_a_key_keeps_order_queue_bounded() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        let id = Uuid::new_v4();
        for _ in 0..1_000 {
            store.put(id, ChannelKind::Email, DeliveryRecord::Completed);
        }
        assert_eq!(store.len(), 1);
        // One live record allows at most 2 * 1 + 16 order entries, plus the newest.
        assert!(store.lock().order.len() <= 19);
    }
}
