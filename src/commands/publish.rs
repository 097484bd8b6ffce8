//! `publish`: puts one dispatch request on the broker, with the contract's
//! headers, as another service of the stack would.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Connection, ConnectionProperties};
use notify_core::config::{BrokerConfig, Config};
use notify_core::envelope::DISPATCH_EVENT_TYPE;
use notify_core::headers::outgoing_properties;
use notify_core::{ChannelKind, TemplateStore};
use serde_json::json;
use uuid::Uuid;

use super::request::{read_variables, recipient};
use super::templates::variables_for;

/// What to publish.
pub struct PublishRequest<'a> {
    pub channel: ChannelKind,
    pub template: &'a str,
    pub to: &'a str,
    pub locale: Option<&'a str>,
    pub variables: Option<&'a Path>,
    pub tenant_id: Option<Uuid>,
}

/// Publishes the request and prints its notification id.
///
/// # Errors
///
/// Fails when the variables file is unreadable or the broker does not
/// confirm the message.
pub async fn run<C: serde::de::DeserializeOwned>(config: &Config<C>, request: PublishRequest<'_>) -> anyhow::Result<()> {
    let variables = match request.variables {
        Some(path) => read_variables(path)?,
        None => sample_variables(config, request.template)?,
    };
    let notification_id = Uuid::new_v4();
    let tenant_id = request.tenant_id.unwrap_or_else(Uuid::new_v4);
    let trace_id = Uuid::new_v4();
    let mut data = json!({
        "notification_id": notification_id,
        "channel": request.channel.as_str(),
        "template": request.template,
        "recipient": recipient(request.channel, request.to)?,
        "variables": variables,
    });
    if let Some(locale) = request.locale {
        data["locale"] = json!(locale);
    }
    let envelope = json!({
        "event_id": Uuid::new_v4(),
        "event_type": DISPATCH_EVENT_TYPE,
        "event_time": Utc::now().to_rfc3339(),
        "tenant_id": tenant_id,
        "trace_id": trace_id,
        "correlation_id": Uuid::new_v4(),
        "producer": "flatrender-notify-cli",
        "data": data,
    });
    let body = serde_json::to_vec(&envelope)?;
    let properties = outgoing_properties(DISPATCH_EVENT_TYPE, &tenant_id.to_string(), &trace_id.to_string(), &notification_id.to_string());

    publish(&config.broker, &request.channel.routing_key(), &body, properties, config.confirm_timeout()).await?;
    println!("published notification {notification_id} to {} ({})", config.broker.exchanges.notify, request.channel.routing_key());
    Ok(())
}

/// Returns the template's sample variables from the configured templates,
/// as `send` and `templates render` take them, or an empty object when the
/// template has no sample.
fn sample_variables<C>(config: &Config<C>, template: &str) -> anyhow::Result<serde_json::Value> {
    let dir = &config.templates.dir;
    let store = TemplateStore::load(dir, &config.templates.default_locale)
        .with_context(|| format!("templates in {} are invalid; pass the variables with --vars", dir.display()))?;
    match variables_for(&store, template, None)? {
        serde_json::Value::Null => {
            eprintln!("template {template} has no sample variables in {}; publishing without variables (use --vars)", dir.display());
            Ok(json!({}))
        }
        variables => Ok(variables),
    }
}

async fn publish(
    broker: &BrokerConfig,
    routing_key: &str,
    body: &[u8],
    properties: lapin::BasicProperties,
    confirm_timeout: Duration,
) -> anyhow::Result<()> {
    let connect = Connection::connect(&broker.url, ConnectionProperties::default());
    let connection = tokio::time::timeout(Duration::from_secs(broker.connect_timeout_secs), connect)
        .await
        .context("timed out connecting to the broker")?
        .context("cannot connect to the broker")?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel
        .basic_publish(broker.exchanges.notify.as_str().into(), routing_key.into(), options, body, properties)
        .await
        .with_context(|| format!("cannot publish to exchange {}", broker.exchanges.notify))?;
    let confirmation = tokio::time::timeout(confirm_timeout, confirm)
        .await
        .context("timed out waiting for the broker's confirm")?
        .with_context(|| {
            format!(
                "publish to exchange {} failed; start the service once so it declares its exchanges and queues",
                broker.exchanges.notify
            )
        })?;
    if !confirmation.is_ack() {
        bail!("the broker rejected the message");
    }
    if confirmation.take_message().is_some() {
        bail!("no queue is bound to {routing_key} on {}; start the service once so it declares its queues", broker.exchanges.notify);
    }
    notify_core::connection::close(&connection, "publish", "published").await;
    Ok(())
}
