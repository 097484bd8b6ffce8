//! The in-process idempotency store.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use uuid::Uuid;

use super::{DeliveryRecord, IdempotencyStore, StoreError};
use crate::channel::ChannelKind;

/// Remembers deliveries of this process for a bounded time and count.
#[derive(Debug)]
pub struct MemoryIdempotencyStore {
    inner: Mutex<Entries>,
    max_entries: usize,
    ttl: Duration,
    claim_lease: Duration,
}

#[derive(Debug, Default)]
struct Entries {
    records: HashMap<(Uuid, ChannelKind), (DeliveryRecord, Instant)>,
    /// Insertion order, for evicting the oldest first.
    order: VecDeque<((Uuid, ChannelKind), Instant)>,
}

impl MemoryIdempotencyStore {
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        MemoryIdempotencyStore {
            inner: Mutex::new(Entries::default()),
            max_entries: max_entries.max(1),
            ttl,
            claim_lease: Duration::from_secs(300),
        }
    }

    /// Sets how long a claim lasts before another delivery may take it.
    pub fn with_claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = lease;
        self
    }

    /// Returns the record of a delivery, unless it is unknown or expired.
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

    /// Claims the delivery unless a live record exists; see [`IdempotencyStore::claim`].
    pub fn claim_now(&self, notification_id: Uuid, channel: ChannelKind) -> Option<DeliveryRecord> {
        let now = Instant::now();
        let key = (notification_id, channel);
        let mut entries = self.lock();
        if let Some((record, written)) = entries.records.get(&key) {
            let age = now.duration_since(*written);
            let lifetime = if *record == DeliveryRecord::Claimed { self.claim_lease } else { self.ttl };
            if age < lifetime {
                return Some(record.clone());
            }
        }
        entries.records.insert(key, (DeliveryRecord::Claimed, now));
        entries.order.push_back((key, now));
        self.evict(&mut entries, now);
        None
    }

    /// Removes a claim; records past `Claimed` stay.
    pub fn release_now(&self, notification_id: Uuid, channel: ChannelKind) {
        let mut entries = self.lock();
        if matches!(entries.records.get(&(notification_id, channel)), Some((DeliveryRecord::Claimed, _))) {
            entries.records.remove(&(notification_id, channel));
        }
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

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(&self, notification_id: Uuid, channel: ChannelKind) -> Result<Option<DeliveryRecord>, StoreError> {
        Ok(self.claim_now(notification_id, channel))
    }

    async fn put(&self, notification_id: Uuid, channel: ChannelKind, record: DeliveryRecord) -> Result<(), StoreError> {
        MemoryIdempotencyStore::put(self, notification_id, channel, record);
        Ok(())
    }

    async fn release(&self, notification_id: Uuid, channel: ChannelKind) -> Result<(), StoreError> {
        self.release_now(notification_id, channel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_claim_sees_the_first() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        let id = Uuid::new_v4();
        assert_eq!(store.claim_now(id, ChannelKind::Email), None);
        assert_eq!(store.claim_now(id, ChannelKind::Email), Some(DeliveryRecord::Claimed));
        store.release_now(id, ChannelKind::Email);
        assert_eq!(store.claim_now(id, ChannelKind::Email), None, "a released claim can be taken again");
    }

    #[test]
    fn expired_claim_can_be_taken_over() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60)).with_claim_lease(Duration::ZERO);
        let id = Uuid::new_v4();
        assert_eq!(store.claim_now(id, ChannelKind::Email), None);
        assert_eq!(store.claim_now(id, ChannelKind::Email), None, "the first claim's lease is over");
    }

    #[test]
    fn release_keeps_sent_records() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        let id = Uuid::new_v4();
        store.claim_now(id, ChannelKind::Sms);
        MemoryIdempotencyStore::put(&store, id, ChannelKind::Sms, DeliveryRecord::Completed);
        store.release_now(id, ChannelKind::Sms);
        assert_eq!(store.get(id, ChannelKind::Sms), Some(DeliveryRecord::Completed));
    }

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
