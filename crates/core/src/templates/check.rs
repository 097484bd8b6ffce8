//! Static check of a parsed template: which top-level variables and which
//! partials it references, so that misspelt names are reported at load even
//! when the sample render cannot reach them (the body of a false `{{#if}}`).

use std::collections::{BTreeSet, HashMap};

use handlebars::template::{DecoratorTemplate, HelperTemplate, Parameter, TemplateElement};
use handlebars::{Path, PathSeg, Template};
use serde_json::{Map, Value};

/// Helpers that handlebars 6 registers by default. A name-only expression
/// such as `{{log}}` with one of these names calls the helper, not a variable.
const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

/// Block helpers whose body renders with a different context (the item or
/// the object), so names inside it do not refer to the top level.
const CONTEXT_CHANGING_HELPERS: &[&str] = &["each", "with"];

/// The name a partial uses to render the block it was called with.
const PARTIAL_BLOCK: &str = "@partial-block";

/// A variable that a template reads from the top level of the variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VariableReference {
    /// Path segments from the top level: `order.total` is `["order", "total"]`.
    pub(crate) path: Vec<String>,
    /// Registry name of the template that contains the reference: the part
    /// itself or a partial it calls.
    pub(crate) template: String,
    pub(crate) line: Option<usize>,
    pub(crate) column: Option<usize>,
}

#[derive(Debug, Default)]
pub(crate) struct References {
    /// Top-level variables in order of appearance, each path listed once.
    pub(crate) variables: Vec<VariableReference>,
    /// Partials called by name that are neither loaded nor defined inline
    /// with `{{#*inline}}`.
    pub(crate) missing_partials: BTreeSet<String>,
    /// Loaded partials the template calls, directly or through other partials.
    pub(crate) used_partials: BTreeSet<String>,
}

/// Collects the references of the template registered as `name`, following
/// calls into the loaded `partials`.
pub(crate) fn collect_references(
    name: &str,
    template: &Template,
    partials: &HashMap<String, Template>,
) -> References {
    let mut walker = Walker {
        partials,
        partial_stack: Vec::new(),
        inline_partials: BTreeSet::new(),
        called_partials: BTreeSet::new(),
        references: References::default(),
    };
    let scope = Scope {
        template: name.to_owned(),
        depth: 0,
        partial_arguments: BTreeSet::new(),
    };
    walker.walk_template(template, &scope);

    let mut references = walker.references;
    references.missing_partials = walker
        .called_partials
        .into_iter()
        .filter(|partial| {
            !partials.contains_key(partial) && !walker.inline_partials.contains(partial)
        })
        .collect();
    references
}

/// Returns the shortest prefix of `path`, joined with dots, that `sample`
/// does not define. The search stops at values that are not objects, because
/// paths into arrays or strings cannot be checked against one sample.
pub(crate) fn find_undefined(path: &[String], sample: &Map<String, Value>) -> Option<String> {
    let mut object = sample;
    for (index, name) in path.iter().enumerate() {
        match object.get(name) {
            None => return Some(path[..=index].join(".")),
            Some(Value::Object(members)) => object = members,
            Some(_) => return None,
        }
    }
    None
}

/// Position of the walker in the template tree.
#[derive(Debug, Clone)]
struct Scope {
    /// Registry name of the template whose elements are being walked.
    template: String,
    /// Number of enclosing blocks that changed the context. At 0 the walker
    /// is at the top level.
    depth: usize,
    /// Hash arguments of the enclosing partial calls, as in
    /// `{{> layout title="Welcome"}}`, which the partial reads like variables.
    partial_arguments: BTreeSet<String>,
}

impl Scope {
    fn nested(&self) -> Scope {
        Scope {
            depth: self.depth + 1,
            ..self.clone()
        }
    }
}

struct Walker<'a> {
    partials: &'a HashMap<String, Template>,
    /// Partials being walked, to stop at recursive calls.
    partial_stack: Vec<String>,
    inline_partials: BTreeSet<String>,
    called_partials: BTreeSet<String>,
    references: References,
}

type Position = Option<(usize, usize)>;

impl Walker<'_> {
    fn walk_template(&mut self, template: &Template, scope: &Scope) {
        for (index, element) in template.elements.iter().enumerate() {
            let position = template
                .mapping
                .get(index)
                .map(|mapping| (mapping.0, mapping.1));
            match element {
                TemplateElement::Expression(helper) | TemplateElement::HtmlExpression(helper) => {
                    self.walk_expression(helper, scope, position);
                }
                TemplateElement::HelperBlock(helper) => self.walk_block(helper, scope, position),
                TemplateElement::DecoratorExpression(decorator)
                | TemplateElement::DecoratorBlock(decorator) => {
                    self.walk_decorator(decorator, scope, position);
                }
                TemplateElement::PartialExpression(partial)
                | TemplateElement::PartialBlock(partial) => {
                    self.walk_partial(partial, scope, position);
                }
                _ => {}
            }
        }
    }

    /// Walks `{{name}}` (a variable, or a helper without arguments) and
    /// `{{helper arg key=value}}`.
    fn walk_expression(&mut self, helper: &HelperTemplate, scope: &Scope, position: Position) {
        let is_name_only = !helper.block && helper.params.is_empty() && helper.hash.is_empty();
        if is_name_only {
            if !is_builtin_helper(&helper.name) {
                self.walk_parameter(&helper.name, scope, position);
            }
            return;
        }
        self.walk_dynamic_name(&helper.name, scope, position);
        self.walk_arguments(&helper.params, helper.hash.values(), scope, position);
    }

    /// Walks `{{#helper args}}body{{else}}inverse{{/helper}}`.
    fn walk_block(&mut self, helper: &HelperTemplate, scope: &Scope, position: Position) {
        self.walk_dynamic_name(&helper.name, scope, position);
        self.walk_arguments(&helper.params, helper.hash.values(), scope, position);

        let name = parameter_name(&helper.name);
        let body_scope = match name {
            Some(name) if CONTEXT_CHANGING_HELPERS.contains(&name) => scope.nested(),
            Some(name) if BUILTIN_HELPERS.contains(&name) => scope.clone(),
            Some(_) => {
                // A block named after a variable, `{{#order}}...{{/order}}`,
                // renders its body with that variable as the context.
                self.walk_parameter(&helper.name, scope, position);
                scope.nested()
            }
            None => scope.clone(),
        };
        if let Some(body) = &helper.template {
            self.walk_template(body, &body_scope);
        }
        if let Some(inverse) = &helper.inverse {
            self.walk_template(inverse, scope);
        }
    }

    /// Walks decorators such as `{{#*inline "name"}}...{{/inline}}`.
    fn walk_decorator(&mut self, decorator: &DecoratorTemplate, scope: &Scope, position: Position) {
        self.walk_arguments(&decorator.params, decorator.hash.values(), scope, position);

        let is_inline = parameter_name(&decorator.name) == Some("inline");
        if let (true, Some(Parameter::Literal(Value::String(name)))) =
            (is_inline, decorator.params.first())
        {
            self.inline_partials.insert(name.clone());
        }
        if let Some(body) = &decorator.template {
            self.walk_template(body, scope);
        }
    }

    /// Walks `{{> name context key=value}}` and `{{#> name}}block{{/name}}`,
    /// following the call into the partial's own template.
    fn walk_partial(&mut self, call: &DecoratorTemplate, scope: &Scope, position: Position) {
        self.walk_dynamic_name(&call.name, scope, position);
        self.walk_arguments(&call.params, call.hash.values(), scope, position);

        let mut inner_scope = scope.clone();
        inner_scope
            .partial_arguments
            .extend(call.hash.keys().cloned());
        if let Some(block) = &call.template {
            self.walk_template(block, &inner_scope);
        }

        let Some(name) = parameter_name(&call.name) else {
            return;
        };
        if name == PARTIAL_BLOCK || self.partial_stack.iter().any(|open| open == name) {
            return;
        }
        let Some(partial) = self.partials.get(name) else {
            // Handlebars renders the block as a fallback when the partial is
            // missing, so only a call without a block needs the partial.
            if call.template.is_none() {
                self.called_partials.insert(name.to_owned());
            }
            return;
        };

        self.references.used_partials.insert(name.to_owned());
        inner_scope.template = name.to_owned();
        if !call.params.is_empty() {
            // `{{> name context}}` renders the partial with `context` as its
            // top level.
            inner_scope.depth += 1;
        }
        self.partial_stack.push(name.to_owned());
        self.walk_template(partial, &inner_scope);
        self.partial_stack.pop();
    }

    fn walk_dynamic_name(&mut self, name: &Parameter, scope: &Scope, position: Position) {
        if let Parameter::Subexpression(_) = name {
            self.walk_parameter(name, scope, position);
        }
    }

    fn walk_arguments<'p>(
        &mut self,
        params: &'p [Parameter],
        hash_values: impl Iterator<Item = &'p Parameter>,
        scope: &Scope,
        position: Position,
    ) {
        for param in params.iter().chain(hash_values) {
            self.walk_parameter(param, scope, position);
        }
    }

    fn walk_parameter(&mut self, param: &Parameter, scope: &Scope, position: Position) {
        match param {
            Parameter::Path(path) => self.add_reference(path, scope, position),
            Parameter::Name(name) => {
                if let Ok(path) = Path::parse(name) {
                    self.add_reference(&path, scope, position);
                }
            }
            Parameter::Subexpression(subexpression) => {
                if let TemplateElement::Expression(helper) = subexpression.as_element() {
                    self.walk_expression(helper, scope, position);
                }
            }
            _ => {}
        }
    }

    fn add_reference(&mut self, path: &Path, scope: &Scope, position: Position) {
        let Some((names, is_rooted)) = top_level_names(path, scope.depth) else {
            return;
        };
        let is_partial_argument = names
            .first()
            .is_some_and(|first| scope.partial_arguments.contains(first));
        if is_partial_argument && !is_rooted {
            return;
        }
        let is_known = self
            .references
            .variables
            .iter()
            .any(|known| known.path == names);
        if !is_known {
            self.references.variables.push(VariableReference {
                path: names,
                template: scope.template.clone(),
                line: position.map(|(line, _)| line),
                column: position.map(|(_, column)| column),
            });
        }
    }
}

/// Returns the path's segments when it refers to the top level of the
/// variables, and whether it does so through `@root`.
///
/// At `depth` 0 a plain path such as `name` or `this.name` is top level.
/// Inside context-changing blocks a path reaches the top level through
/// `@root.name` or through as many `../` as enclosing blocks.
fn top_level_names(path: &Path, depth: usize) -> Option<(Vec<String>, bool)> {
    // `Path::Local` is a data variable such as `@index` or `@key`.
    let Path::Relative((segments, raw)) = path else {
        return None;
    };
    let names: Vec<String> = segments
        .iter()
        .filter_map(|segment| match segment {
            PathSeg::Named(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return None;
    }

    let is_rooted = raw.trim_start().starts_with("@root");
    // Without `@root`, the segments before the first name are `..` steps.
    let parent_steps = segments
        .iter()
        .take_while(|segment| !matches!(segment, PathSeg::Named(_)))
        .count();
    if is_rooted || parent_steps >= depth {
        Some((names, is_rooted))
    } else {
        None
    }
}

fn parameter_name(param: &Parameter) -> Option<&str> {
    match param {
        Parameter::Name(name) => Some(name),
        Parameter::Path(Path::Relative((_, raw))) => Some(raw),
        Parameter::Path(Path::Local((_, _, raw))) => Some(raw),
        _ => None,
    }
}

fn is_builtin_helper(name: &Parameter) -> bool {
    parameter_name(name).is_some_and(|name| BUILTIN_HELPERS.contains(&name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn variables_of(source: &str) -> Vec<String> {
        variables_with_partials(source, &HashMap::new())
    }

    fn variables_with_partials(source: &str, partials: &HashMap<String, Template>) -> Vec<String> {
        let template = Template::compile(source).unwrap();
        collect_references("test", &template, partials)
            .variables
            .into_iter()
            .map(|reference| reference.path.join("."))
            .collect()
    }

    #[test]
    fn expressions_and_helper_arguments() {
        assert_eq!(
            variables_of("Hi {{first_name}}, {{{html}}} {{#if dicount_code}}x{{/if}}"),
            ["first_name", "html", "dicount_code"]
        );
        assert_eq!(
            variables_of("{{#if (eq plan \"pro\")}}{{order.total}}{{else if trial}}t{{/if}}"),
            ["plan", "order.total", "trial"]
        );
        assert_eq!(
            variables_of("{{lookup labels key}} {{log}}"),
            ["labels", "key"]
        );
    }

    #[test]
    fn each_and_with_bodies_skipped() {
        assert_eq!(
            variables_of(
                "{{#each items as |item|}}{{item.name}}{{name}}{{@index}}{{../currency}}\
                 {{@root.total}}{{else}}{{empty_note}}{{/each}}"
            ),
            ["items", "currency", "total", "empty_note"]
        );
        assert_eq!(
            variables_of("{{#with user}}{{name}}{{#each tags}}{{../../brand}}{{/each}}{{/with}}"),
            ["user", "brand"]
        );
    }

    #[test]
    fn partials_followed_with_arguments() {
        let mut partials = HashMap::new();
        partials.insert(
            "layout".to_owned(),
            Template::compile("<h1>{{title}}</h1>{{footer_note}}{{> @partial-block}}").unwrap(),
        );
        assert_eq!(
            variables_with_partials(
                "{{#> layout title=\"Hi\"}}{{user_name}}{{/layout}}",
                &partials
            ),
            ["user_name", "footer_note"]
        );

        let template = Template::compile("{{> missing}}{{> layout}}").unwrap();
        let references = collect_references("test", &template, &partials);
        assert_eq!(
            references.missing_partials,
            BTreeSet::from(["missing".to_owned()])
        );
        assert_eq!(
            references.used_partials,
            BTreeSet::from(["layout".to_owned()])
        );
    }

    #[test]
    fn inline_partials_not_missing() {
        let template =
            Template::compile("{{#*inline \"row\"}}{{label}}{{/inline}}{{> row}}").unwrap();
        let references = collect_references("test", &template, &HashMap::new());
        assert!(references.missing_partials.is_empty());
    }

    #[test]
    fn reference_positions() {
        let template = Template::compile("line one\n  {{#if coupon}}x{{/if}}").unwrap();
        let references = collect_references("test", &template, &HashMap::new());
        assert_eq!(references.variables[0].line, Some(2));
        assert_eq!(references.variables[0].column, Some(3));
    }

    #[test]
    fn undefined_prefix_found() {
        let sample = json!({"order": {"total": 5, "lines": [1]}, "name": "x", "coupon": null});
        let Value::Object(sample) = sample else {
            unreachable!()
        };
        let path = |dotted: &str| dotted.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(find_undefined(&path("order.total"), &sample), None);
        assert_eq!(find_undefined(&path("coupon"), &sample), None);
        assert_eq!(find_undefined(&path("order.lines.0"), &sample), None);
        assert_eq!(
            find_undefined(&path("order.totl"), &sample),
            Some("order.totl".to_owned())
        );
        assert_eq!(
            find_undefined(&path("dicount_code"), &sample),
            Some("dicount_code".to_owned())
        );
    }
}
