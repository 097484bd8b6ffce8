//! Runs the testkit SMTP server and prints every message it receives.
//!
//! Usage: `local-smtp [--tls none|implicit|starttls] [--auth USER:PASSWORD]
//! [ADDRESS]`, where ADDRESS defaults to 127.0.0.1:1025. Point the email
//! channel at it with `tls = "none"` to read outgoing email locally. With
//! `--tls`, the server presents a test certificate for `localhost` and
//! `127.0.0.1`; trust it with `ca_file = "crates/testkit/certs/ca.pem"`.
//! With `--auth`, it requires `AUTH PLAIN` over TLS. The server keeps every
//! message in memory until it stops.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use notify_testkit::{ReceivedMail, ServerOptions, ServerTls, SmtpServer};

const DEFAULT_ADDRESS: &str = "127.0.0.1:1025";

/// How long one wait for new messages lasts before the loop checks again;
/// any value works because a message wakes the wait at once.
const WAIT_SLICE: Duration = Duration::from_secs(3600);

/// The command line, parsed.
struct Arguments {
    address: String,
    options: ServerOptions,
}

/// Parses the arguments after the program name; `Err` contains the message.
fn parse_arguments(mut arguments: impl Iterator<Item = String>) -> Result<Option<Arguments>, String> {
    let mut address = None;
    let mut options = ServerOptions::default();
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "-h" | "--help" => return Ok(None),
            "--tls" => {
                options.tls = match arguments.next().as_deref() {
                    Some("none") => ServerTls::None,
                    Some("implicit") => ServerTls::Implicit,
                    Some("starttls") => ServerTls::StartTls,
                    Some(other) => return Err(format!("--tls expects none, implicit or starttls, got {other:?}")),
                    None => return Err("--tls expects none, implicit or starttls".to_owned()),
                };
            }
            "--auth" => {
                let value = arguments.next().ok_or("--auth expects USER:PASSWORD")?;
                let (user, password) = value.split_once(':').ok_or("--auth expects USER:PASSWORD")?;
                options.credentials = Some((user.to_owned(), password.to_owned()));
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            _ if address.is_some() => return Err("expected at most one address".to_owned()),
            _ => address = Some(argument),
        }
    }
    if options.credentials.is_some() && options.tls == ServerTls::None {
        return Err("--auth needs --tls implicit or --tls starttls: the server offers AUTH over TLS only".to_owned());
    }
    let address = address.unwrap_or_else(|| DEFAULT_ADDRESS.to_owned());
    Ok(Some(Arguments { address, options }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let usage = format!(
        "usage: local-smtp [--tls none|implicit|starttls] [--auth USER:PASSWORD] [ADDRESS]\n\n\
         Listens for SMTP on ADDRESS, by default {DEFAULT_ADDRESS}, and prints the envelope\n\
         and raw content of every message it receives. --tls serves a test certificate\n\
         for localhost and 127.0.0.1 from the CA in crates/testkit/certs/ca.pem; --auth\n\
         requires AUTH PLAIN with these credentials over TLS."
    );
    let Arguments { address, options } = match parse_arguments(std::env::args().skip(1)) {
        Ok(Some(arguments)) => arguments,
        Ok(None) => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("local-smtp: {message}\n\n{usage}");
            return ExitCode::from(2);
        }
    };
    let security = match (options.tls, options.credentials.is_some()) {
        (ServerTls::None, _) => "SMTP without TLS or AUTH",
        (ServerTls::Implicit, false) => "implicit TLS, no AUTH",
        (ServerTls::Implicit, true) => "implicit TLS, AUTH PLAIN required",
        (ServerTls::StartTls, false) => "STARTTLS offered, no AUTH",
        (ServerTls::StartTls, true) => "STARTTLS offered, AUTH PLAIN required over TLS",
    };

    let server = match SmtpServer::start_with(address.as_str(), options).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("local-smtp: failed to listen on {address}: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "local-smtp: listening on {} ({security}); press Ctrl-C to stop",
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
    let tls = if message.tls { "TLS" } else { "no TLS" };
    match &message.authenticated_as {
        Some(user) => writeln!(stdout, "session: {tls}, authenticated as {user}")?,
        None => writeln!(stdout, "session: {tls}, not authenticated")?,
    }
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
