//! The channel plugin boundary: what a plugin receives, what it returns, and
//! the registry the dispatcher looks plugins up in.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::DeliveryError;
use crate::recipient::Recipient;
use crate::content::Content;

/// The five delivery channels of the stack, one `notify.channel.<name>` queue each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Email,
    Sms,
    Telegram,
    Push,
    Webhook,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 5] = [
        ChannelKind::Email,
        ChannelKind::Sms,
        ChannelKind::Telegram,
        ChannelKind::Push,
        ChannelKind::Webhook,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Sms => "sms",
            ChannelKind::Telegram => "telegram",
            ChannelKind::Push => "push",
            ChannelKind::Webhook => "webhook",
        }
    }

    /// Routing key on the notify exchange, which is also the queue name.
    pub fn routing_key(self) -> String {
        format!("notify.channel.{}", self.as_str())
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a channel name that is not one of [`ChannelKind::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown channel `{0}`; valid channels are email, sms, telegram, push and webhook")]
pub struct UnknownChannel(pub String);

impl FromStr for ChannelKind {
    type Err = UnknownChannel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownChannel(s.to_owned()))
    }
}

/// A notification ready to send: validated, addressed and rendered.
#[derive(Debug, Clone)]
pub struct Notification {
    pub notification_id: Uuid,
    pub tenant_id: Uuid,
    pub channel: ChannelKind,
    pub template: String,
    /// The locale the template was rendered in, after fallback.
    pub locale: String,
    pub recipient: Recipient,
    pub content: Content,
    /// 1 for the first delivery attempt, 2 for the first retry, and so on.
    pub attempt: u32,
}

/// Proof that a provider accepted a notification.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Receipt {
    /// Provider name, e.g. `smtp` or `twilio`.
    pub provider: String,
    /// The provider's id for the message, when it returns one.
    pub provider_message_id: Option<String>,
    /// Channel-specific facts for the delivered event (HTTP status, SMS segments).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Receipt {
    pub fn new(provider: impl Into<String>) -> Self {
        Receipt {
            provider: provider.into(),
            ..Receipt::default()
        }
    }

    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.provider_message_id = Some(id.into());
        self
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// A delivery channel. Implement this once per provider family and register
/// it in a [`ChannelRegistry`]; the dispatcher owns retries, events and acks.
#[async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Returns the channel this plugin serves.
    fn kind(&self) -> ChannelKind;

    /// Sends one notification.
    ///
    /// # Errors
    ///
    /// Returns a [`DeliveryError`] that says whether retrying can help and,
    /// when the provider gave a delay, how long to wait first.
    async fn send(&self, notification: &Notification) -> Result<Receipt, DeliveryError>;
}

/// The plugins the service runs, by channel.
#[derive(Clone, Default)]
pub struct ChannelRegistry {
    channels: HashMap<ChannelKind, Arc<dyn Channel>>,
}

impl ChannelRegistry {
    pub fn new() -> Self {
        ChannelRegistry::default()
    }

    /// Adds a plugin, replacing any earlier one for the same channel.
    pub fn register(&mut self, channel: Arc<dyn Channel>) -> &mut Self {
        self.channels.insert(channel.kind(), channel);
        self
    }

    pub fn get(&self, kind: ChannelKind) -> Option<&Arc<dyn Channel>> {
        self.channels.get(&kind)
    }

    /// Returns the registered channels, in a stable order.
    pub fn kinds(&self) -> Vec<ChannelKind> {
        let mut kinds: Vec<ChannelKind> = self.channels.keys().copied().collect();
        kinds.sort();
        kinds
    }
}

impl fmt::Debug for ChannelRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelRegistry")
            .field("channels", &self.kinds())
            .finish()
    }
}
