//! Test support: a private slice of the broker, the service process, and
//! dispatch messages as other services publish them.

pub mod broker;
pub mod cli;
pub mod messages;
pub mod proxy;
pub mod service;
pub mod webhooks;

use std::time::Duration;

pub use broker::TestBroker;
pub use messages::DispatchMessage;
pub use service::{ServiceProcess, ServiceSettings};

/// Polls `done` every 100 ms until it returns true, failing the test after
/// `timeout` with `what` in the message.
pub async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
