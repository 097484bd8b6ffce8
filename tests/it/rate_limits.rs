//! Per-provider rate limits through the real binary: sends to one endpoint
//! are spaced by the limit, and a send that would wait too long goes through
//! a delay queue without spending an attempt.
//!
//! Only lower bounds on time are asserted: a slow machine makes sends later,
//! never earlier.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::utils::webhooks::publish_webhooks;
use crate::utils::{ServiceProcess, ServiceSettings, TestBroker};

/// Responds 200 and records when each request arrived.
#[derive(Clone, Default)]
struct ArrivalLog(Arc<Mutex<Vec<Instant>>>);

impl Respond for ArrivalLog {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().push(Instant::now());
        ResponseTemplate::new(200)
    }
}

impl ArrivalLog {
    fn arrivals(&self) -> Vec<Instant> {
        let mut arrivals = self.0.lock().unwrap().clone();
        arrivals.sort();
        arrivals
    }
}

async fn receiver_with_log() -> (MockServer, ArrivalLog) {
    let receiver = MockServer::start().await;
    let log = ArrivalLog::default();
    Mock::given(method("POST")).respond_with(log.clone()).mount(&receiver).await;
    (receiver, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_spaces_sends_to_endpoint() {
    let broker = TestBroker::new().await;
    let (receiver, log) = receiver_with_log().await;
    let mut settings = ServiceSettings::webhook();
    settings.rate_limits_toml = "[rate_limits.webhook]\nper_second = 10\nburst = 2\n".to_owned();
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;

    publish_webhooks(&broker, &format!("{}/hook", receiver.uri()), 12).await;
    let delivered = broker.events_of_type("notification.delivered.v1", 12).await;
    assert_eq!(delivered.len(), 12);

    // A burst of 2, then one send per 100 ms: the 12th starts at least
    // 1,000 ms after the first.
    let arrivals = log.arrivals();
    assert_eq!(arrivals.len(), 12, "each notification sent once");
    let span = arrivals[11] - arrivals[0];
    assert!(span >= Duration::from_millis(950), "12 sends at 10/s with a burst of 2 took only {span:?}");
    let metrics = reqwest::get(format!("{}/metrics", service.admin_url)).await.unwrap().text().await.unwrap();
    let held_back: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("notify_rate_limited_total{channel=\"webhook\"} "))
        .unwrap_or_else(|| panic!("no webhook rate limit count in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    // Sends spaced by the limit waited for it, so the count is above zero.
    // How many waited depends on how fast the broker delivers them.
    assert!(held_back >= 1.0, "sends that waited for the limit are counted, counted {held_back}");
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_wait_defers_without_attempt() {
    let broker = TestBroker::new().await;
    let (receiver, log) = receiver_with_log().await;
    let mut settings = ServiceSettings::webhook();
    settings.rate_limits_toml = "[rate_limits]\nmax_wait_ms = 0\n\n[rate_limits.webhook]\nper_second = 4\n".to_owned();
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;

    publish_webhooks(&broker, &format!("{}/hook", receiver.uri()), 4).await;
    let delivered = broker.events_of_type("notification.delivered.v1", 4).await;
    for event in &delivered {
        assert_eq!(event.body["data"]["attempts"], 1, "a deferral is not an attempt: {}", event.body);
    }
    let arrivals = log.arrivals();
    assert_eq!(arrivals.len(), 4, "each notification sent once");
    let span = arrivals[3] - arrivals[0];
    assert!(span >= Duration::from_millis(700), "4 sends at 4/s took only {span:?}");
    assert!(
        service.log().contains("the provider's rate limit is reached"),
        "the deferral is logged:\n{}",
        service.log()
    );
    let failed: Vec<_> = broker
        .events_within(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|event| event.routing_key.ends_with(".failed.v1"))
        .collect();
    assert!(failed.is_empty(), "a deferral is not a failure: {failed:?}");
    service.shutdown(&broker).await;
}
