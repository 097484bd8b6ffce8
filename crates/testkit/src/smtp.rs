//! An SMTP server (RFC 5321) that records every message it accepts.
//!
//! It speaks plain SMTP over TCP: no STARTTLS and no AUTH. EHLO advertises
//! 8BITMIME, SMTPUTF8, SIZE and ENHANCEDSTATUSCODES. Tests can replace the
//! server's next reply at a stage of the transaction (see [`Stage`]) to
//! simulate a busy mailbox or an unknown user.
//!
//! The server is stricter than most production servers, so that client bugs
//! show up in tests. It rejects a message that has a line longer than 1000
//! octets including CRLF, 8-bit data that MAIL FROM did not declare with
//! `BODY=8BITMIME` or `SMTPUTF8`, and a non-ASCII address without `SMTPUTF8`.
//! Only the sequence CRLF `.` CRLF ends the data: a `.` line after a bare LF
//! is message content.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// Largest message the server accepts, in octets after dot-unstuffing; EHLO
/// advertises it as `SIZE`.
pub const MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;

/// Maximum length of a command line, CRLF included. RFC 5321 section
/// 4.5.3.1.4 sets 512 octets, and MAIL parameters of extensions may add to that.
const MAX_COMMAND_LINE: usize = 1024;

/// Maximum length of a text line of a message, CRLF included (RFC 5321
/// section 4.5.3.1.6).
const MAX_TEXT_LINE: usize = 1000;

/// Recipients per transaction; RFC 5321 section 4.5.3.1.8 requires at least 100.
const MAX_RECIPIENTS: usize = 100;

/// Time a session may stay silent before the server closes it. RFC 5321
/// section 4.5.3.2.7 recommends at least 5 minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Name the server gives in its greeting and in the EHLO reply.
const SERVER_NAME: &str = "localhost";

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// Reverse-path of MAIL FROM without angle brackets; empty for `<>`.
    pub mail_from: String,
    /// Forward-paths of the accepted RCPT TO commands, in order, without angle brackets.
    pub rcpt_to: Vec<String>,
    /// Message content as received after DATA, dot-unstuffed, up to and
    /// including the CRLF before the final `.`.
    pub data: Vec<u8>,
    /// The session ran over TLS, implicit or after STARTTLS.
    pub tls: bool,
    /// User name the session authenticated with, when it used AUTH.
    pub authenticated_as: Option<String>,
}

/// Transport security of a test server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServerTls {
    /// Plain SMTP only.
    #[default]
    None,
    /// TLS from the first byte (RFC 8314).
    Implicit,
    /// Plain SMTP that offers STARTTLS (RFC 3207).
    StartTls,
}

/// Transport security and authentication of a test server.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub tls: ServerTls,
    /// User name and password that `AUTH PLAIN` must present before MAIL.
    /// AUTH is offered only over TLS, as public submission servers do.
    pub credentials: Option<(String, String)>,
}

/// A point in the SMTP transaction where a test can replace the server's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The reply to a valid MAIL FROM command.
    MailFrom,
    /// The reply to a valid RCPT TO command.
    RcptTo,
    /// The reply to a valid DATA command, which is normally `354`.
    Data,
    /// The reply after the final `.` of the message content.
    DataEnd,
}

/// A reply for the server to send in place of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit SMTP reply code, such as 450 or 550.
    pub code: u16,
    /// Text after the code, on one line.
    pub text: String,
}

impl Reply {
    /// Creates a one-line reply. Line breaks in `text` are replaced by spaces
    /// so that a reply can never span lines by accident.
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        let text: String = text
            .into()
            .chars()
            .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
            .collect();
        Reply { code, text }
    }

    fn render(&self) -> String {
        format!("{} {}\r\n", self.code, self.text)
    }

    fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Renders the reply to a command, closing the session after a 421.
    fn into_command_reply(self) -> (String, Next) {
        let next = if self.closes_connection() {
            Next::Close
        } else {
            Next::ReadCommand
        };
        (self.render(), next)
    }

    /// Returns whether the server closes the connection after sending this
    /// reply: 421 means the service is shutting the transmission channel (RFC 5321
    /// section 4.2.2).
    fn closes_connection(&self) -> bool {
        self.code == 421
    }
}

/// State shared by the listener, its sessions and the [`SmtpServer`] handle.
struct Shared {
    /// Accepted messages; the watch channel wakes [`SmtpServer::wait_for`].
    mailbox: watch::Sender<Vec<ReceivedMail>>,
    /// Scripted replies per stage, consumed in order by all sessions.
    scripted: Mutex<HashMap<Stage, VecDeque<Reply>>>,
    /// Connections accepted so far.
    sessions: AtomicUsize,
    /// Set when sessions offer STARTTLS.
    starttls: Option<TlsAcceptor>,
    credentials: Option<(String, String)>,
}

impl Shared {
    fn scripted(&self) -> MutexGuard<'_, HashMap<Stage, VecDeque<Reply>>> {
        // A panic while the lock is held cannot leave the map half-updated,
        // so a poisoned lock is still safe to use.
        self.scripted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_scripted(&self, stage: Stage) -> Option<Reply> {
        self.scripted()
            .get_mut(&stage)
            .and_then(VecDeque::pop_front)
    }

    fn store(&self, mail: ReceivedMail) {
        self.mailbox.send_modify(|messages| messages.push(mail));
    }
}

/// A running SMTP server on a local TCP port. Dropping it stops the listener
/// and ends every open session.
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listener: JoinHandle<()>,
}

impl SmtpServer {
    /// Binds `addr` (use port 0 for a free port) and starts accepting
    /// connections on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// Returns the error of binding the socket, for example when the port is in use.
    pub async fn start(addr: impl ToSocketAddrs) -> io::Result<SmtpServer> {
        SmtpServer::start_with(addr, ServerOptions::default()).await
    }

    /// Like [`SmtpServer::start`], but every connection speaks TLS from the
    /// first byte (implicit TLS, RFC 8314). The server presents a certificate
    /// for `localhost` and `127.0.0.1` issued by [`TEST_CA_PEM`], which a
    /// client must trust.
    ///
    /// # Errors
    ///
    /// Returns the error of binding the socket.
    pub async fn start_implicit_tls(addr: impl ToSocketAddrs) -> io::Result<SmtpServer> {
        let options = ServerOptions {
            tls: ServerTls::Implicit,
            ..ServerOptions::default()
        };
        SmtpServer::start_with(addr, options).await
    }

    /// Like [`SmtpServer::start`], with the transport security and
    /// authentication of `options`. TLS, implicit or after STARTTLS, uses
    /// the certificate described at [`SmtpServer::start_implicit_tls`].
    ///
    /// # Errors
    ///
    /// Returns the error of binding the socket.
    pub async fn start_with(addr: impl ToSocketAddrs, options: ServerOptions) -> io::Result<SmtpServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let acceptor = match options.tls {
            ServerTls::None => None,
            ServerTls::Implicit | ServerTls::StartTls => Some(test_tls_acceptor()?),
        };
        let (implicit, starttls) = match options.tls {
            ServerTls::Implicit => (acceptor, None),
            _ => (None, acceptor),
        };
        let shared = Arc::new(Shared {
            mailbox: watch::Sender::new(Vec::new()),
            scripted: Mutex::new(HashMap::new()),
            sessions: AtomicUsize::new(0),
            starttls,
            credentials: options.credentials,
        });
        let listener = tokio::spawn(accept_loop(listener, Arc::clone(&shared), implicit));
        Ok(SmtpServer {
            addr,
            shared,
            listener,
        })
    }

    /// Returns the address the server listens on, with the port the system chose.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the messages accepted so far, in the order their DATA completed.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        self.shared.mailbox.borrow().clone()
    }

    /// Waits until at least `count` messages have been accepted or `timeout`
    /// has passed, and returns the messages accepted by then. The result has
    /// fewer than `count` messages only when the timeout passed first.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let mut receiver = self.shared.mailbox.subscribe();
        // The sender lives in `self.shared`, so `wait_for` cannot fail with
        // a closed channel while `self` is borrowed.
        let _ = tokio::time::timeout(
            timeout,
            receiver.wait_for(|messages| messages.len() >= count),
        )
        .await;
        self.messages()
    }

    /// Returns the number of TCP connections accepted so far.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Queues `reply` as the server's next reply at `stage`, across all
    /// sessions. The reply is used only for a command that is valid and in
    /// sequence. A reply of 400 or more makes the command fail as if the
    /// server had rejected it: a rejected RCPT adds no recipient, and a
    /// rejected DATA end stores no message. A 421 reply also closes the connection.
    pub fn script_reply(&self, stage: Stage, reply: Reply) {
        self.shared
            .scripted()
            .entry(stage)
            .or_default()
            .push_back(reply);
    }

    /// Queues the reply to the next valid MAIL FROM command.
    pub fn reply_to_next_mail_from(&self, code: u16, text: &str) {
        self.script_reply(Stage::MailFrom, Reply::new(code, text));
    }

    /// Queues the reply to the next valid RCPT TO command, e.g. `450 mailbox busy`.
    pub fn reply_to_next_rcpt(&self, code: u16, text: &str) {
        self.script_reply(Stage::RcptTo, Reply::new(code, text));
    }

    /// Queues the reply sent after the final `.` of the next message.
    pub fn reply_to_next_data_end(&self, code: u16, text: &str) {
        self.script_reply(Stage::DataEnd, Reply::new(code, text));
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        // Aborting the listener task drops its JoinSet, which aborts the sessions.
        self.listener.abort();
    }
}

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer")
            .field("addr", &self.addr)
            .field("sessions", &self.sessions())
            .field("messages", &self.shared.mailbox.borrow().len())
            .finish()
    }
}

/// Certificate authority of the certificate that
/// [`SmtpServer::start_implicit_tls`] presents, in PEM. It is valid until
/// 2126 and serves tests only: its private key is not kept.
pub const TEST_CA_PEM: &[u8] = include_bytes!("../certs/ca.pem");

fn test_tls_acceptor() -> io::Result<TlsAcceptor> {
    let invalid = |err: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidData, err.to_string());
    let certificate = CertificateDer::from_pem_slice(include_bytes!("../certs/localhost.pem")).map_err(|err| invalid(&err))?;
    let key = PrivateKeyDer::from_pem_slice(include_bytes!("../certs/localhost-key.pem")).map_err(|err| invalid(&err))?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|err| invalid(&err))?
        .with_no_client_auth()
        .with_single_cert(vec![certificate], key)
        .map_err(|err| invalid(&err))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsAcceptor>) {
    let mut sessions = JoinSet::new();
    loop {
        // Reap finished sessions so that the set does not grow without bound.
        while sessions.try_join_next().is_some() {}

        match listener.accept().await {
            Ok((stream, _peer)) => {
                shared.sessions.fetch_add(1, Ordering::SeqCst);
                let shared = Arc::clone(&shared);
                let tls = tls.clone();
                sessions.spawn(async move {
                    // A session ends on the first I/O or TLS error; the
                    // client sees the closed connection, so there is nothing
                    // else to report.
                    let _ = match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => run_session(Box::new(stream), true, &shared).await,
                            Err(err) => Err(err),
                        },
                        None => run_session(Box::new(stream), false, &shared).await,
                    };
                });
            }
            Err(err) => {
                // Errors such as running out of file descriptors persist for
                // a while, so pause instead of spinning on them. The pause
                // also limits this message to 20 lines a second.
                eprintln!("notify-testkit SMTP server: failed to accept a connection: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Next step of a session after it has replied to a command.
enum Next {
    ReadCommand,
    ReadData,
    /// The TLS handshake of STARTTLS.
    StartTls,
    Close,
}

/// A connection, plain or TLS, so that STARTTLS can replace one by the other.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// The end of [`serve`].
enum Served {
    Closed,
    /// The client asked for STARTTLS; the plain connection is handed back.
    StartTls(Box<dyn Connection>),
}

/// The envelope of the transaction in progress.
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
    /// MAIL FROM declared `BODY=8BITMIME` or `SMTPUTF8`.
    allows_8bit: bool,
    /// MAIL FROM declared `SMTPUTF8`.
    smtputf8: bool,
}

/// The protocol state of one connection, without its I/O.
struct Session<'a> {
    shared: &'a Shared,
    /// Set by HELO or EHLO; `Some(true)` after EHLO, which enables extensions.
    extended: Option<bool>,
    transaction: Option<Transaction>,
    tls: bool,
    /// User name accepted by AUTH.
    authenticated_as: Option<String>,
}

/// Facts the data reader collects about a message while reading it.
struct DataOutcome {
    data: Vec<u8>,
    line_too_long: bool,
    too_large: bool,
}

async fn run_session(stream: Box<dyn Connection>, tls: bool, shared: &Shared) -> io::Result<()> {
    let mut session = Session {
        shared,
        extended: None,
        transaction: None,
        tls,
        authenticated_as: None,
    };
    let mut stream = stream;
    let mut greet = true;
    loop {
        match serve(stream, &mut session, greet).await? {
            Served::Closed => return Ok(()),
            Served::StartTls(plain) => {
                let Some(acceptor) = &shared.starttls else {
                    return Ok(());
                };
                stream = Box::new(acceptor.accept(plain).await?);
                // RFC 3207 section 4.2: the client starts over with EHLO, and
                // nothing learned before the handshake counts.
                session.extended = None;
                session.transaction = None;
                session.authenticated_as = None;
                session.tls = true;
                greet = false;
            }
        }
    }
}

/// Runs the command loop on one connection until it closes or the client
/// asks for STARTTLS.
async fn serve(stream: Box<dyn Connection>, session: &mut Session<'_>, greet: bool) -> io::Result<Served> {
    let (read_half, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(read_half);
    if greet {
        send(
            &mut writer,
            &format!("220 {SERVER_NAME} ESMTP notify-testkit ready\r\n"),
        )
        .await?;
    }
    loop {
        let line = match with_idle_timeout(read_command_line(&mut reader)).await {
            Some(Ok(CommandLine::Line(line))) => line,
            Some(Ok(CommandLine::TooLong)) => {
                send(&mut writer, "500 5.5.2 line too long\r\n").await?;
                continue;
            }
            Some(Ok(CommandLine::Eof)) => return Ok(Served::Closed),
            Some(Err(err)) => return Err(err),
            None => {
                send(
                    &mut writer,
                    "421 4.4.2 idle timeout, closing connection\r\n",
                )
                .await?;
                return Ok(Served::Closed);
            }
        };

        let (reply, next) = session.handle_command(&line);
        send(&mut writer, &reply).await?;
        match next {
            Next::ReadCommand => {}
            Next::Close => return Ok(Served::Closed),
            Next::StartTls => {
                // A client that sent more after STARTTLS, before the
                // handshake, could slip commands into the TLS session
                // (RFC 3207 section 5), so the connection ends.
                if !reader.buffer().is_empty() {
                    return Ok(Served::Closed);
                }
                return Ok(Served::StartTls(reader.into_inner().unsplit(writer)));
            }
            Next::ReadData => {
                let outcome = match with_idle_timeout(read_data(&mut reader)).await {
                    Some(outcome) => outcome?,
                    None => {
                        send(
                            &mut writer,
                            "421 4.4.2 idle timeout, closing connection\r\n",
                        )
                        .await?;
                        return Ok(Served::Closed);
                    }
                };
                let reply = session.finish_data(outcome);
                send(&mut writer, &reply.render()).await?;
                if reply.closes_connection() {
                    return Ok(Served::Closed);
                }
            }
        }
    }
}

async fn with_idle_timeout<T>(future: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(IDLE_TIMEOUT, future).await.ok()
}

async fn send(writer: &mut (impl AsyncWrite + Unpin), reply: &str) -> io::Result<()> {
    writer.write_all(reply.as_bytes()).await?;
    writer.flush().await
}

enum CommandLine {
    /// A command without its line terminator.
    Line(Vec<u8>),
    TooLong,
    Eof,
}

/// Reads one command line. Accepts a bare LF as terminator as well as CRLF,
/// as most servers do for commands.
async fn read_command_line(reader: &mut (impl AsyncBufRead + Unpin)) -> io::Result<CommandLine> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(MAX_COMMAND_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if read == 0 {
        return Ok(CommandLine::Eof);
    }
    if line.last() != Some(&b'\n') {
        if read < MAX_COMMAND_LINE {
            // The client closed the connection in the middle of a line.
            return Ok(CommandLine::Eof);
        }
        // Skip the rest of the overlong line.
        loop {
            line.clear();
            let read = (&mut *reader)
                .take(MAX_COMMAND_LINE as u64)
                .read_until(b'\n', &mut line)
                .await?;
            if read == 0 {
                return Ok(CommandLine::Eof);
            }
            if line.last() == Some(&b'\n') {
                return Ok(CommandLine::TooLong);
            }
        }
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(CommandLine::Line(line))
}

/// Reads message content up to CRLF `.` CRLF, removing the dot that the
/// client added to lines starting with a dot (RFC 5321 section 4.5.2).
///
/// A line here ends with CRLF. A bare LF does not end a line, so neither
/// dot-unstuffing nor the end marker applies after it.
async fn read_data(reader: &mut (impl AsyncBufRead + Unpin)) -> io::Result<DataOutcome> {
    let mut outcome = DataOutcome {
        data: Vec::new(),
        line_too_long: false,
        too_large: false,
    };
    let mut chunk = Vec::with_capacity(MAX_TEXT_LINE + 1);
    // The CRLF that ended the DATA command counts as the line end before the content.
    let mut at_line_start = true;
    let mut line_length = 0;
    let mut previous_chunk_ended_with_cr = false;

    loop {
        chunk.clear();
        // `read_until` returns at an LF or after the limit, so a chunk never
        // spans two lines, and at a line start ".\r\n" arrives as one chunk.
        let read = (&mut *reader)
            .take(MAX_TEXT_LINE as u64 + 1)
            .read_until(b'\n', &mut chunk)
            .await?;
        if read == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during DATA",
            ));
        }

        let mut content: &[u8] = &chunk;
        if at_line_start {
            if chunk == b".\r\n" {
                return Ok(outcome);
            }
            if chunk.first() == Some(&b'.') {
                content = &chunk[1..];
            }
        }

        line_length += read;
        let ends_line =
            chunk.ends_with(b"\r\n") || (chunk == b"\n" && previous_chunk_ended_with_cr);
        if ends_line {
            if line_length > MAX_TEXT_LINE {
                outcome.line_too_long = true;
            }
            line_length = 0;
        } else if line_length > MAX_TEXT_LINE {
            outcome.line_too_long = true;
        }
        at_line_start = ends_line;
        previous_chunk_ended_with_cr = chunk.last() == Some(&b'\r');

        if outcome.data.len() + content.len() > MAX_MESSAGE_SIZE {
            // Keep reading to the end marker so the session stays in sync,
            // but stop buffering.
            outcome.too_large = true;
        } else if !outcome.too_large {
            outcome.data.extend_from_slice(content);
        }
    }
}

fn reply(code: u16, text: &str) -> String {
    format!("{code} {text}\r\n")
}

fn continue_with(reply: String) -> (String, Next) {
    (reply, Next::ReadCommand)
}

impl Session<'_> {
    /// Handles one command line and returns the reply to send and what to do next.
    fn handle_command(&mut self, line: &[u8]) -> (String, Next) {
        let Ok(line) = std::str::from_utf8(line) else {
            return (
                reply(500, "5.5.2 command is not valid UTF-8"),
                Next::ReadCommand,
            );
        };
        let (verb, argument) = match line.split_once(' ') {
            Some((verb, argument)) => (verb, argument.trim()),
            None => (line, ""),
        };

        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.hello(argument, true),
            "HELO" => self.hello(argument, false),
            "MAIL" => self.mail(argument),
            "RCPT" => self.rcpt(argument),
            "DATA" => self.data(argument),
            "RSET" => {
                if !argument.is_empty() {
                    return (
                        reply(501, "5.5.4 RSET takes no argument"),
                        Next::ReadCommand,
                    );
                }
                self.transaction = None;
                (reply(250, "2.0.0 OK"), Next::ReadCommand)
            }
            "NOOP" => (reply(250, "2.0.0 OK"), Next::ReadCommand),
            "QUIT" => (reply(221, "2.0.0 closing connection"), Next::Close),
            "VRFY" => (
                reply(
                    252,
                    "2.5.2 cannot verify the user, but will accept the message",
                ),
                Next::ReadCommand,
            ),
            "STARTTLS" => self.starttls(argument),
            "AUTH" => self.auth(argument),
            "EXPN" | "HELP" | "TURN" | "BDAT" => (
                reply(502, "5.5.1 command not implemented"),
                Next::ReadCommand,
            ),
            _ => (
                reply(500, "5.5.2 command not recognized"),
                Next::ReadCommand,
            ),
        }
    }

    fn hello(&mut self, domain: &str, extended: bool) -> (String, Next) {
        if domain.is_empty() || domain.contains(' ') {
            return (reply(501, "5.5.4 syntax: EHLO domain"), Next::ReadCommand);
        }
        // EHLO and HELO reset any transaction in progress (RFC 5321 section 4.1.4).
        self.transaction = None;
        self.extended = Some(extended);
        if !extended {
            return (
                reply(250, &format!("{SERVER_NAME} greets {domain}")),
                Next::ReadCommand,
            );
        }
        let mut lines = vec![
            format!("{SERVER_NAME} greets {domain}"),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            format!("SIZE {MAX_MESSAGE_SIZE}"),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.shared.starttls.is_some() && !self.tls {
            lines.push("STARTTLS".to_owned());
        }
        if self.shared.credentials.is_some() && self.tls {
            lines.push("AUTH PLAIN".to_owned());
        }
        let mut text = String::new();
        for (index, line) in lines.iter().enumerate() {
            let separator = if index + 1 == lines.len() { ' ' } else { '-' };
            text.push_str(&format!("250{separator}{line}\r\n"));
        }
        (text, Next::ReadCommand)
    }

    fn starttls(&mut self, argument: &str) -> (String, Next) {
        if self.shared.starttls.is_none() || self.tls {
            return continue_with(reply(502, "5.5.1 STARTTLS not available"));
        }
        if !argument.is_empty() {
            return continue_with(reply(501, "5.5.4 STARTTLS takes no argument"));
        }
        if self.extended != Some(true) {
            return continue_with(reply(503, "5.5.1 send EHLO first"));
        }
        (reply(220, "2.0.0 ready to start TLS"), Next::StartTls)
    }

    /// Handles `AUTH PLAIN` with an initial response (RFC 4616), the only
    /// mechanism the server offers.
    fn auth(&mut self, argument: &str) -> (String, Next) {
        let Some((user, password)) = &self.shared.credentials else {
            return continue_with(reply(502, "5.5.1 AUTH not available"));
        };
        if !self.tls {
            return continue_with(reply(538, "5.7.11 encryption required for AUTH"));
        }
        if self.extended != Some(true) {
            return continue_with(reply(503, "5.5.1 send EHLO first"));
        }
        if self.authenticated_as.is_some() || self.transaction.is_some() {
            return continue_with(reply(503, "5.5.1 AUTH not allowed now"));
        }
        let (mechanism, response) = argument.split_once(' ').unwrap_or((argument, ""));
        if !mechanism.eq_ignore_ascii_case("PLAIN") {
            return continue_with(reply(504, "5.5.4 mechanism not supported"));
        }
        let Ok(decoded) = BASE64.decode(response.trim()) else {
            return continue_with(reply(501, "5.5.2 invalid base64 in AUTH PLAIN"));
        };
        let mut parts = decoded.split(|byte| *byte == 0);
        let (_authorization, given_user, given_password) = (parts.next(), parts.next(), parts.next());
        if given_user == Some(user.as_bytes()) && given_password == Some(password.as_bytes()) && parts.next().is_none() {
            self.authenticated_as = Some(user.clone());
            return continue_with(reply(235, "2.7.0 authentication succeeded"));
        }
        continue_with(reply(535, "5.7.8 authentication credentials invalid"))
    }

    fn mail(&mut self, argument: &str) -> (String, Next) {
        let Some(extended) = self.extended else {
            return continue_with(reply(503, "5.5.1 send EHLO or HELO first"));
        };
        if self.shared.credentials.is_some() && self.authenticated_as.is_none() {
            return continue_with(reply(530, "5.7.0 authentication required"));
        }
        if self.transaction.is_some() {
            return continue_with(reply(503, "5.5.1 nested MAIL command"));
        }
        let Some((path, parameters)) = parse_path_argument(argument, "FROM:") else {
            return continue_with(reply(501, "5.5.4 syntax: MAIL FROM:<address>"));
        };
        if !path.is_empty() && !is_plausible_mailbox(path) {
            return continue_with(reply(553, "5.1.7 invalid sender address"));
        }
        if !parameters.is_empty() && !extended {
            return continue_with(reply(555, "5.5.4 parameters need EHLO"));
        }

        let mut transaction = Transaction {
            mail_from: path.to_owned(),
            rcpt_to: Vec::new(),
            allows_8bit: false,
            smtputf8: false,
        };
        for parameter in parameters
            .split(' ')
            .filter(|parameter| !parameter.is_empty())
        {
            let (keyword, value) = match parameter.split_once('=') {
                Some((keyword, value)) => (keyword, Some(value)),
                None => (parameter, None),
            };
            match (keyword.to_ascii_uppercase().as_str(), value) {
                ("SIZE", Some(value)) => match value.parse::<usize>() {
                    Ok(size) if size > MAX_MESSAGE_SIZE => {
                        return continue_with(reply(
                            552,
                            "5.3.4 message size exceeds fixed maximum message size",
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => return continue_with(reply(501, "5.5.4 SIZE value is not a number")),
                },
                ("BODY", Some(value)) if value.eq_ignore_ascii_case("7BIT") => {}
                ("BODY", Some(value)) if value.eq_ignore_ascii_case("8BITMIME") => {
                    transaction.allows_8bit = true
                }
                ("SMTPUTF8", None) => {
                    transaction.smtputf8 = true;
                    transaction.allows_8bit = true;
                }
                _ => return continue_with(reply(555, "5.5.4 MAIL parameter not recognized")),
            }
        }
        if !path.is_ascii() && !transaction.smtputf8 {
            return continue_with(reply(553, "5.6.7 non-ASCII address requires SMTPUTF8"));
        }

        if let Some(scripted) = self.shared.take_scripted(Stage::MailFrom) {
            if scripted.is_positive() {
                self.transaction = Some(transaction);
            }
            return scripted.into_command_reply();
        }
        self.transaction = Some(transaction);
        continue_with(reply(250, "2.1.0 sender OK"))
    }

    fn rcpt(&mut self, argument: &str) -> (String, Next) {
        let shared = self.shared;
        let Some(transaction) = self.transaction.as_mut() else {
            return continue_with(reply(503, "5.5.1 need MAIL command first"));
        };
        let Some((path, parameters)) = parse_path_argument(argument, "TO:") else {
            return continue_with(reply(501, "5.5.4 syntax: RCPT TO:<address>"));
        };
        let is_postmaster = path.eq_ignore_ascii_case("postmaster");
        if !is_postmaster && !is_plausible_mailbox(path) {
            return continue_with(reply(553, "5.1.3 invalid recipient address"));
        }
        if !parameters.is_empty() {
            return continue_with(reply(555, "5.5.4 RCPT parameter not recognized"));
        }
        if !path.is_ascii() && !transaction.smtputf8 {
            return continue_with(reply(553, "5.6.7 non-ASCII address requires SMTPUTF8"));
        }
        if transaction.rcpt_to.len() >= MAX_RECIPIENTS {
            return continue_with(reply(452, "4.5.3 too many recipients"));
        }

        if let Some(scripted) = shared.take_scripted(Stage::RcptTo) {
            if scripted.is_positive() {
                transaction.rcpt_to.push(path.to_owned());
            }
            return scripted.into_command_reply();
        }
        transaction.rcpt_to.push(path.to_owned());
        continue_with(reply(250, "2.1.5 recipient OK"))
    }

    fn data(&mut self, argument: &str) -> (String, Next) {
        if !argument.is_empty() {
            return (
                reply(501, "5.5.4 DATA takes no argument"),
                Next::ReadCommand,
            );
        }
        let Some(transaction) = &self.transaction else {
            return (
                reply(503, "5.5.1 need MAIL command first"),
                Next::ReadCommand,
            );
        };
        if transaction.rcpt_to.is_empty() {
            return (reply(554, "5.5.1 no valid recipients"), Next::ReadCommand);
        }

        if let Some(scripted) = self.shared.take_scripted(Stage::Data) {
            let next = if scripted.closes_connection() {
                Next::Close
            } else if scripted.code / 100 == 3 {
                Next::ReadData
            } else {
                Next::ReadCommand
            };
            return (scripted.render(), next);
        }
        (
            reply(354, "end data with <CR><LF>.<CR><LF>"),
            Next::ReadData,
        )
    }

    /// Ends the transaction whose content `outcome` contains, stores the
    /// message unless it is rejected, and returns the reply.
    fn finish_data(&mut self, outcome: DataOutcome) -> Reply {
        let Some(transaction) = self.transaction.take() else {
            // `data` only starts reading content while a transaction exists.
            return Reply::new(503, "5.5.1 need MAIL command first");
        };
        if outcome.too_large {
            return Reply::new(552, "5.3.4 message size exceeds fixed maximum message size");
        }
        if outcome.line_too_long {
            return Reply::new(
                554,
                "5.6.0 message has a line longer than 998 octets plus CRLF",
            );
        }
        if !transaction.allows_8bit && !outcome.data.is_ascii() {
            return Reply::new(
                554,
                "5.6.0 message has 8-bit data but MAIL FROM did not declare BODY=8BITMIME",
            );
        }

        let scripted = self.shared.take_scripted(Stage::DataEnd);
        let reply = scripted.unwrap_or_else(|| Reply::new(250, "2.0.0 message accepted"));
        if reply.is_positive() {
            self.shared.store(ReceivedMail {
                mail_from: transaction.mail_from,
                rcpt_to: transaction.rcpt_to,
                data: outcome.data,
                tls: self.tls,
                authenticated_as: self.authenticated_as.clone(),
            });
        }
        reply
    }
}

/// Splits `FROM:<path> PARAMS` (or `TO:`) into the path without angle
/// brackets and the parameters. Accepts spaces after the colon, which RFC
/// 5321 forbids but many clients send.
fn parse_path_argument<'a>(argument: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let prefix = argument.get(..keyword.len())?;
    if !prefix.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = argument[keyword.len()..].trim_start().strip_prefix('<')?;
    let (path, parameters) = rest.split_once('>')?;
    if !parameters.is_empty() && !parameters.starts_with(' ') {
        return None;
    }
    // Drop an obsolete source route such as `@relay.example:` (RFC 5321 section 4.1.2).
    let path = match path.strip_prefix('@') {
        Some(route) => route.split_once(':').map(|(_, mailbox)| mailbox)?,
        None => path,
    };
    Some((path, parameters.trim()))
}

/// Returns whether `path` has the shape `local@domain` with no spaces or control characters.
fn is_plausible_mailbox(path: &str) -> bool {
    let Some((local, domain)) = path.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !path.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
    use tokio::net::TcpStream;

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);

    /// A minimal SMTP client that writes raw lines and reads whole replies.
    struct Client {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl Client {
        async fn connect(server: &SmtpServer) -> (Client, String) {
            let stream = TcpStream::connect(server.addr()).await.unwrap();
            let (read_half, writer) = stream.into_split();
            let mut client = Client {
                reader: BufReader::new(read_half),
                writer,
            };
            let greeting = client.read_reply().await;
            (client, greeting)
        }

        /// Reads one reply, all lines of a multi-line reply included.
        async fn read_reply(&mut self) -> String {
            let mut reply = String::new();
            loop {
                let mut line = String::new();
                let read = self.reader.read_line(&mut line).await.unwrap();
                assert!(
                    read > 0,
                    "connection closed before a complete reply; so far: {reply:?}"
                );
                reply.push_str(&line);
                if line.as_bytes().get(3) == Some(&b' ') {
                    return reply;
                }
            }
        }

        async fn write(&mut self, bytes: &[u8]) {
            self.writer.write_all(bytes).await.unwrap();
        }

        async fn command(&mut self, line: &str) -> String {
            self.write(format!("{line}\r\n").as_bytes()).await;
            self.read_reply().await
        }

        /// Opens a transaction for one recipient, ready for DATA.
        async fn begin(&mut self, from: &str, to: &str) {
            assert!(self.command("EHLO client.test").await.starts_with("250"));
            assert!(self
                .command(&format!("MAIL FROM:<{from}>"))
                .await
                .starts_with("250"));
            assert!(self
                .command(&format!("RCPT TO:<{to}>"))
                .await
                .starts_with("250"));
        }

        /// Opens another transaction on a session that already sent EHLO.
        async fn begin_again(&mut self) {
            assert!(self
                .command("MAIL FROM:<sender@example.org>")
                .await
                .starts_with("250"));
            assert!(self
                .command("RCPT TO:<user@example.com>")
                .await
                .starts_with("250"));
        }

        async fn is_closed(&mut self) -> bool {
            let mut rest = Vec::new();
            self.reader.read_to_end(&mut rest).await.unwrap();
            rest.is_empty()
        }
    }

    async fn start() -> SmtpServer {
        SmtpServer::start("127.0.0.1:0").await.unwrap()
    }

    #[tokio::test]
    async fn greeting_and_ehlo_advertise_extensions() {
        let server = start().await;
        let (mut client, greeting) = Client::connect(&server).await;
        assert!(greeting.starts_with("220 "), "{greeting}");

        let ehlo = client.command("EHLO client.test").await;
        let lines: Vec<&str> = ehlo.lines().collect();
        assert!(lines[0].starts_with("250-"), "{ehlo}");
        assert!(lines.contains(&"250-8BITMIME"), "{ehlo}");
        assert!(lines.contains(&"250-SMTPUTF8"), "{ehlo}");
        assert!(
            lines.contains(&format!("250-SIZE {MAX_MESSAGE_SIZE}").as_str()),
            "{ehlo}"
        );
        assert!(lines.last().unwrap().starts_with("250 "), "{ehlo}");
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert_eq!(server.sessions(), 1);
    }

    #[tokio::test]
    async fn message_is_stored_dot_unstuffed() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;
        client
            .begin("sender@example.org", "first@example.com")
            .await;
        assert!(client
            .command("RCPT TO:<second@example.com>")
            .await
            .starts_with("250"));
        assert!(client.command("DATA").await.starts_with("354"));

        client
            .write(b"Subject: dots\r\n\r\n..leading dot\r\n.\r\n")
            .await;
        let reply = client.read_reply().await;
        assert!(reply.starts_with("250 "), "{reply}");
        assert!(client.command("QUIT").await.starts_with("221"));

        let messages = server.wait_for(1, WAIT).await;
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].mail_from, "sender@example.org");
        assert_eq!(
            messages[0].rcpt_to,
            ["first@example.com", "second@example.com"]
        );
        assert_eq!(messages[0].data, b"Subject: dots\r\n\r\n.leading dot\r\n");
    }

    #[tokio::test]
    async fn dot_after_bare_lf_does_not_end_data() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;
        client.begin("sender@example.org", "user@example.com").await;
        assert!(client.command("DATA").await.starts_with("354"));

        client
            .write(b"first\n.\r\nMAIL FROM:<smuggled@example.org>\r\n.\r\n")
            .await;
        let reply = client.read_reply().await;
        assert!(reply.starts_with("250 "), "{reply}");

        let messages = server.wait_for(1, WAIT).await;
        assert_eq!(messages.len(), 1);
        assert_eq!(
            messages[0].data,
            b"first\n.\r\nMAIL FROM:<smuggled@example.org>\r\n"
        );
    }

    #[tokio::test]
    async fn commands_out_of_sequence_get_503() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;

        assert!(client
            .command("MAIL FROM:<sender@example.org>")
            .await
            .starts_with("503"));
        assert!(client.command("EHLO client.test").await.starts_with("250"));
        assert!(client
            .command("RCPT TO:<user@example.com>")
            .await
            .starts_with("503"));
        assert!(client.command("DATA").await.starts_with("503"));
        assert!(client
            .command("MAIL FROM:<sender@example.org>")
            .await
            .starts_with("250"));
        assert!(client
            .command("MAIL FROM:<sender@example.org>")
            .await
            .starts_with("503"));
        assert!(client.command("DATA").await.starts_with("554"));
    }

    #[tokio::test]
    async fn bad_commands_get_500_501_502() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;

        assert!(client.command("FROB").await.starts_with("500"));
        assert!(client.command("EHLO").await.starts_with("501"));
        assert!(client.command("STARTTLS").await.starts_with("502"));
        assert!(client.command("AUTH PLAIN").await.starts_with("502"));
        assert!(client.command("EHLO client.test").await.starts_with("250"));
        assert!(client
            .command("MAIL FROM:sender@example.org")
            .await
            .starts_with("501"));
        assert!(client
            .command("MAIL FROM:<sender@example.org> FOO=1")
            .await
            .starts_with("555"));
        assert!(client
            .command(&format!("NOOP {}", "x".repeat(2000)))
            .await
            .starts_with("500"));
        assert!(client.command("NOOP").await.starts_with("250"));
    }

    #[tokio::test]
    async fn rset_clears_transaction() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;
        client.begin("sender@example.org", "user@example.com").await;

        assert!(client.command("RSET").await.starts_with("250"));
        assert!(client.command("DATA").await.starts_with("503"));
        assert!(client.command("MAIL FROM:<>").await.starts_with("250"));
    }

    #[tokio::test]
    async fn scripted_rcpt_reply_rejects_recipient() {
        let server = start().await;
        server.reply_to_next_rcpt(450, "4.2.1 mailbox busy");
        let (mut client, _) = Client::connect(&server).await;
        assert!(client.command("EHLO client.test").await.starts_with("250"));
        assert!(client
            .command("MAIL FROM:<sender@example.org>")
            .await
            .starts_with("250"));

        assert_eq!(
            client.command("RCPT TO:<busy@example.com>").await,
            "450 4.2.1 mailbox busy\r\n"
        );
        assert!(client.command("DATA").await.starts_with("554"));
        assert!(client
            .command("RCPT TO:<user@example.com>")
            .await
            .starts_with("250"));
        assert!(client.command("DATA").await.starts_with("354"));
        client.write(b"body\r\n.\r\n").await;
        assert!(client.read_reply().await.starts_with("250"));

        let messages = server.wait_for(1, WAIT).await;
        assert_eq!(messages[0].rcpt_to, ["user@example.com"]);
    }

    #[tokio::test]
    async fn scripted_data_end_reply_rejects_message() {
        let server = start().await;
        server.reply_to_next_data_end(550, "5.7.1 message rejected");
        let (mut client, _) = Client::connect(&server).await;
        client.begin("sender@example.org", "user@example.com").await;
        assert!(client.command("DATA").await.starts_with("354"));

        client.write(b"body\r\n.\r\n").await;
        assert_eq!(client.read_reply().await, "550 5.7.1 message rejected\r\n");
        assert!(server.messages().is_empty());
    }

    #[tokio::test]
    async fn scripted_421_closes_connection() {
        let server = start().await;
        server.reply_to_next_mail_from(421, "4.3.2 shutting down");
        let (mut client, _) = Client::connect(&server).await;
        assert!(client.command("EHLO client.test").await.starts_with("250"));

        assert!(client
            .command("MAIL FROM:<sender@example.org>")
            .await
            .starts_with("421"));
        assert!(client.is_closed().await);
    }

    #[tokio::test]
    async fn overlong_text_line_is_rejected() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;
        client.begin("sender@example.org", "user@example.com").await;
        assert!(client.command("DATA").await.starts_with("354"));

        let line = "a".repeat(999);
        client.write(format!("{line}\r\n.\r\n").as_bytes()).await;
        let reply = client.read_reply().await;
        assert!(reply.starts_with("554 "), "{reply}");
        assert!(server.messages().is_empty());

        // 998 octets plus CRLF is the longest line allowed.
        client.begin_again().await;
        assert!(client.command("DATA").await.starts_with("354"));
        let line = "a".repeat(998);
        client.write(format!("{line}\r\n.\r\n").as_bytes()).await;
        let reply = client.read_reply().await;
        assert!(reply.starts_with("250 "), "{reply}");
    }

    #[tokio::test]
    async fn undeclared_8bit_data_is_rejected() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;
        client.begin("sender@example.org", "user@example.com").await;
        assert!(client.command("DATA").await.starts_with("354"));
        client.write("caf\u{e9}\r\n.\r\n".as_bytes()).await;
        assert!(client.read_reply().await.starts_with("554"));

        assert!(client
            .command("MAIL FROM:<sender@example.org> BODY=8BITMIME")
            .await
            .starts_with("250"));
        assert!(client
            .command("RCPT TO:<user@example.com>")
            .await
            .starts_with("250"));
        assert!(client.command("DATA").await.starts_with("354"));
        client.write("caf\u{e9}\r\n.\r\n".as_bytes()).await;
        assert!(client.read_reply().await.starts_with("250"));
    }

    #[tokio::test]
    async fn non_ascii_address_needs_smtputf8() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;
        assert!(client.command("EHLO client.test").await.starts_with("250"));

        assert!(client
            .command("MAIL FROM:<j\u{f6}rg@example.org>")
            .await
            .starts_with("553"));
        assert!(client
            .command("MAIL FROM:<j\u{f6}rg@example.org> SMTPUTF8")
            .await
            .starts_with("250"));
        assert!(client
            .command("RCPT TO:<b\u{fc}ro@example.com>")
            .await
            .starts_with("250"));
    }

    #[tokio::test]
    async fn declared_size_over_limit_is_rejected() {
        let server = start().await;
        let (mut client, _) = Client::connect(&server).await;
        assert!(client.command("EHLO client.test").await.starts_with("250"));

        let command = format!(
            "MAIL FROM:<sender@example.org> SIZE={}",
            MAX_MESSAGE_SIZE + 1
        );
        assert!(client.command(&command).await.starts_with("552"));
    }

    #[tokio::test]
    async fn wait_for_returns_partial_after_timeout() {
        let server = start().await;
        let messages = server.wait_for(1, Duration::from_millis(50)).await;
        assert!(messages.is_empty());
    }

    #[tokio::test]
    async fn wait_for_wakes_when_message_arrives() {
        let server = start().await;
        let addr = server.addr();
        let waiter = server.wait_for(2, WAIT);
        let sender = async move {
            for index in 0..2 {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (read_half, writer) = stream.into_split();
                let mut client = Client {
                    reader: BufReader::new(read_half),
                    writer,
                };
                client.read_reply().await;
                client.begin("sender@example.org", "user@example.com").await;
                assert!(client.command("DATA").await.starts_with("354"));
                client
                    .write(format!("message {index}\r\n.\r\n").as_bytes())
                    .await;
                assert!(client.read_reply().await.starts_with("250"));
            }
        };

        let (messages, ()) = tokio::join!(waiter, sender);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].data, b"message 1\r\n");
        assert_eq!(server.sessions(), 2);
    }
}
