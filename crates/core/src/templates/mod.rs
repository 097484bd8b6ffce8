//! Notification templates: loading a template directory at start and
//! rendering a message's variables into [`Content`](crate::content::Content).
//!
//! Operators edit templates, never code. [`TemplateStore::load`] therefore
//! checks the whole directory at start and lists every problem it finds, each
//! with its file and, where it has one, its line and column, so that a broken
//! template stops the service before it consumes any message.
//!
//! # Directory layout
//!
//! ```text
//! templates/
//!   <channel>/<template>/<locale>/<part>.hbs
//!   partials/<name>.hbs
//!   samples/<template>.json
//!   README.md                  (optional, ignored)
//! ```
//!
//! - `<channel>` is one of `email`, `sms`, `telegram`, `push` and `webhook`.
//! - `<template>` matches `[a-z0-9_]+`, e.g. `render_failed`. A message names
//!   its template by this folder name.
//! - `<locale>` matches `[a-z]{2,3}(-[A-Za-z0-9]{2,8})*`, e.g. `en`, `de` or
//!   `de-AT`. Every template must exist in the default locale.
//! - The parts of a locale folder depend on the channel:
//!
//!   | channel    | files                                                        |
//!   |------------|--------------------------------------------------------------|
//!   | `email`    | `subject.hbs`, `text.hbs`, and optionally `html.hbs`         |
//!   | `sms`      | `body.hbs`                                                   |
//!   | `telegram` | exactly one of `body.hbs` (plain text), `body.md.hbs` (MarkdownV2) and `body.html.hbs` (HTML) |
//!   | `push`     | `title.hbs`, `body.hbs`                                      |
//!   | `webhook`  | `message.hbs`                                                |
//!
//!   Any other file name in a locale folder is an error, which catches typos
//!   such as `subjet.hbs`.
//! - `partials/<name>.hbs` (`<name>` matches `[a-z0-9_]+`) is a partial that
//!   every template can call, e.g. an HTML email layout used as
//!   `{{#> email_layout title="Welcome"}}...{{/email_layout}}`, which renders
//!   the block where the layout contains `{{> @partial-block}}`.
//! - `samples/<template>.json` is a JSON object of sample variables for the
//!   template of that name, shared by all channels. Every template needs one,
//!   and it must define every variable any of the template's files uses,
//!   including optional ones.
//!
//! Entries whose names start with a dot are ignored. Files are read as UTF-8,
//! a leading byte order mark is dropped and CRLF line endings become LF.
//!
//! # Checks at load
//!
//! - names and files as described above;
//! - handlebars syntax of every file, reported with line and column;
//! - a static check that reports every top-level variable a file references
//!   but its sample does not define, so that `{{#if dicount_code}}` is found
//!   even though the misspelt block never renders. It covers expressions,
//!   helper arguments and block parameters, and the partials a file calls.
//!   Names inside `{{#each}}` and `{{#with}}` blocks refer to the item and are
//!   skipped, except `@root.name` and `../name` paths that reach the top level;
//! - a render of every locale of every template with its sample, in the same
//!   way as a message is rendered.
//!
//! # Rendering
//!
//! - Locale fallback: a request for `de-AT` uses `de-AT`, then `de`, then the
//!   default locale. Locales match case-insensitively, and `_` counts as `-`.
//! - Strict mode: a variable that the template uses and the message lacks is
//!   an error, not an empty string. This includes `{{#each items}}` over a
//!   missing `items` unless the block has an `{{else}}`.
//! - `null` renders like an absent variable: null members of objects are
//!   removed, at any depth, before rendering. `{{#if coupon}}` is false for
//!   both, and a bare `{{coupon}}` fails for both.
//! - Escaping depends on the output and applies only to `{{value}}`. The
//!   template's own text and `{{{value}}}` are inserted as they are:
//!
//!   | output                                  | escaping of values                         |
//!   |-----------------------------------------|--------------------------------------------|
//!   | email subject and text, SMS, push, webhook message, Telegram `body.hbs` | none |
//!   | email `html.hbs`                        | HTML: ``& < > " ' ` =``                   |
//!   | Telegram `body.html.hbs`                | `&`, `<` and `>` only, line breaks stay      |
//!   | Telegram `body.md.hbs`                  | a backslash before ``_ * [ ] ( ) ~ ` > # + - = \| { } . !`` and `\` |
//!
//! - One-line parts (email subject, push title): the file's trailing line
//!   breaks are removed at load, and a rendered value that contains a line
//!   break (CR, LF, NEL, U+2028 or U+2029) fails with
//!   [`RenderError::InvalidOutput`], so a value can never add a header.
//! - Trailing line breaks are removed from rendered SMS, Telegram, push and
//!   webhook texts. Email bodies keep them.
//! - A webhook's `data` is the message's variables as they came, nulls
//!   included.
//!
//! NOTE: handlebars 6.4 does not apply strict mode to hash arguments of a
//! partial call: with `{{> button url=link}}`, a missing `link` renders as an
//! empty string inside the partial. The load-time checks still report a
//! misspelt `link`. The starter templates pass only literals to partials.

mod check;
mod error;
mod escape;
mod layout;
mod load;
mod parts;
mod reload;
mod store;
mod variables;

#[cfg(test)]
mod tests;

pub use error::{Location, RenderError, TemplateLoadError, TemplateProblem};
pub use reload::TemplateHandle;
pub use store::{Rendered, TemplateStore};
