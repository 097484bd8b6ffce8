//! SMTP sessions on TCP sockets the channel opens itself, so that it can set
//! `TCP_NODELAY`, kept open between emails.
//!
//! lettre writes the message and the end-of-data line `.` in two writes,
//! then waits for the reply. With Nagle's algorithm on, the short second
//! write waits until the server acknowledges the first, and a server with
//! no reply to send yet delays that acknowledgement (about 40 ms on Linux):
//! one stall per email. lettre's transport opens its sockets itself and
//! offers no way to set the option, so plain and STARTTLS sessions are run
//! here with lettre's connection type. Implicit TLS still goes through
//! lettre's transport.
//!
//! A session that delivered an email stays open for the next one, which
//! saves the connection, greeting, STARTTLS and AUTH round trips. Before
//! reuse it must accept a NOOP; a failed send closes it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::net::TcpStream;

/// Failure of a session before the server accepted the email.
#[derive(Debug)]
pub(super) enum SessionError {
    /// The TCP connection could not be opened or set up.
    Connect(std::io::Error),
    /// The SMTP exchange failed: a reply, TLS, or the connection.
    Smtp(lettre::transport::smtp::Error),
}

impl From<lettre::transport::smtp::Error> for SessionError {
    fn from(error: lettre::transport::smtp::Error) -> Self {
        SessionError::Smtp(error)
    }
}

/// Open sessions kept for the next emails.
const MAX_IDLE: usize = 4;

/// Age after which an idle session is closed instead of reused, because the
/// server may have closed a connection that stayed silent this long.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// Settings of every session to one server, and the sessions open now.
pub(super) struct SmtpSessions {
    host: String,
    port: u16,
    /// Set for STARTTLS, which is then required.
    starttls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpSessions {
    pub fn new(host: &str, port: u16, starttls: Option<TlsParameters>, credentials: Option<Credentials>) -> SmtpSessions {
        SmtpSessions {
            host: host.to_owned(),
            port,
            starttls,
            credentials,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one email on an idle session, or on a new one.
    ///
    /// # Errors
    ///
    /// Returns the first failure; the caller bounds the whole send with its
    /// timeout.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<Response, SessionError> {
        let mut connection = match self.reuse().await {
            Some(connection) => connection,
            None => self.open().await?,
        };
        match connection.send(envelope, email).await {
            Ok(response) => {
                self.keep(connection);
                Ok(response)
            }
            Err(error) => {
                connection.abort().await;
                Err(error.into())
            }
        }
    }

    /// Connects, then upgrades to TLS and authenticates as configured.
    // NOTE: the test SMTP server speaks neither STARTTLS nor AUTH, so these
    // two steps have run in tests only where STARTTLS is required and missing.
    async fn open(&self) -> Result<AsyncSmtpConnection, SessionError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(SessionError::Connect)?;
        stream.set_nodelay(true).map_err(SessionError::Connect)?;
        let mut connection = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?;
        if let Some(tls) = &self.starttls {
            connection.starttls(tls.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        Ok(connection)
    }

    /// Takes the newest idle session that is young enough and accepts a
    /// NOOP, closing the others it tries.
    async fn reuse(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut connection, idle_since) = self.lock_idle().pop()?;
            if idle_since.elapsed() < MAX_IDLE_AGE && !connection.has_broken() && connection.test_connected().await {
                return Some(connection);
            }
            connection.abort().await;
        }
    }

    /// Keeps a session for the next email, unless enough are kept already;
    /// an extra one is dropped, which closes its socket.
    fn keep(&self, connection: AsyncSmtpConnection) {
        let mut idle = self.lock_idle();
        if idle.len() < MAX_IDLE {
            idle.push((connection, Instant::now()));
        }
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<(AsyncSmtpConnection, Instant)>> {
        // Every change under the lock is a single push or pop, so a
        // poisoned lock still holds a consistent list.
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
