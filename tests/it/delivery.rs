//! Messages on each channel reach the receiver once each, with one delivered
//! event per message.

use std::collections::HashSet;
use std::time::Duration;

use notify_testkit::smtp::SmtpServer;
use wiremock::matchers::{header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

const MESSAGES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_messages_are_each_delivered_once() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header_exists("webhook-signature"))
        .respond_with(ResponseTemplate::new(200))
        .expect(MESSAGES as u64)
        .named("webhook receiver")
        .mount(&receiver)
        .await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let url = format!("{}/hook", receiver.uri());
    let mut sent = HashSet::new();
    for _ in 0..MESSAGES {
        let message = DispatchMessage::render_completed_webhook(&url);
        sent.insert(message.notification_id.to_string());
        broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    }

    let delivered = broker.events_of_type("notification.delivered.v1", MESSAGES).await;
    let fired = broker.events_of_type("tenant.webhook.fired.v1", MESSAGES).await;
    let delivered_ids: HashSet<String> =
        delivered.iter().map(|e| e.body["data"]["notification_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(delivered_ids, sent, "one delivered event per message");
    assert_eq!(fired.len(), MESSAGES);
    assert!(broker.events_within(Duration::from_millis(500)).await.is_empty(), "no extra events");
    assert_eq!(receiver.received_requests().await.unwrap().len(), MESSAGES);
    assert!(service_running(&service));

    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_messages_are_each_delivered_once() {
    let broker = TestBroker::new().await;
    let smtp = SmtpServer::start("127.0.0.1:0").await.unwrap();
    let service = ServiceProcess::start(&broker, ServiceSettings::email(smtp.addr().port()), &["email"]).await;

    let mut sent = HashSet::new();
    for n in 0..MESSAGES {
        let message = DispatchMessage::render_completed_email(&format!("user{n}@example.com"));
        sent.insert(message.notification_id.to_string());
        broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    }

    let delivered = broker.events_of_type("notification.delivered.v1", MESSAGES).await;
    let delivered_ids: HashSet<String> =
        delivered.iter().map(|e| e.body["data"]["notification_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(delivered_ids, sent);
    let mails = smtp.wait_for(MESSAGES, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), MESSAGES);
    let recipients: HashSet<String> = mails.iter().flat_map(|mail| mail.rcpt_to.clone()).collect();
    assert_eq!(recipients.len(), MESSAGES, "each mail to its own recipient");
    let first = String::from_utf8_lossy(&mails[0].data).into_owned();
    assert!(first.contains("Intro"), "rendered template reaches the mailbox:\n{first}");

    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_event_follows_the_contract() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).expect(1).mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let event = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    let body = &event.body;
    assert_eq!(body["event_type"], "notification.delivered.v1");
    assert_eq!(body["tenant_id"], message.envelope["tenant_id"]);
    assert_eq!(body["user_id"], message.envelope["user_id"]);
    assert_eq!(body["trace_id"], message.envelope["trace_id"]);
    assert_eq!(body["correlation_id"], message.envelope["correlation_id"]);
    assert_ne!(body["event_id"], message.envelope["event_id"]);
    assert_eq!(body["producer"], "notification-service");
    assert_eq!(body["data"]["channel"], "webhook");
    assert_eq!(body["data"]["template"], "render_completed");
    assert_eq!(body["data"]["attempts"], 1);
    assert_eq!(event.header("x-event-type").as_deref(), Some("notification.delivered.v1"));
    assert_eq!(event.header("x-tenant-id"), Some(message.tenant_id.to_string()));
    assert_eq!(event.header("x-trace-id"), Some(message.trace_id.to_string()));
    assert_eq!(event.properties.delivery_mode(), &Some(2));
    assert_eq!(event.properties.content_type().as_ref().map(|c| c.to_string()).as_deref(), Some("application/json"));

    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_message_is_not_sent_twice() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(1).named("receiver").mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    broker.events_of_type("notification.delivered.v1", 1).await;
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let extra = broker.events_within(Duration::from_secs(1)).await;
    assert!(
        extra.iter().all(|event| event.routing_key != "notification.delivered.v1"),
        "a repeated notification id gives no second delivered event"
    );
    receiver.verify().await;
    service.shutdown(&broker).await;
}

fn service_running(service: &ServiceProcess) -> bool {
    // `is_running` needs `&mut`; the log shows a panic otherwise.
    !service.log().contains("panicked")
}
