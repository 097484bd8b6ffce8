//! Transient failures retry through the delay queues; permanent failures and
//! exhausted retries end in the dead letter queue with a failed event.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_failing_twice_gets_one_delivery_after_two_retries() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .named("two failures")
        .mount(&receiver)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(1).named("then success").mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let delivered = broker.events_of_type("notification.delivered.v1", 1).await;
    assert_eq!(delivered[0].body["data"]["attempts"], 3);
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].body, requests[2].body, "every retry sends the same bytes");
    assert!(broker.dead_letters_within(Duration::from_millis(300)).await.is_empty());
    receiver.verify().await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_always_failing_ends_in_dead_letter_queue() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).expect(4).named("always down").mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let dead = broker.dead_letters(1).await.remove(0);
    assert_eq!(dead.header("x-original-routing-key").as_deref(), Some("notify.channel.webhook"));
    assert_eq!(dead.header("x-failure-kind").as_deref(), Some("retries_exhausted"));
    assert_eq!(dead.header("x-retry-count").as_deref(), Some("3"));
    assert_eq!(dead.header("x-failure-code").as_deref(), Some("http_503"));
    // Each retry drops the broker's x-death entries, so only the last hop
    // through a delay queue is recorded however many retries there were.
    let deaths = match dead.properties.headers().as_ref().and_then(|h| h.inner().get("x-death").cloned()) {
        Some(lapin::types::AMQPValue::FieldArray(entries)) => entries.as_slice().len(),
        Some(other) => panic!("unexpected x-death header {other:?}"),
        None => 0,
    };
    assert!(deaths <= 1, "x-death must not pile up across retries, found {deaths} entries");
    assert_eq!(dead.raw, message.body(), "the dead letter carries the original body");

    let failed = broker.events_of_type("notification.failed.v1", 1).await.remove(0);
    assert_eq!(failed.body["data"]["notification_id"], message.notification_id.to_string());
    assert_eq!(failed.body["data"]["error"]["kind"], "retries_exhausted");
    assert_eq!(failed.body["data"]["attempts"], 4);
    broker.events_of_type("tenant.webhook.failed.v1", 1).await;
    receiver.verify().await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_endpoint_fails_after_one_attempt() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(410)).expect(1).named("gone").mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let dead = broker.dead_letters(1).await.remove(0);
    assert_eq!(dead.header("x-failure-kind").as_deref(), Some("recipient_gone"));
    assert!(dead.header("x-retry-count").is_none(), "dead-lettered on its first delivery");
    let failed = broker.events_of_type("notification.failed.v1", 1).await.remove(0);
    assert_eq!(failed.body["data"]["error"]["kind"], "recipient_gone");
    receiver.verify().await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_delivery_waits_at_least_retry_after() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "30"))
        .expect(1)
        .named("rate limited")
        .mount(&receiver)
        .await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    // The retry waits in the 30 s tier queue; take it out to inspect it.
    let tier_queue = format!("{}.retry.30s", broker.channel_queue("webhook"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        if let Some(waiting) = broker.get_from(&tier_queue).await {
            break waiting;
        }
        assert!(tokio::time::Instant::now() < deadline, "no retry appeared in {tier_queue}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expiration: u64 = waiting.properties.expiration().as_ref().unwrap().as_str().parse().unwrap();
    assert!(expiration >= 30_000, "retry must wait at least Retry-After, got {expiration} ms");
    assert_eq!(waiting.header("x-retry-count").as_deref(), Some("1"));
    assert_eq!(waiting.header("x-failure-kind").as_deref(), Some("rate_limited"));
    receiver.verify().await;
    service.shutdown(&broker).await;
}
