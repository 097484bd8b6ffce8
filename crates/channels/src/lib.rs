
pub mod email;
pub mod push;
pub mod sms;
pub mod telegram;
pub mod webhook;
mod factory;

pub use factory::{build_registry, ChannelsConfig, SetupError};
