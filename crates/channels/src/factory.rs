//! The `[channels]` configuration section and the factory that turns it into
//! a registry of plugins.

use std::sync::Arc;

use notify_core::{ChannelKind, ChannelRegistry};
use serde::Deserialize;

use crate::email::{EmailChannel, EmailConfig, EmailError};
use crate::push::{PushChannel, PushConfig, PushError};
use crate::sms::{SmsChannel, SmsConfig, SmsError};
use crate::telegram::{TelegramChannel, TelegramConfig, TelegramError};
use crate::webhook::{WebhookChannel, WebhookConfig, WebhookError};

/// One section per channel; a channel runs only when `enabled = true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub push: PushConfig,
    #[serde(default)]
    pub sms: SmsConfig,
    #[serde(default)]
    pub telegram: TelegramConfig,
    #[serde(default)]
    pub webhook: WebhookConfig,
    /// The benchmark's no-op plugin; compiled only with the `noop` feature.
    #[cfg(feature = "noop")]
    #[serde(default)]
    pub noop: crate::noop::NoopConfig,
}

/// A channel that is enabled but cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    // Both errors name the `channels.<channel>.<key>` at fault themselves.
    #[error(transparent)]
    Email(#[from] EmailError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Sms(#[from] SmsError),
    #[error(transparent)]
    Telegram(#[from] TelegramError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
}

impl ChannelsConfig {
    /// The channels switched on in configuration.
    pub fn enabled(&self) -> Vec<ChannelKind> {
        let mut kinds = Vec::new();
        if self.email.enabled {
            kinds.push(ChannelKind::Email);
        }
        if self.sms.enabled {
            kinds.push(ChannelKind::Sms);
        }
        if self.push.enabled {
            kinds.push(ChannelKind::Push);
        }
        if self.telegram.enabled {
            kinds.push(ChannelKind::Telegram);
        }
        if self.webhook.enabled {
            kinds.push(ChannelKind::Webhook);
        }
        #[cfg(feature = "noop")]
        if self.noop.enabled && !kinds.contains(&self.noop.channel) {
            kinds.push(self.noop.channel);
        }
        kinds
    }
}

/// Builds a plugin for every enabled channel.
///
/// # Errors
///
/// Returns the first channel whose settings are unusable, naming its section.
pub fn build_registry(config: &ChannelsConfig) -> Result<ChannelRegistry, SetupError> {
    let mut registry = ChannelRegistry::new();
    if config.email.enabled {
        registry.register(Arc::new(EmailChannel::new(&config.email)?));
    }
    if config.sms.enabled {
        registry.register(Arc::new(SmsChannel::new(&config.sms)?));
    }
    if config.push.enabled {
        registry.register(Arc::new(PushChannel::new(&config.push)?));
    }
    if config.telegram.enabled {
        registry.register(Arc::new(TelegramChannel::new(&config.telegram)?));
    }
    if config.webhook.enabled {
        registry.register(Arc::new(WebhookChannel::new(&config.webhook)?));
    }
    // Registered last, so it replaces the plugin of the channel it serves.
    #[cfg(feature = "noop")]
    if config.noop.enabled {
        registry.register(Arc::new(crate::noop::NoopChannel::new(&config.noop)));
    }
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use notify_core::config::Config;

    use super::*;

    fn shipped(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config").join(name)
    }

    #[test]
    fn default_config_loads_with_every_channel_off() {
        let config: Config<ChannelsConfig> = Config::load(&shipped("default.toml")).unwrap();
        assert!(config.channels.enabled().is_empty());
        assert!(build_registry(&config.channels).unwrap().kinds().is_empty());
    }

    #[test]
    fn local_config_builds_email_and_webhook() {
        let config: Config<ChannelsConfig> = Config::load(&shipped("local.toml")).unwrap();
        let registry = build_registry(&config.channels).unwrap();
        assert_eq!(registry.kinds(), [ChannelKind::Email, ChannelKind::Webhook]);
        assert_eq!(config.channels.email.port, 1025);
    }
}
