//! A restart of the broker application: every connection drops and the
//! broker refuses new ones for a while. The service must report not-ready,
//! come back by itself, and deliver every notification exactly once.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::broker::rabbitmqctl;
use crate::utils::webhooks::{publish_webhooks, requests_per_notification};
use crate::utils::{wait_until, ServiceProcess, ServiceSettings, TestBroker};
use crate::BROKER;

/// Stops the broker application; starts it again when dropped, so that a
/// failed assert never leaves the machine without a broker.
struct StoppedBroker {
    started: bool,
}

impl StoppedBroker {
    fn stop() -> StoppedBroker {
        rabbitmqctl(&["stop_app"]);
        StoppedBroker { started: false }
    }

    fn start(mut self) {
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
        self.started = true;
    }
}

impl Drop for StoppedBroker {
    fn drop(&mut self) {
        if !self.started {
            rabbitmqctl(&["start_app"]);
        }
    }
}

async fn readiness(admin_url: &str) -> Option<u16> {
    let response = reqwest::get(format!("{admin_url}/readyz")).await.ok()?;
    Some(response.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_keeps_exactly_once() {
    let _broker_held = BROKER.lock().await;
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(10)))
        .mount(&receiver)
        .await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;
    let url = format!("{}/hook", receiver.uri());
    let sent = publish_webhooks(&broker, &url, 300).await;
    wait_until("some deliveries happened", Duration::from_secs(20), async || {
        receiver.received_requests().await.unwrap().len() >= 30
    })
    .await;

    let stopped = StoppedBroker::stop();
    wait_until("the service reports not ready", Duration::from_secs(10), async || {
        readiness(&service.admin_url).await == Some(503)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stopped.start();

    let ready_again = tokio::time::timeout(Duration::from_secs(30), async {
        while readiness(&service.admin_url).await != Some(200) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(ready_again.is_ok(), "the service was not ready 30 s after the broker started again; log:\n{}", service.log());
    wait_until("every notification reached the receiver", Duration::from_secs(60), async || {
        requests_per_notification(&receiver).await.len() == sent.len()
    })
    .await;
    let counts = requests_per_notification(&receiver).await;
    let repeated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(repeated.is_empty(), "sent twice: {repeated:?}");
    assert!(service.log().contains("reconnecting"), "the service noticed the restart:\n{}", service.log());
    service.shutdown(&broker).await;
}
