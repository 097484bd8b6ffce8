//! The loaded templates and rendering.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use handlebars::{Context, Handlebars, RenderErrorReason};
use serde_json::{Map, Value};

use super::error::{Location, RenderError, TemplateLoadError};
use super::escape::OutputKind;
use super::load;
use super::parts::{LocaleParts, Part};
use super::variables::{json_type_name, without_nulls};
use crate::channel::ChannelKind;
use crate::content::{Content, EmailContent};

/// Characters that start a new line, which one-line parts must not contain:
/// CR, LF, NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR.
const LINE_BREAKS: &[char] = &['\r', '\n', '\u{85}', '\u{2028}', '\u{2029}'];

/// A notification's content rendered from a template.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The locale folder the template was rendered from, after fallback.
    pub locale: String,
    pub content: Content,
}

/// Every template of a template directory, compiled and checked against its
/// sample variables. See [`crate::templates`] for the directory layout and
/// the rendering rules.
///
/// Rendering takes `&self`, so one store wrapped in an `Arc` serves all tasks.
pub struct TemplateStore {
    pub(super) default_locale: String,
    pub(super) registries: Registries,
    pub(super) templates: BTreeMap<ChannelKind, BTreeMap<String, TemplateEntry>>,
    /// Sample variables by template name, each a JSON object.
    pub(super) samples: BTreeMap<String, Value>,
    /// Files of the partials by partial name, for error locations.
    pub(super) partial_paths: BTreeMap<String, PathBuf>,
}

/// The locales of one template of one channel.
#[derive(Debug, Default)]
pub(super) struct TemplateEntry {
    /// Locales by lowercase name, the key that requested locales are matched on.
    pub(super) locales: BTreeMap<String, LocaleEntry>,
}

#[derive(Debug)]
pub(super) struct LocaleEntry {
    /// The folder name, e.g. `de-AT`.
    pub(super) name: String,
    pub(super) parts: LocaleParts<PartRef>,
}

/// A compiled part: its registry name in the registry of its output kind.
#[derive(Debug)]
pub(super) struct PartRef {
    pub(super) part: Part,
    pub(super) key: String,
    pub(super) path: PathBuf,
}

/// One handlebars registry per output kind, each with its own escape
/// function and strict mode on. Partials are registered in all of them.
pub(super) struct Registries {
    plain: Handlebars<'static>,
    html: Handlebars<'static>,
    telegram_html: Handlebars<'static>,
    telegram_markdown_v2: Handlebars<'static>,
}

impl Registries {
    pub(super) fn new() -> Self {
        Registries {
            plain: new_registry(OutputKind::Plain),
            html: new_registry(OutputKind::Html),
            telegram_html: new_registry(OutputKind::TelegramHtml),
            telegram_markdown_v2: new_registry(OutputKind::TelegramMarkdownV2),
        }
    }

    pub(super) fn get(&self, kind: OutputKind) -> &Handlebars<'static> {
        match kind {
            OutputKind::Plain => &self.plain,
            OutputKind::Html => &self.html,
            OutputKind::TelegramHtml => &self.telegram_html,
            OutputKind::TelegramMarkdownV2 => &self.telegram_markdown_v2,
        }
    }

    pub(super) fn get_mut(&mut self, kind: OutputKind) -> &mut Handlebars<'static> {
        match kind {
            OutputKind::Plain => &mut self.plain,
            OutputKind::Html => &mut self.html,
            OutputKind::TelegramHtml => &mut self.telegram_html,
            OutputKind::TelegramMarkdownV2 => &mut self.telegram_markdown_v2,
        }
    }
}

fn new_registry(kind: OutputKind) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(kind.escape_fn());
    registry
}

impl TemplateStore {
    /// Loads and checks every template under `dir`.
    ///
    /// `default_locale` is the locale used when a message requests none or
    /// one without templates. Every template must exist in it.
    ///
    /// # Errors
    ///
    /// Returns every problem found: invalid names and unknown files, syntax
    /// errors with line and column, missing samples or default locales,
    /// variables the samples do not define, and failures to render a
    /// template with its sample.
    pub fn load(dir: &Path, default_locale: &str) -> Result<TemplateStore, TemplateLoadError> {
        load::load(dir, default_locale)
    }

    /// Renders a template for a channel.
    ///
    /// `locale` falls back from `de-AT` to `de` to the default locale. It
    /// matches folder names case-insensitively and accepts `_` for `-`.
    /// `null` variables render like absent ones.
    ///
    /// # Errors
    ///
    /// See [`RenderError`]. [`RenderError::kind`] classifies the failure.
    pub fn render(
        &self,
        channel: ChannelKind,
        template: &str,
        locale: Option<&str>,
        variables: &Value,
    ) -> Result<Rendered, RenderError> {
        let unknown_template = || RenderError::UnknownTemplate {
            channel,
            template: template.to_owned(),
        };
        let entry = self
            .templates
            .get(&channel)
            .and_then(|by_name| by_name.get(template))
            .ok_or_else(unknown_template)?;
        // Loading rejects templates without the default locale, so this
        // lookup finds at least that one.
        let locale_entry = self
            .find_locale(entry, locale)
            .ok_or_else(unknown_template)?;

        let content = self.render_locale(locale_entry, variables)?;
        Ok(Rendered {
            locale: locale_entry.name.clone(),
            content,
        })
    }

    pub fn has_template(&self, channel: ChannelKind, template: &str) -> bool {
        self.templates
            .get(&channel)
            .is_some_and(|by_name| by_name.contains_key(template))
    }

    /// Lists every template as channel, template name and locale folder
    /// names, sorted by channel, then by name.
    pub fn templates(&self) -> impl Iterator<Item = (ChannelKind, &str, Vec<&str>)> + '_ {
        self.templates.iter().flat_map(|(channel, by_name)| {
            by_name.iter().map(move |(name, entry)| {
                let locales = entry
                    .locales
                    .values()
                    .map(|locale| locale.name.as_str())
                    .collect();
                (*channel, name.as_str(), locales)
            })
        })
    }

    /// Returns the sample variables of a template name, a JSON object.
    pub fn sample(&self, template: &str) -> Option<&Value> {
        self.samples.get(template)
    }

    pub fn default_locale(&self) -> &str {
        &self.default_locale
    }

    fn find_locale<'e>(
        &self,
        entry: &'e TemplateEntry,
        requested: Option<&str>,
    ) -> Option<&'e LocaleEntry> {
        if let Some(requested) = requested {
            let mut candidate = requested.trim().replace('_', "-").to_ascii_lowercase();
            loop {
                if let Some(found) = entry.locales.get(&candidate) {
                    return Some(found);
                }
                match candidate.rfind('-') {
                    Some(end) => candidate.truncate(end),
                    None => break,
                }
            }
        }
        entry.locales.get(&self.default_locale.to_ascii_lowercase())
    }

    pub(super) fn render_locale(
        &self,
        locale: &LocaleEntry,
        variables: &Value,
    ) -> Result<Content, RenderError> {
        let prepared = match variables {
            Value::Object(_) => without_nulls(variables),
            Value::Null => Value::Object(Map::new()),
            other => {
                return Err(RenderError::InvalidVariables {
                    found: json_type_name(other),
                })
            }
        };
        let context = Context::from(prepared);

        let content = match &locale.parts {
            LocaleParts::Email {
                subject,
                text,
                html,
            } => Content::Email(EmailContent {
                subject: self.render_part(subject, &context)?,
                text: self.render_part(text, &context)?,
                html: html
                    .as_ref()
                    .map(|html| self.render_part(html, &context))
                    .transpose()?,
            }),
            LocaleParts::Sms { body } => Content::Sms {
                body: self.render_part(body, &context)?,
            },
            LocaleParts::Telegram { body, parse_mode } => Content::Telegram {
                text: self.render_part(body, &context)?,
                parse_mode: *parse_mode,
            },
            LocaleParts::Push { title, body } => Content::Push {
                title: self.render_part(title, &context)?,
                body: self.render_part(body, &context)?,
            },
            LocaleParts::Webhook { message } => Content::Webhook {
                message: self.render_part(message, &context)?,
                data: variables.clone(),
            },
        };
        Ok(content)
    }

    fn render_part(&self, part: &PartRef, context: &Context) -> Result<String, RenderError> {
        let registry = self.registries.get(part.part.output());
        let mut rendered = registry
            .render_with_context(&part.key, context)
            .map_err(|error| self.convert_error(part, error))?;

        if part.part.is_one_line() && rendered.contains(LINE_BREAKS) {
            return Err(RenderError::InvalidOutput {
                part: part.part.label(),
                location: Location::file(&part.path),
                reason: "the text contains a line break but must be one line; \
                         check the variables it inserts for CR or LF"
                    .to_owned(),
            });
        }
        if part.part.trims_trailing_newlines() {
            let trimmed_len = rendered.trim_end_matches(['\r', '\n']).len();
            rendered.truncate(trimmed_len);
        }
        Ok(rendered)
    }

    fn convert_error(&self, part: &PartRef, error: handlebars::RenderError) -> RenderError {
        // Handlebars names the innermost template file that failed, which is
        // a partial when the error is inside one.
        let path = error
            .template_name
            .as_ref()
            .and_then(|name| self.partial_paths.get(name))
            .unwrap_or(&part.path);
        let location = Location::at(path, error.line_no, error.column_no);

        match error.reason() {
            RenderErrorReason::MissingVariable(variable) => RenderError::MissingVariable {
                variable: variable.clone().unwrap_or_else(|| "<unknown>".to_owned()),
                location,
            },
            reason => RenderError::Render {
                location,
                reason: reason.to_string(),
                source: Box::new(error),
            },
        }
    }
}

impl fmt::Debug for TemplateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateStore")
            .field("default_locale", &self.default_locale)
            .field("templates", &self.templates().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
