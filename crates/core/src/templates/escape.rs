//! Output kinds and the escape function each one applies to `{{variable}}`
//! values. The template's own text is never escaped, and `{{{variable}}}`
//! inserts a value without escaping in every kind.

/// The syntax a rendered part is read in, which decides how values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum OutputKind {
    /// Plain text: email subject and text body, SMS, push, webhook message
    /// and Telegram without a parse mode. Values are inserted as they are.
    Plain,
    /// The HTML body of an email. Values are HTML-escaped.
    Html,
    /// Telegram's `HTML` parse mode. Values have `&`, `<` and `>` escaped.
    TelegramHtml,
    /// Telegram's `MarkdownV2` parse mode. Values have every reserved
    /// character escaped with a backslash.
    TelegramMarkdownV2,
}

impl OutputKind {
    pub(crate) const ALL: [OutputKind; 4] = [
        OutputKind::Plain,
        OutputKind::Html,
        OutputKind::TelegramHtml,
        OutputKind::TelegramMarkdownV2,
    ];

    pub(crate) fn escape_fn(self) -> fn(&str) -> String {
        match self {
            OutputKind::Plain => handlebars::no_escape,
            OutputKind::Html => handlebars::html_escape,
            OutputKind::TelegramHtml => escape_telegram_html,
            OutputKind::TelegramMarkdownV2 => escape_telegram_markdown_v2,
        }
    }
}

/// Escapes `&`, `<` and `>`, the characters Telegram's HTML parse mode reads
/// as markup. Line breaks and quotes stay as they are.
///
/// NOTE: `"` is not escaped, so a value placed inside an attribute such as
/// `<a href="{{url}}">` must not contain a double quote.
pub(crate) fn escape_telegram_html(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// Characters that Telegram's MarkdownV2 parse mode reserves, all of which
/// must be preceded by a backslash to appear literally.
const MARKDOWN_V2_RESERVED: &[char] = &[
    '_', '*', '[', ']', '(', ')', '~', '`', '>', '#', '+', '-', '=', '|', '{', '}', '.', '!', '\\',
];

/// Puts a backslash before every MarkdownV2 reserved character and before
/// every backslash.
pub(crate) fn escape_telegram_markdown_v2(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len() + value.len() / 4);
    for c in value.chars() {
        if MARKDOWN_V2_RESERVED.contains(&c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegram_html_escapes_markup_only() {
        assert_eq!(
            escape_telegram_html("Q&A <b>\"x\"</b>\nnext"),
            "Q&amp;A &lt;b&gt;\"x\"&lt;/b&gt;\nnext"
        );
    }

    #[test]
    fn markdown_v2_escapes_every_reserved_character() {
        assert_eq!(
            escape_telegram_markdown_v2("_*[]()~`>#+-=|{}.!\\"),
            "\\_\\*\\[\\]\\(\\)\\~\\`\\>\\#\\+\\-\\=\\|\\{\\}\\.\\!\\\\"
        );
    }

    #[test]
    fn markdown_v2_leaves_other_characters() {
        assert_eq!(
            escape_telegram_markdown_v2("95% full: a/b ä"),
            "95% full: a/b ä"
        );
    }
}
