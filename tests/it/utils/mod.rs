//! Test support: a private slice of the broker, the service process, and
//! dispatch messages as other services publish them.

pub mod broker;
pub mod cli;
pub mod messages;
pub mod service;

pub use broker::TestBroker;
pub use messages::DispatchMessage;
pub use service::{ServiceProcess, ServiceSettings};
