//! Local protocol peers for development and tests.
//!
//! - [`smtp`]: an SMTP server that records the messages it accepts and can
//!   be scripted to reject a recipient or a message. The `local-smtp` binary runs
//!   it and prints every message it receives.

pub mod smtp;

pub use smtp::{ReceivedMail, Reply, SmtpServer, Stage, TEST_CA_PEM};
