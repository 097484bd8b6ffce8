//! A memory alarm: the broker blocks every publishing connection until it
//! clears. Deliveries in flight must wait for it, not fail or reconnect.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::broker::rabbitmqctl;
use crate::utils::webhooks::{publish_webhooks, requests_per_notification};
use crate::utils::{wait_until, ServiceProcess, ServiceSettings, TestBroker};
use crate::BROKER;

/// Raises the broker's memory alarm by setting its watermark to 0, and
/// restores the watermark it found when dropped, also after a failed assert.
struct MemoryAlarm {
    watermark: String,
}

impl MemoryAlarm {
    /// Reads the watermark to restore. Like every rabbitmqctl call, this
    /// takes a second or more, so it runs before the timed part.
    fn prepare() -> MemoryAlarm {
        let watermark = rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]).trim().to_owned();
        assert!(
            watermark.parse::<f64>().is_ok_and(|fraction| fraction > 0.0),
            "expected a relative memory watermark such as 0.4, found {watermark:?}; not touching it"
        );
        MemoryAlarm { watermark }
    }

    fn raise(&self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", "0"]);
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        rabbitmqctl(&["set_vm_memory_high_watermark", &self.watermark]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_broker_pauses_deliveries() {
    let _broker_held = BROKER.lock().await;
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(400)))
        .mount(&receiver)
        .await;
    let mut settings = ServiceSettings::webhook();
    settings.prefetch = 8;
    settings.concurrency = 4;
    settings.confirm_timeout_secs = 1;
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;
    let url = format!("{}/hook", receiver.uri());
    let alarm = MemoryAlarm::prepare();
    // 40 sends of 400 ms, 4 at a time, take 4 s unblocked.
    let sent = publish_webhooks(&broker, &url, 40).await;
    wait_until("the first send", Duration::from_secs(20), async || !receiver.received_requests().await.unwrap().is_empty()).await;

    alarm.raise();
    // Four times the confirm timeout: a publish that counted the block
    // against it would have failed and restarted the session by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let sent_while_blocked = receiver.received_requests().await.unwrap().len();
    assert!(sent_while_blocked < sent.len(), "the block held nothing back ({sent_while_blocked} sent)");
    assert_eq!(blocked_gauge(&service.admin_url).await, "1", "the block shows in /metrics");
    drop(alarm);

    let delivered = broker.events_of_type("notification.delivered.v1", sent.len()).await;
    assert_eq!(delivered.len(), sent.len());
    let counts = requests_per_notification(&receiver).await;
    assert_eq!(counts.len(), sent.len(), "every notification sent");
    assert!(counts.values().all(|count| *count == 1), "sent twice: {counts:?}");
    let log = service.log();
    assert!(log.contains("the broker blocked publishing"), "the block is logged:\n{log}");
    assert!(log.contains("the broker unblocked publishing"), "the unblock is logged:\n{log}");
    assert!(!log.contains("reconnecting"), "a block is not a lost session:\n{log}");
    assert!(!log.contains("publish failed"), "no publish failed:\n{log}");
    assert_eq!(blocked_gauge(&service.admin_url).await, "0", "the unblock shows in /metrics");
    service.shutdown(&broker).await;
}

/// Returns the value of `notify_broker_blocked` on the service's /metrics.
async fn blocked_gauge(admin_url: &str) -> String {
    let metrics = reqwest::get(format!("{admin_url}/metrics")).await.unwrap().text().await.unwrap();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("notify_broker_blocked "))
        .unwrap_or_else(|| panic!("no notify_broker_blocked in:\n{metrics}"))
        .trim()
        .to_owned()
}
