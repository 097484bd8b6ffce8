//! `topology declare` creates what the service declares for its enabled channels.

use crate::utils::cli::{run_cli, ConfigFile};
use crate::utils::service::declared_queues;
use crate::utils::{DispatchMessage, ServiceSettings, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_declare_creates_channel_queues() {
    let broker = TestBroker::new().await;
    let mut settings = ServiceSettings::webhook();
    settings.channels_toml.push_str(&ServiceSettings::email(2525).channels_toml);
    let config = ConfigFile::for_broker(&broker, &settings);
    let args = ["topology", "declare", "--config", config.path().to_str().unwrap()];

    let first = run_cli(&args).await;
    let again = run_cli(&args).await;

    assert!(first.success(), "{first}");
    assert!(first.stdout.contains(&format!("channel queue: {}", broker.channel_queue("webhook"))), "{first}");
    assert!(again.success(), "declaring twice changes nothing: {again}");
    let queues = declared_queues(&broker, &["email", "webhook"]);
    for queue in &queues {
        assert_eq!(broker.message_count(queue).await, Some(0), "{queue} exists after topology declare");
    }
    assert_eq!(broker.message_count(&broker.channel_queue("sms")).await, None, "no queue for a disabled channel");
    // `publish` asserts that the message was routed, which needs the binding.
    let message = DispatchMessage::render_completed_webhook("https://example.com/hook");
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    broker.wait_for_message_count(&broker.channel_queue("webhook"), 1).await;
    broker.cleanup(&queues).await;
}
