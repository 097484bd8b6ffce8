//! The in-process idempotency store.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{DeliveryRecord, IdempotencyStore, StoreError};
use crate::channel::{ChannelKind, Receipt};

/// Remembers deliveries of this process for a bounded time and count.
#[derive(Debug)]
pub struct MemoryIdempotencyStore {
    inner: Mutex<Entries>,
    max_entries: usize,
    ttl: Millis,
    claim_lease: Millis,
    /// The zero of every [`Millis`] in the store.
    epoch: Instant,
}

/// Milliseconds since the store's epoch: half the size of an `Instant`.
type Millis = u64;

type Key = (Uuid, ChannelKind);

#[derive(Debug, Default)]
struct Entries {
    records: HashMap<Key, Slot>,
    /// Keys in the order they were first written, for evicting the oldest
    /// first. A key is queued once, however often it is rewritten.
    order: VecDeque<(Key, Millis)>,
}

/// One record, kept small: a store holds up to `max_entries` of them.
#[derive(Debug)]
struct Slot {
    state: State,
    /// When the key was queued in `order`, to distinguish its live entry from stale ones.
    queued: Millis,
    written: Millis,
}

/// [`DeliveryRecord`] with the rare, large receipt boxed.
#[derive(Debug)]
enum State {
    Claimed,
    Sent(Box<(Receipt, DateTime<Utc>)>),
    Completed,
}

impl From<DeliveryRecord> for State {
    fn from(record: DeliveryRecord) -> State {
        match record {
            DeliveryRecord::Claimed => State::Claimed,
            DeliveryRecord::Sent { receipt, sent_at } => State::Sent(Box::new((receipt, sent_at))),
            DeliveryRecord::Completed => State::Completed,
        }
    }
}

impl State {
    fn record(&self) -> DeliveryRecord {
        match self {
            State::Claimed => DeliveryRecord::Claimed,
            State::Sent(sent) => DeliveryRecord::Sent { receipt: sent.0.clone(), sent_at: sent.1 },
            State::Completed => DeliveryRecord::Completed,
        }
    }
}

fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

impl MemoryIdempotencyStore {
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        MemoryIdempotencyStore {
            inner: Mutex::new(Entries::default()),
            max_entries: max_entries.max(1),
            ttl: millis(ttl),
            claim_lease: millis(Duration::from_secs(300)),
            epoch: Instant::now(),
        }
    }

    /// Sets how long a claim lasts before another delivery may take it.
    pub fn with_claim_lease(mut self, lease: Duration) -> Self {
        self.claim_lease = millis(lease);
        self
    }

    fn now(&self) -> Millis {
        millis(self.epoch.elapsed())
    }

    /// Returns the record of a delivery, unless it is unknown or expired.
    pub fn get(&self, notification_id: Uuid, channel: ChannelKind) -> Option<DeliveryRecord> {
        let now = self.now();
        let entries = self.lock();
        let slot = entries.records.get(&(notification_id, channel))?;
        (now.saturating_sub(slot.written) < self.ttl).then(|| slot.state.record())
    }

    /// Writes or replaces the record of a delivery.
    pub fn put(&self, notification_id: Uuid, channel: ChannelKind, record: DeliveryRecord) {
        self.put_at(notification_id, channel, record, self.now());
    }

    fn put_at(&self, notification_id: Uuid, channel: ChannelKind, record: DeliveryRecord, now: Millis) {
        let mut entries = self.lock();
        entries.write((notification_id, channel), record.into(), now);
        self.evict(&mut entries, now);
    }

    /// Claims the delivery unless a live record exists; see [`IdempotencyStore::claim`].
    pub fn claim_now(&self, notification_id: Uuid, channel: ChannelKind) -> Option<DeliveryRecord> {
        self.claim_at(notification_id, channel, self.now())
    }

    fn claim_at(&self, notification_id: Uuid, channel: ChannelKind, now: Millis) -> Option<DeliveryRecord> {
        let key = (notification_id, channel);
        let mut entries = self.lock();
        if let Some(slot) = entries.records.get(&key) {
            let lifetime = if matches!(slot.state, State::Claimed) { self.claim_lease } else { self.ttl };
            if now.saturating_sub(slot.written) < lifetime {
                return Some(slot.state.record());
            }
        }
        entries.write(key, State::Claimed, now);
        self.evict(&mut entries, now);
        None
    }

    /// Removes a claim; records past `Claimed` stay.
    pub fn release_now(&self, notification_id: Uuid, channel: ChannelKind) {
        let mut entries = self.lock();
        let key = (notification_id, channel);
        if entries.records.get(&key).is_some_and(|slot| matches!(slot.state, State::Claimed)) {
            entries.records.remove(&key);
        }
    }

    fn evict(&self, entries: &mut Entries, now: Millis) {
        while let Some(&(key, queued)) = entries.order.front() {
            let over = entries.records.len() > self.max_entries;
            if !over && now.saturating_sub(queued) < self.ttl {
                break;
            }
            entries.order.pop_front();
            let Some(slot) = entries.records.get_mut(&key) else { continue };
            if slot.queued != queued {
                continue; // a stale entry: the key was removed and written again
            }
            if !over && now.saturating_sub(slot.written) < self.ttl {
                // Rewritten since it was queued: it lives on from that write.
                slot.queued = slot.written;
                entries.order.push_back((key, slot.written));
                continue;
            }
            entries.records.remove(&key);
        }
        // Released claims leave stale entries behind; drop them when they
        // outnumber live records, so the queue stays bounded.
        if entries.order.len() > 2 * entries.records.len() + 16 {
            let records = &entries.records;
            entries.order.retain(|(key, queued)| records.get(key).is_some_and(|slot| slot.queued == *queued));
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

impl Entries {
    fn write(&mut self, key: Key, state: State, now: Millis) {
        match self.records.get_mut(&key) {
            Some(slot) => {
                slot.state = state;
                slot.written = now;
            }
            None => {
                self.records.insert(key, Slot { state, queued: now, written: now });
                self.order.push_back((key, now));
            }
        }
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

    fn live_at(store: &MemoryIdempotencyStore, id: Uuid, now: Millis) -> bool {
        let mut entries = store.lock();
        store.evict(&mut entries, now);
        entries.records.contains_key(&(id, ChannelKind::Email))
    }

    #[test]
    fn rewritten_record_lives_ttl_from_write() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        let id = Uuid::new_v4();
        assert_eq!(store.claim_at(id, ChannelKind::Email, 0), None);
        store.put_at(id, ChannelKind::Email, DeliveryRecord::Completed, 50_000);
        assert!(live_at(&store, id, 100_000), "written at 50 s, so kept until 110 s");
        assert!(!live_at(&store, id, 110_000));
    }

    #[test]
    fn stale_entry_keeps_newer_claim() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        let id = Uuid::new_v4();
        assert_eq!(store.claim_at(id, ChannelKind::Email, 0), None);
        store.release_now(id, ChannelKind::Email);
        assert_eq!(store.claim_at(id, ChannelKind::Email, 30_000), None);
        assert!(live_at(&store, id, 61_000), "the entry queued at 0 s belongs to the released claim");
        assert!(!live_at(&store, id, 90_000));
    }

    #[test]
    fn sent_records_keep_their_receipt() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        let id = Uuid::new_v4();
        let record = DeliveryRecord::Sent { receipt: Receipt::new("smtp").with_message_id("m1"), sent_at: Utc::now() };
        store.put(id, ChannelKind::Email, record.clone());
        assert_eq!(store.claim_now(id, ChannelKind::Email), Some(record));
    }

    #[test]
    fn slot_stays_small() {
        // The store holds up to `max_entries` slots; a receipt inline would
        // make every one of them as large as the rare `Sent` record.
        assert!(std::mem::size_of::<Slot>() <= 32, "{}", std::mem::size_of::<Slot>());
    }

    #[test]
    fn rewriting_a_key_keeps_order_queue_bounded() {
        let store = MemoryIdempotencyStore::new(10, Duration::from_secs(60));
        let id = Uuid::new_v4();
        for _ in 0..1_000 {
            store.put(id, ChannelKind::Email, DeliveryRecord::Completed);
        }
        assert_eq!(store.len(), 1);
        assert_eq!(store.lock().order.len(), 1, "a key is queued once however often it is written");
    }
}
