//! Telegram channel against a local wiremock server standing in for the Bot
//! API: delivery, splitting of long texts, and the classification of every
//! kind of failure.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use notify_channels::telegram::{split::utf16_len, TelegramChannel, TelegramConfig};
use notify_core::conformance::{self, ConformanceHarness, Scenario, Setup};
use notify_core::{
    Channel, ChannelKind, ChatId, Content, DeliveryError, FailureKind, Notification, ParseMode,
    Receipt, Recipient,
};
use serde_json::{json, Value};
use uuid::Uuid;
use wiremock::matchers::{body_json, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, Times};

/// A made-up token of the real shape.
const TOKEN: &str = "4839574812:AAFd-test-token-not-real_0123456789xyz";
/// The part of [`TOKEN`] after `:`, which no error may show.
const TOKEN_SECRET: &str = "AAFd-test-token-not-real_0123456789xyz";
const SEND_PATH: &str = "/bot4839574812:AAFd-test-token-not-real_0123456789xyz/sendMessage";
const CHAT: i64 = 100_000_789;
const NOTIFICATION: Uuid = Uuid::from_u128(0x5f1c2b7e_8d3a_4c6f_9b2e_7a1d3c5e9f01);

fn config(api_url: String) -> TelegramConfig {
    TelegramConfig {
        enabled: true,
        bot_token: Some(TOKEN.to_owned()),
        api_url,
        timeout_secs: 5,
        // The limiter has its own paused-time tests, so these tests do not
        // wait for it between parts.
        per_chat_interval_ms: 0,
        global_per_second: 1000,
        disable_link_preview: false,
    }
}

fn channel(server: &MockServer) -> TelegramChannel {
    TelegramChannel::new(&config(server.uri())).unwrap()
}

fn notification(text: &str, parse_mode: ParseMode) -> Notification {
    Notification {
        notification_id: NOTIFICATION,
        tenant_id: Uuid::from_u128(0x7d444840_9dc0_41a1_8ad4_7e4c7c5b3f10),
        channel: ChannelKind::Telegram,
        template: "disk_alert".to_owned(),
        locale: "en".to_owned(),
        recipient: Recipient::Telegram {
            chat_id: ChatId::Id(CHAT),
        },
        content: Content::Telegram {
            text: text.to_owned(),
            parse_mode,
        },
        attempt: 1,
    }
}

/// A successful `sendMessage` response with the given message id.
fn sent(message_id: i64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "result": {
            "message_id": message_id,
            "date": 1_700_000_000,
            "chat": {"id": CHAT, "type": "private", "first_name": "Ada"},
            "text": "…"
        }
    }))
}

fn api_error(status: u16, description: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "ok": false,
        "error_code": status,
        "description": description
    }))
}

/// Responds to every request with the next message id, starting at 1.
struct SequentialIds(AtomicI64);

impl Respond for SequentialIds {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        sent(self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

async fn mount(
    server: &MockServer,
    response: impl Respond + 'static,
    name: &str,
    times: impl Into<Times>,
) {
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(response)
        .named(name)
        .expect(times)
        .mount(server)
        .await;
}

/// Returns the JSON bodies of the requests the server received, in order.
async fn request_bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|request| serde_json::from_slice(&request.body).unwrap())
        .collect()
}

fn texts(bodies: &[Value]) -> Vec<String> {
    bodies
        .iter()
        .map(|body| body["text"].as_str().unwrap().to_owned())
        .collect()
}

async fn send_failing(response: ResponseTemplate, name: &str) -> DeliveryError {
    let server = MockServer::start().await;
    mount(&server, response, name, 1).await;

    let error = channel(&server)
        .send(&notification("Disk full", ParseMode::Plain))
        .await
        .unwrap_err();

    assert_token_hidden(&error);
    server.verify().await;
    error
}

/// Fails if the error's text, debug output or any source shows the token.
fn assert_token_hidden(error: &DeliveryError) {
    let mut shown = format!("{error}\n{error:?}\n");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        shown.push_str(&format!("{cause}\n{cause:?}\n"));
        source = cause.source();
    }
    assert!(!shown.contains(TOKEN_SECRET), "token shown in: {shown}");
}

fn assert_classified(error: &DeliveryError, transient: bool, kind: FailureKind, code: &str) {
    assert_eq!(error.is_transient(), transient, "{error}");
    assert_eq!(error.kind(), kind, "{error}");
    assert_eq!(error.code(), Some(code), "{error}");
}

fn assert_single_part(receipt: &Receipt, message_id: &str) {
    assert_eq!(receipt.provider, "telegram");
    assert_eq!(receipt.provider_message_id.as_deref(), Some(message_id));
    assert_eq!(receipt.details.get("parts"), Some(&json!(1)));
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

#[tokio::test]
async fn html_message_is_delivered() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(body_json(
            json!({"chat_id": CHAT, "text": "<b>Render ready</b>", "parse_mode": "HTML"}),
        ))
        .respond_with(sent(321))
        .named("sendMessage with HTML")
        .expect(1)
        .mount(&server)
        .await;

    let receipt = channel(&server)
        .send(&notification("<b>Render ready</b>", ParseMode::Html))
        .await
        .unwrap();

    assert_single_part(&receipt, "321");
    let request = &server.received_requests().await.unwrap()[0];
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    server.verify().await;
}

#[tokio::test]
async fn plain_message_has_no_parse_mode() {
    let server = MockServer::start().await;
    mount(&server, sent(7), "sendMessage in plain text", 1).await;
    let mut plain = notification("Disk 95.5% full (sda1)!", ParseMode::Plain);
    plain.recipient = Recipient::Telegram {
        chat_id: ChatId::Username("@ops_alerts".to_owned()),
    };

    let receipt = channel(&server).send(&plain).await.unwrap();

    assert_single_part(&receipt, "7");
    let bodies = request_bodies(&server).await;
    assert_eq!(
        bodies[0],
        json!({"chat_id": "@ops_alerts", "text": "Disk 95.5% full (sda1)!"})
    );
    server.verify().await;
}

#[tokio::test]
async fn markdown_v2_text_is_sent_unchanged() {
    let text = r"*db\-01 alert:* Disk 95\.5% full \(sda1\)\! See https://example\.com/a\_b";
    let server = MockServer::start().await;
    mount(&server, sent(8), "sendMessage in MarkdownV2", 1).await;

    channel(&server)
        .send(&notification(text, ParseMode::MarkdownV2))
        .await
        .unwrap();

    let bodies = request_bodies(&server).await;
    assert_eq!(bodies[0]["text"], text);
    assert_eq!(bodies[0]["parse_mode"], "MarkdownV2");
    server.verify().await;
}

#[tokio::test]
async fn html_text_keeps_real_newlines() {
    let text = "<b>Q&amp;A</b>\nReply to &lt;user@example.com&gt;\nThanks";
    let server = MockServer::start().await;
    mount(&server, sent(9), "sendMessage in HTML", 1).await;

    channel(&server)
        .send(&notification(text, ParseMode::Html))
        .await
        .unwrap();

    let request = &server.received_requests().await.unwrap()[0];
    let raw = String::from_utf8(request.body.clone()).unwrap();
    assert!(
        raw.contains(r"<b>Q&amp;A</b>\nReply"),
        "JSON escapes the newline once: {raw}"
    );
    assert!(
        !raw.contains(r"\\n"),
        "newline was sent as a literal backslash-n: {raw}"
    );
    let body: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(body["text"], text);
    server.verify().await;
}

#[tokio::test]
async fn link_preview_can_be_disabled() {
    let server = MockServer::start().await;
    mount(&server, sent(10), "sendMessage without link preview", 1).await;
    let config = TelegramConfig {
        disable_link_preview: true,
        ..config(server.uri())
    };

    TelegramChannel::new(&config)
        .unwrap()
        .send(&notification("https://example.com", ParseMode::Plain))
        .await
        .unwrap();

    let bodies = request_bodies(&server).await;
    assert_eq!(
        bodies[0]["link_preview_options"],
        json!({"is_disabled": true})
    );
    server.verify().await;
}

// ---------------------------------------------------------------------------
// Long messages
// ---------------------------------------------------------------------------

async fn send_long(
    text: &str,
    parse_mode: ParseMode,
    expected_parts: u64,
) -> (Receipt, Vec<Value>) {
    let server = MockServer::start().await;
    mount(
        &server,
        SequentialIds(AtomicI64::new(0)),
        "sendMessage for each part",
        expected_parts,
    )
    .await;

    let receipt = channel(&server)
        .send(&notification(text, parse_mode))
        .await
        .unwrap();

    let bodies = request_bodies(&server).await;
    server.verify().await;
    (receipt, bodies)
}

#[tokio::test]
async fn cjk_text_sends_two_parts() {
    let text = "中".repeat(5000);

    let (receipt, bodies) = send_long(&text, ParseMode::Plain, 2).await;

    let parts = texts(&bodies);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].chars().count(), 4096);
    assert_eq!(parts[1].chars().count(), 904);
    assert_eq!(parts.concat(), text);
    assert_eq!(receipt.provider_message_id.as_deref(), Some("1,2"));
    assert_eq!(receipt.details.get("parts"), Some(&json!(2)));
    assert_eq!(receipt.details.get("message_ids"), Some(&json!([1, 2])));
}

#[tokio::test]
async fn html_italic_parts_are_well_formed() {
    let text = format!("<i>{}</i>", "x".repeat(6000));

    let (_, bodies) = send_long(&text, ParseMode::Html, 2).await;

    let parts = texts(&bodies);
    for (index, part) in parts.iter().enumerate() {
        assert!(part.starts_with("<i>"), "part {index} does not open <i>");
        assert!(part.ends_with("</i>"), "part {index} does not close <i>");
        assert_eq!(part.matches('<').count(), 2, "part {index} has other tags");
        assert!(
            utf16_len(part) <= 4096,
            "part {index} has {} units",
            utf16_len(part)
        );
        assert_eq!(bodies[index]["parse_mode"], "HTML");
    }
    let inner: String = parts.iter().map(|part| &part[3..part.len() - 4]).collect();
    assert_eq!(inner, "x".repeat(6000));
}

#[tokio::test]
async fn exactly_4096_ascii_is_one_message() {
    let text = "a".repeat(4096);

    let (receipt, bodies) = send_long(&text, ParseMode::Plain, 1).await;

    assert_eq!(texts(&bodies), [text]);
    assert_single_part(&receipt, "1");
}

#[tokio::test]
async fn emoji_parts_stay_within_utf16_limit() {
    let text = "😀".repeat(4100);

    let (receipt, bodies) = send_long(&text, ParseMode::Plain, 3).await;

    let parts = texts(&bodies);
    for (index, part) in parts.iter().enumerate() {
        assert!(
            utf16_len(part) <= 4096,
            "part {index} has {} units",
            utf16_len(part)
        );
    }
    assert_eq!(parts.concat(), text);
    assert_eq!(receipt.details.get("parts"), Some(&json!(3)));
}

#[tokio::test]
async fn failed_later_part_names_delivered_parts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .respond_with(sent(1))
        .up_to_n_times(1)
        .with_priority(1)
        .named("first part accepted")
        .expect(1)
        .mount(&server)
        .await;
    mount(
        &server,
        api_error(500, "Internal Server Error"),
        "second part failing",
        1,
    )
    .await;

    let error = channel(&server)
        .send(&notification(&"y".repeat(5000), ParseMode::Plain))
        .await
        .unwrap_err();

    assert_classified(&error, true, FailureKind::Unavailable, "telegram_500");
    assert!(error.message().contains("part 2 of 2"), "{error}");
    assert!(
        error.message().contains("part 1 already delivered"),
        "{error}"
    );
    server.verify().await;
}

#[tokio::test]
async fn empty_text_is_rejected_unsent() {
    let server = MockServer::start().await;
    mount(&server, sent(1), "sendMessage never called", 0).await;

    let error = channel(&server)
        .send(&notification(" \n ", ParseMode::Plain))
        .await
        .unwrap_err();

    assert_classified(&error, false, FailureKind::InvalidContent, "empty_text");
    server.verify().await;
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rate_limit_keeps_retry_after() {
    let response = ResponseTemplate::new(429).set_body_json(json!({
        "ok": false,
        "error_code": 429,
        "description": "Too Many Requests: retry after 35",
        "parameters": {"retry_after": 35}
    }));

    let error = send_failing(response, "sendMessage rate-limited").await;

    assert_classified(&error, true, FailureKind::RateLimited, "telegram_429");
    assert_eq!(
        error.retry_after(),
        Some(std::time::Duration::from_secs(35))
    );
}

#[tokio::test]
async fn blocked_bot_is_recipient_gone() {
    let error = send_failing(
        api_error(403, "Forbidden: bot was blocked by the user"),
        "sendMessage to a blocking user",
    )
    .await;

    assert_classified(&error, false, FailureKind::RecipientGone, "telegram_403");
    assert!(
        error.message().contains("bot was blocked by the user"),
        "{error}"
    );
    assert!(
        !error.message().contains(&CHAT.to_string()),
        "full chat id in: {error}"
    );
}

#[tokio::test]
async fn deactivated_user_is_recipient_gone() {
    let error = send_failing(
        api_error(403, "Forbidden: user is deactivated"),
        "sendMessage to a deactivated user",
    )
    .await;

    assert_classified(&error, false, FailureKind::RecipientGone, "telegram_403");
}

#[tokio::test]
async fn kicked_bot_is_recipient_gone() {
    let error = send_failing(
        api_error(403, "Forbidden: bot was kicked from the group chat"),
        "sendMessage to a group that kicked the bot",
    )
    .await;

    assert_classified(&error, false, FailureKind::RecipientGone, "telegram_403");
}

#[tokio::test]
async fn chat_not_found_is_invalid_recipient() {
    let error = send_failing(
        api_error(400, "Bad Request: chat not found"),
        "sendMessage to an unknown chat",
    )
    .await;

    assert_classified(&error, false, FailureKind::InvalidRecipient, "telegram_400");
}

#[tokio::test]
async fn unparsable_entities_are_invalid_content() {
    let description =
        "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 0";

    let error = send_failing(
        api_error(400, description),
        "sendMessage with broken markup",
    )
    .await;

    assert_classified(&error, false, FailureKind::InvalidContent, "telegram_400");
    assert!(error.message().contains("can't parse entities"), "{error}");
}

#[tokio::test]
async fn too_long_message_is_invalid_content() {
    let error = send_failing(
        api_error(400, "Bad Request: message is too long"),
        "sendMessage with too long text",
    )
    .await;

    assert_classified(&error, false, FailureKind::InvalidContent, "telegram_400");
}

#[tokio::test]
async fn bad_gateway_is_transient() {
    let response = ResponseTemplate::new(502)
        .set_body_raw("<html><h1>502 Bad Gateway</h1></html>", "text/html");

    let error = send_failing(response, "Bot API behind a failing proxy").await;

    assert_classified(&error, true, FailureKind::Unavailable, "telegram_502");
    assert!(error.message().contains("502 Bad Gateway"), "{error}");
}

#[tokio::test]
async fn revoked_token_is_configuration_error() {
    let error = send_failing(
        api_error(401, "Unauthorized"),
        "sendMessage with a revoked token",
    )
    .await;

    assert_classified(&error, false, FailureKind::Configuration, "telegram_401");
}

#[tokio::test]
async fn garbled_success_is_transient() {
    let response = ResponseTemplate::new(200).set_body_raw("{\"ok\":tr", "application/json");

    let error = send_failing(response, "truncated success answer").await;

    assert_classified(&error, true, FailureKind::Unavailable, "malformed_response");
}

#[tokio::test]
async fn slow_answer_times_out() {
    let server = MockServer::start().await;
    mount(
        &server,
        sent(1).set_delay(std::time::Duration::from_secs(3)),
        "sendMessage answering late",
        1,
    )
    .await;
    let config = TelegramConfig {
        timeout_secs: 1,
        ..config(server.uri())
    };

    let error = TelegramChannel::new(&config)
        .unwrap()
        .send(&notification("Disk full", ParseMode::Plain))
        .await
        .unwrap_err();

    assert_classified(&error, true, FailureKind::Timeout, "timeout");
    assert_token_hidden(&error);
}

#[tokio::test]
async fn refused_connection_is_transient_without_token() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);

    let error = TelegramChannel::new(&config(format!("http://{address}")))
        .unwrap()
        .send(&notification("Disk full", ParseMode::Plain))
        .await
        .unwrap_err();

    assert_classified(&error, true, FailureKind::Unavailable, "connect_failed");
    assert!(
        error.message().contains(&format!("http://{address}")),
        "{error}"
    );
    assert_token_hidden(&error);
}

#[tokio::test]
async fn foreign_content_is_rejected_unsent() {
    let server = MockServer::start().await;
    mount(&server, sent(1), "sendMessage never called", 0).await;
    let mut sms = notification("x", ParseMode::Plain);
    sms.content = Content::Sms {
        body: "hello".to_owned(),
    };

    let error = channel(&server).send(&sms).await.unwrap_err();

    assert_eq!(error.kind(), FailureKind::InvalidContent, "{error}");
    assert!(!error.is_transient(), "{error}");
    server.verify().await;
}

// ---------------------------------------------------------------------------
// Conformance kit
// ---------------------------------------------------------------------------

struct Harness;

#[async_trait]
impl ConformanceHarness for Harness {
    async fn setup(&self, scenario: Scenario) -> Setup {
        let server = MockServer::start().await;
        let response = match scenario {
            Scenario::Accept => sent(42),
            Scenario::Unavailable => api_error(503, "Service Unavailable"),
            Scenario::RateLimited(delay) => ResponseTemplate::new(429).set_body_json(json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {}", delay.as_secs()),
                "parameters": {"retry_after": delay.as_secs()}
            })),
            Scenario::Rejected => api_error(400, "Bad Request: chat not found"),
            Scenario::Malformed => {
                ResponseTemplate::new(200).set_body_raw("<html>gateway</html>", "text/html")
            }
        };
        // The kit sends one or more messages per scenario.
        mount(
            &server,
            response,
            &format!("Bot API answering {scenario:?}"),
            1..,
        )
        .await;
        let channel = TelegramChannel::new(&config(server.uri())).unwrap();
        Setup {
            channel: Arc::new(channel),
            guard: Box::new(server),
        }
    }

    fn notification(&self) -> Notification {
        Notification {
            recipient: conformance::sample_recipient(ChannelKind::Telegram),
            content: conformance::sample_content(ChannelKind::Telegram),
            ..notification("", ParseMode::Html)
        }
    }

    fn secrets(&self) -> Vec<String> {
        vec![TOKEN.to_owned(), TOKEN_SECRET.to_owned()]
    }
}

#[tokio::test]
async fn telegram_passes_conformance_kit() {
    conformance::run(&Harness).await;
}

/// Accepts the first request, fails the second with a 500, then accepts
/// every later one; message ids count the accepted requests.
struct SecondRequestFails(AtomicI64);

impl Respond for SecondRequestFails {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        match self.0.fetch_add(1, Ordering::SeqCst) + 1 {
            2 => api_error(500, "Internal Server Error"),
            call => sent(call),
        }
    }
}

#[tokio::test]
async fn retry_resumes_after_parts_already_sent() {
    let server = MockServer::start().await;
    mount(&server, SecondRequestFails(AtomicI64::new(0)), "sendMessage", 3).await;
    let channel = channel(&server);
    let long = notification(&"中".repeat(5000), ParseMode::Plain);

    let error = channel.send(&long).await.expect_err("the second part fails");
    assert!(error.is_transient(), "{error}");
    let receipt = channel.send(&long).await.expect("the retry sends the second part");

    let parts = texts(&request_bodies(&server).await);
    assert_eq!(parts.len(), 3, "first part once, second part twice");
    assert_eq!(parts[1], parts[2], "the retry starts at the failed part");
    assert_ne!(parts[0], parts[2]);
    assert_eq!(receipt.provider_message_id.as_deref(), Some("1,3"));
    server.verify().await;
}

#[tokio::test]
async fn changed_text_is_sent_whole_again() {
    let server = MockServer::start().await;
    mount(&server, SecondRequestFails(AtomicI64::new(0)), "sendMessage", 4).await;
    let channel = channel(&server);
    let mut long = notification(&"中".repeat(5000), ParseMode::Plain);

    channel.send(&long).await.expect_err("the second part fails");
    long.content = Content::Telegram { text: "文".repeat(5000), parse_mode: ParseMode::Plain };
    channel.send(&long).await.expect("both parts of the new text go out");

    let parts = texts(&request_bodies(&server).await);
    assert_eq!(parts.len(), 4);
    assert!(parts[2].starts_with('文'), "the new text starts over at its first part");
    assert!(parts[3].starts_with('文'));
    server.verify().await;
}
