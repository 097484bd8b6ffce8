//! Email channel against the testkit SMTP server over real TCP.
//!
//! Each test starts its own server on a free port, so the tests can run in
//! parallel. Received messages are parsed with `mail-parser`, an independent
//! MIME parser, and the raw wire lines are checked directly.

use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use notify_channels::email::{EmailChannel, EmailConfig, TlsMode};
use notify_core::{
    Channel, ChannelKind, Content, DeliveryError, EmailContent, FailureKind, Notification,
    Recipient,
};
use notify_testkit::{ReceivedMail, SmtpServer};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);
const FROM_ADDRESS: &str = "no-reply@flatrender.local";
const RECIPIENT: &str = "user@example.com";

async fn start_server() -> SmtpServer {
    SmtpServer::start("127.0.0.1:0")
        .await
        .expect("bind the test SMTP server")
}

fn config_for(port: u16) -> EmailConfig {
    EmailConfig {
        enabled: true,
        host: "127.0.0.1".to_owned(),
        port,
        tls: TlsMode::None,
        from: format!("Flatrender <{FROM_ADDRESS}>"),
        ..EmailConfig::default()
    }
}

fn channel_for(server: &SmtpServer) -> EmailChannel {
    EmailChannel::new(&config_for(server.addr().port())).expect("valid email config")
}

fn notification(name: Option<&str>, subject: &str, text: &str, html: Option<&str>) -> Notification {
    Notification {
        notification_id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        channel: ChannelKind::Email,
        template: "order_delayed".to_owned(),
        locale: "fr".to_owned(),
        recipient: Recipient::Email {
            email: RECIPIENT.to_owned(),
            name: name.map(str::to_owned),
        },
        content: Content::Email(EmailContent {
            subject: subject.to_owned(),
            text: text.to_owned(),
            html: html.map(str::to_owned),
        }),
        attempt: 1,
    }
}

async fn send_and_receive(notification: &Notification) -> (ReceivedMail, notify_core::Receipt) {
    let server = start_server().await;
    let receipt = channel_for(&server)
        .send(notification)
        .await
        .expect("email accepted");
    let messages = server.wait_for(1, WAIT).await;
    assert_eq!(
        messages.len(),
        1,
        "the server should have received one message"
    );
    (messages[0].clone(), receipt)
}

async fn send_expecting_error(server: &SmtpServer, notification: &Notification) -> DeliveryError {
    match channel_for(server).send(notification).await {
        Ok(receipt) => panic!("expected a delivery error, got {receipt:?}"),
        Err(err) => err,
    }
}

/// The header block of a message, unfolded: one string per header field.
fn unfolded_headers(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8(data.to_vec()).expect("message is UTF-8");
    let header_block = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in header_block.split("\r\n") {
        match fields.last_mut() {
            Some(field) if line.starts_with([' ', '\t']) => field.push_str(line),
            _ => fields.push(line.to_owned()),
        }
    }
    fields
}

fn header_fields_named(data: &[u8], name: &str) -> Vec<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    unfolded_headers(data)
        .into_iter()
        .filter(|field| field.to_ascii_lowercase().starts_with(&prefix))
        .collect()
}

/// Length in octets of the longest line of `data`, without its CRLF.
fn longest_line(data: &[u8]) -> usize {
    data.split(|byte| *byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line).len())
        .max()
        .unwrap_or(0)
}

/// Every RFC 2047 encoded word (`=?charset?encoding?text?=`) in `text`.
fn encoded_words(text: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("=?") {
        let candidate = &rest[start..];
        // Skip `=?charset?x?` before looking for the closing `?=`.
        let Some(end) = candidate.match_indices('?').nth(2).and_then(|(third, _)| {
            candidate[third + 1..]
                .find("?=")
                .map(|close| third + 1 + close + 2)
        }) else {
            break;
        };
        words.push(&candidate[..end]);
        rest = &candidate[end..];
    }
    words
}

/// Decodes one `B` or `Q` encoded word to its bytes.
fn decode_encoded_word(word: &str) -> Vec<u8> {
    use base64::Engine;

    let inner = &word[2..word.len() - 2];
    let mut pieces = inner.splitn(3, '?');
    let (_charset, encoding, payload) = (
        pieces.next().unwrap(),
        pieces.next().unwrap(),
        pieces.next().unwrap(),
    );
    match encoding {
        "b" | "B" => base64::engine::general_purpose::STANDARD
            .decode(payload)
            .expect("valid base64"),
        "q" | "Q" => {
            let mut bytes = Vec::new();
            let mut iter = payload.bytes();
            while let Some(byte) = iter.next() {
                match byte {
                    b'_' => bytes.push(b' '),
                    b'=' => {
                        let hex = [iter.next().unwrap(), iter.next().unwrap()];
                        bytes.push(
                            u8::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap(),
                        );
                    }
                    other => bytes.push(other),
                }
            }
            bytes
        }
        other => panic!("unknown encoded-word encoding {other:?} in {word}"),
    }
}

fn assert_text_bodies_decode_exactly(mail: &ReceivedMail, text: &str, html: Option<&str>) {
    let message = MessageParser::default()
        .parse(&mail.data)
        .expect("parsable message");
    let decoded: Vec<(String, Vec<u8>)> = message
        .parts
        .iter()
        .filter_map(|part| {
            let content_type = part.content_type()?;
            let kind = format!(
                "{}/{}",
                content_type.c_type,
                content_type.c_subtype.as_deref().unwrap_or("")
            );
            match &part.body {
                PartType::Text(_) | PartType::Html(_) => Some((kind, part.contents().to_vec())),
                _ => None,
            }
        })
        .collect();

    let expected_parts = if html.is_some() { 2 } else { 1 };
    assert_eq!(decoded.len(), expected_parts, "text parts: {decoded:?}");
    assert_eq!(decoded[0].0, "text/plain");
    assert_eq!(
        String::from_utf8_lossy(&decoded[0].1),
        text,
        "decoded text/plain differs"
    );
    assert_eq!(decoded[0].1, text.as_bytes());
    if let Some(html) = html {
        assert_eq!(decoded[1].0, "text/html");
        assert_eq!(decoded[1].1, html.as_bytes(), "decoded text/html differs");
    }
}

#[tokio::test]
async fn multipart_email_has_stable_message_id() {
    let server = start_server().await;
    let channel = channel_for(&server);
    let mut notification = notification(
        Some("Ann Example"),
        "Order A-100 is delayed",
        "Your order A-100 is delayed.\r\nNew date: 5 August.",
        Some("<p>Your order <b>A-100</b> is delayed.</p>"),
    );

    let first = channel
        .send(&notification)
        .await
        .expect("first attempt accepted");
    notification.attempt = 2;
    let second = channel.send(&notification).await.expect("retry accepted");
    let messages = server.wait_for(2, WAIT).await;

    let expected_id = format!("<{}@flatrender.local>", notification.notification_id);
    assert_eq!(first.provider, "smtp");
    assert_eq!(
        first.provider_message_id.as_deref(),
        Some(expected_id.as_str())
    );
    assert_eq!(second.provider_message_id, first.provider_message_id);
    let smtp_response = first
        .details
        .get("smtp_response")
        .and_then(|value| value.as_str())
        .unwrap_or_default();
    assert!(smtp_response.starts_with("250 "), "{smtp_response}");

    assert_eq!(messages.len(), 2);
    for mail in &messages {
        assert_eq!(mail.mail_from, FROM_ADDRESS);
        assert_eq!(mail.rcpt_to, [RECIPIENT]);
        let message = MessageParser::default()
            .parse(&mail.data)
            .expect("parsable message");
        assert_eq!(
            message.message_id(),
            Some(&expected_id[1..expected_id.len() - 1])
        );
        assert_eq!(
            header_fields_named(&mail.data, "Message-ID"),
            [format!("Message-ID: {expected_id}")]
        );
        assert!(
            message.is_content_type("multipart", "alternative"),
            "{:?}",
            message.content_type()
        );
        assert_eq!(message.subject(), Some("Order A-100 is delayed"));
        let to = message.to().and_then(|to| to.first()).expect("To header");
        assert_eq!(to.name.as_deref(), Some("Ann Example"));
        assert_eq!(to.address.as_deref(), Some(RECIPIENT));
        assert_text_bodies_decode_exactly(
            mail,
            "Your order A-100 is delayed.\r\nNew date: 5 August.",
            Some("<p>Your order <b>A-100</b> is delayed.</p>"),
        );
    }
}

#[tokio::test]
async fn text_only_email_is_single_text_part() {
    let text = "Your order A-100 has shipped.\r\n";
    let (mail, receipt) =
        send_and_receive(&notification(None, "Order A-100 shipped", text, None)).await;

    let message = MessageParser::default()
        .parse(&mail.data)
        .expect("parsable message");
    assert!(
        message.is_content_type("text", "plain"),
        "{:?}",
        message.content_type()
    );
    assert_eq!(message.parts.len(), 1);
    assert_eq!(
        header_fields_named(&mail.data, "To"),
        [format!("To: {RECIPIENT}")]
    );
    assert!(receipt.provider_message_id.is_some());
    assert_text_bodies_decode_exactly(&mail, text, None);
}

#[tokio::test]
async fn lines_starting_with_dot_survive_transfer() {
    let text = ".\r\n.hidden\r\n..two dots\r\nend";
    let (mail, _) = send_and_receive(&notification(None, "Dots", text, None)).await;

    assert_text_bodies_decode_exactly(&mail, text, None);
}

#[tokio::test]
async fn subject_with_line_break_is_rejected() {
    let server = start_server().await;
    let subject = "Your order A-100\r\nBcc: intruder@example.net\r\n\r\nInjected is delayed";

    let err = send_expecting_error(&server, &notification(None, subject, "text", None)).await;

    assert!(!err.is_transient());
    assert_eq!(err.kind(), FailureKind::InvalidContent);
    assert!(
        err.message().contains("subject contains a line break"),
        "{}",
        err.message()
    );
    assert_eq!(server.sessions(), 0, "nothing may reach the server");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn recipient_name_with_line_break_is_rejected() {
    let server = start_server().await;
    let name = "Ann\r\nBcc: intruder@example.net";

    let err = send_expecting_error(
        &server,
        &notification(Some(name), "Order A-100", "text", None),
    )
    .await;

    assert!(!err.is_transient());
    assert_eq!(err.kind(), FailureKind::InvalidRecipient);
    assert!(
        err.message()
            .contains("recipient name contains a line break"),
        "{}",
        err.message()
    );
    assert_eq!(server.sessions(), 0, "nothing may reach the server");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn long_text_line_is_encoded_and_decodes_exactly() {
    let text = format!("{}ら{}", "a".repeat(997), "b".repeat(1200));
    let (mail, _) = send_and_receive(&notification(None, "Long line", &text, None)).await;

    assert!(
        longest_line(&mail.data) <= 998,
        "a wire line has {} octets",
        longest_line(&mail.data)
    );
    let message = MessageParser::default()
        .parse(&mail.data)
        .expect("parsable message");
    let encoding = message
        .content_transfer_encoding()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        encoding == "quoted-printable" || encoding == "base64",
        "{encoding}"
    );
    assert_text_bodies_decode_exactly(&mail, &text, None);
}

#[tokio::test]
async fn long_html_link_is_encoded_and_decodes_exactly() {
    let prefix = "https://flatrender.example/track?token=";
    let url = format!("{prefix}{}", "x".repeat(1500 - prefix.len()));
    assert_eq!(url.len(), 1500);
    let html = format!("<p>Track your parcel: <a href=\"{url}\">here</a></p>");
    let text = format!("Track your parcel: {url}");

    let (mail, _) = send_and_receive(&notification(None, "Tracking", &text, Some(&html))).await;

    assert!(
        longest_line(&mail.data) <= 998,
        "a wire line has {} octets",
        longest_line(&mail.data)
    );
    assert_text_bodies_decode_exactly(&mail, &text, Some(&html));
}

#[tokio::test]
async fn display_name_with_comma_stays_one_mailbox() {
    for name in ["Şmith, John", "Smith, John", "O'Brien \"Bob\" <Ops>"] {
        let (mail, _) =
            send_and_receive(&notification(Some(name), "Order A-100", "text", None)).await;

        assert_eq!(mail.rcpt_to, [RECIPIENT], "{name}");
        let message = MessageParser::default()
            .parse(&mail.data)
            .expect("parsable message");
        let to = message.to().expect("To header");
        let mailboxes: Vec<_> = to.iter().collect();
        assert_eq!(
            mailboxes.len(),
            1,
            "To header: {:?}",
            header_fields_named(&mail.data, "To")
        );
        assert_eq!(mailboxes[0].name.as_deref(), Some(name));
        assert_eq!(mailboxes[0].address.as_deref(), Some(RECIPIENT), "{name}");
    }
}

#[tokio::test]
async fn non_ascii_subject_decodes_exactly() {
    let subject = "Livraison retardée. Arrivée prévue\u{00A0}: 5 août, 11h48";
    let (mail, _) =
        send_and_receive(&notification(Some("Şmith, John"), subject, "text", None)).await;

    let message = MessageParser::default()
        .parse(&mail.data)
        .expect("parsable message");
    assert_eq!(message.subject(), Some(subject));
    assert_eq!(header_fields_named(&mail.data, "Subject").len(), 1);

    let headers = unfolded_headers(&mail.data).join("\r\n");
    let words = encoded_words(&headers);
    assert!(!words.is_empty(), "expected encoded words in {headers}");
    for word in words {
        assert!(
            word.len() <= 75,
            "encoded word of {} characters: {word}",
            word.len()
        );
        let bytes = decode_encoded_word(word);
        assert!(
            std::str::from_utf8(&bytes).is_ok(),
            "{word} does not decode to UTF-8 on its own"
        );
    }
    for line in mail.data.split(|byte| *byte == b'\n') {
        assert!(
            line.is_ascii(),
            "headers and bodies must be 7-bit: {}",
            String::from_utf8_lossy(line)
        );
    }
}

#[tokio::test]
async fn subject_resembling_encoded_word_decodes_literally() {
    let subject = "Code =?utf-8?b?SGk=?= is not encoded";
    let (mail, _) = send_and_receive(&notification(None, subject, "text", None)).await;

    let message = MessageParser::default()
        .parse(&mail.data)
        .expect("parsable message");
    assert_eq!(message.subject(), Some(subject));
}

#[tokio::test]
async fn rcpt_450_is_transient() {
    let server = start_server().await;
    server.reply_to_next_rcpt(450, &format!("4.2.1 <{RECIPIENT}>: mailbox busy"));

    let err = send_expecting_error(&server, &notification(None, "Order A-100", "text", None)).await;

    assert!(err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Unavailable);
    assert_eq!(err.code(), Some("smtp_450"));
    assert!(err.message().contains("mailbox busy"), "{}", err.message());
    assert!(
        !err.message().contains(RECIPIENT),
        "full address in {}",
        err.message()
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn rcpt_550_is_permanent() {
    let server = start_server().await;
    server.reply_to_next_rcpt(550, &format!("5.1.1 <{RECIPIENT}>: no such user"));

    let err = send_expecting_error(&server, &notification(None, "Order A-100", "text", None)).await;

    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Rejected);
    assert_eq!(err.code(), Some("smtp_550"));
    assert!(err.message().contains("no such user"), "{}", err.message());
    assert!(
        err.message().contains("u***@example.com"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains(RECIPIENT),
        "full address in {}",
        err.message()
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn data_end_554_is_permanent() {
    let server = start_server().await;
    server.reply_to_next_data_end(554, "5.7.1 message rejected as spam");

    let err = send_expecting_error(&server, &notification(None, "Order A-100", "text", None)).await;

    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Rejected);
    assert_eq!(err.code(), Some("smtp_554"));
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Bind a free port, then close it, so that nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        listener.local_addr().expect("local address").port()
    };
    let channel = EmailChannel::new(&config_for(port)).expect("valid email config");

    let err = channel
        .send(&notification(None, "Order A-100", "text", None))
        .await
        .expect_err("nothing listens on the port");

    assert!(err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Unavailable);
    assert!(
        err.message().contains(&format!("127.0.0.1:{port}")),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn silent_server_times_out_as_transient() {
    // Accepts connections but never sends the 220 greeting.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let port = listener.local_addr().expect("local address").port();
    let accepted = tokio::spawn(async move { listener.accept().await.map(|(stream, _)| stream) });
    let config = EmailConfig {
        timeout_secs: 1,
        ..config_for(port)
    };
    let channel = EmailChannel::new(&config).expect("valid email config");

    let err = channel
        .send(&notification(None, "Order A-100", "text", None))
        .await
        .expect_err("the server never greets");

    assert!(err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Timeout);
    assert!(accepted.await.expect("accept task").is_ok());
}

#[tokio::test]
async fn starttls_mode_rejects_server_without_starttls() {
    let server = start_server().await;
    let config = EmailConfig {
        tls: TlsMode::Starttls,
        ..config_for(server.addr().port())
    };
    let channel = EmailChannel::new(&config).expect("valid email config");

    let err = channel
        .send(&notification(None, "Order A-100", "text", None))
        .await
        .expect_err("the testkit server offers no STARTTLS");

    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Configuration);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn sequential_emails_share_one_session() {
    let server = start_server().await;
    let channel = channel_for(&server);

    for subject in ["First", "Second", "Third"] {
        channel
            .send(&notification(None, subject, "text", None))
            .await
            .expect("email accepted");
    }

    assert_eq!(server.wait_for(3, WAIT).await.len(), 3);
    assert_eq!(server.sessions(), 1, "later emails reuse the first session");
}

#[tokio::test]
async fn failed_send_closes_its_session() {
    let server = start_server().await;
    let channel = channel_for(&server);
    server.reply_to_next_rcpt(450, "4.2.1 mailbox busy");

    channel
        .send(&notification(None, "Busy", "text", None))
        .await
        .expect_err("the server rejected the recipient");
    channel
        .send(&notification(None, "Later", "text", None))
        .await
        .expect("email accepted");

    assert_eq!(server.wait_for(1, WAIT).await.len(), 1);
    assert_eq!(server.sessions(), 2, "the failed session is not reused");
}

/// Writes the test server's certificate authority to a file of its own.
fn test_ca_file(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("notify-channels-{name}-{}.pem", std::process::id()));
    std::fs::write(&path, notify_testkit::TEST_CA_PEM).expect("write the test CA");
    path
}

fn implicit_tls_config(server: &SmtpServer, host: &str, ca_file: Option<&std::path::Path>) -> EmailConfig {
    EmailConfig {
        host: host.to_owned(),
        tls: TlsMode::Tls,
        ca_file: ca_file.map(|path| path.display().to_string()),
        ..config_for(server.addr().port())
    }
}

#[tokio::test]
async fn implicit_tls_delivers_on_one_session() {
    let server = SmtpServer::start_implicit_tls("127.0.0.1:0").await.expect("bind the TLS SMTP server");
    let ca_file = test_ca_file("implicit-tls");
    // The certificate names both; the IP address takes the IP path of
    // certificate checking, the host name the DNS one.
    for host in ["127.0.0.1", "localhost"] {
        let channel = EmailChannel::new(&implicit_tls_config(&server, host, Some(&ca_file))).expect("valid email config");
        for subject in ["First", "Second"] {
            channel
                .send(&notification(None, subject, "text", None))
                .await
                .expect("email accepted over TLS");
        }
    }

    let messages = server.wait_for(4, WAIT).await;
    assert_eq!(messages.len(), 4);
    assert!(String::from_utf8_lossy(&messages[0].data).contains("Subject: First"));
    assert_eq!(server.sessions(), 2, "each channel reuses its first session");
    std::fs::remove_file(ca_file).expect("remove the test CA");
}

#[tokio::test]
async fn implicit_tls_rejects_untrusted_certificate() {
    let server = SmtpServer::start_implicit_tls("127.0.0.1:0").await.expect("bind the TLS SMTP server");
    let channel = EmailChannel::new(&implicit_tls_config(&server, "127.0.0.1", None)).expect("valid email config");

    let err = channel
        .send(&notification(None, "Order A-100", "text", None))
        .await
        .expect_err("the test CA is not among the public roots");

    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Configuration);
    assert_eq!(err.code(), Some("tls_certificate"));
    assert!(err.message().contains("ca_file"), "{err}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn implicit_tls_rejects_plain_server() {
    let server = start_server().await;
    let ca_file = test_ca_file("plain-server");
    let channel = EmailChannel::new(&implicit_tls_config(&server, "127.0.0.1", Some(&ca_file))).expect("valid email config");

    let err = tokio::time::timeout(WAIT, channel.send(&notification(None, "Order A-100", "text", None)))
        .await
        .expect("the handshake fails instead of hanging")
        .expect_err("a plain server cannot complete a TLS handshake");

    assert!(err.is_transient(), "{err}");
    assert!(server.messages().is_empty());
    std::fs::remove_file(ca_file).expect("remove the test CA");
}

/// Returns the configuration error for `ca_file` set to `path` in `tls` mode.
fn ca_file_error(tls: TlsMode, path: &str) -> String {
    let config = EmailConfig {
        tls,
        ca_file: Some(path.to_owned()),
        ..config_for(465)
    };
    EmailChannel::new(&config).expect_err("the ca_file is unusable").to_string()
}

/// Returns the configuration error for a `ca_file` with `contents`, under
/// STARTTLS.
fn ca_file_contents_error(name: &str, contents: &str) -> String {
    let path = std::env::temp_dir().join(format!("notify-channels-{name}-{}.pem", std::process::id()));
    std::fs::write(&path, contents).expect("write the file");
    let err = ca_file_error(TlsMode::Starttls, &path.display().to_string());
    std::fs::remove_file(path).expect("remove the file");
    err
}

#[test]
fn unreadable_ca_file_is_invalid_config() {
    let err = ca_file_error(TlsMode::Tls, "/nonexistent/notify-ca.pem");
    assert!(err.contains("ca_file"), "{err}");
}

#[test]
fn ca_file_without_certificate_is_invalid_config() {
    let err = ca_file_contents_error("empty-ca", "not a certificate\n");
    assert!(err.contains("no certificate"), "{err}");
}

async fn start_submission_server() -> SmtpServer {
    let options = notify_testkit::ServerOptions {
        tls: notify_testkit::ServerTls::StartTls,
        credentials: Some(("mailer".to_owned(), "s3cret".to_owned())),
    };
    SmtpServer::start_with("127.0.0.1:0", options).await.expect("bind the STARTTLS SMTP server")
}

fn submission_config(server: &SmtpServer, ca_file: &std::path::Path, password: &str) -> EmailConfig {
    EmailConfig {
        tls: TlsMode::Starttls,
        ca_file: Some(ca_file.display().to_string()),
        username: Some("mailer".to_owned()),
        password: Some(password.to_owned()),
        ..config_for(server.addr().port())
    }
}

#[tokio::test]
async fn starttls_and_auth_deliver_on_one_session() {
    let server = start_submission_server().await;
    let ca_file = test_ca_file("starttls");
    let channel = EmailChannel::new(&submission_config(&server, &ca_file, "s3cret")).expect("valid email config");

    for subject in ["First", "Second"] {
        channel
            .send(&notification(None, subject, "text", None))
            .await
            .expect("email accepted after STARTTLS and AUTH");
    }

    let messages = server.wait_for(2, WAIT).await;
    assert_eq!(messages.len(), 2);
    for message in &messages {
        assert!(message.tls, "sent after STARTTLS");
        assert_eq!(message.authenticated_as.as_deref(), Some("mailer"));
    }
    assert_eq!(server.sessions(), 1, "the second email reuses the session");
    std::fs::remove_file(ca_file).expect("remove the test CA");
}

#[tokio::test]
async fn wrong_smtp_password_is_permanent() {
    let server = start_submission_server().await;
    let ca_file = test_ca_file("wrong-password");
    let channel = EmailChannel::new(&submission_config(&server, &ca_file, "wrong")).expect("valid email config");

    let err = channel
        .send(&notification(None, "Order A-100", "text", None))
        .await
        .expect_err("the server rejects the password");

    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Configuration);
    assert!(server.messages().is_empty());
    std::fs::remove_file(ca_file).expect("remove the test CA");
}

#[tokio::test]
async fn missing_credentials_are_permanent() {
    let server = start_submission_server().await;
    let ca_file = test_ca_file("no-credentials");
    let config = EmailConfig {
        username: None,
        password: None,
        ..submission_config(&server, &ca_file, "unused")
    };
    let channel = EmailChannel::new(&config).expect("valid email config");

    let err = channel
        .send(&notification(None, "Order A-100", "text", None))
        .await
        .expect_err("the server requires AUTH");

    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Configuration);
    assert!(server.messages().is_empty());
    std::fs::remove_file(ca_file).expect("remove the test CA");
}

#[tokio::test]
async fn starttls_rejects_untrusted_certificate() {
    let server = start_submission_server().await;
    let config = EmailConfig {
        tls: TlsMode::Starttls,
        username: Some("mailer".to_owned()),
        password: Some("s3cret".to_owned()),
        ..config_for(server.addr().port())
    };
    let channel = EmailChannel::new(&config).expect("valid email config");

    let err = channel
        .send(&notification(None, "Order A-100", "text", None))
        .await
        .expect_err("the test CA is not among the public roots");

    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.kind(), FailureKind::Configuration);
    assert_eq!(err.code(), Some("tls_certificate"));
    assert!(server.messages().is_empty());
}

#[test]
fn ca_file_without_tls_is_invalid_config() {
    let err = ca_file_error(TlsMode::None, "crates/testkit/certs/ca.pem");
    assert!(err.contains("tls = \"none\""), "{err}");
}

#[test]
fn empty_ca_file_path_is_invalid_config() {
    let err = ca_file_error(TlsMode::Tls, "");
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn broken_certificate_in_ca_file_is_invalid_config() {
    let err = ca_file_contents_error("broken-ca", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert!(err.contains("ca_file"), "{err}");
    assert!(err.contains("certificate 1"), "{err}");
}
