//! Which notifications were already sent, so a redelivered message is not
//! sent twice.
//!
//! The key is (notification id, channel). Before sending, the dispatcher
//! *claims* the key atomically: only one delivery of a notification, in any
//! instance, can hold the claim. The record then moves to `Sent` right after
//! the provider accepts, and to `Completed` once the outcome events are
//! confirmed. A failed send releases the claim so a retry can take it.
//!
//! - [`memory`]: one process, bounded in size and time (the default);
//! - [`redis`]: shared by every instance, for several instances on the same queues.

pub mod memory;
pub mod redis;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::channel::{ChannelKind, Receipt};

pub use memory::MemoryIdempotencyStore;
pub use redis::RedisIdempotencyStore;

/// How far a delivery got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DeliveryRecord {
    /// A delivery is in progress; its claim expires if its instance dies.
    Claimed,
    /// The provider accepted it at `sent_at`; its outcome events may not be
    /// published yet.
    Sent { receipt: Receipt, sent_at: DateTime<Utc> },
    /// Its outcome events are confirmed too: nothing is left to do.
    Completed,
}

/// Failure to reach the shared store.
#[derive(Debug, thiserror::Error)]
#[error("idempotency store unavailable: {0}")]
pub struct StoreError(pub String);

/// A store of delivery records.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims the delivery when no record exists, returning `None`;
    /// otherwise returns the existing record and claims nothing.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the store cannot be reached.
    async fn claim(&self, notification_id: Uuid, channel: ChannelKind) -> Result<Option<DeliveryRecord>, StoreError>;

    /// Writes or replaces the record of a delivery.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the store cannot be reached.
    async fn put(&self, notification_id: Uuid, channel: ChannelKind, record: DeliveryRecord) -> Result<(), StoreError>;

    /// Removes a claim after a send that did not succeed; a record that
    /// moved past `Claimed` stays.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when the store cannot be reached.
    async fn release(&self, notification_id: Uuid, channel: ChannelKind) -> Result<(), StoreError>;
}
