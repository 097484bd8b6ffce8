//! Start, stop and expiry.

use std::time::Duration;

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_service_cleanly() {
    let broker = TestBroker::new().await;
    let mut service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;
    assert!(service.is_running());
    assert_eq!(service.terminate().await, Some(0), "log:\n{}", service.log());
    assert!(service.log().contains("SIGTERM received"));
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_message_is_dropped_with_failed_event() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(0).named("never called").mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;

    let mut message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    message.data_mut()["expires_at"] = json!("2020-01-01T00:00:00Z");
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let failed = broker.events_of_type("notification.failed.v1", 1).await.remove(0);
    assert_eq!(failed.body["data"]["error"]["kind"], "expired");
    assert!(broker.dead_letters_within(Duration::from_millis(300)).await.is_empty(), "expired is not a dead letter");
    receiver.verify().await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_template_stops_the_start_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("notify-broken-templates-{}", uuid::Uuid::new_v4()));
    copy_dir(&std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"), &dir);
    let broken = dir.join("webhook/welcome/en/message.hbs");
    std::fs::write(&broken, "Welcome {{#if user_name}}\n{{user_name}\n").unwrap();

    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[templates]\ndir = \"{}\"\n[channels.webhook]\nenabled = true\nsigning_secret = \"{}\"\n",
            dir.display(),
            crate::utils::service::WEBHOOK_SECRET
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flatrender-notify"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("webhook/welcome/en/message.hbs"), "error names the file:\n{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
