//! Runs the testkit SMTP server and prints every message it receives.
//!
//! Usage: `local-smtp [ADDRESS]`, where ADDRESS defaults to 127.0.0.1:1025.
//! Point the email channel at it with `tls = "none"` to read outgoing email
//! locally. The server keeps every message in memory until it stops.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use notify_testkit::{ReceivedMail, SmtpServer};

const DEFAULT_ADDRESS: &str = "127.0.0.1:1025";

/// How long one wait for new messages lasts before the loop checks again;
/// any value works because a message wakes the wait at once.
const WAIT_SLICE: Duration = Duration::from_secs(3600);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut arguments = std::env::args().skip(1);
    let address = arguments
        .next()
        .unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
    let usage = format!(
        "usage: local-smtp [ADDRESS]\n\n\
         Listens for SMTP (no TLS, no AUTH) on ADDRESS, by default {DEFAULT_ADDRESS},\n\
         and prints the envelope and raw content of every message it receives."
    );
    if address == "-h" || address == "--help" {
        println!("{usage}");
        return ExitCode::SUCCESS;
    }
    if arguments.next().is_some() {
        eprintln!("local-smtp: expected at most one argument\n\n{usage}");
        return ExitCode::from(2);
    }

    let server = match SmtpServer::start(address.as_str()).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("local-smtp: failed to listen on {address}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "local-smtp: listening on {} (SMTP without TLS or AUTH); press Ctrl-C to stop",
        server.addr()
    );

    let mut printed = 0;
    loop {
        tokio::select! {
            messages = server.wait_for(printed + 1, WAIT_SLICE) => {
                for (index, message) in messages.iter().enumerate().skip(printed) {
                    if let Err(err) = print_message(index + 1, message) {
                        eprintln!("local-smtp: failed to write to stdout: {err}");
                        return ExitCode::FAILURE;
                    }
                }
                printed = messages.len();
            }
            signal = tokio::signal::ctrl_c() => {
                if let Err(err) = signal {
                    eprintln!("local-smtp: failed to listen for Ctrl-C: {err}");
                    return ExitCode::FAILURE;
                }
                println!("local-smtp: stopped after {printed} message(s)");
                return ExitCode::SUCCESS;
            }
        }
    }
}

fn print_message(number: usize, message: &ReceivedMail) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "===== message {number} =====")?;
    writeln!(stdout, "MAIL FROM: <{}>", message.mail_from)?;
    for recipient in &message.rcpt_to {
        writeln!(stdout, "RCPT TO: <{recipient}>")?;
    }
    writeln!(stdout, "----- data ({} bytes) -----", message.data.len())?;
    stdout.write_all(&message.data)?;
    if !message.data.ends_with(b"\n") {
        writeln!(stdout)?;
    }
    writeln!(stdout, "===== end of message {number} =====")?;
    stdout.flush()
}
