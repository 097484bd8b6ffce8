//! Subcommands other than `serve`.

pub mod publish;
