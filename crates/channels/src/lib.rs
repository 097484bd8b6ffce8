
pub mod email;
#[cfg(feature = "noop")]
pub mod noop;
pub mod push;
pub mod sms;
pub mod telegram;
pub mod webhook;
mod factory;
mod http;

pub use factory::{build_registry, ChannelsConfig, SetupError};
