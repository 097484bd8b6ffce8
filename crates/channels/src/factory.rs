//! The `[channels]` configuration section and the factory that turns it into
//! a registry of plugins.

use std::sync::Arc;

use notify_core::{ChannelKind, ChannelRegistry};
use serde::Deserialize;

use crate::email::{EmailChannel, EmailConfig, EmailError};
use crate::webhook::{WebhookChannel, WebhookConfig, WebhookError};

/// One section per channel; a channel runs only when `enabled = true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub webhook: WebhookConfig,
}

/// A channel that is enabled but cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    // Both errors name the `channels.<channel>.<key>` at fault themselves.
    #[error(transparent)]
    Email(#[from] EmailError),
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
        if self.webhook.enabled {
            kinds.push(ChannelKind::Webhook);
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
    if config.webhook.enabled {
        registry.register(Arc::new(WebhookChannel::new(&config.webhook)?));
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
