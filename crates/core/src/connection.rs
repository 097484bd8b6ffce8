//! Closing broker connections with a deadline.
//!
//! lapin's `Connection::close` waits for the broker's `close-ok`. When the
//! connection fails during the close, as in a broker restart, the wait never
//! ends, and the service would never reconnect.

use std::future::Future;
use std::time::Duration;

use lapin::Connection;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Maximum wait for the broker's reply to a close.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Closes `connection`, named `role` in logs, with `reason`, waiting at most
/// `within`, and returns whether the broker confirmed the close. A connection
/// that is not open is left alone.
// NOTE: lapin 4.12 has no way to end a connection whose close got no reply.
// Its heartbeat check stops once the close starts, so its I/O thread and
// socket stay until the broker replies or TCP ends the connection (a reset,
// or retransmission giving up on a lost path). Where a silent broker is
// likely, [`retire`] avoids the close.
pub async fn close_within(connection: &Connection, role: &str, reason: &str, within: Duration) -> bool {
    if !connection.status().connected() {
        return false;
    }
    match tokio::time::timeout(within, connection.close(200, reason.into())).await {
        Ok(Ok(())) => true,
        Ok(Err(err)) => {
            debug!(connection = role, error = %err, "closing a broker connection failed");
            false
        }
        Err(_) => {
            warn!(
                connection = role,
                timeout_ms = within.as_millis() as u64,
                "closing a broker connection timed out; its socket stays open until the broker or TCP ends it"
            );
            false
        }
    }
}

/// Closes `connection`, named `role` in logs, with `reason`, waiting at most
/// [`CLOSE_TIMEOUT`].
pub async fn close(connection: &Connection, role: &str, reason: &str) -> bool {
    close_within(connection, role, reason, CLOSE_TIMEOUT).await
}

/// Closes a connection whose broker may have stopped replying, in the
/// background, without leaking it when it has.
///
/// A close sent to a silent broker leaves the connection's I/O thread and
/// socket behind (see [`close_within`]). So this first waits, for at most
/// three times the negotiated heartbeat plus a second, while the connection
/// stays open. lapin's heartbeat check, which runs every half heartbeat,
/// fails a silent broker's connection 2 to 2.5 heartbeats after its last
/// frame, and a failed connection is only dropped. A live one is closed.
// NOTE: with heartbeats off (a broker that negotiates 0), there is nothing
// to wait for, so the close happens at once and can leak as before.
pub fn retire(connection: Connection, role: &'static str, reason: &'static str) {
    let heartbeat = Duration::from_secs(u64::from(connection.configuration().heartbeat()));
    tokio::spawn(async move {
        if !heartbeat.is_zero() {
            let deadline = Instant::now() + heartbeat * 3 + Duration::from_secs(1);
            while connection.status().connected() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        close(&connection, role, reason).await;
    });
}

/// Reason sent to the broker when a session closes its connections.
const SESSION_CLOSED: &str = "flatrender-notify session closed";

/// The two connections of one broker session. Consuming and publishing are
/// kept apart, so that a publisher blocked by a broker alarm never holds
/// back acks.
pub struct SessionConnections {
    pub consuming: Connection,
    pub publishing: Connection,
    /// Names of the consuming and the publishing connection in logs.
    roles: [&'static str; 2],
}

impl SessionConnections {
    /// Opens the consuming connection, then the publishing one, by awaiting
    /// `consuming` and then `publishing`. Closes the first when the second
    /// fails.
    ///
    /// # Errors
    ///
    /// Returns the first connection error.
    pub async fn open<E>(
        roles: [&'static str; 2],
        consuming: impl Future<Output = Result<Connection, E>>,
        publishing: impl Future<Output = Result<Connection, E>>,
    ) -> Result<SessionConnections, E> {
        let consuming = consuming.await?;
        match publishing.await {
            Ok(publishing) => Ok(SessionConnections { consuming, publishing, roles }),
            Err(err) => {
                close(&consuming, roles[0], SESSION_CLOSED).await;
                Err(err)
            }
        }
    }

    /// Closes both connections at the same time, each with its own deadline.
    /// Connections that are no longer open are left alone.
    pub async fn close(&self) {
        tokio::join!(
            close(&self.consuming, self.roles[0], SESSION_CLOSED),
            close(&self.publishing, self.roles[1], SESSION_CLOSED),
        );
    }

    /// Ends both connections: retires them when the broker may have stopped
    /// replying (see [`retire`]), and closes them otherwise.
    pub async fn end(self, broker_may_be_silent: bool) {
        if broker_may_be_silent {
            retire(self.consuming, self.roles[0], SESSION_CLOSED);
            retire(self.publishing, self.roles[1], SESSION_CLOSED);
        } else {
            self.close().await;
        }
    }
}
