//! Template hot reload in a running service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

fn copy_dir(from: &Path, to: &Path) {
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

async fn wait_for_log(service: &ServiceProcess, text: &str, occurrences: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while service.log().matches(text).count() < occurrences {
        assert!(tokio::time::Instant::now() < deadline, "log never showed {text:?} {occurrences} times:\n{}", service.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes one webhook notification and returns the message the receiver got.
async fn delivered_message(broker: &TestBroker, receiver: &MockServer, url: &str) -> String {
    let before = receiver.received_requests().await.unwrap().len();
    let message = DispatchMessage::render_completed_webhook(url);
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    broker.events_of_type("notification.delivered.v1", 1).await;
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(requests.len(), before + 1);
    let body: serde_json::Value = serde_json::from_slice(&requests[before].body).unwrap();
    body["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_template_is_used_and_broken_edit_is_not() {
    let dir = std::env::temp_dir().join(format!("notify-reload-it-{}", uuid::Uuid::new_v4()));
    copy_dir(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates"), &dir);
    let template = dir.join("webhook/render_completed/en/message.hbs");

    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let mut settings = ServiceSettings::webhook();
    settings.templates_dir = dir.clone();
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;
    let url = format!("{}/hook", receiver.uri());

    std::fs::write(&template, "Edited: {{project_name}} is ready at {{download_url}}\n").unwrap();
    wait_for_log(&service, "templates reloaded", 1).await;
    assert_eq!(delivered_message(&broker, &receiver, &url).await, "Edited: Intro is ready at https://example.com/r/1");

    std::fs::write(&template, "Broken: {{project_name\n").unwrap();
    wait_for_log(&service, "template edit is invalid", 1).await;
    assert!(service.log().contains("webhook/render_completed/en/message.hbs"), "the log names the broken file");
    assert_eq!(
        delivered_message(&broker, &receiver, &url).await,
        "Edited: Intro is ready at https://example.com/r/1",
        "the previous version keeps serving"
    );

    service.shutdown(&broker).await;
    std::fs::remove_dir_all(dir).unwrap();
}
