//! One SMTP session per email, on a TCP socket the channel opens itself so
//! that it can set `TCP_NODELAY`.
//!
//! lettre writes the message and the end-of-data line `.` in two writes,
//! then waits for the reply. With Nagle's algorithm on, the short second
//! write waits until the server acknowledges the first, and a server with
//! no reply to send yet delays that acknowledgement (about 40 ms on Linux):
//! one stall per email. lettre's transport opens its sockets itself and
//! offers no way to set the option, so plain and STARTTLS sessions are run
//! here with lettre's connection type. Implicit TLS still goes through
//! lettre's transport.

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

/// Settings of every session to one server.
pub(super) struct SmtpSessions {
    host: String,
    port: u16,
    /// Set for STARTTLS, which is then required.
    starttls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    hello: ClientId,
}

impl SmtpSessions {
    pub fn new(host: &str, port: u16, starttls: Option<TlsParameters>, credentials: Option<Credentials>) -> SmtpSessions {
        SmtpSessions { host: host.to_owned(), port, starttls, credentials, hello: ClientId::default() }
    }

    /// Connects, upgrades to TLS and authenticates as configured, sends one
    /// email and closes the session.
    ///
    /// # Errors
    ///
    /// Returns the first failure; the caller bounds the whole session with
    /// its timeout.
    pub async fn send(&self, envelope: &Envelope, email: &[u8]) -> Result<Response, SessionError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(SessionError::Connect)?;
        stream.set_nodelay(true).map_err(SessionError::Connect)?;
        let mut connection = AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?;
        if let Some(tls) = &self.starttls {
            connection.starttls(tls.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            connection.auth(DEFAULT_MECHANISMS, credentials).await?;
        }
        let response = connection.send(envelope, email).await?;
        // The email is accepted, so a failure to close the session cleanly
        // changes nothing.
        connection.abort().await;
        Ok(response)
    }
}
