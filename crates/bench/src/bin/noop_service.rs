//! `bench-noop-service serve --config PATH`: the service of `flatrender-notify
//! serve`, with the no-op plugin in place of the webhook plugin.
//!
//! The benchmark uses it only when the factory of notify-channels does not
//! register `[channels.noop]`. The configuration enables the webhook channel,
//! so the queue, rendering and events are the webhook channel's; only the
//! HTTP request is left out. Logging is `tracing-subscriber`'s default
//! format at `RUST_LOG` (default `info`), as the service binary logs.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use notify_channels::noop::{NoopChannel, NoopConfig};
use notify_channels::{build_registry, ChannelsConfig};
use notify_core::config::Config;
use notify_core::service::Service;
use notify_core::templates::TemplateHandle;
use notify_core::ChannelKind;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let config_path = match args.as_slice() {
        [serve, flag, path] if serve == "serve" && flag == "--config" => PathBuf::from(path),
        _ => bail!("usage: bench-noop-service serve --config PATH"),
    };
    let config: Config<ChannelsConfig> = Config::load(&config_path)?;
    if !config.channels.webhook.enabled {
        bail!("{}: enable [channels.webhook]; the no-op plugin takes over its queue", config_path.display());
    }
    let templates = TemplateHandle::load(&config.templates.dir, &config.templates.default_locale)
        .with_context(|| format!("templates in {} are invalid", config.templates.dir.display()))?;
    let mut registry = build_registry(&config.channels)?;
    let noop = NoopConfig { enabled: true, channel: ChannelKind::Webhook };
    // Registering for the same channel replaces the webhook plugin.
    registry.register(Arc::new(NoopChannel::new(&noop)));
    let service = Service::new(&config, registry, Arc::new(templates))?;

    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        on_signal.cancel();
    });
    service.run(shutdown).await.context("the service failed")?;
    Ok(())
}
