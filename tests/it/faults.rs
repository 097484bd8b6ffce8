//! Faults on the real broker: lost connections, a killed process, a stop
//! with deliveries in flight. Each check counts at the receiver against what
//! was published: delivered once, none lost.

use std::time::Duration;

use lapin::types::AMQPValue;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::broker::rabbitmqctl;
use crate::utils::webhooks::{publish_webhooks, requests_per_notification};
use crate::utils::{wait_until, DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

/// Closes every broker connection whose name mentions `queue_prefix`, as an
/// operator's `rabbitmqctl close_connection` or a broker restart would.
fn close_service_connections(queue_prefix: &str) -> usize {
    let listing = rabbitmqctl(&["list_connections", "pid", "client_properties", "-q", "--no-table-headers"]);
    let mut closed = 0;
    for line in listing.lines().filter(|line| line.contains(&format!("queue prefix {queue_prefix}"))) {
        let pid = line.split('\t').next().unwrap();
        rabbitmqctl(&["close_connection", pid, "fault test"]);
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_broker_connections_lose_and_repeat_nothing() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(20)))
        .mount(&receiver)
        .await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;
    let url = format!("{}/hook", receiver.uri());

    let mut sent = publish_webhooks(&broker, &url, 100).await;
    wait_until("some deliveries happened", Duration::from_secs(20), async || {
        receiver.received_requests().await.unwrap().len() >= 10
    })
    .await;
    assert_eq!(close_service_connections(&broker.queue_prefix()), 2, "consume and publish connections");
    sent.extend(publish_webhooks(&broker, &url, 100).await);

    wait_until("every notification reached the receiver", Duration::from_secs(60), async || {
        requests_per_notification(&receiver).await.len() == sent.len()
    })
    .await;
    let counts = requests_per_notification(&receiver).await;
    let repeated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(repeated.is_empty(), "delivered twice: {repeated:?}");
    assert!(service.log().contains("reconnecting"), "the service noticed the loss:\n{}", service.log());

    let delivered = broker.events_of_type("notification.delivered.v1", sent.len()).await;
    assert_eq!(delivered.len(), sent.len());
    service.shutdown(&broker).await;
}

/// Messages in the kill -9 run: 1,000 by default, which CI runs; set
/// `NOTIFY_FAULT_MESSAGES` (20000 for a full run) to try more.
fn fault_run_size() -> usize {
    std::env::var("NOTIFY_FAULT_MESSAGES").ok().and_then(|value| value.parse().ok()).unwrap_or(1_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_service_resumes_with_only_in_flight_repeats() {
    let messages = fault_run_size();
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(5)))
        .mount(&receiver)
        .await;
    let mut settings = ServiceSettings::webhook();
    settings.prefetch = 16;
    settings.concurrency = 8;
    let service = ServiceProcess::start(&broker, settings.clone(), &["webhook"]).await;
    let url = format!("{}/hook", receiver.uri());
    let sent = publish_webhooks(&broker, &url, messages).await;

    wait_until("a third was delivered", Duration::from_secs(600), async || {
        receiver.received_requests().await.unwrap().len() >= messages / 3
    })
    .await;
    let mut killed = service;
    killed.kill();

    let service = ServiceProcess::start(&broker, settings.clone(), &["webhook"]).await;
    wait_until("every notification reached the receiver", Duration::from_secs(1_200), async || {
        requests_per_notification(&receiver).await.len() == sent.len()
    })
    .await;
    let counts = requests_per_notification(&receiver).await;
    let repeats: usize = counts.values().map(|count| count - 1).sum();
    // Only messages sent but not yet recorded when the process died can be
    // sent again, and at most `prefetch` were unacknowledged then.
    assert!(repeats <= usize::from(settings.prefetch), "{repeats} repeats exceed the {} in flight", settings.prefetch);
    service.shutdown(&broker).await;
}

/// Unacknowledged messages of `queue`, as the broker counts them.
fn unacknowledged(queue: &str) -> Option<u32> {
    let listing = rabbitmqctl(&["list_queues", "name", "messages_unacknowledged", "-q", "--no-table-headers"]);
    listing.lines().find_map(|line| {
        let (name, count) = line.split_once('\t')?;
        (name == queue).then(|| count.trim().parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_delivery_holds_back_no_other_ack() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    // The first request to /slow outlasts the test; a redelivery gets 200.
    Mock::given(method("POST"))
        .and(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(300)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let mut settings = ServiceSettings::webhook();
    // Long enough that the slow send neither times out nor turns into a retry.
    settings.channels_toml = settings.channels_toml.replace("timeout_secs = 2", "timeout_secs = 600");
    settings.prefetch = 8;
    settings.concurrency = 8;
    let service = ServiceProcess::start(&broker, settings.clone(), &["webhook"]).await;
    let slow_requests = async || {
        let requests = receiver.received_requests().await.unwrap();
        requests.iter().filter(|request| request.url.path() == "/slow").count()
    };

    let slow = publish_webhooks(&broker, &format!("{}/slow", receiver.uri()), 1).await;
    wait_until("the slow request arrived", Duration::from_secs(20), async || slow_requests().await == 1).await;
    // Five times the prefetch: they only get through if their acks do not
    // wait for the slow message's.
    let fast = publish_webhooks(&broker, &format!("{}/hook", receiver.uri()), 40).await;
    let delivered = broker.events_of_type("notification.delivered.v1", fast.len()).await;
    let slow_id = slow[0].as_str();
    assert!(delivered.iter().all(|event| event.body["data"]["notification_id"] != slow_id), "the slow send finished early");
    let queue = broker.channel_queue("webhook");
    wait_until("only the slow message is unacknowledged", Duration::from_secs(20), async || {
        unacknowledged(&queue) == Some(1)
    })
    .await;

    // Had an ack of a later message covered the slow one, the broker would
    // not give it to the next process, and /slow would get no second request.
    let mut killed = service;
    killed.kill();
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;
    let redelivered = broker.events_of_type("notification.delivered.v1", 1).await;
    assert_eq!(redelivered[0].body["data"]["notification_id"], slow_id);
    assert_eq!(slow_requests().await, 2);
    wait_until("nothing is unacknowledged", Duration::from_secs(20), async || unacknowledged(&queue) == Some(0)).await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_deliveries_in_flight() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(800)))
        .mount(&receiver)
        .await;
    let mut service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;
    let url = format!("{}/hook", receiver.uri());
    let sent = publish_webhooks(&broker, &url, 4).await;

    wait_until("deliveries are in flight", Duration::from_secs(20), async || {
        receiver.received_requests().await.unwrap().len() == sent.len()
    })
    .await;
    assert_eq!(service.terminate().await, Some(0), "log:\n{}", service.log());

    // Every in-flight delivery finished and was recorded before the exit.
    let delivered = broker.events_of_type("notification.delivered.v1", sent.len()).await;
    assert_eq!(delivered.len(), sent.len());
    let remaining = broker.message_count(&broker.channel_queue("webhook")).await;
    assert_eq!(remaining, Some(0), "nothing left unacknowledged");
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_is_left_alone_until_it_recovers() {
    const MESSAGES: usize = 20;
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).named("outage").mount(&receiver).await;
    let mut settings = ServiceSettings::webhook();
    settings.prefetch = 2;
    settings.concurrency = 1;
    settings.breaker_failure_threshold = 3;
    settings.breaker_cooldown_ms = 500;
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;

    let url = format!("{}/hook", receiver.uri());
    let mut sent = Vec::new();
    for _ in 0..MESSAGES {
        // Enough retries that only the breaker, not the retry budget, is tested.
        let message = DispatchMessage::render_completed_webhook(&url).with_header("x-max-retries", AMQPValue::LongInt(40));
        sent.push(message.notification_id.to_string());
        broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    }

    // Let the outage last two seconds, about 20 backoff rounds of the test
    // schedule; without a breaker every message would be tried several times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during_outage = receiver.received_requests().await.unwrap().len();
    assert!(during_outage < MESSAGES, "{during_outage} requests reached a dead endpoint for {MESSAGES} messages");
    assert!(service.log().contains("circuit breaker opened"), "log:\n{}", service.log());

    receiver.reset().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).named("recovered").mount(&receiver).await;
    wait_until("every notification reached the recovered receiver", Duration::from_secs(60), async || {
        requests_per_notification(&receiver).await.len() == sent.len()
    })
    .await;
    let counts = requests_per_notification(&receiver).await;
    assert!(counts.values().all(|count| *count == 1), "each notification delivered once after the outage: {counts:?}");
    assert!(broker.dead_letters_within(Duration::from_millis(300)).await.is_empty(), "nothing dead-lettered");
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_queue_is_declared_again_and_consumed() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(1).mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;
    let queue = broker.channel_queue("webhook");

    // Deleting a consumed queue makes the broker cancel its consumer.
    let channel = broker.connection.create_channel().await.unwrap();
    channel
        .queue_delete(queue.as_str().into(), lapin::options::QueueDeleteOptions::default())
        .await
        .unwrap();
    wait_until("the service declared the queue again and consumes it", Duration::from_secs(20), async || {
        broker.consumer_count(&queue).await == Some(1)
    })
    .await;

    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    broker.events_of_type("notification.delivered.v1", 1).await;
    assert!(service.log().contains("cancelled the consumer"), "log:\n{}", service.log());
    receiver.verify().await;
    service.shutdown(&broker).await;
}
