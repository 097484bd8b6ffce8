
pub mod email;
pub mod webhook;
mod factory;

pub use factory::{build_registry, ChannelsConfig, SetupError};
