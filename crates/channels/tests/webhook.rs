//! Webhook channel against local wiremock receivers: delivery, signatures,
//! the classification of every kind of failure, and the address policy
//! applied after DNS resolution.
//!
//! Host names resolve through an injected lookup, so no test makes a real DNS
//! query.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use notify_channels::webhook::{WebhookChannel, WebhookConfig};
use notify_core::{
    Channel, ChannelKind, Content, DeliveryError, FailureKind, Notification, Receipt, Recipient,
};
use serde_json::json;
use sha2::Sha256;
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Key bytes behind [`SECRET`].
const SECRET_KEY: &[u8] = b"webhook-integration-test-key-32b";
/// `whsec_` + base64 of [`SECRET_KEY`].
const SECRET: &str = "whsec_d2ViaG9vay1pbnRlZ3JhdGlvbi10ZXN0LWtleS0zMmI=";
const TENANT: Uuid = Uuid::from_u128(0x7d444840_9dc0_41a1_8ad4_7e4c7c5b3f10);
const NOTIFICATION: Uuid = Uuid::from_u128(0x0b3c6e1a_5d7f_4a2b_9c8d_1e2f3a4b5c6d);

fn config() -> WebhookConfig {
    WebhookConfig {
        enabled: true,
        timeout_secs: 5,
        signing_secret: Some(SECRET.to_owned()),
        allow_loopback: true,
        ..WebhookConfig::default()
    }
}

fn channel() -> WebhookChannel {
    WebhookChannel::new(&config()).unwrap()
}

fn notification(url: String) -> Notification {
    Notification {
        notification_id: NOTIFICATION,
        tenant_id: TENANT,
        channel: ChannelKind::Webhook,
        template: "order_shipped".to_owned(),
        locale: "en".to_owned(),
        recipient: Recipient::Webhook { url },
        content: Content::Webhook {
            message: "Order 42 has shipped".to_owned(),
            data: json!({"order_id": 42, "carrier": "DHL", "items": ["book", "pen"]}),
        },
        attempt: 1,
    }
}

/// Checks a Standard Webhooks signature with the hmac crate directly, as a
/// receiver would, without the channel's own signing code.
fn signature_is_valid(key: &[u8], request: &wiremock::Request) -> bool {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let signature = header("webhook-signature");
    let Some(encoded) = signature.strip_prefix("v1,") else {
        return false;
    };

    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&request.body);
    mac.verify_slice(&BASE64.decode(encoded).unwrap()).is_ok()
}

async fn mount_status(server: &MockServer, response: ResponseTemplate, name: &str) {
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(response)
        .named(name)
        .expect(1)
        .mount(server)
        .await;
}

async fn send_to(server: &MockServer) -> Result<Receipt, DeliveryError> {
    channel()
        .send(&notification(format!(
            "{}/hook?token=path-secret",
            server.uri()
        )))
        .await
}

async fn assert_delivered(status: u16) {
    let server = MockServer::start().await;
    mount_status(
        &server,
        ResponseTemplate::new(status),
        &format!("receiver answering {status}"),
    )
    .await;
    let before = chrono::Utc::now().timestamp();

    let receipt = send_to(&server).await.unwrap();

    assert_eq!(receipt.provider, "webhook");
    assert_eq!(receipt.details.get("status"), Some(&json!(status)));

    let requests = server.received_requests().await.unwrap();
    let request = &requests[0];
    assert_eq!(
        request.headers.get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(
        request.headers.get("webhook-id").unwrap(),
        &NOTIFICATION.to_string()
    );
    let timestamp: i64 = request
        .headers
        .get("webhook-timestamp")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before..=before + 5).contains(&timestamp),
        "timestamp {timestamp}, test started at {before}"
    );
    assert!(signature_is_valid(SECRET_KEY, request));
    let user_agent = request.headers.get("user-agent").unwrap().to_str().unwrap();
    assert!(user_agent.starts_with("flatrender-notify/"), "{user_agent}");

    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["type"], "notification.order_shipped");
    assert_eq!(body["notification_id"], NOTIFICATION.to_string());
    assert_eq!(body["tenant_id"], TENANT.to_string());
    assert_eq!(body["message"], "Order 42 has shipped");
    assert_eq!(body["data"]["order_id"], 42);

    server.verify().await;
}

fn assert_permanent(error: &DeliveryError, kind: FailureKind, code: &str) {
    assert!(!error.is_transient(), "{error}");
    assert_eq!(error.kind(), kind, "{error}");
    assert_eq!(error.code(), Some(code), "{error}");
}

fn assert_transient(error: &DeliveryError, kind: FailureKind, code: &str) {
    assert!(error.is_transient(), "{error}");
    assert_eq!(error.kind(), kind, "{error}");
    assert_eq!(error.code(), Some(code), "{error}");
}

/// The message must show where the request went without the path or query,
/// which may carry tokens.
fn assert_masked(error: &DeliveryError, server: &MockServer) {
    assert!(
        error.message().contains(&format!("{}/***", server.uri())),
        "{error}"
    );
    assert!(!error.message().contains("path-secret"), "{error}");
}

#[tokio::test]
async fn status_200_is_delivered_and_signed() {
    assert_delivered(200).await;
}

#[tokio::test]
async fn status_204_is_delivered_and_signed() {
    assert_delivered(204).await;
}

#[tokio::test]
async fn status_404_is_rejected() {
    let server = MockServer::start().await;
    mount_status(
        &server,
        ResponseTemplate::new(404),
        "receiver answering 404",
    )
    .await;

    let error = send_to(&server).await.unwrap_err();

    assert_permanent(&error, FailureKind::Rejected, "http_404");
    assert!(error.message().contains("404 Not Found"), "{error}");
    assert_masked(&error, &server);
    server.verify().await;
}

#[tokio::test]
async fn status_400_is_rejected_with_body_excerpt() {
    let server = MockServer::start().await;
    let long_tail = "x".repeat(1000);
    let response =
        ResponseTemplate::new(400).set_body_string(format!("missing field `order`\n{long_tail}"));
    mount_status(&server, response, "receiver answering 400").await;

    let error = send_to(&server).await.unwrap_err();

    assert_permanent(&error, FailureKind::Rejected, "http_400");
    assert!(
        error
            .message()
            .contains("400 Bad Request: missing field `order` xxx"),
        "{error}"
    );
    assert!(
        !error.message().contains(&"x".repeat(200)),
        "excerpt longer than 200 characters: {error}"
    );
    assert_masked(&error, &server);
    server.verify().await;
}

#[tokio::test]
async fn status_410_is_recipient_gone() {
    let server = MockServer::start().await;
    mount_status(
        &server,
        ResponseTemplate::new(410),
        "receiver answering 410",
    )
    .await;

    let error = send_to(&server).await.unwrap_err();

    assert_permanent(&error, FailureKind::RecipientGone, "http_410");
    assert_masked(&error, &server);
    server.verify().await;
}

#[tokio::test]
async fn status_429_keeps_retry_after() {
    let server = MockServer::start().await;
    let response = ResponseTemplate::new(429).insert_header("Retry-After", "30");
    mount_status(&server, response, "receiver answering 429").await;

    let error = send_to(&server).await.unwrap_err();

    assert_transient(&error, FailureKind::RateLimited, "http_429");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
    server.verify().await;
}

#[tokio::test]
async fn status_503_is_transient() {
    let server = MockServer::start().await;
    mount_status(
        &server,
        ResponseTemplate::new(503),
        "receiver answering 503",
    )
    .await;

    let error = send_to(&server).await.unwrap_err();

    assert_transient(&error, FailureKind::Unavailable, "http_503");
    assert_eq!(error.retry_after(), None);
    assert_masked(&error, &server);
    server.verify().await;
}

#[tokio::test]
async fn connection_refused_is_transient() {
    // Bind and release a port so that nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook?token=path-secret");

    let error = channel().send(&notification(url)).await.unwrap_err();

    assert_transient(&error, FailureKind::Unavailable, "connect_failed");
    assert!(
        error
            .message()
            .contains(&format!("http://127.0.0.1:{port}/***")),
        "{error}"
    );
    assert!(!error.message().contains("path-secret"), "{error}");
}

#[tokio::test]
async fn slow_receiver_times_out() {
    let server = MockServer::start().await;
    let response = ResponseTemplate::new(200).set_delay(Duration::from_secs(3));
    mount_status(&server, response, "receiver answering after 3 s").await;
    let config = WebhookConfig {
        timeout_secs: 1,
        ..config()
    };
    let url = format!("{}/hook", server.uri());

    let error = WebhookChannel::new(&config)
        .unwrap()
        .send(&notification(url))
        .await
        .unwrap_err();

    assert_transient(&error, FailureKind::Timeout, "timeout");
    assert!(error.message().contains("timed out after 1 s"), "{error}");
    server.verify().await;
}

#[tokio::test]
async fn redirect_is_not_followed() {
    let server = MockServer::start().await;
    let redirect =
        ResponseTemplate::new(302).insert_header("Location", format!("{}/moved", server.uri()));
    mount_status(&server, redirect, "receiver answering 302").await;
    Mock::given(method("POST"))
        .and(path("/moved"))
        .respond_with(ResponseTemplate::new(200))
        .named("redirect target")
        .expect(0)
        .mount(&server)
        .await;

    let error = send_to(&server).await.unwrap_err();

    assert_permanent(&error, FailureKind::Rejected, "http_302");
    assert!(
        error.message().contains("redirects are not followed"),
        "{error}"
    );
    assert_masked(&error, &server);
    server.verify().await;
}

#[tokio::test]
async fn retry_sends_identical_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("webhook-id", NOTIFICATION.to_string().as_str()))
        .respond_with(ResponseTemplate::new(200))
        .named("receiver of both attempts")
        .expect(2)
        .mount(&server)
        .await;
    let channel = channel();
    let first = notification(format!("{}/hook", server.uri()));
    let mut retry = first.clone();
    retry.attempt = 2;

    channel.send(&first).await.unwrap();
    channel.send(&retry).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
    server.verify().await;
}

#[tokio::test]
async fn missing_tenant_secret_is_configuration_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .named("receiver that must not be called")
        .expect(0)
        .mount(&server)
        .await;
    let config = WebhookConfig {
        signing_secret: None,
        ..config()
    };
    let url = format!("{}/hook", server.uri());

    let error = WebhookChannel::new(&config)
        .unwrap()
        .send(&notification(url))
        .await
        .unwrap_err();

    assert_permanent(&error, FailureKind::Configuration, "missing_signing_secret");
    assert!(error.message().contains(&TENANT.to_string()), "{error}");
    server.verify().await;
}

#[tokio::test]
async fn tenant_secret_signs_its_requests() {
    let server = MockServer::start().await;
    mount_status(
        &server,
        ResponseTemplate::new(200),
        "receiver of the tenant",
    )
    .await;
    let tenant_key = b"key-of-one-tenant-only-32-bytes!";
    let tenant_secret = format!("whsec_{}", BASE64.encode(tenant_key));
    let config = WebhookConfig {
        tenant_secret_env: [(TENANT.to_string(), "TENANT_WEBHOOK_SECRET".to_owned())].into(),
        ..config()
    };
    let channel = WebhookChannel::with_env(&config, |name| {
        assert_eq!(name, "TENANT_WEBHOOK_SECRET");
        Ok(tenant_secret.clone())
    })
    .unwrap();

    channel
        .send(&notification(format!("{}/hook", server.uri())))
        .await
        .unwrap();

    let requests = server.received_requests().await.unwrap();
    assert!(signature_is_valid(tenant_key, &requests[0]));
    assert!(!signature_is_valid(SECRET_KEY, &requests[0]));
    server.verify().await;
}

#[tokio::test]
async fn loopback_receiver_rejected_by_default() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .named("loopback receiver that must not be called")
        .expect(0)
        .mount(&server)
        .await;
    let config = WebhookConfig {
        allow_loopback: false,
        ..config()
    };

    let error = WebhookChannel::new(&config)
        .unwrap()
        .send(&notification(format!("{}/hook", server.uri())))
        .await
        .unwrap_err();

    assert_permanent(
        &error,
        FailureKind::InvalidRecipient,
        "destination_forbidden",
    );
    server.verify().await;
}

/// Host name that the injected lookup of [`resolving_channel`] resolves.
const HOOK_HOST: &str = "hook.example.test";

/// Builds a channel whose lookup maps [`HOOK_HOST`] to `answers` and fails
/// for every other name. Also returns the counter of lookups made.
fn resolving_channel(
    config: &WebhookConfig,
    answers: &[&str],
) -> (WebhookChannel, Arc<AtomicUsize>) {
    let answers: Vec<IpAddr> = answers
        .iter()
        .map(|answer| answer.parse().unwrap())
        .collect();
    let lookups = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&lookups);

    let channel = WebhookChannel::with_lookup(config, move |host: String| {
        counter.fetch_add(1, Ordering::SeqCst);
        let result = if host == HOOK_HOST {
            Ok(answers.clone())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("test lookup has no entry for {host}"),
            ))
        };
        async move { result }
    })
    .unwrap();

    (channel, lookups)
}

/// URL of `server`'s `/hook` under the host name `host`, with a token in the
/// query that error messages must not show.
fn url_with_host(host: &str, server: &MockServer) -> String {
    format!(
        "http://{host}:{}/hook?token=path-secret",
        server.address().port()
    )
}

async fn mount_unreachable(server: &MockServer) {
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .named("receiver behind a forbidden address")
        .expect(0)
        .mount(server)
        .await;
}

fn config_allowing_loopback(allow_loopback: bool) -> WebhookConfig {
    WebhookConfig {
        allow_loopback,
        ..config()
    }
}

/// Checks that `error` rejects [`HOOK_HOST`] for resolving to `address`,
/// without the path or query of the URL.
fn assert_forbidden_answer(error: &DeliveryError, address: &str, reason: &str) {
    assert_permanent(
        error,
        FailureKind::InvalidRecipient,
        "destination_forbidden",
    );
    assert!(
        error.message().contains(&format!(
            "host {HOOK_HOST} resolves only to forbidden addresses"
        )),
        "{error}"
    );
    assert!(
        error.message().contains(&format!("{address} ({reason}")),
        "{error}"
    );
    assert!(!error.message().contains("path-secret"), "{error}");
    assert!(!error.message().contains("/hook?"), "{error}");
}

#[tokio::test]
async fn name_resolving_to_loopback_is_forbidden() {
    let server = MockServer::start().await;
    mount_unreachable(&server).await;
    let (channel, lookups) = resolving_channel(&config_allowing_loopback(false), &["127.0.0.1"]);

    let error = channel
        .send(&notification(url_with_host(HOOK_HOST, &server)))
        .await
        .unwrap_err();

    assert_forbidden_answer(&error, "127.0.0.1", "a loopback address");
    assert!(
        error
            .message()
            .contains("allowed only with `channels.webhook.allow_loopback = true`"),
        "{error}"
    );
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
    server.verify().await;
}

#[tokio::test]
async fn name_resolving_to_loopback_delivered_when_allowed() {
    let server = MockServer::start().await;
    mount_status(&server, ResponseTemplate::new(200), "loopback receiver").await;
    let (channel, lookups) = resolving_channel(&config_allowing_loopback(true), &["127.0.0.1"]);

    let receipt = channel
        .send(&notification(url_with_host(HOOK_HOST, &server)))
        .await
        .unwrap();

    assert_eq!(receipt.details.get("status"), Some(&json!(200)));
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
    let requests = server.received_requests().await.unwrap();
    let host = requests[0].headers.get("host").unwrap().to_str().unwrap();
    assert_eq!(host, format!("{HOOK_HOST}:{}", server.address().port()));
    server.verify().await;
}

/// Covers resolved addresses that lead to this machine only, so a request
/// that got through the filter would reach the mock server or be refused
/// locally.
#[tokio::test]
async fn local_answers_are_forbidden() {
    let cases = [
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("127.0.0.2", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
    ];
    let server = MockServer::start().await;
    mount_unreachable(&server).await;

    for (address, reason) in cases {
        let (channel, lookups) = resolving_channel(&config_allowing_loopback(false), &[address]);

        let error = channel
            .send(&notification(url_with_host(HOOK_HOST, &server)))
            .await
            .unwrap_err();

        assert_forbidden_answer(&error, address, reason);
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "{address}");
    }
    server.verify().await;
}

/// Each answer starts with 127.0.0.1, the mock server's address. Should the
/// filter ever let the answers through, reqwest connects to that first
/// address, so the test fails without any packet to the private or metadata
/// address. The resolver's unit tests check these addresses alone and with
/// `allow_loopback = true`, where no connection can happen.
#[tokio::test]
async fn private_and_metadata_answers_are_forbidden() {
    let cases = [
        ("10.0.0.5", "a private address"),
        ("192.168.1.20", "a private address"),
        ("fd00::1", "a private address"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        (
            "169.254.169.254",
            "a cloud metadata endpoint, never allowed",
        ),
        ("fd00:ec2::254", "a cloud metadata endpoint, never allowed"),
        (
            "::ffff:169.254.169.254",
            "a cloud metadata endpoint, never allowed",
        ),
        ("169.254.10.1", "a link-local address, never allowed"),
        ("fe80::1", "a link-local address, never allowed"),
    ];
    let server = MockServer::start().await;
    mount_unreachable(&server).await;

    for (address, reason) in cases {
        let answers = ["127.0.0.1", address];
        let (channel, lookups) = resolving_channel(&config_allowing_loopback(false), &answers);

        let error = channel
            .send(&notification(url_with_host(HOOK_HOST, &server)))
            .await
            .unwrap_err();

        assert_forbidden_answer(&error, "127.0.0.1", "a loopback address");
        assert_forbidden_answer(&error, address, reason);
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "{address}");
    }
    server.verify().await;
}

#[tokio::test]
async fn all_forbidden_answers_are_listed() {
    let server = MockServer::start().await;
    mount_unreachable(&server).await;
    let (channel, _) = resolving_channel(
        &config_allowing_loopback(false),
        &["127.0.0.1", "10.0.0.5", "169.254.169.254"],
    );

    let error = channel
        .send(&notification(url_with_host(HOOK_HOST, &server)))
        .await
        .unwrap_err();

    assert_forbidden_answer(&error, "127.0.0.1", "a loopback address");
    assert_forbidden_answer(&error, "10.0.0.5", "a private address");
    assert_forbidden_answer(&error, "169.254.169.254", "a cloud metadata endpoint");
    server.verify().await;
}

/// The forbidden addresses are multicast addresses, for which Linux fails a
/// TCP connect without sending a packet. If the filter let them through, no
/// traffic would leave the machine.
#[tokio::test]
async fn mixed_answer_reaches_allowed_address() {
    let server = MockServer::start().await;
    mount_status(
        &server,
        ResponseTemplate::new(204),
        "receiver at the allowed address",
    )
    .await;
    let (channel, _) = resolving_channel(
        &config_allowing_loopback(true),
        &["ff02::1", "224.0.0.1", "127.0.0.1"],
    );

    let receipt = channel
        .send(&notification(url_with_host(HOOK_HOST, &server)))
        .await
        .unwrap();

    assert_eq!(receipt.details.get("status"), Some(&json!(204)));
    server.verify().await;
}

#[tokio::test]
async fn metadata_name_is_forbidden_without_lookup() {
    let server = MockServer::start().await;
    mount_unreachable(&server).await;

    for allow_loopback in [false, true] {
        let config = config_allowing_loopback(allow_loopback);
        let (channel, lookups) = resolving_channel(&config, &["127.0.0.1"]);

        let error = channel
            .send(&notification(url_with_host(
                "metadata.google.internal",
                &server,
            )))
            .await
            .unwrap_err();

        assert_permanent(
            &error,
            FailureKind::InvalidRecipient,
            "destination_forbidden",
        );
        assert!(
            error.message().contains(
                "host metadata.google.internal is a cloud metadata endpoint, never allowed"
            ),
            "{error}"
        );
        assert!(!error.message().contains("path-secret"), "{error}");
        assert_eq!(lookups.load(Ordering::SeqCst), 0);
    }
    server.verify().await;
}

#[tokio::test]
async fn failed_lookup_is_transient() {
    let server = MockServer::start().await;
    mount_unreachable(&server).await;
    let (channel, lookups) = resolving_channel(&config_allowing_loopback(false), &["127.0.0.1"]);

    let error = channel
        .send(&notification(url_with_host(
            "unknown.example.test",
            &server,
        )))
        .await
        .unwrap_err();

    assert_transient(&error, FailureKind::Unavailable, "connect_failed");
    assert!(
        error
            .message()
            .contains("test lookup has no entry for unknown.example.test"),
        "{error}"
    );
    assert!(!error.message().contains("path-secret"), "{error}");
    assert_eq!(lookups.load(Ordering::SeqCst), 1);
    server.verify().await;
}
