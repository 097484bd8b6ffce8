//! Local protocol peers for development and tests.
//!
//! - [`smtp`]: an SMTP server that records the messages it accepts and can
//!   be scripted to reject a recipient or a message. It speaks plain SMTP,
//!   implicit TLS or STARTTLS, optionally with `AUTH PLAIN`, with a test
//!   certificate. The `local-smtp` binary runs it and prints every message
//!   it receives.

pub mod smtp;

pub use smtp::{ReceivedMail, Reply, ServerOptions, ServerTls, SmtpServer, Stage, TEST_CA_PEM};
