//! The idempotency store shared by every instance, in Redis.
//!
//! Keys are `<prefix><notification id>:<channel>`. A claim is written with
//! `SET NX` and a lease, so exactly one instance wins it and a claim of a
//! crashed instance expires; records past the claim live for the TTL.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{Client, Script};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::{DeliveryRecord, IdempotencyStore, StoreError};
use crate::channel::ChannelKind;

/// Maximum wait for one Redis command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Value of a key while a delivery has its claim.
const CLAIMED: &str = "claimed";

/// Deletes the key only while it still holds a claim, so a release never
/// removes a record that moved on to `Sent` or `Completed`.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Delivery records in Redis.
pub struct RedisIdempotencyStore {
    client: Client,
    connection: OnceCell<ConnectionManager>,
    key_prefix: String,
    claim_lease: Duration,
    ttl: Duration,
}

impl RedisIdempotencyStore {
    /// Prepares the store; the connection opens on first use and reopens
    /// after a failure.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] when `url` is not a Redis URL.
    pub fn new(url: &str, key_prefix: &str, claim_lease: Duration, ttl: Duration) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|err| StoreError(format!("invalid Redis URL: {err}")))?;
        Ok(RedisIdempotencyStore { client, connection: OnceCell::new(), key_prefix: key_prefix.to_owned(), claim_lease, ttl })
    }

    fn key(&self, notification_id: Uuid, channel: ChannelKind) -> String {
        format!("{}{notification_id}:{channel}", self.key_prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let connect = self.connection.get_or_try_init(|| self.client.get_connection_manager());
        let connection = tokio::time::timeout(COMMAND_TIMEOUT, connect)
            .await
            .map_err(|_| StoreError(format!("no connection to Redis within {COMMAND_TIMEOUT:?}")))?
            .map_err(|err| StoreError(err.to_string()))?;
        Ok(connection.clone())
    }

    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection().await?;
        tokio::time::timeout(COMMAND_TIMEOUT, command.query_async(&mut connection))
            .await
            .map_err(|_| StoreError(format!("no response from Redis within {COMMAND_TIMEOUT:?}")))?
            .map_err(|err| StoreError(err.to_string()))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn decode(value: &str) -> Result<DeliveryRecord, StoreError> {
    if value == CLAIMED {
        return Ok(DeliveryRecord::Claimed);
    }
    serde_json::from_str(value).map_err(|err| StoreError(format!("unreadable delivery record: {err}")))
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn claim(&self, notification_id: Uuid, channel: ChannelKind) -> Result<Option<DeliveryRecord>, StoreError> {
        let key = self.key(notification_id, channel);
        // A record can expire between the failed SET NX and the GET; then
        // the next round claims it.
        for _ in 0..3 {
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(CLAIMED).arg("NX").arg("PX").arg(millis(self.claim_lease));
            let claimed: Option<String> = self.query(&set).await?;
            if claimed.is_some() {
                return Ok(None);
            }
            let existing: Option<String> = self.query(redis::cmd("GET").arg(&key)).await?;
            if let Some(value) = existing {
                return decode(&value).map(Some);
            }
        }
        Err(StoreError(format!("the record of {key} kept changing while claiming it")))
    }

    async fn put(&self, notification_id: Uuid, channel: ChannelKind, record: DeliveryRecord) -> Result<(), StoreError> {
        let value = match &record {
            DeliveryRecord::Claimed => CLAIMED.to_owned(),
            other => serde_json::to_string(other).map_err(|err| StoreError(err.to_string()))?,
        };
        let mut set = redis::cmd("SET");
        set.arg(self.key(notification_id, channel)).arg(value).arg("PX").arg(millis(self.ttl));
        self.query::<()>(&set).await
    }

    async fn release(&self, notification_id: Uuid, channel: ChannelKind) -> Result<(), StoreError> {
        let mut connection = self.connection().await?;
        let script = Script::new(RELEASE_SCRIPT);
        let mut invocation = script.key(self.key(notification_id, channel));
        invocation.arg(CLAIMED);
        tokio::time::timeout(COMMAND_TIMEOUT, invocation.invoke_async::<i64>(&mut connection))
            .await
            .map_err(|_| StoreError(format!("no response from Redis within {COMMAND_TIMEOUT:?}")))?
            .map_err(|err| StoreError(err.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Receipt;

    /// Opens a store on the local Redis under a key prefix of its own.
    fn store() -> RedisIdempotencyStore {
        let prefix = format!("notify-test:{}:", Uuid::new_v4());
        RedisIdempotencyStore::new("redis://127.0.0.1:6379", &prefix, Duration::from_secs(30), Duration::from_secs(60)).unwrap()
    }

    #[tokio::test]
    async fn only_one_claim_wins() {
        let store = store();
        let id = Uuid::new_v4();
        let (first, second) = tokio::join!(store.claim(id, ChannelKind::Push), store.claim(id, ChannelKind::Push));
        let outcomes = [first.unwrap(), second.unwrap()];
        assert_eq!(outcomes.iter().filter(|outcome| outcome.is_none()).count(), 1, "{outcomes:?}");
        assert!(outcomes.contains(&Some(DeliveryRecord::Claimed)));
    }

    #[tokio::test]
    async fn records_round_trip_and_release_spares_them() {
        let store = store();
        let id = Uuid::new_v4();
        assert_eq!(store.claim(id, ChannelKind::Sms).await.unwrap(), None);
        let receipt = Receipt::new("twilio").with_message_id("SM1").with_detail("segments", 2);
        let sent = DeliveryRecord::Sent { receipt, sent_at: chrono::Utc::now() };
        store.put(id, ChannelKind::Sms, sent.clone()).await.unwrap();
        store.release(id, ChannelKind::Sms).await.unwrap();
        assert_eq!(store.claim(id, ChannelKind::Sms).await.unwrap(), Some(sent));
    }

    #[tokio::test]
    async fn released_claim_can_be_taken_again() {
        let store = store();
        let id = Uuid::new_v4();
        assert_eq!(store.claim(id, ChannelKind::Email).await.unwrap(), None);
        store.release(id, ChannelKind::Email).await.unwrap();
        assert_eq!(store.claim(id, ChannelKind::Email).await.unwrap(), None);
    }

    #[tokio::test]
    async fn unreachable_redis_is_an_error_not_a_hang() {
        let store = RedisIdempotencyStore::new("redis://127.0.0.1:1", "x:", Duration::from_secs(1), Duration::from_secs(1)).unwrap();
        let err = store.claim(Uuid::new_v4(), ChannelKind::Email).await.unwrap_err();
        assert!(err.to_string().contains("unavailable"), "{err}");
    }
}
