//! `send` through the webhook channel to a wiremock receiver, without the
//! broker, and `publish` to a running service through the broker.

use notify_channels::webhook::SigningSecret;
use serde_json::Value;
use wiremock::matchers::{header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::cli::{run_cli, ConfigFile};
use crate::utils::service::WEBHOOK_SECRET;
use crate::utils::ServiceSettings;

fn send_args(config: &ConfigFile, url: &str) -> Vec<String> {
    let config = config.path().to_str().unwrap();
    ["send", "--config", config, "--channel", "webhook", "--template", "render_completed", "--to", url]
        .map(str::to_owned)
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_delivers_one_signed_webhook() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header_exists("webhook-signature"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .named("signed webhook")
        .mount(&receiver)
        .await;
    let config = ConfigFile::without_broker(&ServiceSettings::webhook().channels_toml);

    let output = run_cli(&send_args(&config, &format!("{}/hook", receiver.uri()))).await;

    assert!(output.success(), "{output}");
    assert!(output.stdout.contains("delivered\n"), "{output}");
    assert!(output.stdout.contains("provider:            webhook"), "{output}");
    assert!(output.stdout.contains("status:              200"), "{output}");
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    let header = |name: &str| request.headers.get(name).unwrap().to_str().unwrap().to_owned();
    let secret = SigningSecret::parse(WEBHOOK_SECRET).unwrap();
    let signature = header("webhook-signature");
    let verified = secret.verify(&header("webhook-id"), &header("webhook-timestamp"), &request.body, &signature);
    assert!(verified.is_ok(), "signature matches the configured secret");
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["template"], "render_completed");
    assert_eq!(body["data"]["project_name"], "Riverside Loft", "sample variables by default");
    assert!(output.stdout.contains(body["notification_id"].as_str().unwrap()), "the output names the notification: {output}");
    receiver.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reports_permanent_failure() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(410)).expect(1).named("gone endpoint").mount(&receiver).await;
    let config = ConfigFile::without_broker(&ServiceSettings::webhook().channels_toml);

    let output = run_cli(&send_args(&config, &format!("{}/hook", receiver.uri()))).await;

    assert_eq!(output.status.code(), Some(1), "{output}");
    assert!(output.stderr.contains("delivery failed: permanent"), "{output}");
    assert!(output.stderr.contains("kind:    recipient_gone"), "{output}");
    assert!(output.stderr.contains("code:    http_410"), "{output}");
    assert!(output.stderr.contains("message: "), "{output}");
    assert!(!output.stdout.contains("delivered"), "{output}");
    receiver.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_rejects_disabled_channel() {
    let config = ConfigFile::without_broker("");

    let output = run_cli(&send_args(&config, "http://127.0.0.1:9/hook")).await;

    assert_eq!(output.status.code(), Some(1), "{output}");
    assert!(output.stderr.contains("channel webhook is not enabled"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_the_running_service_with_sample_variables() {
    let broker = crate::utils::TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).and(path("/hook")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let settings = ServiceSettings::webhook();
    let service = crate::utils::ServiceProcess::start(&broker, settings.clone(), &["webhook"]).await;
    let config = ConfigFile::for_broker(&broker, &settings);
    let url = format!("{}/hook", receiver.uri());
    let config_path = config.path().to_str().unwrap();

    let args = ["publish", "--config", config_path, "--channel", "webhook", "--template", "render_completed", "--to", &url];
    let output = run_cli(&args).await;

    assert!(output.success(), "{output}");
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    let notification_id = delivered.body["data"]["notification_id"].as_str().unwrap().to_owned();
    assert!(output.stdout.contains(&notification_id), "the output names the notification: {output}");
    let requests = receiver.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body["data"]["project_name"], "Riverside Loft", "sample variables by default");
    service.shutdown(&broker).await;
}
