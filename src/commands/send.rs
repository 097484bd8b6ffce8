//! `send`: renders one notification and delivers it through the channel
//! plugin built from the configuration, without the broker, to test a
//! provider's credentials and settings.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use notify_channels::{build_registry, ChannelsConfig};
use notify_core::config::Config;
use notify_core::{ChannelKind, DeliveryError, Notification, Recipient, Retryability, TemplateStore};
use uuid::Uuid;

use super::request::recipient;
use super::templates::variables_for;
use super::ConfigArg;

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Channel: email, sms, telegram, push or webhook. It must be enabled in
    /// the configuration.
    #[arg(long)]
    pub channel: ChannelKind,
    /// Template name, e.g. render_completed.
    #[arg(long)]
    pub template: String,
    /// Recipient: an email address, an E.164 phone number, a Telegram chat
    /// id, fcm:TOKEN or apns:TOKEN, or a webhook URL.
    #[arg(long)]
    pub to: String,
    /// Locale of the template, e.g. de; the default locale when absent.
    #[arg(long)]
    pub locale: Option<String>,
    /// JSON file with the template variables; the template's sample
    /// variables (templates/samples/<template>.json) when absent.
    #[arg(long)]
    pub vars: Option<PathBuf>,
    /// Tenant id, which selects the tenant's webhook signing secret; a
    /// random one when absent.
    #[arg(long)]
    pub tenant: Option<Uuid>,
}

/// Sends one notification and prints the receipt, or the classified error
/// on stderr with exit status 1.
///
/// # Errors
///
/// Fails before sending when the configuration, templates, variables or
/// recipient are invalid, or the channel is not enabled.
pub async fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let config: Config<ChannelsConfig> = Config::load(&args.config.config)?;
    let templates = TemplateStore::load(&config.templates.dir, &config.templates.default_locale)
        .with_context(|| format!("templates in {} are invalid", config.templates.dir.display()))?;
    let registry = build_registry(&config.channels)?;
    let Some(channel) = registry.get(args.channel) else {
        bail!(
            "channel {} is not enabled in {}; set channels.{}.enabled = true (enabled: {})",
            args.channel,
            args.config.config.display(),
            args.channel,
            names(&registry.kinds()),
        );
    };

    let recipient = Recipient::parse(args.channel, &recipient(args.channel, &args.to)?)?;
    let variables = variables_for(&templates, &args.template, args.vars.as_deref())?;
    let rendered = templates
        .render(args.channel, &args.template, args.locale.as_deref(), &variables)
        .with_context(|| format!("cannot render {} template {}", args.channel, args.template))?;
    let notification = Notification {
        notification_id: Uuid::new_v4(),
        tenant_id: args.tenant.unwrap_or_else(Uuid::new_v4),
        channel: args.channel,
        template: args.template.clone(),
        locale: rendered.locale,
        recipient,
        content: rendered.content,
        attempt: 1,
    };

    println!(
        "sending notification {} ({} template {}, locale {}) to {}",
        notification.notification_id,
        notification.channel,
        notification.template,
        notification.locale,
        notification.recipient.masked(),
    );
    match channel.send(&notification).await {
        Ok(receipt) => {
            println!("delivered");
            println!("provider:            {}", receipt.provider);
            println!("provider message id: {}", receipt.provider_message_id.as_deref().unwrap_or("-"));
            for (key, value) in &receipt.details {
                println!("{:<21}{value}", format!("{key}:"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            report_failure(&err);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints whether retrying can help, the kind, code and message, on stderr.
fn report_failure(err: &DeliveryError) {
    let retryability = match err.retryability() {
        Retryability::Transient { retry_after: Some(delay) } => {
            format!("transient (a retry can succeed; the provider asks to wait {delay:?})")
        }
        Retryability::Transient { retry_after: None } => "transient (a retry can succeed)".to_owned(),
        Retryability::Permanent => "permanent (retrying cannot help)".to_owned(),
    };
    eprintln!("delivery failed: {retryability}");
    eprintln!("kind:    {}", err.kind());
    eprintln!("code:    {}", err.code().unwrap_or("-"));
    eprintln!("message: {}", err.message());
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        eprintln!("cause:   {cause}");
        source = cause.source();
    }
}

fn names(kinds: &[ChannelKind]) -> String {
    if kinds.is_empty() {
        return "none".to_owned();
    }
    kinds.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(", ")
}
