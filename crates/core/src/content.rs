//! Rendered content: what a template turns into, per channel.

use serde::{Deserialize, Serialize};

/// How Telegram should parse a message's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParseMode {
    /// No markup: the text is shown as it is.
    Plain,
    /// Telegram's `MarkdownV2`.
    MarkdownV2,
    /// Telegram's `HTML` subset.
    Html,
}

/// A rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailContent {
    /// One line, without CR or LF.
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
}

/// A notification's rendered content, in the shape of its channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Email(EmailContent),
    Sms { body: String },
    Telegram { text: String, parse_mode: ParseMode },
    Push { title: String, body: String },
    /// `message` is the rendered summary; `data` the message's variables,
    /// sent to the receiver as they came.
    Webhook { message: String, data: serde_json::Value },
}
