//! The fan-out stage inside the real binary: domain events on the events
//! exchange become dispatch messages, which the dispatcher of the same
//! process delivers.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::BasicProperties;
use notify_testkit::smtp::SmtpServer;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::utils::broker::PATIENCE;
use crate::utils::messages::long_string;
use crate::utils::service::free_port;
use crate::utils::{ServiceProcess, ServiceSettings, TestBroker};

/// A started service with the email channel and the fan-out stage.
struct FanoutService {
    service: ServiceProcess,
    database: std::path::PathBuf,
    api_port: u16,
    queue: String,
}

impl FanoutService {
    async fn start(broker: &TestBroker, smtp: &SmtpServer) -> FanoutService {
        FanoutService::start_with_token(broker, smtp, None).await
    }

    /// Starts the service with `fanout.api_token` set to `api_token`, if any.
    async fn start_with_token(broker: &TestBroker, smtp: &SmtpServer, api_token: Option<&str>) -> FanoutService {
        let database = std::env::temp_dir().join(format!("{}-contacts.db", broker.id));
        let api_port = free_port();
        let mut settings = ServiceSettings::email(smtp.addr().port()).with_fanout(&database, api_port);
        if let Some(token) = api_token {
            settings.fanout_toml.push_str(&format!("api_token = \"{token}\"\n"));
        }
        let service = ServiceProcess::start(broker, settings, &["email"]).await;
        let queue = format!("{}notify.fanout.events", broker.queue_prefix());
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while broker.consumer_count(&queue).await.unwrap_or(0) == 0 {
            assert!(tokio::time::Instant::now() < deadline, "the fan-out stage does not consume {queue}:\n{}", service.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        FanoutService { service, database, api_port, queue }
    }

    fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api_port)
    }

    /// Stops the service first, so that it cannot declare its queue again,
    /// then deletes the queues and exchanges of the test.
    async fn shutdown(mut self, broker: &TestBroker, extra_queues: &[String]) {
        self.service.kill();
        for queue in std::iter::once(&self.queue).chain(extra_queues) {
            broker.delete_queue(queue).await;
        }
        self.service.shutdown(broker).await;
        let _ = std::fs::remove_file(&self.database);
    }
}

/// Publishes a domain event on the test's events exchange, as the
/// identity or render service would.
async fn publish_event(broker: &TestBroker, event_type: &str, tenant_id: Uuid, user_id: Uuid, data: Value) -> Value {
    let trace_id = Uuid::new_v4().to_string();
    let event = json!({
        "event_id": Uuid::new_v4(),
        "event_type": event_type,
        "event_time": chrono::Utc::now().to_rfc3339(),
        "tenant_id": tenant_id,
        "user_id": user_id,
        "trace_id": trace_id,
        "correlation_id": Uuid::new_v4(),
        "producer": "integration-test",
        "data": data,
    });

    let mut headers = FieldTable::default();
    headers.insert(ShortString::from("x-event-type"), long_string(event_type));
    headers.insert(ShortString::from("x-tenant-id"), long_string(&tenant_id.to_string()));
    headers.insert(ShortString::from("x-trace-id"), long_string(&trace_id));
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_delivery_mode(2)
        .with_headers(headers);

    let channel = broker.connection.create_channel().await.unwrap();
    let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let confirm = channel
        .basic_publish(broker.events_exchange().as_str().into(), event_type.into(), options, &serde_json::to_vec(&event).unwrap(), properties)
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.take_message().is_none(), "{event_type} was unroutable; is the fan-out queue bound?");
    let _ = channel.close(200, "".into()).await;
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_welcome_email_reaches_smtp() {
    let broker = TestBroker::new().await;
    let smtp = SmtpServer::start("127.0.0.1:0").await.unwrap();
    let service = FanoutService::start(&broker, &smtp).await;

    let (tenant_id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
    let data = json!({"email": "ada@example.com", "name": "Ada", "locale": "de"});
    publish_event(&broker, "identity.user.registered.v1", tenant_id, user_id, data).await;

    let created = broker.events_of_type("notification.created.v1", 1).await.remove(0);
    assert_eq!(created.body["data"]["template"], "welcome");
    assert_eq!(created.body["data"]["channel"], "email");
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["notification_id"], created.body["data"]["notification_id"]);

    let mail = smtp.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(mail.rcpt_to, ["ada@example.com"]);
    let raw = String::from_utf8_lossy(&mail.data).into_owned();
    assert!(raw.contains("Willkommen bei FlatRender"), "the German welcome template:\n{raw}");
    service.shutdown(&broker, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_completed_reaches_email_and_two_devices() {
    let broker = TestBroker::new().await;
    let smtp = SmtpServer::start("127.0.0.1:0").await.unwrap();
    let service = FanoutService::start(&broker, &smtp).await;
    // This service runs no push channel, so a queue of the test's own
    // receives the push dispatch messages.
    let push_queue = broker.channel_queue("push");
    let channel = broker.connection.create_channel().await.unwrap();
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(push_queue.as_str().into(), durable, FieldTable::default()).await.unwrap();
    channel
        .queue_bind(
            push_queue.as_str().into(),
            broker.notify_exchange().as_str().into(),
            "notify.channel.push".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let (tenant_id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
    let client = reqwest::Client::new();
    let contact = service.api_url(&format!("/v1/tenants/{tenant_id}/users/{user_id}"));
    let response = client.patch(&contact).json(&json!({"email": "ada@example.com"})).send().await.unwrap();
    assert_eq!(response.status(), 204);
    for token in ["token-phone-1", "token-tablet-2"] {
        let response = client
            .post(format!("{contact}/devices"))
            .json(&json!({"token": token, "platform": "fcm"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    let data = json!({"project_name": "Riverside Loft", "download_url": "https://app.example.com/r/1"});
    publish_event(&broker, "render.job.completed.v1", tenant_id, user_id, data).await;

    let created = broker.events_of_type("notification.created.v1", 3).await;
    let channels: Vec<&str> = created.iter().map(|event| event.body["data"]["channel"].as_str().unwrap()).collect();
    assert_eq!(channels.iter().filter(|channel| **channel == "email").count(), 1, "{channels:?}");
    assert_eq!(channels.iter().filter(|channel| **channel == "push").count(), 2, "{channels:?}");
    broker.wait_for_message_count(&push_queue, 2).await;
    let mail = smtp.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(mail.rcpt_to, ["ada@example.com"]);
    service.shutdown(&broker, &[push_queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_api_request_is_logged() {
    let broker = TestBroker::new().await;
    let smtp = SmtpServer::start("127.0.0.1:0").await.unwrap();
    let service = FanoutService::start_with_token(&broker, &smtp, Some("t0ken-for-tests")).await;
    let (tenant_id, user_id) = (Uuid::new_v4(), Uuid::new_v4());
    let contact = service.api_url(&format!("/v1/tenants/{tenant_id}/users/{user_id}"));
    let client = reqwest::Client::new();

    let missing = client.get(&contact).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    // Rejections are logged at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let wrong = client.get(&contact).bearer_auth("not-the-token").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let accepted = client.get(&contact).bearer_auth("t0ken-for-tests").send().await.unwrap();
    assert_ne!(accepted.status(), 401);

    let log = service.service.log();
    let rejections: Vec<&str> = log.lines().filter(|line| line.contains("contacts API request rejected")).collect();
    assert_eq!(rejections.len(), 2, "one line per rejected request:\n{log}");
    assert!(rejections[0].contains("no Authorization header"), "{}", rejections[0]);
    assert!(rejections[1].contains("wrong token"), "{}", rejections[1]);
    for line in &rejections {
        assert!(line.contains("/v1/tenants/{tenant}/users/{user}"), "the route's pattern: {line}");
        assert!(!line.contains(&tenant_id.to_string()), "no tenant id in the log: {line}");
        assert!(!line.contains(&user_id.to_string()), "no user id in the log: {line}");
        assert!(!line.contains("not-the-token"), "no presented token in the log: {line}");
    }
    service.shutdown(&broker, &[]).await;
}
