//! Errors of loading and rendering templates.

use std::fmt;
use std::path::PathBuf;

use crate::channel::ChannelKind;
use crate::error::FailureKind;

/// A position in a template directory: a file or folder, and for problems
/// inside a template file the 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl Location {
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Location {
            path: path.into(),
            line: None,
            column: None,
        }
    }

    pub fn at(path: impl Into<PathBuf>, line: Option<usize>, column: Option<usize>) -> Self {
        Location {
            path: path.into(),
            line,
            column,
        }
    }
}

/// Formats as `path`, `path:line` or `path:line:column`, the form compilers
/// and editors use.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        Ok(())
    }
}

/// One problem found while loading a template directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    pub location: Location,
    pub message: String,
}

impl fmt::Display for TemplateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Every problem found in a template directory, in the order they were found.
/// Displays one problem per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", format_problems(.problems))]
pub struct TemplateLoadError {
    problems: Vec<TemplateProblem>,
}

impl TemplateLoadError {
    pub(crate) fn new(problems: Vec<TemplateProblem>) -> Self {
        TemplateLoadError { problems }
    }

    pub fn problems(&self) -> &[TemplateProblem] {
        &self.problems
    }
}

fn format_problems(problems: &[TemplateProblem]) -> String {
    problems
        .iter()
        .map(TemplateProblem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A failure to render a notification from a loaded template.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("unknown template `{template}` for channel {channel}")]
    UnknownTemplate {
        channel: ChannelKind,
        template: String,
    },

    /// The message's variables are neither a JSON object nor null.
    #[error("invalid variables: expected a JSON object, found {found}")]
    InvalidVariables { found: &'static str },

    /// The template uses a variable the message lacks. Handlebars reports the
    /// same error when `{{#each}}` or `{{#with}}` gets a value that is not a
    /// list or an object, so the variable may also be present with a wrong type.
    #[error("missing variable `{variable}` used at {location}")]
    MissingVariable {
        variable: String,
        location: Location,
    },

    /// The rendered text cannot be sent, for example a line break in a subject.
    #[error("invalid {part} rendered from {location}: {reason}")]
    InvalidOutput {
        part: &'static str,
        location: Location,
        reason: String,
    },

    #[error("failed to render {location}: {reason}")]
    Render {
        location: Location,
        reason: String,
        #[source]
        source: Box<handlebars::RenderError>,
    },
}

impl RenderError {
    /// Returns the failure kind to report in events and dead letters.
    pub fn kind(&self) -> FailureKind {
        match self {
            RenderError::UnknownTemplate { .. } => FailureKind::UnknownTemplate,
            RenderError::InvalidVariables { .. } => FailureKind::InvalidMessage,
            RenderError::MissingVariable { .. }
            | RenderError::InvalidOutput { .. }
            | RenderError::Render { .. } => FailureKind::InvalidContent,
        }
    }
}
