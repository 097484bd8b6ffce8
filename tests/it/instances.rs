//! Several instances on the same queues, sharing delivery records in Redis.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::service::free_port;
use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_send_a_repeated_notification_once() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
        .mount(&receiver)
        .await;
    let mut settings = ServiceSettings::webhook();
    settings.idempotency_toml =
        format!("[idempotency]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{}:delivery:\"\n", broker.id);
    let first = ServiceProcess::start(&broker, settings.clone(), &["webhook"]).await;
    settings.admin_port = free_port();
    let second = ServiceProcess::start(&broker, settings, &["webhook"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while broker.consumer_count(&broker.channel_queue("webhook")).await != Some(2) {
        assert!(tokio::time::Instant::now() < deadline, "the second instance never consumed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The same notification, as a producer retrying its publish would send it.
    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    for _ in 0..6 {
        broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    }

    broker.events_of_type("notification.delivered.v1", 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while broker.message_count(&broker.channel_queue("webhook")).await != Some(0)
        || broker.message_count(&format!("{}.retry.100ms", broker.channel_queue("webhook"))).await != Some(0)
    {
        assert!(tokio::time::Instant::now() < deadline, "copies were never settled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let extra = broker.events_within(Duration::from_secs(1)).await;
    assert!(extra.iter().all(|event| event.routing_key != "notification.delivered.v1"), "one delivered event");
    assert_eq!(receiver.received_requests().await.unwrap().len(), 1, "one send for six copies on two instances");
    assert!(broker.dead_letters_within(Duration::from_millis(100)).await.is_empty());

    first.shutdown(&broker).await;
    drop(second);
}
