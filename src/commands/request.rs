//! Parts of a notification request that `publish` and `send` both build from
//! command-line arguments.

use std::path::Path;

use anyhow::{bail, Context};
use notify_core::ChannelKind;
use serde_json::{json, Value};

pub(crate) fn read_variables(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read variables file {}", path.display()))?;
    let value: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    if !value.is_object() {
        bail!("{} must contain a JSON object of template variables", path.display());
    }
    Ok(value)
}

/// The `recipient` object for `to` on `channel`; push takes `fcm:TOKEN` or `apns:TOKEN`.
pub(crate) fn recipient(channel: ChannelKind, to: &str) -> anyhow::Result<Value> {
    Ok(match channel {
        ChannelKind::Email => json!({"email": to}),
        ChannelKind::Sms => json!({"phone": to}),
        ChannelKind::Telegram => match to.parse::<i64>() {
            Ok(id) => json!({"chat_id": id}),
            Err(_) => json!({"chat_id": to}),
        },
        ChannelKind::Push => {
            let Some((platform, token)) = to.split_once(':') else {
                bail!("--to for push must be fcm:TOKEN or apns:TOKEN");
            };
            json!({"device_token": token, "platform": platform})
        }
        ChannelKind::Webhook => json!({"url": to}),
    })
}
