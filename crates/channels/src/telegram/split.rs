//! Splitting of a message text into parts that each fit Telegram's length
//! limit.
//!
//! The Bot API limits `sendMessage` text to 4096 characters after entity
//! parsing. This module counts UTF-16 code units of the raw text, markup
//! included, which is never less than Telegram's count, so every part is
//! accepted whatever Telegram's exact unit is.
//!
//! The text is first cut into tokens that are never divided: a character
//! with the combining marks, variation selectors and joiners that follow it,
//! an HTML tag or entity, or a MarkdownV2 escape sequence such as `\.`.
//! Parts are then packed greedily. A part ends, in order of preference, at a
//! blank line, a line break, a space, or else between any two tokens. The
//! whitespace at a cut is dropped, because the message boundary replaces it.
//! Entities still open at a cut are closed at the end of the part and opened
//! again at the start of the next one, so that each part parses on its own.

use std::borrow::Cow;

use notify_core::ParseMode;

/// Maximum length of a message text in UTF-16 code units.
pub const MAX_MESSAGE_UTF16: usize = 4096;

/// Maximum number of characters kept together as one grapheme. Longer runs
/// of combining marks may be divided, so that no token grows without bound.
const MAX_CLUSTER_CHARS: usize = 32;

/// Maximum length in bytes of an HTML character reference such as `&amp;`.
const MAX_ENTITY_BYTES: usize = 32;

/// A text that cannot be split into parts within the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the message text cannot be split into parts of at most {limit} UTF-16 code units: \
     the markup at byte {offset} and the entities open there do not fit in one part"
)]
pub struct SplitError {
    /// Byte offset in the text of the first token that does not fit.
    pub offset: usize,
    pub limit: usize,
}

/// Splits `text` into parts of at most `limit` UTF-16 code units, in order.
///
/// Returns one part equal to `text` when it fits. Whitespace-only parts are
/// left out, so an all-whitespace text yields no part.
///
/// # Errors
///
/// Returns [`SplitError`] when a single token, together with the markup
/// needed to close and reopen the entities around it, exceeds `limit`.
pub fn split_message(text: &str, mode: ParseMode, limit: usize) -> Result<Vec<String>, SplitError> {
    if utf16_len(text) <= limit {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        return Ok(vec![text.to_owned()]);
    }
    let tokens = match mode {
        ParseMode::Plain => tokenize_plain(text),
        ParseMode::Html => tokenize_html(text),
        ParseMode::MarkdownV2 => tokenize_markdown_v2(text),
    };
    Packer {
        text,
        tokens: &tokens,
        mode,
        limit,
    }
    .pack()
}

/// Returns the length of `text` in UTF-16 code units.
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whitespace {
    /// The token contains visible text.
    No,
    /// Spaces or tabs only.
    Blank,
    /// Whitespace with this many line breaks.
    Lines(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenKind<'a> {
    /// A grapheme, an HTML character reference, a MarkdownV2 escape sequence
    /// or markup that opens and closes nothing.
    Text(Whitespace),
    /// Opens an entity. The token's own text opens it again in the next part;
    /// `close` ends it.
    Open { close: Cow<'a, str> },
    /// Closes the entity at index `depth` of the stack of open entities.
    Close { depth: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token<'a> {
    /// Byte offset in the text.
    offset: usize,
    text: &'a str,
    kind: TokenKind<'a>,
}

impl Token<'_> {
    fn units(&self) -> usize {
        utf16_len(self.text)
    }

    fn is_content(&self) -> bool {
        matches!(self.kind, TokenKind::Text(Whitespace::No))
    }

    fn whitespace(&self) -> Option<Whitespace> {
        match self.kind {
            TokenKind::Text(Whitespace::No) => None,
            TokenKind::Text(whitespace) => Some(whitespace),
            _ => None,
        }
    }
}

/// An entity open at some point of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpenEntity<'a> {
    open: &'a str,
    close: Cow<'a, str>,
}

fn apply<'a>(stack: &mut Vec<OpenEntity<'a>>, token: &Token<'a>) {
    match &token.kind {
        TokenKind::Open { close } => stack.push(OpenEntity {
            open: token.text,
            close: close.clone(),
        }),
        TokenKind::Close { depth } if *depth < stack.len() => {
            stack.remove(*depth);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Tokenizers
// ---------------------------------------------------------------------------

/// Returns true for characters that belong to the grapheme before them:
/// common combining marks, variation selectors, the zero-width joiner, emoji
/// skin tone modifiers and emoji tag characters.
///
/// NOTE: this is a cheap subset of Unicode grapheme cluster rules. Hangul
/// syllable sequences and most Indic vowel signs are not covered, so a cut
/// may still separate them when no better boundary is in reach.
fn extends_grapheme(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'
        | '\u{0483}'..='\u{0489}'
        | '\u{0591}'..='\u{05BD}'
        | '\u{064B}'..='\u{065F}'
        | '\u{0670}'
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{200C}'..='\u{200D}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FE20}'..='\u{FE2F}'
        | '\u{1F3FB}'..='\u{1F3FF}'
        | '\u{E0020}'..='\u{E007F}'
        | '\u{E0100}'..='\u{E01EF}'
    )
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

/// Returns the byte length of the grapheme that starts at `start`.
fn grapheme_len(text: &str, start: usize) -> usize {
    let mut chars = text[start..].char_indices();
    let Some((_, first)) = chars.next() else {
        return 0;
    };
    let mut end = first.len_utf8();
    let mut previous = first;
    for (count, (index, c)) in (1..).zip(chars) {
        let joins = (previous == '\r' && c == '\n' && count == 1)
            || extends_grapheme(c)
            || previous == '\u{200D}'
            || (count == 1 && is_regional_indicator(first) && is_regional_indicator(c));
        if !joins || count >= MAX_CLUSTER_CHARS {
            break;
        }
        end = index + c.len_utf8();
        previous = c;
    }
    end
}

fn whitespace_of(text: &str) -> Whitespace {
    if !text.chars().all(char::is_whitespace) {
        return Whitespace::No;
    }
    match text.matches('\n').count() {
        0 => Whitespace::Blank,
        lines => Whitespace::Lines(lines),
    }
}

fn text_token(text: &str, offset: usize, len: usize) -> Token<'_> {
    let slice = &text[offset..offset + len];
    Token {
        offset,
        text: slice,
        kind: TokenKind::Text(whitespace_of(slice)),
    }
}

fn tokenize_plain(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut offset = 0;
    while offset < text.len() {
        let len = grapheme_len(text, offset);
        tokens.push(text_token(text, offset, len));
        offset += len;
    }
    tokens
}

/// Tokenizes Telegram HTML: tags, character references and text.
///
/// A start tag opens an entity that `</name>` closes, and reopens with its
/// attributes in the next part. Text that only looks like markup (a `<`
/// without `>`, an `&` without `;`) becomes plain text, which Telegram then
/// rejects or shows as it is.
fn tokenize_html(text: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut offset = 0;
    while offset < text.len() {
        let rest = &text[offset..];
        if rest.starts_with('<') {
            if let Some(len) = html_tag_len(rest) {
                let tag = &rest[..len];
                tokens.push(html_tag_token(tag, offset, &mut names));
                offset += len;
                continue;
            }
        }
        if rest.starts_with('&') {
            if let Some(len) = html_entity_len(rest) {
                tokens.push(Token {
                    offset,
                    text: &rest[..len],
                    kind: TokenKind::Text(Whitespace::No),
                });
                offset += len;
                continue;
            }
        }
        let len = grapheme_len(text, offset);
        tokens.push(text_token(text, offset, len));
        offset += len;
    }
    tokens
}

/// Returns the byte length of the tag at the start of `rest`, up to and
/// including the `>` outside quoted attribute values.
fn html_tag_len(rest: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    for (index, c) in rest.char_indices().skip(1) {
        match (quote, c) {
            (Some(open), c) if c == open => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '>') => return Some(index + 1),
            (None, '<') => return None,
            (None, _) => {}
        }
    }
    None
}

fn html_tag_token<'a>(tag: &'a str, offset: usize, names: &mut Vec<String>) -> Token<'a> {
    let plain = Token {
        offset,
        text: tag,
        kind: TokenKind::Text(Whitespace::No),
    };
    let (closing, body) = match tag[1..].strip_prefix('/') {
        Some(body) => (true, body),
        None => (false, &tag[1..]),
    };
    let name: String = body
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if name.is_empty() || tag.ends_with("/>") {
        return plain;
    }

    if closing {
        let Some(depth) = names.iter().rposition(|open| *open == name) else {
            return plain;
        };
        names.remove(depth);
        return Token {
            offset,
            text: tag,
            kind: TokenKind::Close { depth },
        };
    }
    let close = Cow::Owned(format!("</{name}>"));
    names.push(name);
    Token {
        offset,
        text: tag,
        kind: TokenKind::Open { close },
    }
}

/// Returns the byte length of a character reference (`&lt;`, `&#60;`,
/// `&#x3C;`) at the start of `rest`.
fn html_entity_len(rest: &str) -> Option<usize> {
    let end = rest
        .bytes()
        .take(MAX_ENTITY_BYTES)
        .position(|b| b == b';')?;
    let name = &rest[1..end];
    let valid = !name.is_empty()
        && name
            .bytes()
            .enumerate()
            .all(|(index, b)| b.is_ascii_alphanumeric() || (index == 0 && b == b'#'));
    valid.then_some(end + 1)
}

/// Tokenizes Telegram MarkdownV2.
///
/// Handles escapes (`\` and the next character), the toggles `*`, `_`,
/// `__`, `~` and `||`, inline code and pre blocks (where only `` ` `` and
/// `\` are special), and links `[text](url)` and custom emoji
/// `![emoji](tg://emoji?id=…)`, whose `](url)` closes the entity.
///
/// NOTE: a block quote (`>` at the start of a line) is kept as plain text, so
/// a cut inside a quoted line leaves the rest of that line unquoted. This
/// happens only when no line break lies in the second half of the part.
fn tokenize_markdown_v2(text: &str) -> Vec<Token<'_>> {
    let mut tokenizer = MarkdownTokenizer {
        text,
        tokens: Vec::new(),
        stack: Vec::new(),
        link_closes: Vec::new(),
    };
    tokenizer.run();
    tokenizer.tokens
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkdownEntity {
    Toggle(&'static str),
    Code,
    Pre,
    Link,
}

struct MarkdownTokenizer<'a> {
    text: &'a str,
    tokens: Vec<Token<'a>>,
    stack: Vec<MarkdownEntity>,
    /// Byte ranges of the `](url)` that close the open links, innermost last.
    link_closes: Vec<(usize, usize)>,
}

impl<'a> MarkdownTokenizer<'a> {
    fn run(&mut self) {
        let text = self.text;
        let mut offset = 0;
        while offset < text.len() {
            let len = self.next_token(offset);
            offset += len;
        }
    }

    fn push(&mut self, offset: usize, len: usize, kind: TokenKind<'a>) -> usize {
        self.tokens.push(Token {
            offset,
            text: &self.text[offset..offset + len],
            kind,
        });
        len
    }

    fn push_text(&mut self, offset: usize, len: usize) -> usize {
        let token = text_token(self.text, offset, len);
        self.tokens.push(token);
        len
    }

    fn open(
        &mut self,
        offset: usize,
        len: usize,
        entity: MarkdownEntity,
        close: Cow<'a, str>,
    ) -> usize {
        self.stack.push(entity);
        self.push(offset, len, TokenKind::Open { close })
    }

    fn close(&mut self, offset: usize, len: usize, depth: usize) -> usize {
        self.stack.remove(depth);
        self.push(offset, len, TokenKind::Close { depth })
    }

    /// Pushes the token at `offset` and returns its byte length.
    fn next_token(&mut self, offset: usize) -> usize {
        let rest = &self.text[offset..];
        if rest.starts_with('\\') && rest.len() > 1 {
            let escaped = grapheme_len(self.text, offset + 1);
            return self.push(offset, 1 + escaped, TokenKind::Text(Whitespace::No));
        }

        match self.stack.last() {
            Some(MarkdownEntity::Pre) => {
                if rest.starts_with("```") {
                    let depth = self.stack.len() - 1;
                    return self.close(offset, 3, depth);
                }
                let len = grapheme_len(self.text, offset);
                return self.push_text(offset, len);
            }
            Some(MarkdownEntity::Code) => {
                if rest.starts_with('`') {
                    let depth = self.stack.len() - 1;
                    return self.close(offset, 1, depth);
                }
                let len = grapheme_len(self.text, offset);
                return self.push_text(offset, len);
            }
            _ => {}
        }

        if let Some(&(start, end)) = self.link_closes.last() {
            if start == offset {
                self.link_closes.pop();
                if let Some(depth) = self.stack.iter().rposition(|e| *e == MarkdownEntity::Link) {
                    return self.close(offset, end - start, depth);
                }
            }
        }

        if let Some(after_fence) = rest.strip_prefix("```") {
            // The opener takes the language and the line break after it, so
            // that the reopened block in the next part starts the same way.
            let language: usize = after_fence
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '`')
                .map(char::len_utf8)
                .sum();
            let line_break = usize::from(after_fence[language..].starts_with('\n'));
            return self.open(
                offset,
                3 + language + line_break,
                MarkdownEntity::Pre,
                Cow::Borrowed("```"),
            );
        }
        for marker in ["||", "__", "*", "_", "~"] {
            if rest.starts_with(marker) {
                return self.toggle(offset, marker);
            }
        }
        if rest.starts_with('`') {
            return self.open(offset, 1, MarkdownEntity::Code, Cow::Borrowed("`"));
        }
        for opener in ["![", "["] {
            if rest.starts_with(opener) {
                if let Some((start, end)) = find_link_close(self.text, offset + opener.len()) {
                    self.link_closes.push((start, end));
                    let close = Cow::Borrowed(&self.text[start..end]);
                    return self.open(offset, opener.len(), MarkdownEntity::Link, close);
                }
            }
        }
        let len = grapheme_len(self.text, offset);
        self.push_text(offset, len)
    }

    fn toggle(&mut self, offset: usize, marker: &'static str) -> usize {
        let entity = MarkdownEntity::Toggle(marker);
        match self.stack.iter().rposition(|open| *open == entity) {
            Some(depth) => self.close(offset, marker.len(), depth),
            None => self.open(offset, marker.len(), entity, Cow::Borrowed(marker)),
        }
    }
}

/// Finds the `](url)` that ends a link whose text starts at `from`, and
/// returns its byte range.
fn find_link_close(text: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut index = from;
    let mut bracket = None;
    while index < bytes.len() {
        match bytes[index] {
            b'\\' => index += 1,
            b'[' if bracket.is_none() => return None,
            b']' if bracket.is_none() => {
                if bytes.get(index + 1) != Some(&b'(') {
                    return None;
                }
                bracket = Some(index);
                index += 1;
            }
            b')' if bracket.is_some() => return bracket.map(|start| (start, index + 1)),
            b'\n' if bracket.is_some() => return None,
            _ => {}
        }
        index += 1;
    }
    None
}

// ---------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------

/// A place to end a part: the part keeps `tokens[..end]` and the next part
/// starts at `tokens[next]`, so whitespace between them is dropped.
#[derive(Debug, Clone, Copy)]
struct Cut {
    end: usize,
    next: usize,
    /// Length of the part up to `end`, without closing markup.
    units: usize,
}

/// Index of the cut classes, from most to least preferred.
const PARAGRAPH: usize = 0;
const LINE: usize = 1;
const SPACE: usize = 2;
const ANY: usize = 3;

struct Packer<'t, 'a> {
    text: &'a str,
    tokens: &'t [Token<'a>],
    mode: ParseMode,
    limit: usize,
}

impl<'a> Packer<'_, 'a> {
    fn pack(&self) -> Result<Vec<String>, SplitError> {
        let mut parts = Vec::new();
        let mut start = 0;
        let mut stack: Vec<OpenEntity<'a>> = Vec::new();
        let Some(last_content) = self.tokens.iter().rposition(Token::is_content) else {
            return Ok(parts);
        };

        while start <= last_content {
            let prefix_units = self.reopen_units(&stack);
            let (rest_units, rest_fits) = self.rest_fits(start, prefix_units);
            if rest_fits {
                debug_assert!(rest_units <= self.limit);
                parts.push(self.render(&stack, start, self.tokens.len(), false));
                break;
            }

            let cut = self.choose_cut(start, prefix_units, &stack)?;
            parts.push(self.render(&stack, start, cut.end, true));
            for token in &self.tokens[start..cut.next] {
                apply(&mut stack, token);
            }
            start = cut.next;
        }
        Ok(parts)
    }

    /// Returns the length of the remaining text with its prefix, and whether
    /// it fits in one part.
    fn rest_fits(&self, start: usize, prefix_units: usize) -> (usize, bool) {
        let mut units = prefix_units;
        for token in &self.tokens[start..] {
            units += token.units();
            if units > self.limit {
                return (units, false);
            }
        }
        (units, true)
    }

    fn choose_cut(
        &self,
        start: usize,
        prefix_units: usize,
        stack: &[OpenEntity<'a>],
    ) -> Result<Cut, SplitError> {
        let mut best: [Option<Cut>; 4] = [None; 4];
        let mut fallback: Option<Cut> = None;
        let mut open = stack.to_vec();
        let mut units = prefix_units;
        let mut has_content = false;

        for index in start..self.tokens.len() {
            let token = &self.tokens[index];
            if index > start && has_content && units + self.close_units(&open) <= self.limit {
                let cut = Cut {
                    end: index,
                    next: index,
                    units,
                };
                fallback = Some(cut);
                let after_open = matches!(self.tokens[index - 1].kind, TokenKind::Open { .. });
                let before_close = matches!(token.kind, TokenKind::Close { .. });
                if !after_open && !before_close {
                    best[ANY] = Some(cut);
                }
                if token.whitespace().is_some() && self.tokens[index - 1].whitespace().is_none() {
                    let (next, class) = self.whitespace_run(index);
                    best[class] = Some(Cut {
                        end: index,
                        next,
                        units,
                    });
                }
            }
            units += token.units();
            if units > self.limit {
                break;
            }
            apply(&mut open, token);
            has_content |= token.is_content();
        }

        let half = self.limit / 2;
        let preferred = [PARAGRAPH, LINE, SPACE]
            .into_iter()
            .filter_map(|class| best[class])
            .find(|cut| cut.units >= half);
        preferred
            .or(best[ANY])
            .or_else(|| {
                best[..ANY]
                    .iter()
                    .flatten()
                    .max_by_key(|cut| cut.end)
                    .copied()
            })
            .or(fallback)
            .ok_or(SplitError {
                offset: self.tokens[start].offset,
                limit: self.limit,
            })
    }

    /// Returns the index after the whitespace tokens that start at `index`,
    /// and the cut class of that whitespace.
    fn whitespace_run(&self, index: usize) -> (usize, usize) {
        let mut lines = 0;
        let mut next = index;
        while let Some(whitespace) = self.tokens.get(next).and_then(Token::whitespace) {
            if let Whitespace::Lines(count) = whitespace {
                lines += count;
            }
            next += 1;
        }
        let class = match lines {
            0 => SPACE,
            1 => LINE,
            _ => PARAGRAPH,
        };
        (next, class)
    }

    /// Units that a part needs to close `open`, with room for the separators
    /// that [`Packer::join`] may insert.
    fn close_units(&self, open: &[OpenEntity<'a>]) -> usize {
        open.iter()
            .map(|entity| self.markup_units(&entity.close))
            .sum()
    }

    fn reopen_units(&self, open: &[OpenEntity<'a>]) -> usize {
        open.iter()
            .map(|entity| self.markup_units(entity.open))
            .sum()
    }

    /// Units of `markup`, plus room for a separator before it when it may
    /// need one.
    fn markup_units(&self, markup: &str) -> usize {
        let separator = self.mode == ParseMode::MarkdownV2 && markup.starts_with('_');
        utf16_len(markup) + if separator { MAX_SEPARATOR_UNITS } else { 0 }
    }

    /// Builds a part: markup reopening `stack`, `tokens[start..end]`, and,
    /// when `close` is set, markup closing what is still open at `end`.
    fn render(&self, stack: &[OpenEntity<'a>], start: usize, end: usize, close: bool) -> String {
        let mut part = String::new();
        for entity in stack {
            self.join(&mut part, entity.open, stack);
        }
        if start < end {
            let first = &self.tokens[start];
            let last = &self.tokens[end - 1];
            self.join(
                &mut part,
                &self.text[first.offset..last.offset + last.text.len()],
                stack,
            );
        }
        if close {
            let mut open = stack.to_vec();
            for token in &self.tokens[start..end] {
                apply(&mut open, token);
            }
            for entity in open.iter().rev() {
                self.join(&mut part, &entity.close, &open);
            }
        }
        part
    }

    /// Appends `piece` to `part`.
    ///
    /// In MarkdownV2, an empty entity goes between an unescaped `_` and a
    /// following `_`, because Telegram reads `___` greedily as `__` then `_`
    /// whatever was meant. The empty entity is one whose marker is not in
    /// `open`, since reusing an open marker would close that entity.
    fn join(&self, part: &mut String, piece: &str, open: &[OpenEntity<'a>]) {
        if self.mode == ParseMode::MarkdownV2
            && piece.starts_with('_')
            && ends_with_unescaped_underscore(part)
        {
            let separator = MARKDOWN_SEPARATORS
                .iter()
                .find(|(marker, _)| !open.iter().any(|entity| entity.open == *marker))
                .map_or(MARKDOWN_SEPARATORS[0].1, |(_, separator)| *separator);
            part.push_str(separator);
        }
        part.push_str(piece);
    }
}

/// Empty MarkdownV2 entities by marker, in order of preference. Telegram
/// documents the empty bold entity as the separator between italic and
/// underline markers, and the others parse the same way.
const MARKDOWN_SEPARATORS: [(&str, &str); 3] = [("*", "**"), ("~", "~~"), ("||", "||||")];

/// Length of the longest entry of [`MARKDOWN_SEPARATORS`].
const MAX_SEPARATOR_UNITS: usize = 4;

fn ends_with_unescaped_underscore(text: &str) -> bool {
    let Some(before) = text.strip_suffix('_') else {
        return false;
    };
    let backslashes = before.bytes().rev().take_while(|b| *b == b'\\').count();
    backslashes % 2 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str, mode: ParseMode, limit: usize) -> Vec<String> {
        split_message(text, mode, limit).unwrap()
    }

    fn assert_within(parts: &[String], limit: usize) {
        for (index, part) in parts.iter().enumerate() {
            assert!(
                utf16_len(part) <= limit,
                "part {index} has {} units: {part:?}",
                utf16_len(part)
            );
        }
    }

    /// Returns the tag names of `html`, failing on a close tag that does not
    /// match the innermost open tag or a tag left open at the end.
    fn assert_balanced_html(html: &str) {
        let mut open: Vec<String> = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            let end = rest[start..]
                .find('>')
                .map(|end| start + end)
                .unwrap_or_else(|| panic!("unterminated tag in {html:?}"));
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    open.pop().as_deref(),
                    Some(name),
                    "mismatched </{name}> in {html:?}"
                );
            } else {
                open.push(tag.split(' ').next().unwrap_or("").to_owned());
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed {open:?} in {html:?}");
    }

    #[test]
    fn exactly_limit_ascii_is_one_part() {
        let text = "a".repeat(MAX_MESSAGE_UTF16);

        let parts = split(&text, ParseMode::Plain, MAX_MESSAGE_UTF16);

        assert_eq!(parts, [text]);
    }

    #[test]
    fn one_past_limit_is_two_parts() {
        let text = "a".repeat(MAX_MESSAGE_UTF16 + 1);

        let parts = split(&text, ParseMode::Plain, MAX_MESSAGE_UTF16);

        assert_eq!(parts.len(), 2);
        assert_eq!(parts.concat(), text);
        assert_within(&parts, MAX_MESSAGE_UTF16);
    }

    #[test]
    fn cjk_text_splits_between_characters() {
        let text = "中".repeat(5000);

        let parts = split(&text, ParseMode::Plain, MAX_MESSAGE_UTF16);

        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].chars().count(), MAX_MESSAGE_UTF16);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn emoji_count_as_two_units() {
        let text = "😀".repeat(4100);

        let parts = split(&text, ParseMode::Plain, MAX_MESSAGE_UTF16);

        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].chars().count(), 2048);
        assert_within(&parts, MAX_MESSAGE_UTF16);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn graphemes_stay_whole() {
        let family = "👨\u{200D}👩\u{200D}👧";
        let flag = "🇩🇪";
        let accented = "e\u{0301}";
        for cluster in [family, flag, accented, "👍🏽", "1\u{FE0F}\u{20E3}"] {
            let text = cluster.repeat(50);
            let limit = utf16_len(cluster) * 3 + 1;

            let parts = split(&text, ParseMode::Plain, limit);

            for part in &parts {
                assert_eq!(
                    part.replace(cluster, ""),
                    "",
                    "{cluster:?} broken in {part:?}"
                );
            }
            assert_eq!(parts.concat(), text);
        }
    }

    #[test]
    fn prefers_paragraph_then_line_then_space() {
        let paragraph = split("aaaa bbbb\ncccc\n\ndddd eeee", ParseMode::Plain, 20);
        let line = split("aaaaaa bbbb\ncccc dddd", ParseMode::Plain, 20);
        let space = split("aaaa bbbb cccc dddd eeee", ParseMode::Plain, 20);

        assert_eq!(paragraph, ["aaaa bbbb\ncccc", "dddd eeee"]);
        assert_eq!(line, ["aaaaaa bbbb", "cccc dddd"]);
        assert_eq!(space, ["aaaa bbbb cccc dddd", "eeee"]);
    }

    #[test]
    fn early_paragraph_break_loses_to_later_space() {
        let parts = split("aa\n\nbbbb cccc dddd eeee ffff", ParseMode::Plain, 20);

        assert_eq!(parts, ["aa\n\nbbbb cccc dddd", "eeee ffff"]);
    }

    #[test]
    fn html_italic_is_closed_and_reopened() {
        let text = format!("<i>{}</i>", "x".repeat(6000));

        let parts = split(&text, ParseMode::Html, MAX_MESSAGE_UTF16);

        assert_eq!(parts.len(), 2);
        assert_within(&parts, MAX_MESSAGE_UTF16);
        for part in &parts {
            assert!(
                part.starts_with("<i>") && part.ends_with("</i>"),
                "{part:?}"
            );
            assert_balanced_html(part);
        }
        let inner: String = parts.iter().map(|p| &p[3..p.len() - 4]).collect();
        assert_eq!(inner, "x".repeat(6000));
    }

    #[test]
    fn html_reopens_tags_with_attributes_in_order() {
        let text = r#"<b>bold <a href="https://example.com/a?b=1&amp;c=2">link text here</a></b>"#;

        let parts = split(text, ParseMode::Html, 60);

        assert!(parts.len() >= 2, "{parts:?}");
        assert!(
            parts[1].starts_with(r#"<b><a href="https://example.com/a?b=1&amp;c=2">"#),
            "{parts:?}"
        );
        for part in &parts {
            assert_balanced_html(part);
            assert!(utf16_len(part) <= 60, "{part:?}");
        }
    }

    #[test]
    fn html_entities_and_tags_stay_whole() {
        let text = "&lt;tag&gt; ".repeat(30) + &"<b>b</b>".repeat(30);

        let parts = split(&text, ParseMode::Html, 17);

        for part in &parts {
            let entities_ok = part
                .split('&')
                .skip(1)
                .all(|rest| rest.starts_with("lt;") || rest.starts_with("gt;"));
            assert!(entities_ok, "broken entity in {part:?}");
            assert_balanced_html(part);
        }
    }

    #[test]
    fn html_cut_keeps_real_newlines() {
        let text = format!("<b>Q&amp;A</b>\n{}\nThanks", "word ".repeat(10));

        let parts = split(&text, ParseMode::Html, 40);

        assert!(parts.len() >= 2, "{parts:?}");
        assert!(parts[0].starts_with("<b>Q&amp;A</b>\nword "), "{parts:?}");
        assert!(parts.iter().all(|part| !part.contains("\\n")), "{parts:?}");
    }

    #[test]
    fn markdown_escapes_stay_whole() {
        let text = r"\.".repeat(100);

        let parts = split(&text, ParseMode::MarkdownV2, 31);

        for part in &parts {
            assert_eq!(part.replace(r"\.", ""), "", "broken escape in {part:?}");
            assert!(utf16_len(part) <= 31);
        }
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn markdown_bold_is_closed_and_reopened() {
        let text = format!("*{}*", "word ".repeat(20).trim_end());

        let parts = split(&text, ParseMode::MarkdownV2, 40);

        assert!(parts.len() >= 3, "{parts:?}");
        for part in &parts {
            assert!(part.starts_with('*'), "{part:?}");
            assert!(part.ends_with('*'), "{part:?}");
            assert!(utf16_len(part) <= 40, "{part:?}");
        }
    }

    #[test]
    fn markdown_code_content_is_literal() {
        let text = format!("`{}`", "a_b*c ".repeat(20).trim_end());

        let parts = split(&text, ParseMode::MarkdownV2, 40);

        for part in &parts {
            assert!(part.starts_with('`'), "{part:?}");
            assert!(part.ends_with('`'), "{part:?}");
            assert_eq!(part.matches('`').count(), 2, "{part:?}");
        }
    }

    #[test]
    fn markdown_italic_in_bold_underline_avoids_bold_separator() {
        let text = format!("*__uuuu _{}_~~__*", "i ".repeat(30).trim_end());

        let parts = split(&text, ParseMode::MarkdownV2, 30);

        assert!(parts.len() >= 2, "{parts:?}");
        assert!(parts[0].ends_with("_~~__*"), "{parts:?}");
        assert!(parts[1].starts_with("*__~~_"), "{parts:?}");
    }

    #[test]
    fn markdown_pre_reopens_with_language() {
        let body = "let x = 1;\n".repeat(10);
        let text = format!("```rust\n{body}```");

        let parts = split(&text, ParseMode::MarkdownV2, 60);

        assert!(parts.len() >= 2, "{parts:?}");
        for part in &parts {
            assert!(part.starts_with("```rust\nlet"), "{part:?}");
            assert!(part.ends_with("```"), "{part:?}");
        }
    }

    #[test]
    fn markdown_link_is_closed_with_its_url() {
        let text = format!(
            "[{}](https://example.com/x)",
            "click here ".repeat(6).trim_end()
        );

        let parts = split(&text, ParseMode::MarkdownV2, 60);

        assert!(parts.len() >= 2, "{parts:?}");
        for part in &parts {
            assert!(part.starts_with('['), "{part:?}");
            assert!(part.ends_with("](https://example.com/x)"), "{part:?}");
        }
    }

    #[test]
    fn markdown_italic_in_underline_gets_separator() {
        let text = format!("__uuuu _{}_**__", "i ".repeat(30).trim_end());

        let parts = split(&text, ParseMode::MarkdownV2, 30);

        assert!(parts.len() >= 2, "{parts:?}");
        assert!(parts[0].ends_with("_**__"), "{parts:?}");
        assert!(parts[1].starts_with("__**_"), "{parts:?}");
        for part in &parts {
            assert!(utf16_len(part) <= 30, "{part:?}");
        }
    }

    /// Returns pseudo-random numbers from a fixed seed (64-bit LCG), so that
    /// failures repeat.
    fn numbers(seed: u64) -> impl FnMut(usize) -> usize {
        let mut state = seed;
        move |bound| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize % bound
        }
    }

    fn random_html(next: &mut impl FnMut(usize) -> usize) -> String {
        let mut html = String::new();
        let mut open: Vec<&str> = Vec::new();
        for _ in 0..400 {
            match next(10) {
                0 if open.len() < 3 => {
                    let (tag, name) = [
                        ("<b>", "b"),
                        ("<i>", "i"),
                        (r#"<a href="https://example.com/?a=1&amp;b=2">"#, "a"),
                        ("<code>", "code"),
                    ][next(4)];
                    html.push_str(tag);
                    open.push(name);
                }
                1 if !open.is_empty() => {
                    html.push_str(&format!("</{}>", open.pop().unwrap_or_default()))
                }
                2 => html.push_str(["&lt;", "&amp;", "&#128512;"][next(3)]),
                3 => html.push_str(["\n", "\n\n", " "][next(3)]),
                _ => html.push_str(["word", "中文", "😀", "e\u{0301}", "🇩🇪"][next(5)]),
            }
        }
        while let Some(name) = open.pop() {
            html.push_str(&format!("</{name}>"));
        }
        html
    }

    /// Returns the text of `html` without tags and whitespace.
    fn visible(html: &str) -> String {
        let mut text = String::new();
        let mut in_tag = false;
        for c in html.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag && !c.is_whitespace() => text.push(c),
                _ => {}
            }
        }
        text
    }

    #[test]
    fn random_html_parts_fit_and_are_balanced() {
        let mut next = numbers(7);
        for round in 0..50 {
            let html = random_html(&mut next);
            let limit = 200 + next(300);

            let parts = split(&html, ParseMode::Html, limit);

            assert_within(&parts, limit);
            for part in &parts {
                assert_balanced_html(part);
            }
            let joined: String = parts.iter().map(|part| visible(part)).collect();
            assert_eq!(joined, visible(&html), "round {round}, limit {limit}");
        }
    }

    #[test]
    fn random_markdown_parts_close_every_entity() {
        let mut next = numbers(11);
        for round in 0..50 {
            let mut text = String::new();
            let mut open: Vec<&str> = Vec::new();
            for _ in 0..300 {
                match next(8) {
                    0 if open.len() < 3 => {
                        let marker = ["*", "_", "~", "||"][next(4)];
                        if !open.contains(&marker) {
                            text.push_str(marker);
                            // Text after each marker keeps `_` and `__` apart.
                            text.push('w');
                            open.push(marker);
                        }
                    }
                    1 if !open.is_empty() => {
                        text.push_str(open.pop().unwrap_or_default());
                        text.push('w');
                    }
                    2 => text.push_str([r"\.", r"\_", r"\*"][next(3)]),
                    3 => text.push_str([" ", "\n"][next(2)]),
                    _ => text.push_str(["word", "中", "😀"][next(3)]),
                }
            }
            while let Some(marker) = open.pop() {
                text.push_str(marker);
            }
            let limit = 60 + next(100);

            let parts = split(&text, ParseMode::MarkdownV2, limit);

            assert_within(&parts, limit);
            for part in &parts {
                let tokens = tokenize_markdown_v2(part);
                let mut stack = Vec::new();
                for token in &tokens {
                    apply(&mut stack, token);
                }
                assert!(
                    stack.is_empty(),
                    "round {round}: unclosed {stack:?} in {part:?}"
                );
                assert!(
                    !part.ends_with('\\') || part.ends_with("\\\\"),
                    "round {round}: cut escape in {part:?}"
                );
            }
        }
    }

    #[test]
    fn whitespace_only_text_has_no_parts() {
        assert!(split(" \n ", ParseMode::Plain, 10).is_empty());
        assert!(split(&" ".repeat(30), ParseMode::Plain, 10).is_empty());
    }

    #[test]
    fn tag_longer_than_limit_is_an_error() {
        let text = format!(r#"<a href="https://example.com/{}">x</a>"#, "p".repeat(50));

        let err = split_message(&text, ParseMode::Html, 40).unwrap_err();

        assert_eq!(
            err,
            SplitError {
                offset: 0,
                limit: 40
            }
        );
    }
}
