//! Push channel against local wiremock servers standing in for the Google
//! token endpoint, FCM and APNs: delivery, token caching and refresh, and
//! the classification of every documented error response.
//!
//! Every base URL points at a wiremock server on 127.0.0.1. The keys under
//! `tests/fixtures` are test-only keys generated for these tests.

use std::collections::HashMap;
use std::env::VarError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use notify_channels::push::{
    AndroidPriority, ApnsConfig, ApnsEnvironment, Clock, FcmAndroidConfig, FcmApnsConfig,
    FcmConfig, PushChannel, PushConfig, PushError, SystemClock,
};
use notify_core::conformance::{self, ConformanceHarness, Scenario, Setup};
use notify_core::{
    Channel, ChannelKind, Content, DeliveryError, FailureKind, Notification, PushPlatform, Receipt,
    Recipient,
};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PROJECT_ID: &str = "flatrender-test-only";
const SEND_PATH: &str = "/v1/projects/flatrender-test-only/messages:send";
const TOKEN_PATH: &str = "/token";
const SERVICE_ACCOUNT_ENV: &str = "TEST_ONLY_FCM_SERVICE_ACCOUNT";
const CLIENT_EMAIL: &str = "test-only-sender@flatrender-test-only.iam.gserviceaccount.com";
const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const ACCESS_TOKEN: &str = "ya29.test-only-access-token-first";
const SECOND_ACCESS_TOKEN: &str = "ya29.test-only-access-token-second";
const FCM_MESSAGE_NAME: &str = "projects/flatrender-test-only/messages/0:1700000000000000%31bd1c9";
const FCM_DEVICE: &str = "fcm-registration-token-0123456789abcdefXYZ";

const TEAM_ID: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.flatrender.app";
const APNS_DEVICE: &str = "7f3a9c0e5b2d4f6a8c1e3b5d7f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3f5a";
const APNS_DEVICE_PATH: &str =
    "/3/device/7f3a9c0e5b2d4f6a8c1e3b5d7f9a2c4e6b8d0f1a3c5e7b9d2f4a6c8e0b1d3f5a";
/// The `apns-id` the APNs stand-in returns, unlike the one the channel sends.
const APNS_RESPONSE_ID: &str = "8e1a4b2c-3d5f-4e6a-9b7c-0d1e2f3a4b5c";

const NOTIFICATION: Uuid = Uuid::from_u128(0x0b3c6e1a_5d7f_4a2b_9c8d_1e2f3a4b5c6d);
const TENANT: Uuid = Uuid::from_u128(0x7d444840_9dc0_41a1_8ad4_7e4c7c5b3f10);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

/// Returns the test-only service-account key with `token_uri` replaced.
fn service_account_json(token_uri: &str) -> String {
    let mut account: Value =
        serde_json::from_str(&read_fixture("test-only-fcm-service-account.json")).unwrap();
    account["token_uri"] = json!(token_uri);
    account.to_string()
}

/// Returns the base64 lines of both private keys, none of which may ever be displayed.
fn private_key_lines() -> Vec<String> {
    let account: Value =
        serde_json::from_str(&read_fixture("test-only-fcm-service-account.json")).unwrap();
    let rsa = account["private_key"].as_str().unwrap().to_owned();
    let ec = read_fixture("test-only-apns-auth-key.p8");
    [rsa, ec]
        .iter()
        .flat_map(|pem| pem.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| !line.starts_with("-----") && line.len() >= 16)
        .collect()
}

/// A clock that moves only when the test advances it, starting at the real
/// time so that tokens look plausible.
#[derive(Debug)]
struct ManualClock(AtomicU64);

impl ManualClock {
    fn new() -> Arc<ManualClock> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        Arc::new(ManualClock(AtomicU64::new(now.as_secs())))
    }

    fn seconds(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.seconds())
    }
}

fn fcm_config(server: &MockServer) -> FcmConfig {
    FcmConfig {
        project_id: PROJECT_ID.to_owned(),
        service_account_file: None,
        service_account_json_env: Some(SERVICE_ACCOUNT_ENV.to_owned()),
        base_url: server.uri(),
        token_url: None,
        android: FcmAndroidConfig {
            priority: AndroidPriority::High,
            ttl_secs: Some(3600),
        },
        apns: FcmApnsConfig { priority: 10 },
    }
}

fn apns_config(server: &MockServer) -> ApnsConfig {
    ApnsConfig {
        team_id: TEAM_ID.to_owned(),
        key_id: KEY_ID.to_owned(),
        key_file: Some(fixture("test-only-apns-auth-key.p8")),
        key_env: None,
        topic: TOPIC.to_owned(),
        environment: ApnsEnvironment::Sandbox,
        base_url: Some(server.uri()),
        http2_prior_knowledge: true,
        priority: 10,
        collapse_id: None,
        collapse_id_from_template: false,
    }
}

fn push_config(fcm: Option<FcmConfig>, apns: Option<ApnsConfig>) -> PushConfig {
    PushConfig {
        enabled: true,
        timeout_secs: 5,
        fcm,
        apns,
    }
}

/// Builds the channel with the service-account JSON served through
/// [`SERVICE_ACCOUNT_ENV`], its `token_uri` pointing at `server`.
fn build_channel(config: &PushConfig, server: &MockServer, clock: Arc<dyn Clock>) -> PushChannel {
    let account = service_account_json(&format!("{}{TOKEN_PATH}", server.uri()));
    let read_env = move |name: &str| {
        if name == SERVICE_ACCOUNT_ENV {
            Ok(account.clone())
        } else {
            Err(VarError::NotPresent)
        }
    };
    PushChannel::with_env_and_clock(config, read_env, clock).unwrap()
}

fn fcm_channel(server: &MockServer) -> PushChannel {
    let config = push_config(Some(fcm_config(server)), None);
    build_channel(&config, server, Arc::new(SystemClock))
}

fn apns_channel(server: &MockServer, clock: Arc<dyn Clock>) -> PushChannel {
    let config = push_config(None, Some(apns_config(server)));
    build_channel(&config, server, clock)
}

fn notification(platform: PushPlatform) -> Notification {
    let device_token = match platform {
        PushPlatform::Fcm => FCM_DEVICE,
        PushPlatform::Apns => APNS_DEVICE,
    };
    Notification {
        notification_id: NOTIFICATION,
        tenant_id: TENANT,
        channel: ChannelKind::Push,
        template: "render_completed".to_owned(),
        locale: "en".to_owned(),
        recipient: Recipient::Push {
            device_token: device_token.to_owned(),
            platform,
        },
        content: Content::Push {
            title: "Render ready".to_owned(),
            body: "Intro finished rendering".to_owned(),
        },
        attempt: 1,
    }
}

fn token_response(access_token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "access_token": access_token,
        "expires_in": 3599,
        "token_type": "Bearer",
    }))
}

async fn mount_token_endpoint(server: &MockServer, access_token: &str, times: u64) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_response(access_token))
        .named(format!("token endpoint issuing {access_token}"))
        .expect(times)
        .mount(server)
        .await;
}

/// Mounts a token endpoint that issues [`ACCESS_TOKEN`] once, then
/// [`SECOND_ACCESS_TOKEN`] once.
async fn mount_two_tokens(server: &MockServer) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_response(ACCESS_TOKEN))
        .up_to_n_times(1)
        .named("token endpoint issuing the first token")
        .expect(1)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_response(SECOND_ACCESS_TOKEN))
        .up_to_n_times(1)
        .named("token endpoint issuing the second token")
        .expect(1)
        .mount(server)
        .await;
}

fn fcm_accepted() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "name": FCM_MESSAGE_NAME }))
}

async fn mount_fcm(
    server: &MockServer,
    access_token: &str,
    response: ResponseTemplate,
    times: u64,
    name: &str,
) {
    Mock::given(method("POST"))
        .and(path(SEND_PATH))
        .and(header(
            "authorization",
            format!("Bearer {access_token}").as_str(),
        ))
        .respond_with(response)
        .named(name)
        .expect(times)
        .mount(server)
        .await;
}

fn google_error(status: u16, name: &str, message: &str, details: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": { "code": status, "message": message, "status": name, "details": details }
    }))
}

fn fcm_error_detail(error_code: &str) -> Value {
    json!({ "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code })
}

fn apns_accepted() -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("apns-id", APNS_RESPONSE_ID)
}

fn apns_error(status: u16, reason: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "reason": reason }))
}

async fn mount_apns(server: &MockServer, response: ResponseTemplate, times: u64, name: &str) {
    Mock::given(method("POST"))
        .and(path(APNS_DEVICE_PATH))
        .respond_with(response)
        .named(name)
        .expect(times)
        .mount(server)
        .await;
}

async fn requests_to(server: &MockServer, request_path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|request| request.url.path() == request_path)
        .collect()
}

fn header_text<'a>(request: &'a Request, name: &str) -> &'a str {
    request.headers.get(name).unwrap().to_str().unwrap()
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    scope: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Checks a token request the way Google does: the grant type, and the
/// assertion's RS256 signature against the test public key, issuer and
/// audience. Returns the assertion's claims.
fn verify_token_request(request: &Request, audience: &str) -> AssertionClaims {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );

    let key =
        DecodingKey::from_rsa_pem(read_fixture("test-only-fcm-service-account.pub.pem").as_bytes())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let data =
        jsonwebtoken::decode::<AssertionClaims>(&form["assertion"], &key, &validation).unwrap();

    assert_eq!(data.header.kid.as_deref(), Some("test-only-key-0001"));
    data.claims
}

#[derive(Debug, Deserialize)]
struct ProviderClaims {
    iss: String,
    iat: u64,
}

/// Checks an APNs request's provider token against the test EC public key,
/// `kid` and `iss`. Returns the JWT and its claims.
fn verify_provider_token(request: &Request) -> (String, ProviderClaims) {
    let authorization = header_text(request, "authorization");
    let jwt = authorization
        .strip_prefix("bearer ")
        .unwrap_or_else(|| panic!("authorization is not `bearer <jwt>`: {authorization}"));

    let key = DecodingKey::from_ec_pem(read_fixture("test-only-apns-auth-key.pub.pem").as_bytes())
        .unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    // APNs provider tokens have no `exp`; APNs ages them by `iat`.
    validation.validate_exp = false;
    validation.set_required_spec_claims(&["iss"]);
    validation.set_issuer(&[TEAM_ID]);
    let data = jsonwebtoken::decode::<ProviderClaims>(jwt, &key, &validation).unwrap();

    assert_eq!(data.header.alg, Algorithm::ES256);
    assert_eq!(data.header.kid.as_deref(), Some(KEY_ID));
    (jwt.to_owned(), data.claims)
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

/// Everything of an error that can reach a log, an event or a header.
fn displayed_text(error: &DeliveryError) -> String {
    let mut text = format!("{error}\n{error:?}\n");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!("{cause}\n{cause:?}\n"));
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------- FCM

#[tokio::test]
async fn fcm_delivers_and_reuses_access_token() {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, ACCESS_TOKEN, 1).await;
    mount_fcm(&server, ACCESS_TOKEN, fcm_accepted(), 3, "FCM accepting").await;
    let channel = fcm_channel(&server);

    let mut receipts: Vec<Receipt> = Vec::new();
    for _ in 0..3 {
        receipts.push(
            channel
                .send(&notification(PushPlatform::Fcm))
                .await
                .unwrap(),
        );
    }

    for receipt in &receipts {
        assert_eq!(receipt.provider, "fcm");
        assert_eq!(
            receipt.provider_message_id.as_deref(),
            Some(FCM_MESSAGE_NAME)
        );
        assert_eq!(receipt.details.get("status"), Some(&json!(200)));
    }

    let token_requests = requests_to(&server, TOKEN_PATH).await;
    let token_uri = format!("{}{TOKEN_PATH}", server.uri());
    let claims = verify_token_request(&token_requests[0], &token_uri);
    assert_eq!(claims.aud, token_uri);
    assert_eq!(claims.iss, CLIENT_EMAIL);
    assert_eq!(claims.scope, FCM_SCOPE);
    assert_eq!(claims.exp - claims.iat, 3600);

    let sends = requests_to(&server, SEND_PATH).await;
    assert_eq!(header_text(&sends[0], "content-type"), "application/json");
    let body: Value = serde_json::from_slice(&sends[0].body).unwrap();
    assert_eq!(
        body,
        json!({
            "message": {
                "token": FCM_DEVICE,
                "notification": { "title": "Render ready", "body": "Intro finished rendering" },
                "data": { "notification_id": NOTIFICATION.to_string() },
                "android": { "priority": "HIGH", "ttl": "3600s", "notification": { "tag": NOTIFICATION.to_string() } },
                "apns": { "headers": {
                    "apns-priority": "10",
                    "apns-push-type": "alert",
                    "apns-collapse-id": NOTIFICATION.to_string(),
                } },
            }
        })
    );
    server.verify().await;
}

#[tokio::test]
async fn fcm_concurrent_sends_share_one_token_request() {
    let server = MockServer::start().await;
    // The delay keeps the token request open while every send starts.
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(token_response(ACCESS_TOKEN).set_delay(Duration::from_millis(300)))
        .named("slow token endpoint")
        .expect(1)
        .mount(&server)
        .await;
    mount_fcm(&server, ACCESS_TOKEN, fcm_accepted(), 8, "FCM accepting").await;
    let channel = Arc::new(fcm_channel(&server));

    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let channel = channel.clone();
        sends.spawn(async move { channel.send(&notification(PushPlatform::Fcm)).await });
    }
    let results = sends.join_all().await;

    for result in results {
        assert!(result.is_ok(), "{:?}", result.err());
    }
    server.verify().await;
}

#[tokio::test]
async fn fcm_concurrent_sends_share_one_failed_token_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(503).set_delay(Duration::from_millis(300)))
        .named("slow failing token endpoint")
        .expect(1)
        .mount(&server)
        .await;
    mount_fcm(
        &server,
        ACCESS_TOKEN,
        fcm_accepted(),
        0,
        "FCM, never reached",
    )
    .await;
    let channel = Arc::new(fcm_channel(&server));

    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let channel = channel.clone();
        sends.spawn(async move { channel.send(&notification(PushPlatform::Fcm)).await });
    }
    let results = sends.join_all().await;

    for result in results {
        let error = result.unwrap_err();
        assert_transient(&error, FailureKind::Unavailable, "oauth_http_503");
    }
    server.verify().await;
}

#[tokio::test]
async fn fcm_access_token_is_refreshed_before_expiry() {
    let server = MockServer::start().await;
    mount_two_tokens(&server).await;
    mount_fcm(
        &server,
        ACCESS_TOKEN,
        fcm_accepted(),
        2,
        "FCM accepting the first token",
    )
    .await;
    mount_fcm(
        &server,
        SECOND_ACCESS_TOKEN,
        fcm_accepted(),
        1,
        "FCM accepting the second token",
    )
    .await;
    let clock = ManualClock::new();
    let config = push_config(Some(fcm_config(&server)), None);
    let channel = build_channel(&config, &server, clock.clone());

    channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap();
    // The token lasts 3599 s and is replaced 5 minutes before it expires.
    clock.advance(Duration::from_secs(3599 - 301));
    channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(2));
    channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap();

    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
    server.verify().await;
}

#[tokio::test]
async fn fcm_token_url_overrides_key_file() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/override-token"))
        .respond_with(token_response(ACCESS_TOKEN))
        .named("overriding token endpoint")
        .expect(1)
        .mount(&server)
        .await;
    mount_fcm(&server, ACCESS_TOKEN, fcm_accepted(), 1, "FCM accepting").await;
    let fcm = FcmConfig {
        service_account_file: Some(fixture("test-only-fcm-service-account.json")),
        service_account_json_env: None,
        token_url: Some(format!("{}/override-token", server.uri())),
        ..fcm_config(&server)
    };
    let channel = PushChannel::new(&push_config(Some(fcm), None)).unwrap();

    channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap();

    // `aud` stays the key file's `token_uri`, as Google expects.
    let token_requests = requests_to(&server, "/override-token").await;
    let claims = verify_token_request(&token_requests[0], "http://127.0.0.1:1/test-only-token");
    assert_eq!(claims.aud, "http://127.0.0.1:1/test-only-token");
    assert_eq!(claims.scope, FCM_SCOPE);
    server.verify().await;
}

/// Sends one FCM notification to a server that responds with `response`
/// after a successful token request.
async fn fcm_failure(response: ResponseTemplate, name: &str) -> DeliveryError {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, ACCESS_TOKEN, 1).await;
    mount_fcm(&server, ACCESS_TOKEN, response, 1, name).await;

    let error = fcm_channel(&server)
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap_err();

    server.verify().await;
    error
}

#[tokio::test]
async fn fcm_unregistered_is_recipient_gone() {
    let response = google_error(
        404,
        "NOT_FOUND",
        "Requested entity was not found.",
        json!([fcm_error_detail("UNREGISTERED")]),
    );

    let error = fcm_failure(response, "FCM answering UNREGISTERED").await;

    assert_permanent(&error, FailureKind::RecipientGone, "fcm_UNREGISTERED");
    assert!(error.message().contains("404 Not Found"), "{error}");
    assert!(!error.message().contains(FCM_DEVICE), "{error}");
}

#[tokio::test]
async fn fcm_invalid_token_argument_is_recipient_gone() {
    let details = json!([
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": "message.token", "description": "Invalid registration token" }]
        },
        fcm_error_detail("INVALID_ARGUMENT"),
    ]);
    let response = google_error(
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
        details,
    );

    let error = fcm_failure(response, "FCM answering INVALID_ARGUMENT for the token").await;

    assert_permanent(&error, FailureKind::RecipientGone, "fcm_INVALID_ARGUMENT");
}

#[tokio::test]
async fn fcm_invalid_payload_is_not_recipient_gone() {
    let details = json!([
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": "message.android.ttl", "description": "Invalid duration" }]
        },
        fcm_error_detail("INVALID_ARGUMENT"),
    ]);
    let response = google_error(
        400,
        "INVALID_ARGUMENT",
        "Invalid value at 'message.android.ttl'",
        details,
    );

    let error = fcm_failure(response, "FCM answering INVALID_ARGUMENT for the payload").await;

    assert_permanent(&error, FailureKind::InvalidContent, "fcm_INVALID_ARGUMENT");
    assert!(error.message().contains("message.android.ttl"), "{error}");
}

#[tokio::test]
async fn fcm_server_errors_are_transient() {
    for (status, name) in [(503, "UNAVAILABLE"), (500, "INTERNAL")] {
        let response = google_error(
            status,
            name,
            "The service is currently unavailable.",
            json!([fcm_error_detail(name)]),
        );

        let error = fcm_failure(response, &format!("FCM answering {status}")).await;

        assert_transient(&error, FailureKind::Unavailable, &format!("fcm_{name}"));
        assert_eq!(error.retry_after(), None, "{status}");
    }
}

#[tokio::test]
async fn fcm_quota_exceeded_keeps_retry_after() {
    let response = google_error(
        429,
        "RESOURCE_EXHAUSTED",
        "Quota exceeded for sending messages.",
        json!([fcm_error_detail("QUOTA_EXCEEDED")]),
    )
    .insert_header("Retry-After", "45");

    let error = fcm_failure(response, "FCM answering QUOTA_EXCEEDED").await;

    assert_transient(&error, FailureKind::RateLimited, "fcm_QUOTA_EXCEEDED");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(45)));
}

#[tokio::test]
async fn fcm_401_refreshes_token_and_retries_once() {
    let server = MockServer::start().await;
    mount_two_tokens(&server).await;
    let unauthenticated = google_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials.",
        json!([]),
    );
    mount_fcm(
        &server,
        ACCESS_TOKEN,
        unauthenticated,
        1,
        "FCM rejecting the first token",
    )
    .await;
    // The retry and the next send both use the replacement token.
    mount_fcm(
        &server,
        SECOND_ACCESS_TOKEN,
        fcm_accepted(),
        2,
        "FCM accepting the second token",
    )
    .await;
    let channel = fcm_channel(&server);

    let receipt = channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap();
    channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap();

    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some(FCM_MESSAGE_NAME)
    );
    assert_eq!(requests_to(&server, TOKEN_PATH).await.len(), 2);
    server.verify().await;
}

#[tokio::test]
async fn fcm_second_401_is_configuration_error() {
    let server = MockServer::start().await;
    mount_two_tokens(&server).await;
    let unauthenticated = || {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        )
    };
    mount_fcm(
        &server,
        ACCESS_TOKEN,
        unauthenticated(),
        1,
        "FCM rejecting the first token",
    )
    .await;
    mount_fcm(
        &server,
        SECOND_ACCESS_TOKEN,
        unauthenticated(),
        1,
        "FCM rejecting the second token",
    )
    .await;

    let error = fcm_channel(&server)
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap_err();

    assert_permanent(&error, FailureKind::Configuration, "fcm_UNAUTHENTICATED");
    assert!(
        error.message().contains("newly fetched access token"),
        "{error}"
    );
    server.verify().await;
}

#[tokio::test]
async fn fcm_token_endpoint_errors_are_classified() {
    let cases = [
        (
            ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant",
                "error_description": "Invalid JWT Signature."
            })),
            false,
            FailureKind::Configuration,
            "oauth_invalid_grant",
        ),
        (
            ResponseTemplate::new(503),
            true,
            FailureKind::Unavailable,
            "oauth_http_503",
        ),
        (
            ResponseTemplate::new(429).insert_header("Retry-After", "12"),
            true,
            FailureKind::RateLimited,
            "oauth_http_429",
        ),
        (
            ResponseTemplate::new(200).set_body_string("not json"),
            true,
            FailureKind::Unavailable,
            "oauth_invalid_response",
        ),
    ];

    for (response, transient, kind, code) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(response)
            .named(format!("token endpoint failing with {code}"))
            .expect(1)
            .mount(&server)
            .await;
        mount_fcm(
            &server,
            ACCESS_TOKEN,
            fcm_accepted(),
            0,
            "FCM, never reached",
        )
        .await;

        let error = fcm_channel(&server)
            .send(&notification(PushPlatform::Fcm))
            .await
            .unwrap_err();

        assert_eq!(error.is_transient(), transient, "{code}: {error}");
        assert_eq!(error.kind(), kind, "{code}: {error}");
        assert_eq!(error.code(), Some(code), "{code}: {error}");
        if code == "oauth_http_429" {
            assert_eq!(error.retry_after(), Some(Duration::from_secs(12)));
        }
        server.verify().await;
    }
}

#[tokio::test]
async fn fcm_unreachable_token_endpoint_is_transient() {
    let server = MockServer::start().await;
    let fcm = FcmConfig {
        // Port 1 on loopback: nothing listens there.
        token_url: Some("http://127.0.0.1:1/token".to_owned()),
        ..fcm_config(&server)
    };
    let channel = build_channel(
        &push_config(Some(fcm), None),
        &server,
        Arc::new(SystemClock),
    );

    let error = channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap_err();

    assert_transient(&error, FailureKind::Unavailable, "connect_failed");
}

// ---------------------------------------------------------------- APNs

#[tokio::test]
async fn apns_delivers_with_signed_provider_token() {
    let server = MockServer::start().await;
    mount_apns(&server, apns_accepted(), 2, "APNs accepting").await;
    let clock = ManualClock::new();
    let channel = apns_channel(&server, clock.clone());

    let receipt = channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();
    channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();

    assert_eq!(receipt.provider, "apns");
    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some(APNS_RESPONSE_ID)
    );
    assert_eq!(receipt.details.get("status"), Some(&json!(200)));
    assert_eq!(
        receipt.details.get("http_version"),
        Some(&json!("HTTP/2.0"))
    );

    let requests = requests_to(&server, APNS_DEVICE_PATH).await;
    let request = &requests[0];
    let (jwt, claims) = verify_provider_token(request);
    assert_eq!(claims.iss, TEAM_ID);
    assert_eq!(claims.iat, clock.seconds());
    assert_eq!(header_text(request, "apns-topic"), TOPIC);
    assert_eq!(header_text(request, "apns-push-type"), "alert");
    assert_eq!(header_text(request, "apns-priority"), "10");
    assert_eq!(header_text(request, "apns-id"), NOTIFICATION.to_string());
    assert_eq!(header_text(request, "content-type"), "application/json");
    assert!(request.headers.get("apns-collapse-id").is_none());
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "aps": { "alert": { "title": "Render ready", "body": "Intro finished rendering" } },
            "notification_id": NOTIFICATION.to_string(),
        })
    );

    let (second_jwt, _) = verify_provider_token(&requests[1]);
    assert_eq!(second_jwt, jwt, "the provider token is reused");
    server.verify().await;
}

#[tokio::test]
async fn apns_speaks_http1_without_prior_knowledge() {
    let server = MockServer::start().await;
    mount_apns(&server, apns_accepted(), 1, "APNs accepting").await;
    let config = ApnsConfig {
        http2_prior_knowledge: false,
        ..apns_config(&server)
    };
    let channel = build_channel(
        &push_config(None, Some(config)),
        &server,
        Arc::new(SystemClock),
    );

    let receipt = channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();

    assert_eq!(
        receipt.details.get("http_version"),
        Some(&json!("HTTP/1.1"))
    );
    server.verify().await;
}

#[tokio::test]
async fn apns_provider_token_is_renewed_after_50_minutes() {
    let server = MockServer::start().await;
    mount_apns(&server, apns_accepted(), 3, "APNs accepting").await;
    let clock = ManualClock::new();
    let start = clock.seconds();
    let channel = apns_channel(&server, clock.clone());

    channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(49 * 60));
    channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(60));
    channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();

    let requests = requests_to(&server, APNS_DEVICE_PATH).await;
    let issued: Vec<u64> = requests
        .iter()
        .map(|request| verify_provider_token(request).1.iat)
        .collect();
    assert_eq!(issued, [start, start, start + 50 * 60]);
    server.verify().await;
}

#[tokio::test]
async fn apns_expired_provider_token_is_renewed_and_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(APNS_DEVICE_PATH))
        .respond_with(apns_accepted())
        .up_to_n_times(1)
        .named("APNs accepting the first send")
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(APNS_DEVICE_PATH))
        .respond_with(apns_error(403, "ExpiredProviderToken"))
        .up_to_n_times(1)
        .named("APNs rejecting the cached provider token")
        .expect(1)
        .mount(&server)
        .await;
    mount_apns(
        &server,
        apns_accepted(),
        1,
        "APNs accepting the renewed provider token",
    )
    .await;
    let clock = ManualClock::new();
    let start = clock.seconds();
    let channel = apns_channel(&server, clock.clone());

    channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(600));
    let receipt = channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();

    assert_eq!(
        receipt.provider_message_id.as_deref(),
        Some(APNS_RESPONSE_ID)
    );
    let requests = requests_to(&server, APNS_DEVICE_PATH).await;
    let tokens: Vec<(String, ProviderClaims)> =
        requests.iter().map(verify_provider_token).collect();
    assert_eq!(tokens.len(), 3);
    assert_eq!(
        tokens[1].0, tokens[0].0,
        "the rejected request used the cached token"
    );
    assert_ne!(tokens[2].0, tokens[1].0, "the retry used a new token");
    assert_eq!(tokens[2].1.iat, start + 600);
    server.verify().await;
}

#[tokio::test]
async fn apns_second_expired_provider_token_is_configuration_error() {
    let server = MockServer::start().await;
    mount_apns(
        &server,
        apns_error(403, "ExpiredProviderToken"),
        2,
        "APNs rejecting every provider token",
    )
    .await;

    let error = apns_channel(&server, ManualClock::new())
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap_err();

    assert_permanent(
        &error,
        FailureKind::Configuration,
        "apns_ExpiredProviderToken",
    );
    server.verify().await;
}

/// Sends one APNs notification to a server that responds with `response`.
async fn apns_failure(response: ResponseTemplate, name: &str) -> DeliveryError {
    let server = MockServer::start().await;
    mount_apns(&server, response, 1, name).await;

    let error = apns_channel(&server, ManualClock::new())
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap_err();

    server.verify().await;
    error
}

#[tokio::test]
async fn apns_unregistered_is_recipient_gone() {
    let response = ResponseTemplate::new(410).set_body_json(json!({
        "reason": "Unregistered",
        "timestamp": 1_700_000_000_000_u64,
    }));

    let error = apns_failure(response, "APNs answering Unregistered").await;

    assert_permanent(&error, FailureKind::RecipientGone, "apns_Unregistered");
    assert!(!error.message().contains(APNS_DEVICE), "{error}");
}

#[tokio::test]
async fn apns_bad_device_token_is_recipient_gone() {
    let error = apns_failure(
        apns_error(400, "BadDeviceToken"),
        "APNs answering BadDeviceToken",
    )
    .await;

    assert_permanent(&error, FailureKind::RecipientGone, "apns_BadDeviceToken");
}

#[tokio::test]
async fn apns_payload_too_large_is_not_recipient_gone() {
    // Apple documents 413 for this reason; a 400 is classified the same way.
    for status in [413, 400] {
        let error = apns_failure(
            apns_error(status, "PayloadTooLarge"),
            "APNs answering PayloadTooLarge",
        )
        .await;

        assert_permanent(&error, FailureKind::InvalidContent, "apns_PayloadTooLarge");
    }
}

#[tokio::test]
async fn apns_too_many_requests_keeps_retry_after() {
    let response = apns_error(429, "TooManyRequests").insert_header("Retry-After", "30");

    let error = apns_failure(response, "APNs answering TooManyRequests").await;

    assert_transient(&error, FailureKind::RateLimited, "apns_TooManyRequests");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn apns_server_errors_are_transient() {
    let cases = [
        (
            apns_error(500, "InternalServerError"),
            "apns_InternalServerError",
            None,
        ),
        (
            apns_error(503, "ServiceUnavailable").insert_header("Retry-After", "60"),
            "apns_ServiceUnavailable",
            Some(Duration::from_secs(60)),
        ),
    ];

    for (response, code, retry_after) in cases {
        let error = apns_failure(response, &format!("APNs answering {code}")).await;

        assert_transient(&error, FailureKind::Unavailable, code);
        assert_eq!(error.retry_after(), retry_after, "{code}");
    }
}

#[tokio::test]
async fn apns_oversized_payload_is_rejected_locally() {
    let server = MockServer::start().await;
    mount_apns(&server, apns_accepted(), 0, "APNs, never reached").await;
    let mut oversized = notification(PushPlatform::Apns);
    oversized.content = Content::Push {
        title: "Render ready".to_owned(),
        body: "x".repeat(5000),
    };

    let error = apns_channel(&server, ManualClock::new())
        .send(&oversized)
        .await
        .unwrap_err();

    assert_permanent(&error, FailureKind::InvalidContent, "payload_too_large");
    server.verify().await;
}

#[tokio::test]
async fn apns_non_hex_device_token_is_invalid_recipient() {
    let server = MockServer::start().await;
    mount_apns(&server, apns_accepted(), 0, "APNs, never reached").await;
    let mut odd = notification(PushPlatform::Apns);
    odd.recipient = Recipient::Push {
        device_token: "../../admin?x=1".to_owned(),
        platform: PushPlatform::Apns,
    };

    let error = apns_channel(&server, ManualClock::new())
        .send(&odd)
        .await
        .unwrap_err();

    assert_permanent(
        &error,
        FailureKind::InvalidRecipient,
        "invalid_device_token",
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
    server.verify().await;
}

#[tokio::test]
async fn apns_collapse_id_comes_from_config() {
    let cases = [
        (Some("render-status"), false, Some("render-status")),
        (None, true, Some("render_completed")),
    ];

    for (fixed, from_template, expected) in cases {
        let server = MockServer::start().await;
        mount_apns(&server, apns_accepted(), 1, "APNs accepting").await;
        let config = ApnsConfig {
            collapse_id: fixed.map(str::to_owned),
            collapse_id_from_template: from_template,
            priority: 5,
            ..apns_config(&server)
        };
        let channel = build_channel(
            &push_config(None, Some(config)),
            &server,
            Arc::new(SystemClock),
        );

        channel
            .send(&notification(PushPlatform::Apns))
            .await
            .unwrap();

        let requests = requests_to(&server, APNS_DEVICE_PATH).await;
        let collapse_id = requests[0]
            .headers
            .get("apns-collapse-id")
            .map(|value| value.to_str().unwrap());
        assert_eq!(collapse_id, expected);
        assert_eq!(header_text(&requests[0], "apns-priority"), "5");
        server.verify().await;
    }
}

// ---------------------------------------------------------------- routing and secrecy

#[tokio::test]
async fn unconfigured_platform_is_configuration_error() {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, ACCESS_TOKEN, 0).await;
    let fcm_only = fcm_channel(&server);
    let apns_only = apns_channel(&server, Arc::new(SystemClock));

    let to_apns = fcm_only
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap_err();
    let to_fcm = apns_only
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap_err();

    assert_permanent(
        &to_apns,
        FailureKind::Configuration,
        "platform_not_configured",
    );
    assert!(
        to_apns.message().contains("channels.push.apns"),
        "{to_apns}"
    );
    assert_permanent(
        &to_fcm,
        FailureKind::Configuration,
        "platform_not_configured",
    );
    assert!(to_fcm.message().contains("channels.push.fcm"), "{to_fcm}");
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
    server.verify().await;
}

#[tokio::test]
async fn one_channel_routes_both_platforms() {
    let server = MockServer::start().await;
    mount_token_endpoint(&server, ACCESS_TOKEN, 1).await;
    mount_fcm(&server, ACCESS_TOKEN, fcm_accepted(), 1, "FCM accepting").await;
    mount_apns(&server, apns_accepted(), 1, "APNs accepting").await;
    let config = push_config(Some(fcm_config(&server)), Some(apns_config(&server)));
    let channel = build_channel(&config, &server, Arc::new(SystemClock));

    let fcm = channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap();
    let apns = channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap();

    assert_eq!(channel.kind(), ChannelKind::Push);
    assert_eq!(fcm.provider, "fcm");
    assert_eq!(apns.provider, "apns");
    server.verify().await;
}

#[tokio::test]
async fn errors_show_no_key_material_or_tokens() {
    let server = MockServer::start().await;
    mount_two_tokens(&server).await;
    let unauthenticated = || {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            json!([]),
        )
    };
    mount_fcm(
        &server,
        ACCESS_TOKEN,
        unauthenticated(),
        1,
        "FCM rejecting the first token",
    )
    .await;
    mount_fcm(
        &server,
        SECOND_ACCESS_TOKEN,
        unauthenticated(),
        1,
        "FCM rejecting the second token",
    )
    .await;
    mount_apns(
        &server,
        apns_error(403, "ExpiredProviderToken"),
        2,
        "APNs rejecting every provider token",
    )
    .await;
    let config = push_config(Some(fcm_config(&server)), Some(apns_config(&server)));
    let channel = build_channel(&config, &server, ManualClock::new());

    let fcm_error = channel
        .send(&notification(PushPlatform::Fcm))
        .await
        .unwrap_err();
    let apns_error = channel
        .send(&notification(PushPlatform::Apns))
        .await
        .unwrap_err();
    let channel_debug = format!("{channel:?}");

    let provider_tokens: Vec<String> = requests_to(&server, APNS_DEVICE_PATH)
        .await
        .iter()
        .map(|request| verify_provider_token(request).0)
        .collect();
    let mut secrets: Vec<String> = private_key_lines();
    secrets.extend([ACCESS_TOKEN.to_owned(), SECOND_ACCESS_TOKEN.to_owned()]);
    secrets.extend(provider_tokens);
    let device_tokens = [FCM_DEVICE, APNS_DEVICE];

    for displayed in [
        displayed_text(&fcm_error),
        displayed_text(&apns_error),
        channel_debug,
    ] {
        for secret in secrets.iter().map(String::as_str).chain(device_tokens) {
            assert!(
                !displayed.contains(secret),
                "displayed text contains a secret: {displayed}"
            );
        }
    }
    server.verify().await;
}

// ---------------------------------------------------------------- configuration

fn setup_error(config: &PushConfig, env: &[(&str, &str)]) -> PushError {
    let read_env = |name: &str| {
        env.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| (*value).to_owned())
            .ok_or(VarError::NotPresent)
    };
    PushChannel::with_env(config, read_env).unwrap_err()
}

#[tokio::test]
async fn invalid_configuration_names_key() {
    let server = MockServer::start().await;
    let missing_file = FcmConfig {
        service_account_file: Some(fixture("no-such-key.json")),
        service_account_json_env: None,
        ..fcm_config(&server)
    };
    let both_key_sources = ApnsConfig {
        key_env: Some("APNS_KEY".to_owned()),
        ..apns_config(&server)
    };
    let bad_priority = ApnsConfig {
        priority: 7,
        ..apns_config(&server)
    };
    let bad_project = FcmConfig {
        project_id: "Not/A/Project".to_owned(),
        ..fcm_config(&server)
    };
    let cases: [(PushConfig, &str); 6] = [
        (push_config(None, None), "configures no provider"),
        (
            PushConfig {
                timeout_secs: 0,
                ..push_config(None, Some(apns_config(&server)))
            },
            "channels.push.timeout_secs",
        ),
        (
            push_config(Some(missing_file), None),
            "channels.push.fcm.service_account_file",
        ),
        (
            push_config(None, Some(both_key_sources)),
            "channels.push.apns.key_file",
        ),
        (
            push_config(None, Some(bad_priority)),
            "channels.push.apns.priority",
        ),
        (
            push_config(Some(bad_project), None),
            "channels.push.fcm.project_id",
        ),
    ];

    for (config, expected) in cases {
        let error = setup_error(&config, &[]).to_string();

        assert!(
            error.contains(expected),
            "expected `{expected}` in: {error}"
        );
    }
}

#[tokio::test]
async fn unset_key_variable_is_named() {
    let server = MockServer::start().await;
    let config = push_config(Some(fcm_config(&server)), None);

    let error = setup_error(&config, &[]);

    assert!(matches!(error, PushError::MissingKeyEnv { .. }), "{error}");
    assert!(error.to_string().contains(SERVICE_ACCOUNT_ENV), "{error}");
    assert!(
        error
            .to_string()
            .contains("channels.push.fcm.service_account_json_env"),
        "{error}"
    );
}

#[tokio::test]
async fn invalid_keys_are_named_without_material() {
    let server = MockServer::start().await;
    // The RSA service-account key where the APNs EC key belongs.
    let account: Value =
        serde_json::from_str(&read_fixture("test-only-fcm-service-account.json")).unwrap();
    let rsa_pem = account["private_key"].as_str().unwrap();
    let apns = ApnsConfig {
        key_file: None,
        key_env: Some("APNS_KEY".to_owned()),
        ..apns_config(&server)
    };

    let apns_error = setup_error(&push_config(None, Some(apns)), &[("APNS_KEY", rsa_pem)]);
    let fcm_error = setup_error(
        &push_config(Some(fcm_config(&server)), None),
        &[(
            SERVICE_ACCOUNT_ENV,
            r#"{"client_email": "a@b.c", "token_uri": "https://x", "private_key": "MIIEsecret"}"#,
        )],
    );

    assert!(
        matches!(apns_error, PushError::InvalidKey { .. }),
        "{apns_error}"
    );
    assert!(
        apns_error
            .to_string()
            .contains("channels.push.apns.key_env"),
        "{apns_error}"
    );
    assert!(
        apns_error.to_string().contains("`APNS_KEY`"),
        "{apns_error}"
    );
    assert!(
        fcm_error.to_string().contains("`private_key`"),
        "{fcm_error}"
    );
    for displayed in [
        format!("{apns_error} {apns_error:?}"),
        format!("{fcm_error} {fcm_error:?}"),
    ] {
        assert!(!displayed.contains("MIIEsecret"), "{displayed}");
        for line in private_key_lines() {
            assert!(!displayed.contains(&line), "{displayed}");
        }
    }
}

// ---------------------------------------------------------------- conformance kit

const CONFORMANCE_ACCESS_TOKEN: &str = "ya29.conformance-access-token";

/// A fresh stand-in server per scenario, answering every request as the
/// scenario says. The token endpoint always succeeds.
struct PushHarness {
    platform: PushPlatform,
}

impl PushHarness {
    fn fcm_response(scenario: Scenario) -> ResponseTemplate {
        match scenario {
            Scenario::Accept => fcm_accepted(),
            Scenario::Unavailable => google_error(
                503,
                "UNAVAILABLE",
                "try later",
                json!([fcm_error_detail("UNAVAILABLE")]),
            ),
            Scenario::RateLimited(wait) => google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "quota",
                json!([fcm_error_detail("QUOTA_EXCEEDED")]),
            )
            .insert_header("Retry-After", wait.as_secs().to_string()),
            Scenario::Rejected => google_error(
                400,
                "INVALID_ARGUMENT",
                "Invalid value",
                json!([fcm_error_detail("INVALID_ARGUMENT")]),
            ),
            Scenario::Malformed => {
                ResponseTemplate::new(200).set_body_raw(vec![0xff, 0x00, 0x7b], "application/json")
            }
        }
    }

    fn apns_response(scenario: Scenario) -> ResponseTemplate {
        match scenario {
            Scenario::Accept => apns_accepted(),
            Scenario::Unavailable => apns_error(503, "ServiceUnavailable"),
            Scenario::RateLimited(wait) => apns_error(429, "TooManyRequests")
                .insert_header("Retry-After", wait.as_secs().to_string()),
            Scenario::Rejected => apns_error(400, "BadDeviceToken"),
            Scenario::Malformed => {
                ResponseTemplate::new(500).set_body_raw(vec![0xff, 0x00, 0x7b], "application/json")
            }
        }
    }
}

#[async_trait]
impl ConformanceHarness for PushHarness {
    async fn setup(&self, scenario: Scenario) -> Setup {
        let server = MockServer::start().await;
        let config = match self.platform {
            PushPlatform::Fcm => {
                Mock::given(method("POST"))
                    .and(path(TOKEN_PATH))
                    .respond_with(token_response(CONFORMANCE_ACCESS_TOKEN))
                    .named("token endpoint, asked once per channel")
                    .expect(1)
                    .mount(&server)
                    .await;
                Mock::given(method("POST"))
                    .and(path(SEND_PATH))
                    .respond_with(PushHarness::fcm_response(scenario))
                    .named(format!("FCM answering {scenario:?}"))
                    .expect(1..)
                    .mount(&server)
                    .await;
                push_config(Some(fcm_config(&server)), None)
            }
            PushPlatform::Apns => {
                Mock::given(method("POST"))
                    .and(path(APNS_DEVICE_PATH))
                    .respond_with(PushHarness::apns_response(scenario))
                    .named(format!("APNs answering {scenario:?}"))
                    .expect(1..)
                    .mount(&server)
                    .await;
                push_config(None, Some(apns_config(&server)))
            }
        };
        let channel = build_channel(&config, &server, Arc::new(SystemClock));
        Setup {
            channel: Arc::new(channel),
            guard: Box::new(server),
        }
    }

    fn notification(&self) -> Notification {
        notification(self.platform)
    }

    fn secrets(&self) -> Vec<String> {
        let mut secrets = private_key_lines();
        secrets.push(CONFORMANCE_ACCESS_TOKEN.to_owned());
        secrets
    }
}

#[tokio::test]
async fn push_passes_conformance_kit() {
    conformance::run(&PushHarness {
        platform: PushPlatform::Fcm,
    })
    .await;
    conformance::run(&PushHarness {
        platform: PushPlatform::Apns,
    })
    .await;
}
