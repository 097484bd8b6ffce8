//! SMS channel against local wiremock providers: Twilio's Messages API, a
//! generic JSON gateway, failover between them, the checks made before any
//! provider is called, segment counting, and the conformance kit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use notify_channels::sms::segments::{segment, Encoding};
use notify_channels::sms::{
    HttpProviderConfig, ProviderConfig, SmsChannel, SmsConfig, TwilioConfig,
};
use notify_core::conformance::{self, sample_content, ConformanceHarness, Scenario, Setup};
use notify_core::{
    Channel, ChannelKind, Content, DeliveryError, FailureKind, Notification, Receipt, Recipient,
};
use serde_json::json;
use uuid::Uuid;
use wiremock::matchers::{basic_auth, body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate, Times};

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "twilio-auth-token-never-shown";
const MESSAGING_SERVICE_SID: &str = "MG0123456789abcdef0123456789abcdef";
const MESSAGE_SID: &str = "SM0123456789abcdef0123456789abcdef";
const GATEWAY_KEY: &str = "gateway-key-never-shown";
const PHONE: &str = "+15005550006";
const TENANT: Uuid = Uuid::from_u128(0x7d444840_9dc0_41a1_8ad4_7e4c7c5b3f10);
const NOTIFICATION: Uuid = Uuid::from_u128(0x0b3c6e1a_5d7f_4a2b_9c8d_1e2f3a4b5c6d);

fn messages_path() -> String {
    format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json")
}

fn twilio(server: &MockServer) -> TwilioConfig {
    TwilioConfig {
        base_url: server.uri(),
        account_sid: ACCOUNT_SID.to_owned(),
        auth_token: Some(AUTH_TOKEN.into()),
        messaging_service_sid: Some(MESSAGING_SERVICE_SID.to_owned()),
        ..TwilioConfig::default()
    }
}

fn gateway(server: &MockServer, name: &str) -> HttpProviderConfig {
    HttpProviderConfig {
        name: name.to_owned(),
        url: format!("{}/v1/sms?key=query-token", server.uri()),
        auth_header: Some("X-Api-Key".to_owned()),
        auth_value: Some(GATEWAY_KEY.into()),
        body_template: r#"{"recipient": "{{to}}", "message": {"text": "{{body}}"}, "reference": "{{notification_id}}"}"#
            .to_owned(),
        message_id_pointer: Some("/data/id".to_owned()),
        ..HttpProviderConfig::default()
    }
}

fn config(providers: Vec<ProviderConfig>) -> SmsConfig {
    SmsConfig {
        enabled: true,
        timeout_secs: 5,
        providers,
        ..SmsConfig::default()
    }
}

fn channel(providers: Vec<ProviderConfig>) -> SmsChannel {
    SmsChannel::new(&config(providers)).unwrap()
}

fn notification(phone: &str, body: &str) -> Notification {
    Notification {
        notification_id: NOTIFICATION,
        tenant_id: TENANT,
        channel: ChannelKind::Sms,
        template: "render_completed".to_owned(),
        locale: "en".to_owned(),
        recipient: Recipient::Sms {
            phone: phone.to_owned(),
        },
        content: Content::Sms {
            body: body.to_owned(),
        },
        attempt: 1,
    }
}

fn twilio_accepted() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "sid": MESSAGE_SID,
        "status": "accepted",
        "to": PHONE,
    }))
}

fn twilio_error(status: u16, code: u64, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

async fn mount_twilio(server: &MockServer, response: ResponseTemplate, name: &str, calls: u64) {
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .respond_with(response)
        .named(name)
        .expect(calls)
        .mount(server)
        .await;
}

/// Any request to `server`, which the test expects `calls` times.
async fn mount_any(server: &MockServer, response: ResponseTemplate, name: &str, calls: u64) {
    Mock::given(method("POST"))
        .respond_with(response)
        .named(name)
        .expect(calls)
        .mount(server)
        .await;
}

async fn send_via_twilio(response: ResponseTemplate, name: &str) -> (MockServer, DeliveryError) {
    let server = MockServer::start().await;
    mount_twilio(&server, response, name, 1).await;

    let error = channel(vec![ProviderConfig::Twilio(twilio(&server))])
        .send(&notification(PHONE, "Your render is ready"))
        .await
        .unwrap_err();

    (server, error)
}

fn form_fields(request: &wiremock::Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn assert_transient(error: &DeliveryError, kind: FailureKind, code: &str) {
    assert!(error.is_transient(), "{error}");
    assert_eq!(error.kind(), kind, "{error}");
    assert_eq!(error.code(), Some(code), "{error}");
}

fn assert_permanent(error: &DeliveryError, kind: FailureKind, code: &str) {
    assert!(!error.is_transient(), "{error}");
    assert_eq!(error.kind(), kind, "{error}");
    assert_eq!(error.code(), Some(code), "{error}");
}

/// Error texts end up in events and logs, so they must not show the full
/// number or a secret.
fn assert_nothing_leaks(error: &DeliveryError) {
    let visible = format!("{error} {error:?}");
    assert!(!visible.contains(&PHONE[1..]), "{visible}");
    assert!(!visible.contains(AUTH_TOKEN), "{visible}");
    assert!(!visible.contains(GATEWAY_KEY), "{visible}");
    assert!(!visible.contains("query-token"), "{visible}");
}

fn detail<'r>(receipt: &'r Receipt, key: &str) -> &'r serde_json::Value {
    receipt
        .details
        .get(key)
        .unwrap_or_else(|| panic!("receipt has no `{key}` detail: {receipt:?}"))
}

#[tokio::test]
async fn twilio_delivers_with_form_and_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(messages_path()))
        .and(basic_auth(ACCOUNT_SID, AUTH_TOKEN))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .respond_with(twilio_accepted())
        .named("Twilio accepting with basic auth")
        .expect(1)
        .mount(&server)
        .await;

    let receipt = channel(vec![ProviderConfig::Twilio(twilio(&server))])
        .send(&notification(PHONE, "Render ready: 100% & done"))
        .await
        .unwrap();

    assert_eq!(receipt.provider, "twilio");
    assert_eq!(receipt.provider_message_id.as_deref(), Some(MESSAGE_SID));
    assert_eq!(detail(&receipt, "segments"), &json!(1));
    assert_eq!(detail(&receipt, "encoding"), &json!("gsm7"));
    assert_eq!(detail(&receipt, "status"), &json!(201));
    assert_eq!(detail(&receipt, "provider_attempts"), &json!(1));

    let requests = server.received_requests().await.unwrap();
    let fields = form_fields(&requests[0]);
    assert_eq!(fields.get("To").map(String::as_str), Some(PHONE));
    assert_eq!(
        fields.get("Body").map(String::as_str),
        Some("Render ready: 100% & done")
    );
    assert_eq!(
        fields.get("MessagingServiceSid").map(String::as_str),
        Some(MESSAGING_SERVICE_SID)
    );
    assert_eq!(fields.get("From"), None);
    assert_eq!(fields.len(), 3, "{fields:?}");
    server.verify().await;
}

#[tokio::test]
async fn twilio_sends_from_number() {
    let server = MockServer::start().await;
    mount_twilio(&server, twilio_accepted(), "Twilio accepting", 1).await;
    let config = TwilioConfig {
        messaging_service_sid: None,
        from: Some("+15005550001".to_owned()),
        ..twilio(&server)
    };

    channel(vec![ProviderConfig::Twilio(config)])
        .send(&notification(PHONE, "hi"))
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    let fields = form_fields(&requests[0]);
    assert_eq!(fields.get("From").map(String::as_str), Some("+15005550001"));
    assert_eq!(fields.get("MessagingServiceSid"), None);
    server.verify().await;
}

#[tokio::test]
async fn twilio_429_keeps_retry_after() {
    let response = twilio_error(429, 20429, "Too Many Requests").insert_header("Retry-After", "30");

    let (server, error) = send_via_twilio(response, "Twilio responding 429").await;

    assert_transient(&error, FailureKind::RateLimited, "twilio_20429");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
    server.verify().await;
}

#[tokio::test]
async fn twilio_503_is_transient() {
    let response = ResponseTemplate::new(503).set_body_string("upstream unavailable");

    let (server, error) = send_via_twilio(response, "Twilio responding 503").await;

    assert_transient(&error, FailureKind::Unavailable, "http_503");
    assert_eq!(error.retry_after(), None);
    assert!(error.message().contains("upstream unavailable"), "{error}");
    server.verify().await;
}

#[tokio::test]
async fn twilio_21211_is_permanent() {
    let response = twilio_error(
        400,
        21211,
        &format!("The 'To' number {PHONE} is not a valid phone number."),
    );

    let (server, error) = send_via_twilio(response, "Twilio responding 21211").await;

    assert_permanent(&error, FailureKind::InvalidRecipient, "twilio_21211");
    assert!(error.message().contains("***006"), "{error}");
    assert_nothing_leaks(&error);
    server.verify().await;
}

#[tokio::test]
async fn twilio_21610_is_permanent() {
    let response = twilio_error(400, 21610, "Attempt to send to unsubscribed recipient");

    let (server, error) = send_via_twilio(response, "Twilio responding 21610").await;

    assert_permanent(&error, FailureKind::Rejected, "twilio_21610");
    assert!(error.message().contains("opted out"), "{error}");
    server.verify().await;
}

#[tokio::test]
async fn twilio_20003_is_configuration_error() {
    let response = twilio_error(401, 20003, "Authenticate");

    let (server, error) = send_via_twilio(response, "Twilio responding 20003").await;

    assert_permanent(&error, FailureKind::Configuration, "twilio_20003");
    assert_nothing_leaks(&error);
    server.verify().await;
}

#[tokio::test]
async fn twilio_garbled_success_is_delivered_without_id() {
    let response = ResponseTemplate::new(201).set_body_string(r#"{"sid": "SM01"#);

    let server = MockServer::start().await;
    mount_twilio(&server, response, "Twilio responding a truncated 201", 1).await;

    let receipt = channel(vec![ProviderConfig::Twilio(twilio(&server))])
        .send(&notification(PHONE, "hi"))
        .await
        .unwrap();

    assert_eq!(receipt.provider, "twilio");
    assert_eq!(receipt.provider_message_id, None);
    server.verify().await;
}

#[tokio::test]
async fn failover_after_503_delivers_via_second() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    mount_twilio(
        &first,
        ResponseTemplate::new(503),
        "primary Twilio responding 503",
        1,
    )
    .await;
    mount_any(
        &second,
        ResponseTemplate::new(202).set_body_json(json!({"data": {"id": "gw-42"}})),
        "backup gateway accepting",
        1,
    )
    .await;

    let receipt = channel(vec![
        ProviderConfig::Twilio(twilio(&first)),
        ProviderConfig::Http(gateway(&second, "backup")),
    ])
    .send(&notification(PHONE, "Your render is ready"))
    .await
    .unwrap();

    assert_eq!(receipt.provider, "backup");
    assert_eq!(receipt.provider_message_id.as_deref(), Some("gw-42"));
    assert_eq!(detail(&receipt, "provider_attempts"), &json!(2));
    first.verify().await;
    second.verify().await;
}

#[tokio::test]
async fn failover_after_connection_refused() {
    // Bind and release a port so that nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let second = MockServer::start().await;
    mount_twilio(&second, twilio_accepted(), "second Twilio accepting", 1).await;
    let unreachable = TwilioConfig {
        name: "twilio-unreachable".to_owned(),
        base_url: format!("http://127.0.0.1:{port}"),
        ..twilio(&second)
    };

    let receipt = channel(vec![
        ProviderConfig::Twilio(unreachable),
        ProviderConfig::Twilio(twilio(&second)),
    ])
    .send(&notification(PHONE, "hi"))
    .await
    .unwrap();

    assert_eq!(receipt.provider, "twilio");
    assert_eq!(detail(&receipt, "provider_attempts"), &json!(2));
    second.verify().await;
}

#[tokio::test]
async fn permanent_error_skips_next_provider() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    let response = twilio_error(400, 21211, "The 'To' number is not a valid phone number.");
    mount_twilio(&first, response, "primary Twilio responding 21211", 1).await;
    mount_any(
        &second,
        ResponseTemplate::new(200),
        "backup gateway that must not be called",
        0,
    )
    .await;

    let error = channel(vec![
        ProviderConfig::Twilio(twilio(&first)),
        ProviderConfig::Http(gateway(&second, "backup")),
    ])
    .send(&notification(PHONE, "Your render is ready"))
    .await
    .unwrap_err();

    assert_permanent(&error, FailureKind::InvalidRecipient, "twilio_21211");
    first.verify().await;
    second.verify().await;
}

#[tokio::test]
async fn all_providers_failing_is_transient() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    mount_twilio(
        &first,
        ResponseTemplate::new(503).insert_header("Retry-After", "120"),
        "primary Twilio responding 503",
        1,
    )
    .await;
    mount_any(
        &second,
        ResponseTemplate::new(429).insert_header("Retry-After", "20"),
        "backup gateway responding 429",
        1,
    )
    .await;

    let error = channel(vec![
        ProviderConfig::Twilio(twilio(&first)),
        ProviderConfig::Http(gateway(&second, "backup")),
    ])
    .send(&notification(PHONE, "Your render is ready"))
    .await
    .unwrap_err();

    assert_transient(&error, FailureKind::RateLimited, "http_429");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(20)));
    assert!(
        error.message().contains("all 2 SMS providers failed"),
        "{error}"
    );
    assert!(error.message().contains("`twilio`"), "{error}");
    assert!(error.message().contains("`backup`"), "{error}");
    assert_nothing_leaks(&error);
    first.verify().await;
    second.verify().await;
}

#[tokio::test]
async fn slow_provider_times_out_then_fails_over() {
    let first = MockServer::start().await;
    let second = MockServer::start().await;
    mount_twilio(
        &first,
        twilio_accepted().set_delay(Duration::from_secs(3)),
        "primary Twilio responding after 3 s",
        1,
    )
    .await;
    mount_twilio(&second, twilio_accepted(), "second Twilio accepting", 1).await;
    let slow = TwilioConfig {
        name: "twilio-slow".to_owned(),
        ..twilio(&first)
    };
    let config = SmsConfig {
        timeout_secs: 1,
        ..config(vec![
            ProviderConfig::Twilio(slow),
            ProviderConfig::Twilio(twilio(&second)),
        ])
    };

    let receipt = SmsChannel::new(&config)
        .unwrap()
        .send(&notification(PHONE, "hi"))
        .await
        .unwrap();

    assert_eq!(receipt.provider, "twilio");
    assert_eq!(detail(&receipt, "provider_attempts"), &json!(2));
    first.verify().await;
    second.verify().await;
}

#[tokio::test]
async fn gateway_sends_auth_header_and_template() {
    let server = MockServer::start().await;
    let body = "Line \"one\"\nand {{to}} \\ done";
    Mock::given(method("POST"))
        .and(path("/v1/sms"))
        .and(header("x-api-key", GATEWAY_KEY))
        .and(header("content-type", "application/json"))
        .and(header("idempotency-key", NOTIFICATION.to_string()))
        .and(body_json(json!({
            "recipient": PHONE,
            "message": {"text": body},
            "reference": NOTIFICATION.to_string(),
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"data": {"id": "gw-7"}})))
        .named("gateway accepting the templated body")
        .expect(1)
        .mount(&server)
        .await;

    let receipt = channel(vec![ProviderConfig::Http(gateway(&server, "gateway"))])
        .send(&notification(PHONE, body))
        .await
        .unwrap();

    assert_eq!(receipt.provider, "gateway");
    assert_eq!(receipt.provider_message_id.as_deref(), Some("gw-7"));
    assert_eq!(detail(&receipt, "status"), &json!(200));
    server.verify().await;
}

#[tokio::test]
async fn gateway_key_from_named_variable() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-api-key", "key-from-environment"))
        .respond_with(ResponseTemplate::new(200))
        .named("gateway checking the key from the environment")
        .expect(1)
        .mount(&server)
        .await;
    let entry = HttpProviderConfig {
        auth_value: None,
        auth_value_env: Some("SMS_GATEWAY_KEY".to_owned()),
        message_id_pointer: None,
        ..gateway(&server, "gateway")
    };
    let channel = SmsChannel::with_env(&config(vec![ProviderConfig::Http(entry)]), |name| {
        assert_eq!(name, "SMS_GATEWAY_KEY");
        Ok("key-from-environment".to_owned())
    })
    .unwrap();

    let receipt = channel.send(&notification(PHONE, "hi")).await.unwrap();

    assert_eq!(receipt.provider_message_id, None);
    server.verify().await;
}

#[tokio::test]
async fn gateway_error_hides_key_and_number() {
    let server = MockServer::start().await;
    let echo = format!("invalid key {GATEWAY_KEY} for recipient {PHONE}");
    mount_any(
        &server,
        ResponseTemplate::new(422).set_body_string(echo),
        "gateway responding 422",
        1,
    )
    .await;

    let error = channel(vec![ProviderConfig::Http(gateway(&server, "gateway"))])
        .send(&notification(PHONE, "hi"))
        .await
        .unwrap_err();

    assert_permanent(&error, FailureKind::Rejected, "http_422");
    assert!(
        error
            .message()
            .contains("invalid key <redacted> for recipient ***006"),
        "{error}"
    );
    assert_nothing_leaks(&error);
    server.verify().await;
}

#[tokio::test]
async fn tenant_uses_its_own_providers() {
    let default = MockServer::start().await;
    let own = MockServer::start().await;
    mount_twilio(
        &default,
        twilio_accepted(),
        "default Twilio that must not be called",
        0,
    )
    .await;
    mount_any(&own, ResponseTemplate::new(200), "the tenant's gateway", 1).await;
    let mut config = config(vec![ProviderConfig::Twilio(twilio(&default))]);
    config.tenant_providers.insert(
        TENANT.to_string(),
        vec![ProviderConfig::Http(gateway(&own, "tenant-gateway"))],
    );

    let receipt = SmsChannel::new(&config)
        .unwrap()
        .send(&notification(PHONE, "hi"))
        .await
        .unwrap();

    assert_eq!(receipt.provider, "tenant-gateway");
    default.verify().await;
    own.verify().await;
}

#[tokio::test]
async fn body_over_max_chars_is_rejected() {
    let server = MockServer::start().await;
    mount_any(
        &server,
        twilio_accepted(),
        "Twilio that must not be called",
        0,
    )
    .await;

    let error = channel(vec![ProviderConfig::Twilio(twilio(&server))])
        .send(&notification(PHONE, &"a".repeat(1601)))
        .await
        .unwrap_err();

    assert_permanent(&error, FailureKind::InvalidContent, "too_many_characters");
    assert!(error.message().contains("1601 characters"), "{error}");
    assert!(
        error.message().contains("`channels.sms.max_chars` = 1600"),
        "{error}"
    );
    server.verify().await;
}

#[tokio::test]
async fn body_over_max_segments_is_rejected() {
    let server = MockServer::start().await;
    mount_any(
        &server,
        twilio_accepted(),
        "Twilio that must not be called",
        0,
    )
    .await;
    let config = SmsConfig {
        max_segments: 2,
        ..config(vec![ProviderConfig::Twilio(twilio(&server))])
    };

    let error = SmsChannel::new(&config)
        .unwrap()
        .send(&notification(PHONE, &"ж".repeat(135)))
        .await
        .unwrap_err();

    assert_permanent(&error, FailureKind::InvalidContent, "too_many_segments");
    assert!(error.message().contains("3 segments in ucs2"), "{error}");
    assert!(
        error.message().contains("`channels.sms.max_segments` = 2"),
        "{error}"
    );
    server.verify().await;
}

#[tokio::test]
async fn empty_body_is_rejected() {
    let server = MockServer::start().await;
    mount_any(
        &server,
        twilio_accepted(),
        "Twilio that must not be called",
        0,
    )
    .await;

    let error = channel(vec![ProviderConfig::Twilio(twilio(&server))])
        .send(&notification(PHONE, ""))
        .await
        .unwrap_err();

    assert_permanent(&error, FailureKind::InvalidContent, "empty_body");
    server.verify().await;
}

#[tokio::test]
async fn invalid_phone_is_rejected() {
    let server = MockServer::start().await;
    mount_any(
        &server,
        twilio_accepted(),
        "Twilio that must not be called",
        0,
    )
    .await;
    let channel = channel(vec![ProviderConfig::Twilio(twilio(&server))]);

    for phone in [
        "15005550006",
        "+1500555",
        "+1500555000a",
        "+0155501000",
        "+1234567890123456",
    ] {
        let error = channel.send(&notification(phone, "hi")).await.unwrap_err();

        assert_permanent(&error, FailureKind::InvalidRecipient, "invalid_phone");
        assert!(!error.message().contains(phone), "{error}");
    }
    server.verify().await;
}

#[tokio::test]
async fn receipt_reports_segments_and_encoding() {
    let cases = [
        ("a".repeat(160), "gsm7", 1),
        ("a".repeat(161), "gsm7", 2),
        ("Don’t forget".to_owned(), "ucs2", 1),
        (format!("this is a {}😘", "]".repeat(76)), "ucs2", 2),
    ];
    let server = MockServer::start().await;
    mount_twilio(
        &server,
        twilio_accepted(),
        "Twilio accepting every case",
        cases.len() as u64,
    )
    .await;
    let channel = channel(vec![ProviderConfig::Twilio(twilio(&server))]);

    for (body, encoding, segments) in &cases {
        let receipt = channel.send(&notification(PHONE, body)).await.unwrap();

        assert_eq!(detail(&receipt, "encoding"), &json!(encoding), "{body}");
        assert_eq!(detail(&receipt, "segments"), &json!(segments), "{body}");
    }
    server.verify().await;
}

#[test]
fn segments_160_gsm7_is_one() {
    let body = "a".repeat(160);

    let result = segment(&body);

    assert_eq!(result.encoding, Encoding::Gsm7);
    assert_eq!(result.units, 160);
    assert_eq!(result.count(), 1);
}

#[test]
fn segments_161_gsm7_is_two() {
    let body = "a".repeat(161);

    let result = segment(&body);

    assert_eq!(result.encoding, Encoding::Gsm7);
    assert_eq!(result.units, 161);
    assert_eq!(result.count(), 2);
}

#[test]
fn segments_euro_sign_takes_two_septets() {
    let body = format!("{}€", "a".repeat(159));

    let result = segment(&body);

    assert_eq!(result.encoding, Encoding::Gsm7);
    assert_eq!(result.units, 161);
    assert_eq!(result.count(), 2);
}

#[test]
fn segments_emoji_forces_ucs2() {
    let body = format!("this is a {}😘", "]".repeat(76));

    let result = segment(&body);

    assert_eq!(result.encoding, Encoding::Ucs2);
    assert_eq!(result.units, 88);
    assert_eq!(result.count(), 2);
    assert_eq!(result.segments.concat(), body);
    // Every segment is whole UTF-16, so no surrogate pair is split.
    for part in &result.segments {
        assert!(part.encode_utf16().count() <= 67, "{part:?}");
    }
    assert!(result.segments[1].ends_with('😘'), "{:?}", result.segments);
}

#[test]
fn segments_surrogate_pair_at_boundary() {
    // 66 UTF-16 units, then a surrogate pair that would end at unit 68.
    let body = format!("{}😘tail", "ж".repeat(66));

    let result = segment(&body);

    assert_eq!(result.encoding, Encoding::Ucs2);
    assert_eq!(result.units, 72);
    assert_eq!(result.segments[0], "ж".repeat(66));
    assert_eq!(result.segments[1], "😘tail");
}

#[test]
fn segments_escape_at_boundary() {
    // 152 septets, then an escape sequence that would end at septet 154.
    let tail = "b".repeat(10);
    let body = format!("{}€{tail}", "a".repeat(152));

    let result = segment(&body);

    assert_eq!(result.encoding, Encoding::Gsm7);
    assert_eq!(result.units, 164);
    assert_eq!(result.segments[0], "a".repeat(152));
    assert_eq!(result.segments[1], format!("€{tail}"));
}

#[test]
fn segments_curly_quote_forces_ucs2() {
    let result = segment("Don’t forget");

    assert_eq!(result.encoding, Encoding::Ucs2);
    assert_eq!(result.units, 12);
    assert_eq!(result.count(), 1);
}

/// Builds the channel against a fresh wiremock server per scenario, with
/// either a Twilio provider or a generic gateway.
struct SmsHarness {
    gateway: bool,
}

impl SmsHarness {
    fn response(&self, scenario: Scenario) -> ResponseTemplate {
        match (scenario, self.gateway) {
            (Scenario::Accept, false) => twilio_accepted(),
            (Scenario::Accept, true) => {
                ResponseTemplate::new(200).set_body_json(json!({"data": {"id": "gw-1"}}))
            }
            (Scenario::Unavailable, _) => ResponseTemplate::new(503),
            (Scenario::RateLimited(wait), false) => twilio_error(429, 20429, "Too Many Requests")
                .insert_header("Retry-After", wait.as_secs().to_string()),
            (Scenario::RateLimited(wait), true) => {
                ResponseTemplate::new(429).insert_header("Retry-After", wait.as_secs().to_string())
            }
            (Scenario::Rejected, false) => {
                twilio_error(400, 21211, "The 'To' number is not a valid phone number.")
            }
            (Scenario::Rejected, true) => ResponseTemplate::new(400).set_body_string("bad request"),
            (Scenario::Malformed, _) => {
                ResponseTemplate::new(201).set_body_raw(vec![0xff, 0x00, 0x7b], "application/json")
            }
        }
    }
}

#[async_trait]
impl ConformanceHarness for SmsHarness {
    async fn setup(&self, scenario: Scenario) -> Setup {
        let server = MockServer::start().await;
        // Each scenario sends one valid message. The accepting server also
        // gets the kit's odd inputs, of which only the valid ones go out.
        let calls: Times = match scenario {
            Scenario::Accept => (1..).into(),
            _ => 1.into(),
        };
        Mock::given(method("POST"))
            .respond_with(self.response(scenario))
            .named(format!("provider responding {scenario:?}"))
            .expect(calls)
            .mount(&server)
            .await;

        let provider = if self.gateway {
            ProviderConfig::Http(gateway(&server, "gateway"))
        } else {
            ProviderConfig::Twilio(twilio(&server))
        };
        let channel = SmsChannel::new(&config(vec![provider])).unwrap();
        Setup {
            channel: Arc::new(channel),
            guard: Box::new(server),
        }
    }

    fn notification(&self) -> Notification {
        Notification {
            content: sample_content(ChannelKind::Sms),
            ..notification(PHONE, "")
        }
    }

    fn secrets(&self) -> Vec<String> {
        vec![AUTH_TOKEN.to_owned(), GATEWAY_KEY.to_owned()]
    }
}

#[tokio::test]
async fn sms_passes_conformance_kit() {
    conformance::run(&SmsHarness { gateway: false }).await;
}

#[tokio::test]
async fn sms_gateway_passes_conformance_kit() {
    conformance::run(&SmsHarness { gateway: true }).await;
}
