//! SMTP sessions on TCP sockets the channel opens itself, so that it can set
//! `TCP_NODELAY`, kept open between emails.
//!
//! lettre writes the message and the end-of-data line `.` in two writes,
//! then waits for the reply. With Nagle's algorithm on, the short second
//! write waits until the server acknowledges the first, and a server with
//! no reply to send yet delays that acknowledgement (about 40 ms on Linux):
//! one stall per email. lettre's transport opens its sockets itself and
//! offers no way to set the option, so every session runs here with
//! lettre's connection type: plain, STARTTLS, or implicit TLS, where the TLS
//! handshake on the socket comes first.
//!
//! A session that delivered an email stays open for the next one, which
//! saves the connection, greeting, TLS and AUTH round trips. Before reuse it
//! must accept a NOOP; a failed send closes it.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// Protection of a session's connection.
pub(super) enum Security {
    None,
    /// STARTTLS after the greeting, which the server must offer.
    StartTls(TlsParameters),
    /// TLS from the first byte, checked against `config`'s root certificates.
    ImplicitTls { config: Arc<ClientConfig>, server_name: ServerName<'static> },
}

/// Failure of a session before the server accepted the email.
#[derive(Debug)]
pub(super) enum SessionError {
    /// The TCP connection could not be opened or set up.
    Connect(std::io::Error),
    /// The implicit-TLS handshake failed.
    Tls(std::io::Error),
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
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpSessions {
    pub fn new(host: &str, port: u16, security: Security, credentials: Option<Credentials>) -> SmtpSessions {
        SmtpSessions {
            host: host.to_owned(),
            port,
            security,
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

    /// Connects, sets up TLS and authenticates as configured.
    async fn open(&self) -> Result<AsyncSmtpConnection, SessionError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(SessionError::Connect)?;
        stream.set_nodelay(true).map_err(SessionError::Connect)?;
        let transport: Box<dyn AsyncTokioStream> = match &self.security {
            Security::ImplicitTls { config, server_name } => {
                let connector = TlsConnector::from(Arc::clone(config));
                let tls = connector.connect(server_name.clone(), stream).await.map_err(SessionError::Tls)?;
                Box::new(ImplicitTlsStream(tls))
            }
            Security::None | Security::StartTls(_) => Box::new(stream),
        };
        let mut connection = AsyncSmtpConnection::connect_with_transport(transport, &self.hello).await?;
        if let Security::StartTls(tls) = &self.security {
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

/// A TLS connection to the server, for lettre's connection type.
///
/// lettre counts it as unencrypted, because it did not set up the TLS
/// itself. That only keeps it from offering STARTTLS on top, which an
/// implicit-TLS session never requests.
#[derive(Debug)]
struct ImplicitTlsStream(TlsStream<TcpStream>);

impl AsyncTokioStream for ImplicitTlsStream {
    fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
