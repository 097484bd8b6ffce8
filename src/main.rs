//! `flatrender-notify`: reads arguments and configuration, sets up logging,
//! and runs the service from `notify-core` with the plugins of `notify-channels`.

mod commands;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use notify_channels::{build_registry, ChannelsConfig};
use notify_core::config::Config;
use notify_core::service::Service;
use notify_core::templates::TemplateHandle;
use notify_core::ChannelKind;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Notification service of the flatrender stack: consumes the
/// `notify.channel.*` queues and delivers email, SMS, Telegram, push and
/// webhooks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service until SIGINT or SIGTERM.
    Serve {
        /// TOML configuration file; `NOTIFY__SECTION__KEY` variables override its keys.
        #[arg(long, short, default_value = "config/default.toml")]
        config: PathBuf,
    },
    /// Publish one notification request to the broker, with the contract's
    /// headers, as another service would; prints its notification id.
    Publish {
        /// TOML configuration file; the broker and exchange names come from it.
        #[arg(long, short, default_value = "config/default.toml")]
        config: PathBuf,
        /// Channel: email, sms, telegram, push or webhook.
        #[arg(long)]
        channel: ChannelKind,
        /// Template name, e.g. render_completed.
        #[arg(long)]
        template: String,
        /// Recipient: an email address, an E.164 phone number, a Telegram chat
        /// id, fcm:TOKEN or apns:TOKEN, or a webhook URL.
        #[arg(long)]
        to: String,
        /// Locale of the template, e.g. de; the default locale when absent.
        #[arg(long)]
        locale: Option<String>,
        /// JSON file with the template variables; the template's sample
        /// variables (samples/<template>.json in the configured templates
        /// folder) when absent, and none when it has no sample.
        #[arg(long)]
        vars: Option<PathBuf>,
        /// Tenant id; a random one when absent.
        #[arg(long)]
        tenant: Option<uuid::Uuid>,
    },
    /// Check the template folder, or preview one rendered notification; no
    /// broker needed.
    Templates {
        #[command(subcommand)]
        command: commands::templates::TemplatesCommand,
    },
    /// Deliver one notification directly through a channel plugin, without
    /// the broker.
    ///
    /// Renders the template and sends through the plugin built from the
    /// configuration, to test a provider's settings and credentials. Prints
    /// the receipt, or the classified error (transient or permanent, kind,
    /// code, message) and exits with status 1.
    Send(commands::send::SendArgs),
    /// Inspect the dead letter queue, or move this service's dead letters
    /// back to their channel queues.
    Dlq {
        #[command(subcommand)]
        command: commands::dlq::DlqCommand,
    },
    /// Declare the exchanges, queues and bindings on the broker.
    Topology {
        #[command(subcommand)]
        command: commands::topology::TopologyCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let is_operator_command = !matches!(cli.command, Command::Serve { .. } | Command::Publish { .. });
    if is_operator_command && std::env::var_os("RUST_LOG").is_none() {
        // Operator commands print their results on stdout, so their log on
        // stderr defaults to warnings and errors. No other thread runs yet.
        std::env::set_var("RUST_LOG", "warn");
    }
    logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve { config } => runtime.block_on(serve(config)).map(|()| ExitCode::SUCCESS),
        Command::Publish { config, channel, template, to, locale, vars, tenant } => runtime.block_on(async {
            let config: Config<ChannelsConfig> = Config::load(&config)?;
            let request = commands::publish::PublishRequest {
                channel,
                template: &template,
                to: &to,
                locale: locale.as_deref(),
                variables: vars.as_deref(),
                tenant_id: tenant,
            };
            commands::publish::run(&config, request).await
        })
        .map(|()| ExitCode::SUCCESS),
        Command::Templates { command } => runtime.block_on(commands::templates::run(command)),
        Command::Send(args) => runtime.block_on(commands::send::run(args)),
        Command::Dlq { command } => runtime.block_on(commands::dlq::run(command)),
        Command::Topology { command } => runtime.block_on(commands::topology::run(command)),
    };
    // Tasks still running (a listener, a watcher) are cancelled; a blocking
    // task that does not end must not keep the process from exiting.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(err) => {
            error!("{}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// Joins an error and its causes with ": ", leaving out a cause that the
/// message already ends with, as when an error's own message quotes its
/// source.
fn describe(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.ends_with(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

async fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    let config: Config<ChannelsConfig> = Config::load(&config_path)?;
    let templates = TemplateHandle::load(&config.templates.dir, &config.templates.default_locale)
        .with_context(|| format!("templates in {} are invalid", config.templates.dir.display()))?;
    let registry = build_registry(&config.channels)?;
    let service = Service::new(&config, registry, Arc::new(templates))?;
    info!(config = %config_path.display(), broker = ?config.broker, "starting flatrender-notify");

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let fanout = if config.fanout.enabled {
        let stage = notify_fanout::Stage::open(notify_fanout::Settings::from_config(&config))
            .await
            .context("cannot start the fan-out stage")?;
        Some(tokio::spawn(stage.run(shutdown.clone())))
    } else {
        None
    };
    let served = service.run(shutdown.clone()).await;
    if let Some(stage) = fanout {
        // The stage stops on the same token, cancelled here too in case the
        // service ended with an error. It may be finishing an event first.
        shutdown.cancel();
        let timeout = Duration::from_secs(config.service.shutdown_timeout_secs);
        match tokio::time::timeout(timeout, stage).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => error!(error = %err, "the fan-out stage failed; the broker will redeliver its unacked events"),
            Err(_) => warn!(timeout_secs = timeout.as_secs(), "stopping the fan-out stage timed out, so the broker will redeliver its unacked events"),
        }
    }
    served.context("cannot start the admin listener (admin.listen)")?;
    Ok(())
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                error!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the service");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received; stopping"),
        () = terminate => info!("SIGTERM received; stopping"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the file: {0}")]
    struct Quoting(#[source] std::io::Error);

    #[test]
    fn describe_skips_quoted_cause() {
        let err = anyhow::Error::new(Quoting(std::io::Error::other("disk on fire")));
        assert_eq!(describe(&err), "cannot read the file: disk on fire");
    }

    #[test]
    fn describe_keeps_cause_found_mid_message() {
        let err = anyhow::Error::new(std::io::Error::other("timed out")).context("the connect timed out twice");
        assert_eq!(describe(&err), "the connect timed out twice: timed out");
    }

    #[test]
    fn describe_keeps_context_chain() {
        let err = anyhow::Error::new(std::io::Error::other("disk on fire")).context("cannot start");
        assert_eq!(describe(&err), "cannot start: disk on fire");
    }
}
