//! Subcommands other than `serve`.

pub mod dlq;
pub mod publish;
pub mod send;
pub mod templates;
pub mod topology;

mod broker;
mod request;

use std::path::PathBuf;

use clap::Args;

/// The `--config` option that every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct ConfigArg {
    /// TOML configuration file; `NOTIFY__SECTION__KEY` variables override its keys.
    #[arg(long, short, default_value = "config/default.toml")]
    pub config: PathBuf,
}
