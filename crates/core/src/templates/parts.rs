//! The parts of a locale folder: which files each channel has, and how
//! each part is escaped and trimmed.

use super::escape::OutputKind;
use crate::channel::ChannelKind;
use crate::content::ParseMode;

/// A template file of a locale folder, by its role in the rendered content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Part {
    EmailSubject,
    EmailText,
    EmailHtml,
    SmsBody,
    TelegramPlain,
    TelegramMarkdownV2,
    TelegramHtml,
    PushTitle,
    PushBody,
    WebhookMessage,
}

impl Part {
    /// Returns the parts a locale folder of the channel may contain.
    pub(crate) fn of_channel(channel: ChannelKind) -> &'static [Part] {
        match channel {
            ChannelKind::Email => &[Part::EmailSubject, Part::EmailText, Part::EmailHtml],
            ChannelKind::Sms => &[Part::SmsBody],
            ChannelKind::Telegram => &[
                Part::TelegramPlain,
                Part::TelegramMarkdownV2,
                Part::TelegramHtml,
            ],
            ChannelKind::Push => &[Part::PushTitle, Part::PushBody],
            ChannelKind::Webhook => &[Part::WebhookMessage],
        }
    }

    pub(crate) fn file_name(self) -> &'static str {
        match self {
            Part::EmailSubject => "subject.hbs",
            Part::EmailText => "text.hbs",
            Part::EmailHtml => "html.hbs",
            Part::SmsBody | Part::TelegramPlain | Part::PushBody => "body.hbs",
            Part::TelegramMarkdownV2 => "body.md.hbs",
            Part::TelegramHtml => "body.html.hbs",
            Part::PushTitle => "title.hbs",
            Part::WebhookMessage => "message.hbs",
        }
    }

    /// Returns the part's name for error messages.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Part::EmailSubject => "email subject",
            Part::EmailText => "email text body",
            Part::EmailHtml => "email HTML body",
            Part::SmsBody => "SMS body",
            Part::TelegramPlain | Part::TelegramMarkdownV2 | Part::TelegramHtml => {
                "Telegram message"
            }
            Part::PushTitle => "push title",
            Part::PushBody => "push body",
            Part::WebhookMessage => "webhook message",
        }
    }

    pub(crate) fn output(self) -> OutputKind {
        match self {
            Part::EmailHtml => OutputKind::Html,
            Part::TelegramHtml => OutputKind::TelegramHtml,
            Part::TelegramMarkdownV2 => OutputKind::TelegramMarkdownV2,
            _ => OutputKind::Plain,
        }
    }

    /// Returns whether the rendered part must be a single line, because it
    /// ends up in a header (email subject) or a title field (push).
    pub(crate) fn is_one_line(self) -> bool {
        matches!(self, Part::EmailSubject | Part::PushTitle)
    }

    /// Returns whether trailing line breaks are removed from the rendered
    /// part. The email bodies keep theirs, where a final newline is usual.
    pub(crate) fn trims_trailing_newlines(self) -> bool {
        !matches!(self, Part::EmailText | Part::EmailHtml)
    }

    pub(crate) fn from_file_name(channel: ChannelKind, file_name: &str) -> Option<Part> {
        Part::of_channel(channel)
            .iter()
            .copied()
            .find(|part| part.file_name() == file_name)
    }
}

/// The parts of one locale of a template, in the shape of its channel. `F` is
/// a source file while loading and a reference into the registries after.
#[derive(Debug, Clone)]
pub(crate) enum LocaleParts<F> {
    Email {
        subject: F,
        text: F,
        html: Option<F>,
    },
    Sms {
        body: F,
    },
    Telegram {
        body: F,
        parse_mode: ParseMode,
    },
    Push {
        title: F,
        body: F,
    },
    Webhook {
        message: F,
    },
}

impl<F> LocaleParts<F> {
    pub(crate) fn files(&self) -> Vec<&F> {
        match self {
            LocaleParts::Email {
                subject,
                text,
                html,
            } => {
                let mut files = vec![subject, text];
                files.extend(html);
                files
            }
            LocaleParts::Sms { body } => vec![body],
            LocaleParts::Telegram { body, .. } => vec![body],
            LocaleParts::Push { title, body } => vec![title, body],
            LocaleParts::Webhook { message } => vec![message],
        }
    }

    pub(crate) fn map<G>(self, mut convert: impl FnMut(F) -> G) -> LocaleParts<G> {
        match self {
            LocaleParts::Email {
                subject,
                text,
                html,
            } => LocaleParts::Email {
                subject: convert(subject),
                text: convert(text),
                html: html.map(convert),
            },
            LocaleParts::Sms { body } => LocaleParts::Sms {
                body: convert(body),
            },
            LocaleParts::Telegram { body, parse_mode } => LocaleParts::Telegram {
                body: convert(body),
                parse_mode,
            },
            LocaleParts::Push { title, body } => LocaleParts::Push {
                title: convert(title),
                body: convert(body),
            },
            LocaleParts::Webhook { message } => LocaleParts::Webhook {
                message: convert(message),
            },
        }
    }
}
