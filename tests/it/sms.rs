//! SMS through the whole pipeline, with wiremock standing in for Twilio.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::service::TWILIO_SID;
use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

fn sms(template: &str, variables: serde_json::Value) -> DispatchMessage {
    DispatchMessage::new("sms", template, json!({"phone": "+15550100"}), variables)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_delivered_event_reports_segments() {
    let broker = TestBroker::new().await;
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{TWILIO_SID}/Messages.json")))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"sid": "SM0001", "status": "queued"})))
        .expect(1)
        .named("twilio messages")
        .mount(&twilio)
        .await;
    let service = ServiceProcess::start(&broker, ServiceSettings::sms(&twilio.uri()), &["sms"]).await;

    let message = sms("render_completed", json!({"project_name": "Intro", "download_url": "https://example.com/r/1"}));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["provider_message_id"], "SM0001");
    assert_eq!(delivered.body["data"]["segments"], 1);
    assert_eq!(delivered.body["data"]["encoding"], "gsm7");
    twilio.verify().await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_number_from_twilio_is_dead_lettered() {
    let broker = TestBroker::new().await;
    let twilio = MockServer::start().await;
    let answer = json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400});
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400).set_body_json(answer)).expect(1).mount(&twilio).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::sms(&twilio.uri()), &["sms"]).await;

    let message = sms("render_completed", json!({"project_name": "Intro", "download_url": "https://example.com/r/1"}));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let dead = broker.dead_letters(1).await.remove(0);
    assert_eq!(dead.header("x-failure-code").as_deref(), Some("twilio_21211"));
    assert!(!dead.header("x-failure-reason").unwrap().contains("+15550100"), "the number is masked");
    twilio.verify().await;
    service.shutdown(&broker).await;
}
