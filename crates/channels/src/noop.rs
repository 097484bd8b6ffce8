//! A channel plugin that accepts every notification and sends nothing, for
//! measuring the service's own overhead in the benchmark (`crates/bench`).
//!
//! It is compiled only with the `noop` feature of notify-channels. It takes
//! over the queue of an existing channel (`webhook` by default). Messages
//! still go through that channel's validation, recipient parsing and
//! template rendering before the plugin returns its receipt.

use async_trait::async_trait;
use notify_core::{Channel, ChannelKind, DeliveryError, Notification, Receipt};
use serde::Deserialize;

/// Settings of the no-op channel, the `channels.noop` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NoopConfig {
    /// Whether the service registers the no-op plugin. Default `false`.
    pub enabled: bool,
    /// Channel whose queue the plugin serves, in place of that channel's own
    /// plugin. Default `webhook`.
    pub channel: ChannelKind,
}

impl Default for NoopConfig {
    fn default() -> Self {
        NoopConfig { enabled: false, channel: ChannelKind::Webhook }
    }
}

/// The plugin: every `send` succeeds at once with a receipt from provider `noop`.
#[derive(Debug, Clone)]
pub struct NoopChannel {
    kind: ChannelKind,
}

impl NoopChannel {
    pub fn new(config: &NoopConfig) -> NoopChannel {
        NoopChannel { kind: config.channel }
    }
}

#[async_trait]
impl Channel for NoopChannel {
    fn kind(&self) -> ChannelKind {
        self.kind
    }

    async fn send(&self, notification: &Notification) -> Result<Receipt, DeliveryError> {
        Ok(Receipt::new("noop").with_message_id(notification.notification_id.to_string()))
    }
}
