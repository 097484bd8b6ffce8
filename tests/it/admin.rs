//! The admin listener of a running service: health, readiness and metrics
//! that move with real traffic.

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap_or_else(|err| panic!("GET {url} failed: {err}"));
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The value of the sample line that starts with `series`, or 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series).map(|value| value.trim().parse().unwrap()))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_deliveries_and_dead_letters() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(3).mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let (status, _) = get(&format!("{}/healthz", service.admin_url)).await;
    assert_eq!(status, 200);
    let (status, _) = get(&format!("{}/readyz", service.admin_url)).await;
    assert_eq!(status, 200, "ready once consuming");

    let url = format!("{}/hook", receiver.uri());
    for _ in 0..3 {
        let message = DispatchMessage::render_completed_webhook(&url);
        broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    }
    let bad = DispatchMessage::render_completed_webhook(&url);
    broker.publish(&bad.routing_key(), b"{not json", bad.properties()).await;
    broker.events_of_type("notification.delivered.v1", 3).await;
    broker.dead_letters(1).await;

    // The dead letter is visible before its message task ends; wait for that.
    let dead_lettered = "notify_messages_dead_lettered_total{channel=\"webhook\",kind=\"invalid_message\"}";
    let in_flight = "notify_messages_in_flight{channel=\"webhook\"}";
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let metrics = loop {
        let (status, metrics) = get(&format!("{}/metrics", service.admin_url)).await;
        assert_eq!(status, 200);
        if sample(&metrics, dead_lettered) == 1.0 && sample(&metrics, in_flight) == 0.0 {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics never settled:\n{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(sample(&metrics, "notify_notifications_delivered_total{channel=\"webhook\"}"), 3.0, "{metrics}");
    assert_eq!(sample(&metrics, "notify_messages_consumed_total{channel=\"webhook\"}"), 4.0, "{metrics}");
    assert_eq!(sample(&metrics, "notify_delivery_latency_seconds_count{channel=\"webhook\"}"), 3.0, "{metrics}");
    assert_eq!(sample(&metrics, "notify_broker_connected"), 1.0, "{metrics}");
    service.shutdown(&broker).await;
}
