//! Closing broker connections with a deadline.
//!
//! lapin's `Connection::close` waits for the broker's `close-ok`. When the
//! connection fails during the close, as in a broker restart, the wait never
//! ends, and the service would never reconnect.

use std::time::Duration;

use lapin::Connection;
use tracing::{debug, warn};

/// Maximum wait for the broker's reply to a close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Closes `connection` with `reason`, waiting at most `within`, and returns
/// whether the broker confirmed the close. A failed connection is only dropped.
pub async fn close_within(connection: &Connection, reason: &str, within: Duration) -> bool {
    if !connection.status().connected() {
        return false;
    }
    match tokio::time::timeout(within, connection.close(200, reason.into())).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            debug!(error = %err, "closing a broker connection failed, so it is dropped");
            false
        }
        Err(_) => {
            warn!(timeout_ms = within.as_millis() as u64, "closing a broker connection timed out, so it is dropped");
            false
        }
    }
}

/// Closes `connection` with `reason`, waiting at most [`CLOSE_TIMEOUT`].
pub async fn close(connection: &Connection, reason: &str) -> bool {
    close_within(connection, reason, CLOSE_TIMEOUT).await
}
