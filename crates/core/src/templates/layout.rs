//! Reading a template directory into source files, checking names and
//! folder structure on the way. The layout itself is documented in the
//! module documentation of [`crate::templates`].

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Map, Value};

use super::error::{Location, TemplateProblem};
use super::parts::{LocaleParts, Part};
use crate::channel::ChannelKind;
use crate::content::ParseMode;

/// Folder of partials, next to the channel folders.
const PARTIALS_DIR: &str = "partials";
/// Folder of sample variables, next to the channel folders.
const SAMPLES_DIR: &str = "samples";
/// A file the top level may contain besides the folders, for operators' notes.
const README_FILE: &str = "README.md";

/// A template file as read from disk.
#[derive(Debug)]
pub(crate) struct PartSource {
    pub(crate) part: Part,
    /// Name in the handlebars registry: `<channel>/<template>/<locale>/<file>`.
    pub(crate) key: String,
    pub(crate) path: PathBuf,
    pub(crate) source: String,
}

#[derive(Debug)]
pub(crate) struct PartialSource {
    /// Name the templates use, as in `{{> name}}`.
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) source: String,
}

#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) path: PathBuf,
    pub(crate) variables: Map<String, Value>,
}

#[derive(Debug)]
pub(crate) struct LocaleSources {
    /// The folder name, e.g. `de-AT`.
    pub(crate) name: String,
    pub(crate) parts: LocaleParts<PartSource>,
}

#[derive(Debug)]
pub(crate) struct TemplateSources {
    pub(crate) channel: ChannelKind,
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    /// Every validly named locale folder, including those with problems.
    pub(crate) locale_names: Vec<String>,
    /// The locales without problems.
    pub(crate) locales: Vec<LocaleSources>,
}

/// Everything read from a template directory. Files with problems are left
/// out, and the problems are reported separately.
#[derive(Debug, Default)]
pub(crate) struct TemplateTree {
    pub(crate) partials: Vec<PartialSource>,
    /// Sample variables by template name.
    pub(crate) samples: BTreeMap<String, Sample>,
    pub(crate) templates: Vec<TemplateSources>,
}

/// Checks a template or partial name: `[a-z0-9_]+`.
pub(crate) fn is_valid_template_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a locale name: `[a-z]{2,3}(-[A-Za-z0-9]{2,8})*`, e.g. `en`, `de-AT`
/// or `zh-Hant-TW`.
pub(crate) fn is_valid_locale(name: &str) -> bool {
    let mut subtags = name.split('-');
    let language_is_valid = subtags.next().is_some_and(|language| {
        (2..=3).contains(&language.len()) && language.bytes().all(|b| b.is_ascii_lowercase())
    });
    language_is_valid
        && subtags.all(|subtag| {
            (2..=8).contains(&subtag.len()) && subtag.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

/// Reads the template directory at `root`, appending every problem found to
/// `problems`.
pub(crate) fn read_tree(root: &Path, problems: &mut Vec<TemplateProblem>) -> TemplateTree {
    let mut tree = TemplateTree::default();
    let Some(entries) = list_dir(root, problems) else {
        return tree;
    };

    for entry in entries {
        if entry.is_dir && entry.name == PARTIALS_DIR {
            read_partials(&entry.path, &mut tree, problems);
        } else if entry.is_dir && entry.name == SAMPLES_DIR {
            read_samples(&entry.path, &mut tree, problems);
        } else if let (true, Ok(channel)) = (entry.is_dir, ChannelKind::from_str(&entry.name)) {
            read_channel(channel, &entry.path, &mut tree, problems);
        } else if !entry.is_dir && entry.name == README_FILE {
            continue;
        } else {
            problems.push(problem(
                &entry.path,
                "unexpected entry: the template directory contains only the folders \
                 email, sms, telegram, push, webhook, partials and samples, and README.md",
            ));
        }
    }
    tree
}

fn read_partials(dir: &Path, tree: &mut TemplateTree, problems: &mut Vec<TemplateProblem>) {
    let Some(entries) = list_dir(dir, problems) else {
        return;
    };
    for entry in entries {
        let name = entry.name.strip_suffix(".hbs").filter(|_| !entry.is_dir);
        let Some(name) = name.filter(|name| is_valid_template_name(name)) else {
            problems.push(problem(
                &entry.path,
                "invalid partial: expected a file named <name>.hbs with a name of \
                 lowercase letters, digits and underscores",
            ));
            continue;
        };
        if let Some(source) = read_source(&entry.path, false, problems) {
            tree.partials.push(PartialSource {
                name: name.to_owned(),
                path: entry.path,
                source,
            });
        }
    }
}

fn read_samples(dir: &Path, tree: &mut TemplateTree, problems: &mut Vec<TemplateProblem>) {
    let Some(entries) = list_dir(dir, problems) else {
        return;
    };
    for entry in entries {
        let name = entry.name.strip_suffix(".json").filter(|_| !entry.is_dir);
        let Some(name) = name.filter(|name| is_valid_template_name(name)) else {
            problems.push(problem(
                &entry.path,
                "invalid sample: expected a file named <template>.json with a template name \
                 of lowercase letters, digits and underscores",
            ));
            continue;
        };
        let text = match fs::read_to_string(&entry.path) {
            Ok(text) => text,
            Err(error) => {
                problems.push(problem(
                    &entry.path,
                    format!("failed to read file: {error}"),
                ));
                continue;
            }
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(variables)) => {
                tree.samples.insert(
                    name.to_owned(),
                    Sample {
                        path: entry.path,
                        variables,
                    },
                );
            }
            Ok(_) => problems.push(problem(
                &entry.path,
                "invalid sample: expected a JSON object of variables",
            )),
            Err(error) => problems.push(TemplateProblem {
                location: Location::at(&entry.path, Some(error.line()), Some(error.column())),
                message: format!("invalid JSON: {error}"),
            }),
        }
    }
}

fn read_channel(
    channel: ChannelKind,
    dir: &Path,
    tree: &mut TemplateTree,
    problems: &mut Vec<TemplateProblem>,
) {
    let Some(entries) = list_dir(dir, problems) else {
        return;
    };
    for entry in entries {
        if !entry.is_dir || !is_valid_template_name(&entry.name) {
            problems.push(problem(
                &entry.path,
                "invalid template folder: expected a folder named with lowercase letters, \
                 digits and underscores",
            ));
            continue;
        }
        let (locale_names, locales) = read_template(channel, &entry.name, &entry.path, problems);
        tree.templates.push(TemplateSources {
            channel,
            name: entry.name,
            dir: entry.path,
            locale_names,
            locales,
        });
    }
}

fn read_template(
    channel: ChannelKind,
    template: &str,
    dir: &Path,
    problems: &mut Vec<TemplateProblem>,
) -> (Vec<String>, Vec<LocaleSources>) {
    let Some(entries) = list_dir(dir, problems) else {
        return (Vec::new(), Vec::new());
    };
    if entries.is_empty() {
        problems.push(problem(dir, "template has no locale folders"));
    }

    // Locale names match case-insensitively at render time, so `de-AT` and
    // `de-at` would be ambiguous.
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut locale_names = Vec::new();
    let mut locales = Vec::new();
    for entry in entries {
        if !entry.is_dir || !is_valid_locale(&entry.name) {
            problems.push(problem(
                &entry.path,
                "invalid locale folder: expected a folder named like en, de or de-AT",
            ));
            continue;
        }
        if let Some(first) = seen.insert(entry.name.to_ascii_lowercase(), entry.path.clone()) {
            problems.push(problem(
                &entry.path,
                format!(
                    "duplicate locale: {} names the same locale; keep one of the two folders",
                    first.display()
                ),
            ));
            continue;
        }
        locale_names.push(entry.name.clone());
        let key_prefix = format!("{channel}/{template}/{}", entry.name);
        if let Some(parts) = read_locale(channel, &key_prefix, &entry.path, problems) {
            locales.push(LocaleSources {
                name: entry.name,
                parts,
            });
        }
    }
    (locale_names, locales)
}

fn read_locale(
    channel: ChannelKind,
    key_prefix: &str,
    dir: &Path,
    problems: &mut Vec<TemplateProblem>,
) -> Option<LocaleParts<PartSource>> {
    let entries = list_dir(dir, problems)?;
    let mut files: BTreeMap<Part, PartSource> = BTreeMap::new();
    let mut complete = true;
    for entry in entries {
        let part = Part::from_file_name(channel, &entry.name).filter(|_| !entry.is_dir);
        let Some(part) = part else {
            problems.push(problem(
                &entry.path,
                format!(
                    "unknown file name for the {channel} channel; expected {}",
                    expected_files(channel)
                ),
            ));
            complete = false;
            continue;
        };
        match read_source(&entry.path, part.is_one_line(), problems) {
            Some(source) => {
                files.insert(
                    part,
                    PartSource {
                        part,
                        key: format!("{key_prefix}/{}", entry.name),
                        path: entry.path,
                        source,
                    },
                );
            }
            None => complete = false,
        }
    }

    let parts = assemble_locale(channel, dir, files, problems);
    parts.filter(|_| complete)
}

/// Builds the parts of a locale from its files, reporting missing required
/// files and conflicting Telegram bodies.
fn assemble_locale(
    channel: ChannelKind,
    dir: &Path,
    mut files: BTreeMap<Part, PartSource>,
    problems: &mut Vec<TemplateProblem>,
) -> Option<LocaleParts<PartSource>> {
    let mut take = |part: Part| take_required(&mut files, part, dir, problems);
    match channel {
        ChannelKind::Email => {
            let subject = take(Part::EmailSubject);
            let text = take(Part::EmailText);
            let html = files.remove(&Part::EmailHtml);
            Some(LocaleParts::Email {
                subject: subject?,
                text: text?,
                html,
            })
        }
        ChannelKind::Sms => Some(LocaleParts::Sms {
            body: take(Part::SmsBody)?,
        }),
        ChannelKind::Push => {
            let title = take(Part::PushTitle);
            let body = take(Part::PushBody);
            Some(LocaleParts::Push {
                title: title?,
                body: body?,
            })
        }
        ChannelKind::Webhook => Some(LocaleParts::Webhook {
            message: take(Part::WebhookMessage)?,
        }),
        ChannelKind::Telegram => assemble_telegram(dir, files, problems),
    }
}

fn take_required(
    files: &mut BTreeMap<Part, PartSource>,
    part: Part,
    dir: &Path,
    problems: &mut Vec<TemplateProblem>,
) -> Option<PartSource> {
    let file = files.remove(&part);
    if file.is_none() {
        problems.push(problem(
            dir,
            format!(
                "missing {}: add {}",
                part.label(),
                dir.join(part.file_name()).display()
            ),
        ));
    }
    file
}

fn assemble_telegram(
    dir: &Path,
    files: BTreeMap<Part, PartSource>,
    problems: &mut Vec<TemplateProblem>,
) -> Option<LocaleParts<PartSource>> {
    if files.len() > 1 {
        let names: Vec<&str> = files.keys().map(|part| part.file_name()).collect();
        problems.push(problem(
            dir,
            format!(
                "conflicting Telegram bodies {}: keep exactly one, because its file name \
                 selects the parse mode",
                names.join(" and ")
            ),
        ));
        return None;
    }
    let Some((part, body)) = files.into_iter().next() else {
        problems.push(problem(
            dir,
            "missing Telegram message: add one of body.hbs (plain text), \
             body.md.hbs (MarkdownV2) or body.html.hbs (HTML)",
        ));
        return None;
    };
    let parse_mode = match part {
        Part::TelegramMarkdownV2 => ParseMode::MarkdownV2,
        Part::TelegramHtml => ParseMode::Html,
        _ => ParseMode::Plain,
    };
    Some(LocaleParts::Telegram { body, parse_mode })
}

fn expected_files(channel: ChannelKind) -> String {
    let names: Vec<&str> = Part::of_channel(channel)
        .iter()
        .map(|part| part.file_name())
        .collect();
    names.join(", ")
}

/// Reads a template file. A leading byte order mark is dropped and CRLF line
/// endings become LF. For one-line parts the trailing line breaks that
/// editors add are removed, so that only line breaks inside the text remain.
fn read_source(
    path: &Path,
    is_one_line: bool,
    problems: &mut Vec<TemplateProblem>,
) -> Option<String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            problems.push(problem(path, format!("failed to read file: {error}")));
            return None;
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut source = text.replace("\r\n", "\n");
    if is_one_line {
        let trimmed_len = source.trim_end_matches('\n').len();
        source.truncate(trimmed_len);
    }
    Some(source)
}

struct DirEntry {
    name: String,
    path: PathBuf,
    is_dir: bool,
}

/// Lists a folder sorted by name, following symbolic links. Hidden entries,
/// whose names start with a dot, are skipped.
fn list_dir(dir: &Path, problems: &mut Vec<TemplateProblem>) -> Option<Vec<DirEntry>> {
    let read_dir = match fs::read_dir(dir) {
        Ok(read_dir) => read_dir,
        Err(error) => {
            problems.push(problem(dir, format!("failed to read folder: {error}")));
            return None;
        }
    };

    let mut entries = Vec::new();
    for entry in read_dir {
        let entry = match entry {
            Ok(entry) => entry,
            Err(error) => {
                problems.push(problem(dir, format!("failed to read folder: {error}")));
                continue;
            }
        };
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            problems.push(problem(&path, "invalid name: file names must be UTF-8"));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        match fs::metadata(&path) {
            Ok(metadata) => entries.push(DirEntry {
                name,
                is_dir: metadata.is_dir(),
                path,
            }),
            Err(error) => problems.push(problem(&path, format!("failed to read: {error}"))),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Some(entries)
}

fn problem(path: &Path, message: impl Into<String>) -> TemplateProblem {
    TemplateProblem {
        location: Location::file(path),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_names() {
        for valid in ["en", "de", "gsw", "de-AT", "zh-Hant-TW", "es-419"] {
            assert!(is_valid_locale(valid), "{valid} should be valid");
        }
        for invalid in [
            "",
            "e",
            "EN",
            "english",
            "de_AT",
            "de-",
            "de-A",
            "de-ABCDEFGHI",
            "../en",
        ] {
            assert!(!is_valid_locale(invalid), "{invalid} should be invalid");
        }
    }

    #[test]
    fn template_names() {
        assert!(is_valid_template_name("render_failed"));
        assert!(is_valid_template_name("v2"));
        for invalid in ["", "Welcome", "render-failed", "a.b", "a b"] {
            assert!(
                !is_valid_template_name(invalid),
                "{invalid} should be invalid"
            );
        }
    }
}
