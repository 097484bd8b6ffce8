//! SMS, Telegram and push through the whole pipeline: for each, a success, a
//! permanent failure and a transient one, with wiremock standing in for the
//! provider's HTTP API.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::service::{FCM_PROJECT, TELEGRAM_TOKEN};
use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

fn variables() -> serde_json::Value {
    json!({"project_name": "Intro", "download_url": "https://example.com/r/1"})
}

fn telegram_message() -> DispatchMessage {
    DispatchMessage::new("telegram", "render_completed", json!({"chat_id": 100000001}), variables())
}

fn push_message() -> DispatchMessage {
    DispatchMessage::new("push", "render_completed", json!({"device_token": "fcm-device-token-0001", "platform": "fcm"}), variables())
}

fn telegram_sent() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "ok": true,
        "result": {"message_id": 77, "date": 1_700_000_000, "chat": {"id": 100000001, "type": "private", "first_name": "Ada"}, "text": "x"}
    }))
}

fn telegram_error(status: u16, description: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"ok": false, "error_code": status, "description": description}))
}

async fn mount_fcm_token(fcm: &MockServer) {
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "ya29.test", "expires_in": 3599, "token_type": "Bearer"})))
        .mount(fcm)
        .await;
}

fn fcm_send_path() -> String {
    format!("/v1/projects/{FCM_PROJECT}/messages:send")
}

async fn publish(broker: &TestBroker, message: &DispatchMessage) {
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_delivers_retries_and_dead_letters() {
    let broker = TestBroker::new().await;
    let api = MockServer::start().await;
    let send_path = format!("/bot{TELEGRAM_TOKEN}/sendMessage");
    let service = ServiceProcess::start(&broker, ServiceSettings::telegram(&api.uri()), &["telegram"]).await;

    // Success.
    Mock::given(method("POST")).and(path(&send_path)).respond_with(telegram_sent()).up_to_n_times(1).mount(&api).await;
    publish(&broker, &telegram_message()).await;
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["provider"], "telegram");

    // Transient: a 502, then success on the retry.
    api.reset().await;
    Mock::given(method("POST")).and(path(&send_path)).respond_with(telegram_error(502, "Bad Gateway")).up_to_n_times(1).mount(&api).await;
    Mock::given(method("POST")).and(path(&send_path)).respond_with(telegram_sent()).mount(&api).await;
    publish(&broker, &telegram_message()).await;
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["attempts"], 2);

    // Permanent: the user blocked the bot.
    api.reset().await;
    let blocked = telegram_error(403, "Forbidden: bot was blocked by the user");
    Mock::given(method("POST")).and(path(&send_path)).respond_with(blocked).expect(1).mount(&api).await;
    publish(&broker, &telegram_message()).await;
    let dead = broker.dead_letters(1).await.remove(0);
    assert_eq!(dead.header("x-failure-kind").as_deref(), Some("recipient_gone"));
    assert!(!dead.header("x-failure-reason").unwrap_or_default().contains(TELEGRAM_TOKEN), "no token in dead letters");
    let failed = broker.events_of_type("notification.failed.v1", 1).await.remove(0);
    assert_eq!(failed.body["data"]["error"]["kind"], "recipient_gone");
    assert!(!service.log().contains(TELEGRAM_TOKEN), "no token in logs");
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delivers_retries_and_marks_dead_tokens() {
    let broker = TestBroker::new().await;
    let fcm = MockServer::start().await;
    mount_fcm_token(&fcm).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::fcm(&fcm.uri()), &["push"]).await;
    let accepted = ResponseTemplate::new(200).set_body_json(json!({"name": format!("projects/{FCM_PROJECT}/messages/1")}));

    // Success.
    Mock::given(method("POST")).and(path(fcm_send_path())).respond_with(accepted.clone()).up_to_n_times(1).mount(&fcm).await;
    publish(&broker, &push_message()).await;
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["provider_message_id"], format!("projects/{FCM_PROJECT}/messages/1"));

    // Transient: UNAVAILABLE, then success on the retry.
    let unavailable = ResponseTemplate::new(503)
        .set_body_json(json!({"error": {"code": 503, "status": "UNAVAILABLE", "message": "try later"}}));
    Mock::given(method("POST")).and(path(fcm_send_path())).respond_with(unavailable).up_to_n_times(1).mount(&fcm).await;
    Mock::given(method("POST")).and(path(fcm_send_path())).respond_with(accepted).up_to_n_times(1).mount(&fcm).await;
    publish(&broker, &push_message()).await;
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["attempts"], 2);

    // Permanent: the token is dead, and the failed event says so.
    let unregistered = ResponseTemplate::new(404).set_body_json(json!({"error": {
        "code": 404, "status": "NOT_FOUND", "message": "Requested entity was not found.",
        "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"}]
    }}));
    Mock::given(method("POST")).and(path(fcm_send_path())).respond_with(unregistered).up_to_n_times(1).mount(&fcm).await;
    publish(&broker, &push_message()).await;
    let dead = broker.dead_letters(1).await.remove(0);
    assert_eq!(dead.header("x-failure-code").as_deref(), Some("fcm_UNREGISTERED"));
    let failed = broker.events_of_type("notification.failed.v1", 1).await.remove(0);
    assert_eq!(failed.body["data"]["error"]["kind"], "recipient_gone");
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_transient_failure_is_retried() {
    let broker = TestBroker::new().await;
    let twilio = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).up_to_n_times(1).mount(&twilio).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SM0002", "status": "queued"})))
        .mount(&twilio)
        .await;
    let service = ServiceProcess::start(&broker, ServiceSettings::sms(&twilio.uri()), &["sms"]).await;

    let message = DispatchMessage::new("sms", "welcome", json!({"phone": "+15550100"}), json!({"user_name": "Ada", "dashboard_url": "https://example.com/d"}));
    publish(&broker, &message).await;
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["attempts"], 2);
    assert_eq!(delivered.body["data"]["provider_message_id"], "SM0002");
    service.shutdown(&broker).await;
}
