//! Broker connections of the operator commands.

use std::time::Duration;

use anyhow::Context;
use lapin::{Connection, ConnectionProperties};
use notify_core::config::{redact_url, BrokerConfig};

/// Connects to `broker.url`, waiting at most `broker.connect_timeout_secs`.
///
/// # Errors
///
/// Fails when the broker cannot be reached in time or rejects the login.
pub(crate) async fn connect(broker: &BrokerConfig) -> anyhow::Result<Connection> {
    let timeout = Duration::from_secs(broker.connect_timeout_secs);
    let url = redact_url(&broker.url);
    let connect = Connection::connect(&broker.url, ConnectionProperties::default());
    tokio::time::timeout(timeout, connect)
        .await
        .with_context(|| format!("timed out after {timeout:?} connecting to the broker at {url}"))?
        .with_context(|| format!("cannot connect to the broker at {url}; check broker.url"))
}

/// Closes the connection, logging instead of failing, because the work is
/// done. A broker that does not reply in time is left behind.
pub(crate) async fn close(connection: &Connection) {
    notify_core::connection::close(connection, "command", "done").await;
}
