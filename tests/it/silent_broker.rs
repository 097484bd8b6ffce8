//! A broker that stops replying, through a proxy that goes silent. Calls that
//! wait for a reply must time out, so that the service starts a new session
//! instead of waiting forever without consumers.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::proxy::BrokerProxy;
use crate::utils::service::free_port;
use crate::utils::webhooks::{publish_webhooks, requests_per_notification};
use crate::utils::{wait_until, ServiceProcess, ServiceSettings, TestBroker};

async fn readiness(admin_url: &str) -> Option<u16> {
    let response = reqwest::get(format!("{admin_url}/readyz")).await.ok()?;
    Some(response.status().as_u16())
}

async fn receiver() -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    receiver
}

/// Publishes one webhook notification and waits until it arrives once.
async fn assert_delivers(broker: &TestBroker, receiver: &MockServer, service: &ServiceProcess) {
    let sent = publish_webhooks(broker, &format!("{}/hook", receiver.uri()), 1).await;
    let delivered = tokio::time::timeout(Duration::from_secs(20), async {
        while !requests_per_notification(receiver).await.contains_key(&sent[0]) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(delivered.is_ok(), "the notification was not delivered; log:\n{}", service.log());
    assert_eq!(requests_per_notification(receiver).await[&sent[0]], 1);
}

/// Waits until the service has opened a second session through `proxy` and
/// reports ready again.
async fn wait_for_second_session(proxy: &BrokerProxy, service: &ServiceProcess) {
    wait_until("a new session opened its connections", Duration::from_secs(20), async || {
        proxy.connection_count() >= 4
    })
    .await;
    let ready_again = tokio::time::timeout(Duration::from_secs(20), async {
        while readiness(&service.admin_url).await != Some(200) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(ready_again.is_ok(), "the service did not start a new session; log:\n{}", service.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_timeout_starts_new_session() {
    let broker = TestBroker::new().await;
    let receiver = receiver().await;
    let proxy = BrokerProxy::start().await;
    proxy.answer_handshake_only(true);
    let database = std::env::temp_dir().join(format!("{}-contacts.db", broker.id));
    let settings = ServiceSettings { broker_url: proxy.url(), connect_timeout_secs: 1, ..ServiceSettings::webhook() }
        .with_fanout(&database, free_port());
    let mut service = ServiceProcess::spawn(&broker, settings, &["webhook"]);

    // Connections open, but no channel ever does: each attempt of both the
    // dispatcher and the fan-out stage must time out and the next one start.
    wait_until("two set-ups of each session timed out", Duration::from_secs(30), async || {
        let log = service.log();
        log.matches("setting up the broker session timed out").count() >= 2
            && log.matches("setting up the fan-out broker session timed out").count() >= 2
    })
    .await;
    assert_eq!(readiness(&service.admin_url).await, Some(503));

    proxy.answer_handshake_only(false);
    service.wait_ready(&broker, &["webhook"]).await;
    let fanout_queue = format!("{}notify.fanout.events", broker.queue_prefix());
    wait_until("the fan-out stage consumes", Duration::from_secs(20), async || {
        broker.consumer_count(&fanout_queue).await.unwrap_or(0) >= 1
    })
    .await;
    wait_until("the service reports ready", Duration::from_secs(10), async || {
        readiness(&service.admin_url).await == Some(200)
    })
    .await;
    assert_delivers(&broker, &receiver, &service).await;
    service.kill();
    broker.delete_queue(&fanout_queue).await;
    service.shutdown(&broker).await;
    let _ = std::fs::remove_file(&database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_close_is_abandoned() {
    let broker = TestBroker::new().await;
    let receiver = receiver().await;
    let proxy = BrokerProxy::start().await;
    let settings = ServiceSettings { broker_url: proxy.url(), ..ServiceSettings::webhook() };
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;
    // The session opens its consuming connection first, then its publishing one.
    assert_eq!(proxy.connection_count(), 2);

    // The consuming connection drops, which ends the session. Closing the
    // publishing connection then gets no reply, as when the broker fails
    // during the close.
    proxy.silence(1);
    proxy.cut(0);

    wait_for_second_session(&proxy, &service).await;
    let log = service.log();
    assert!(
        log.lines().any(|line| line.contains("closing a broker connection timed out") && line.contains("\"publish\"")),
        "the service gave up closing the silent publishing connection:\n{log}"
    );
    assert_delivers(&broker, &receiver, &service).await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeats_start_new_session() {
    let broker = TestBroker::new().await;
    let receiver = receiver().await;
    let proxy = BrokerProxy::start().await;
    // lapin drops a connection 2 to 2.5 heartbeats after the broker's last
    // frame, so after 2 to 2.5 s here.
    let url = format!("{}?heartbeat=1", proxy.url());
    let settings = ServiceSettings { broker_url: url, ..ServiceSettings::webhook() };
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;
    assert_eq!(proxy.connection_count(), 2);

    // The broker goes silent on both connections, but neither is closed.
    proxy.silence(0);
    proxy.silence(1);

    wait_for_second_session(&proxy, &service).await;
    assert_delivers(&broker, &receiver, &service).await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_silent_setup_stops_service() {
    let broker = TestBroker::new().await;
    let proxy = BrokerProxy::start().await;
    proxy.answer_handshake_only(true);
    let database = std::env::temp_dir().join(format!("{}-contacts.db", broker.id));
    // Set-up never times out within the test, so only SIGTERM can end it.
    let settings = ServiceSettings { broker_url: proxy.url(), connect_timeout_secs: 600, ..ServiceSettings::webhook() }
        .with_fanout(&database, free_port());
    let mut service = ServiceProcess::spawn(&broker, settings, &["webhook"]);
    wait_until("both stages are setting up their sessions", Duration::from_secs(20), async || {
        proxy.connection_count() >= 4
    })
    .await;

    // terminate() fails the test when the service takes longer than 20 s.
    assert_eq!(service.terminate().await, Some(0), "log:\n{}", service.log());
    let log = service.log();
    assert!(log.contains("fan-out stage stopped"), "the fan-out stage stopped:\n{log}");
    assert!(log.contains("service stopped"), "the dispatcher stopped:\n{log}");
    service.shutdown(&broker).await;
    let _ = std::fs::remove_file(&database);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_setups_release_their_connections() {
    let broker = TestBroker::new().await;
    let proxy = BrokerProxy::start().await;
    proxy.answer_handshake_only(true);
    // lapin's heartbeat check then fails a silent connection after 2 to 2.5 s.
    let url = format!("{}?heartbeat=1", proxy.url());
    let settings = ServiceSettings { broker_url: url, connect_timeout_secs: 1, ..ServiceSettings::webhook() };
    let mut service = ServiceProcess::spawn(&broker, settings, &["webhook"]);

    wait_until("six session set-ups timed out", Duration::from_secs(60), async || {
        service.log().matches("setting up the broker session timed out").count() >= 6
    })
    .await;
    // Each attempt opens two connections, each with an I/O thread. Kept
    // until the broker replies, they would number 12 or more by now.
    let threads = service.threads_named("lapin-io-loop");
    assert!(service.is_running(), "the service is still running, so its threads were counted");
    assert!(threads <= 8, "{threads} lapin I/O threads after six attempts; log:\n{}", service.log());
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_connecting_stops_service() {
    let broker = TestBroker::new().await;
    let proxy = BrokerProxy::start().await;
    proxy.answer_nothing();
    let database = std::env::temp_dir().join(format!("{}-contacts.db", broker.id));
    // Connecting never times out within the test, so only SIGTERM can end it.
    let settings = ServiceSettings { broker_url: proxy.url(), connect_timeout_secs: 600, ..ServiceSettings::webhook() }
        .with_fanout(&database, free_port());
    let mut service = ServiceProcess::spawn(&broker, settings, &["webhook"]);
    wait_until("both stages are connecting", Duration::from_secs(20), async || proxy.connection_count() >= 2).await;

    // terminate() fails the test when the service takes longer than 20 s.
    assert_eq!(service.terminate().await, Some(0), "log:\n{}", service.log());
    let log = service.log();
    assert!(log.contains("fan-out stage stopped"), "the fan-out stage stopped:\n{log}");
    assert!(log.contains("service stopped"), "the dispatcher stopped:\n{log}");
    service.shutdown(&broker).await;
    let _ = std::fs::remove_file(&database);
}
