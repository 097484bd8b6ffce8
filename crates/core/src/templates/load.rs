//! Loading a template directory: compiling every file, registering it in the
//! registry of its output kind, and checking it against its sample.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use handlebars::Template;
use serde_json::Value;

use super::check::{collect_references, find_undefined};
use super::error::{Location, RenderError, TemplateLoadError, TemplateProblem};
use super::escape::OutputKind;
use super::layout::{self, is_valid_locale, LocaleSources, PartSource, Sample, TemplateSources};
use super::store::{LocaleEntry, PartRef, Registries, TemplateEntry, TemplateStore};
use crate::channel::ChannelKind;

pub(super) fn load(dir: &Path, default_locale: &str) -> Result<TemplateStore, TemplateLoadError> {
    let mut problems = Vec::new();
    if !is_valid_locale(default_locale) {
        problems.push(TemplateProblem {
            location: Location::file(dir),
            message: format!(
                "invalid default locale `{default_locale}`: expected a name like en, de or de-AT"
            ),
        });
    }

    let tree = layout::read_tree(dir, &mut problems);
    let mut loader = Loader {
        dir,
        default_locale,
        registries: Registries::new(),
        partials: HashMap::new(),
        partial_paths: BTreeMap::new(),
        broken_partials: BTreeSet::new(),
        templates: BTreeMap::new(),
        unchecked_locales: BTreeSet::new(),
        problems,
    };

    for partial in tree.partials {
        loader.add_partial(partial.name, partial.path, &partial.source);
    }
    let mut missing_samples = BTreeSet::new();
    for template in tree.templates {
        let sample = tree.samples.get(&template.name);
        if sample.is_none() && missing_samples.insert(template.name.clone()) {
            loader.report_missing_sample(&template.name);
        }
        loader.add_template(template, sample);
    }

    let samples: BTreeMap<String, Value> = tree
        .samples
        .iter()
        .map(|(name, sample)| (name.clone(), Value::Object(sample.variables.clone())))
        .collect();
    let Loader {
        registries,
        partial_paths,
        templates,
        unchecked_locales,
        mut problems,
        ..
    } = loader;
    let store = TemplateStore {
        default_locale: default_locale.to_owned(),
        registries,
        templates,
        samples,
        partial_paths,
    };

    render_samples(&store, &tree.samples, &unchecked_locales, &mut problems);
    warn_unused_samples(&store, &tree.samples);

    if !problems.is_empty() {
        return Err(TemplateLoadError::new(problems));
    }
    let template_count: usize = store.templates.values().map(BTreeMap::len).sum();
    tracing::info!(dir = %dir.display(), templates = template_count, "loaded templates");
    Ok(store)
}

/// A locale of a template, as `(channel, template, lowercase locale)`.
type LocaleId = (ChannelKind, String, String);

struct Loader<'a> {
    dir: &'a Path,
    default_locale: &'a str,
    registries: Registries,
    /// Compiled partials by name, for the static check.
    partials: HashMap<String, Template>,
    partial_paths: BTreeMap<String, PathBuf>,
    /// Partials with syntax errors.
    broken_partials: BTreeSet<String>,
    templates: BTreeMap<ChannelKind, BTreeMap<String, TemplateEntry>>,
    /// Locales that are not rendered with their sample, because earlier
    /// checks already found why they would fail.
    unchecked_locales: BTreeSet<LocaleId>,
    problems: Vec<TemplateProblem>,
}

impl Loader<'_> {
    fn add_partial(&mut self, name: String, path: PathBuf, source: &str) {
        match compile(&name, source, &path) {
            Ok(template) => {
                for kind in OutputKind::ALL {
                    self.registries
                        .get_mut(kind)
                        .register_template(&name, template.clone());
                }
                self.partials.insert(name.clone(), template);
            }
            Err(problem) => {
                self.problems.push(problem);
                self.broken_partials.insert(name.clone());
            }
        }
        self.partial_paths.insert(name, path);
    }

    fn report_missing_sample(&mut self, template: &str) {
        let path = self.dir.join("samples").join(format!("{template}.json"));
        self.problems.push(TemplateProblem {
            location: Location::file(path),
            message: format!(
                "missing sample variables for template `{template}`: add this file with a \
                 JSON object that defines every variable the template uses"
            ),
        });
    }

    fn add_template(&mut self, template: TemplateSources, sample: Option<&Sample>) {
        let has_default_locale = template
            .locale_names
            .iter()
            .any(|name| name.eq_ignore_ascii_case(self.default_locale));
        if !has_default_locale {
            self.problems.push(TemplateProblem {
                location: Location::file(&template.dir),
                message: format!(
                    "missing the default locale: add {}",
                    template.dir.join(self.default_locale).display()
                ),
            });
        }

        let mut entry = TemplateEntry::default();
        for locale in template.locales {
            let key = locale.name.to_ascii_lowercase();
            let is_checkable = self.add_locale(&locale, sample);
            if !is_checkable || sample.is_none() {
                self.unchecked_locales.insert((
                    template.channel,
                    template.name.clone(),
                    key.clone(),
                ));
            }
            let parts = locale.parts.map(|source| PartRef {
                part: source.part,
                key: source.key,
                path: source.path,
            });
            entry.locales.insert(
                key,
                LocaleEntry {
                    name: locale.name,
                    parts,
                },
            );
        }
        self.templates
            .entry(template.channel)
            .or_default()
            .insert(template.name, entry);
    }

    /// Compiles, checks and registers the files of a locale. Returns whether
    /// the locale can be rendered with its sample to find further problems.
    fn add_locale(&mut self, locale: &LocaleSources, sample: Option<&Sample>) -> bool {
        let mut is_checkable = true;
        for file in locale.parts.files() {
            match compile(&file.key, &file.source, &file.path) {
                Ok(template) => {
                    is_checkable &= self.check_references(file, &template, sample);
                    self.registries
                        .get_mut(file.part.output())
                        .register_template(&file.key, template);
                }
                Err(problem) => {
                    self.problems.push(problem);
                    is_checkable = false;
                }
            }
        }
        is_checkable
    }

    /// Reports partials the file calls that do not exist and variables it
    /// uses that the sample does not define. Returns whether none were found.
    fn check_references(
        &mut self,
        file: &PartSource,
        template: &Template,
        sample: Option<&Sample>,
    ) -> bool {
        let references = collect_references(&file.key, template, &self.partials);
        let mut is_clean = true;

        for partial in &references.missing_partials {
            is_clean = false;
            if self.broken_partials.contains(partial) {
                continue;
            }
            let path = self.dir.join("partials").join(format!("{partial}.hbs"));
            self.problems.push(TemplateProblem {
                location: Location::file(&file.path),
                message: format!("missing partial `{partial}`: add {}", path.display()),
            });
        }

        let Some(sample) = sample else {
            return is_clean;
        };
        for variable in &references.variables {
            let Some(undefined) = find_undefined(&variable.path, &sample.variables) else {
                continue;
            };
            is_clean = false;
            let (path, via) = if variable.template == file.key {
                (file.path.clone(), String::new())
            } else {
                let partial_path = self.partial_paths.get(&variable.template).cloned();
                (
                    partial_path.unwrap_or_else(|| file.path.clone()),
                    format!(" (in a partial that {} calls)", file.path.display()),
                )
            };
            self.problems.push(TemplateProblem {
                location: Location::at(path, variable.line, variable.column),
                message: format!(
                    "variable `{undefined}`{via} is not defined in {}; fix its spelling or \
                     add it to the sample",
                    sample.path.display()
                ),
            });
        }
        is_clean
    }
}

/// Compiles one file, reporting a syntax error with its line and column.
fn compile(name: &str, source: &str, path: &Path) -> Result<Template, TemplateProblem> {
    Template::compile_with_name(source, name.to_owned()).map_err(|error| {
        let (line, column) = error.pos().unzip();
        TemplateProblem {
            location: Location::at(path, line, column),
            message: format!("invalid template: {}", error.reason()).replace('\n', " "),
        }
    })
}

/// Renders every locale of every template with its sample in strict mode,
/// which finds what the static check cannot: helpers used wrongly, values
/// of the wrong type, and line breaks in one-line parts.
fn render_samples(
    store: &TemplateStore,
    samples: &BTreeMap<String, Sample>,
    unchecked_locales: &BTreeSet<LocaleId>,
    problems: &mut Vec<TemplateProblem>,
) {
    for (channel, by_name) in &store.templates {
        for (name, entry) in by_name {
            let Some(sample) = samples.get(name) else {
                continue;
            };
            let variables = Value::Object(sample.variables.clone());
            for (key, locale) in &entry.locales {
                if unchecked_locales.contains(&(*channel, name.clone(), key.clone())) {
                    continue;
                }
                if let Err(error) = store.render_locale(locale, &variables) {
                    problems.push(sample_render_problem(error, &sample.path));
                }
            }
        }
    }
}

fn sample_render_problem(error: RenderError, sample_path: &Path) -> TemplateProblem {
    let sample = sample_path.display();
    match error {
        RenderError::MissingVariable { variable, location } => TemplateProblem {
            location,
            message: format!("missing variable `{variable}` when rendered with {sample}"),
        },
        RenderError::InvalidOutput {
            part,
            location,
            reason,
        } => TemplateProblem {
            location,
            message: format!("invalid {part} when rendered with {sample}: {reason}"),
        },
        RenderError::Render {
            location, reason, ..
        } => TemplateProblem {
            location,
            message: format!("failed to render with {sample}: {reason}"),
        },
        RenderError::UnknownTemplate { .. } | RenderError::InvalidVariables { .. } => {
            TemplateProblem {
                location: Location::file(sample_path),
                message: format!("failed to render with this sample: {error}"),
            }
        }
    }
}

/// Logs samples whose template name no channel has. They do no harm, but
/// often mean a template folder or the sample is misspelt.
fn warn_unused_samples(store: &TemplateStore, samples: &BTreeMap<String, Sample>) {
    for (name, sample) in samples {
        let is_used = ChannelKind::ALL
            .into_iter()
            .any(|channel| store.has_template(channel, name));
        if !is_used {
            tracing::warn!(
                sample = %sample.path.display(),
                "sample variables for template `{name}`, which no channel has"
            );
        }
    }
}
