//! `dlq list` and `dlq replay` against the real broker, with dead letters
//! that the service itself produced and dead letters of another service.

use chrono::Utc;
use lapin::types::AMQPValue;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::cli::{run_cli, CliOutput, ConfigFile};
use crate::utils::messages::long_string;
use crate::utils::service::declared_queues;
use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

/// Headers the service and the stack's other services add when they dead-letter.
const FAILURE_HEADERS: [&str; 6] =
    ["x-original-routing-key", "x-failure-kind", "x-failure-reason", "x-failure-code", "x-failed-at", "x-failed-by"];

fn dead_letter_queue(broker: &TestBroker) -> String {
    format!("{}flatrender.dlq", broker.queue_prefix())
}

async fn dlq(config: &ConfigFile, args: &[&str]) -> CliOutput {
    let mut all = vec!["dlq", args[0], "--config", config.path().to_str().unwrap()];
    all.extend(&args[1..]);
    run_cli(&all).await
}

/// Publishes a dead letter of the render service, which `dlq replay` must leave alone.
async fn publish_foreign_dead_letter(broker: &TestBroker) {
    let mut message = DispatchMessage::new("webhook", "unused", json!({}), json!({}));
    message.envelope = json!({"job_id": "job-7", "scene": "loft"});
    let message = message
        .with_header("x-original-routing-key", long_string("render.jobs.start"))
        .with_header("x-failure-kind", long_string("rejected"))
        .with_header("x-failure-reason", long_string("scene file missing\nsee the render log"))
        .with_header("x-failed-at", long_string(&Utc::now().to_rfc3339()))
        .with_header("x-failed-by", long_string("render-service"));
    broker.publish_dead_letter("render.jobs.start", &message.body(), message.properties()).await;
}

/// Publishes a webhook dispatch message as the service dead-letters it after retries.
async fn publish_notify_dead_letter(broker: &TestBroker, kind: &str, code: &str) -> DispatchMessage {
    let message = DispatchMessage::render_completed_webhook("https://example.com/hook")
        .with_header("x-retry-count", AMQPValue::LongInt(2))
        .with_header("x-original-routing-key", long_string("notify.channel.webhook"))
        .with_header("x-failure-kind", long_string(kind))
        .with_header("x-failure-reason", long_string("receiver https://example.com/*** failed"))
        .with_header("x-failure-code", long_string(code))
        .with_header("x-failed-at", long_string(&Utc::now().to_rfc3339()))
        .with_header("x-failed-by", long_string("notification-service"));
    broker.publish_dead_letter("notify.channel.webhook", &message.body(), message.properties()).await;
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_shows_dead_letters_and_keeps_them() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(410)).expect(1).mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;
    let gone = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&gone.routing_key(), &gone.body(), gone.properties()).await;
    let mut misspelt = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    misspelt.data_mut()["template"] = json!("render_complete");
    broker.publish(&misspelt.routing_key(), &misspelt.body(), misspelt.properties()).await;
    broker.dead_letters(2).await;
    publish_foreign_dead_letter(&broker).await;
    let queue = dead_letter_queue(&broker);
    broker.wait_for_message_count(&queue, 3).await;
    let config = ConfigFile::for_broker(&broker, &ServiceSettings::webhook());

    let all = dlq(&config, &["list"]).await;
    broker.wait_for_message_count(&queue, 3).await;
    let first = dlq(&config, &["list", "--limit", "1"]).await;
    broker.wait_for_message_count(&queue, 3).await;

    assert!(all.success(), "{all}");
    assert!(all.stdout.starts_with("AGE "), "a table with a header: {all}");
    let row = |id: String| all.stdout.lines().find(|line| line.contains(&id)).map(str::to_owned);
    let gone_row = row(gone.notification_id.to_string()).unwrap_or_else(|| panic!("410 dead letter listed: {all}"));
    assert!(gone_row.contains("notify.channel.webhook"), "{gone_row}");
    assert!(gone_row.contains("recipient_gone (http_410)"), "{gone_row}");
    assert!(gone_row.contains("notification-service"), "{gone_row}");
    let misspelt_row = row(misspelt.notification_id.to_string()).unwrap_or_else(|| panic!("unknown template listed: {all}"));
    assert!(misspelt_row.contains("unknown_template"), "{misspelt_row}");
    assert!(misspelt_row.contains("render_complete"), "the reason names the template: {misspelt_row}");
    let foreign_row = row("render.jobs.start".to_owned()).unwrap_or_else(|| panic!("foreign dead letter listed: {all}"));
    assert!(foreign_row.contains("render-service"), "{foreign_row}");
    assert!(foreign_row.contains("scene file missing …"), "reason cut to one line: {foreign_row}");
    assert!(!all.stdout.contains("see the render log"), "{all}");
    assert!(all.stdout.contains("3 of 3 messages"), "{all}");
    assert!(first.success(), "{first}");
    assert!(first.stdout.contains("1 of 3 messages"), "{first}");
    receiver.verify().await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_moves_only_notify_dead_letters() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).mount(&receiver).await;
    let mut service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;
    let message = DispatchMessage::render_completed_webhook(&format!("{}/hook", receiver.uri()));
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    let dead = broker.dead_letters(1).await.remove(0);
    assert_eq!(dead.header("x-failure-kind").as_deref(), Some("retries_exhausted"));
    assert_eq!(dead.header("x-retry-count").as_deref(), Some("3"));
    // Stopped, the service leaves the replayed message on its queue for the test to read.
    assert_eq!(service.terminate().await, Some(0));
    publish_foreign_dead_letter(&broker).await;
    let queue = dead_letter_queue(&broker);
    let channel_queue = broker.channel_queue("webhook");
    broker.wait_for_message_count(&queue, 2).await;
    let config = ConfigFile::for_broker(&broker, &ServiceSettings::webhook());

    let dry_run = dlq(&config, &["replay", "--dry-run"]).await;
    broker.wait_for_message_count(&queue, 2).await;
    assert_eq!(broker.message_count(&channel_queue).await, Some(0), "dry run moves nothing");
    let replay = dlq(&config, &["replay"]).await;

    assert!(dry_run.success(), "{dry_run}");
    let planned = dry_run.stdout.lines().find(|line| line.starts_with("would replay notify.channel.webhook retries_exhausted"));
    let planned = planned.unwrap_or_else(|| panic!("the dry run names the dead letter: {dry_run}"));
    assert!(planned.contains(&message.notification_id.to_string()), "{planned}");
    assert!(dry_run.stdout.contains("dry run: would replay 1, skipped 1; nothing was moved"), "{dry_run}");
    assert!(replay.success(), "{replay}");
    assert!(replay.stdout.contains("replayed 1, skipped 1, failed 0"), "{replay}");
    let replayed = broker.get_from(&channel_queue).await.expect("the dead letter is back on the webhook queue");
    assert_eq!(replayed.raw, message.body(), "body unchanged");
    for header in FAILURE_HEADERS {
        assert_eq!(replayed.header(header), None, "{header} removed");
    }
    assert_eq!(replayed.header("x-retry-count"), None, "retry count reset");
    assert_eq!(replayed.header("x-trace-id"), Some(message.trace_id.to_string()), "other headers kept");
    assert_eq!(replayed.header("x-tenant-id"), Some(message.tenant_id.to_string()));
    assert_eq!(replayed.header("x-event-type").as_deref(), Some("notification.created.v1"));
    assert_eq!(replayed.properties.content_type().as_ref().map(|c| c.to_string()).as_deref(), Some("application/json"));
    broker.wait_for_message_count(&queue, 1).await;
    let left = broker.get_from(&queue).await.expect("the foreign dead letter stays");
    assert_eq!(left.header("x-original-routing-key").as_deref(), Some("render.jobs.start"));
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_filters_by_kind_and_notification_id() {
    let broker = TestBroker::new().await;
    let config = ConfigFile::for_broker(&broker, &ServiceSettings::webhook());
    let declared = run_cli(&["topology", "declare", "--config", config.path().to_str().unwrap()]).await;
    assert!(declared.success(), "{declared}");
    let gone = publish_notify_dead_letter(&broker, "recipient_gone", "http_410").await;
    let exhausted = publish_notify_dead_letter(&broker, "retries_exhausted", "http_503").await;
    let queue = dead_letter_queue(&broker);
    let channel_queue = broker.channel_queue("webhook");
    broker.wait_for_message_count(&queue, 2).await;

    let by_kind = dlq(&config, &["replay", "--kind", "recipient_gone"]).await;
    let first = broker.get_from(&channel_queue).await;
    broker.wait_for_message_count(&queue, 1).await;
    let other_id = exhausted.notification_id.to_string();
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let by_unknown_id = dlq(&config, &["replay", "--notification-id", &unknown_id]).await;
    broker.wait_for_message_count(&queue, 1).await;
    let by_id = dlq(&config, &["replay", "--notification-id", &other_id]).await;
    let second = broker.get_from(&channel_queue).await;
    let typo = dlq(&config, &["replay", "--kind", "recipient-gone"]).await;

    assert!(by_kind.success(), "{by_kind}");
    assert!(by_kind.stdout.contains("replayed 1, skipped 1, failed 0"), "{by_kind}");
    let first = first.expect("the recipient_gone dead letter is replayed");
    assert_eq!(first.raw, gone.body(), "only the matching kind moves");
    assert!(by_unknown_id.success(), "{by_unknown_id}");
    assert!(by_unknown_id.stdout.contains("replayed 0, skipped 1, failed 0"), "{by_unknown_id}");
    assert!(by_id.success(), "{by_id}");
    let second = second.expect("the dead letter with that notification id is replayed");
    assert_eq!(second.raw, exhausted.body());
    assert_eq!(broker.message_count(&queue).await, Some(0));
    assert_eq!(typo.status.code(), Some(2), "clap rejects an unknown kind: {typo}");
    assert!(typo.stderr.contains("recipient_gone"), "the error lists the valid kinds: {typo}");
    broker.cleanup(&declared_queues(&broker, &["webhook"])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_replay_stops_when_publish_fails() {
    let broker = TestBroker::new().await;
    let config = ConfigFile::for_broker(&broker, &ServiceSettings::webhook());
    let declared = run_cli(&["topology", "declare", "--config", config.path().to_str().unwrap()]).await;
    assert!(declared.success(), "{declared}");
    // Only the webhook queue exists, so the notify exchange cannot route an SMS.
    let sms = DispatchMessage::new("sms", "render_completed", json!({"phone": "+15550100"}), json!({}))
        .with_header("x-original-routing-key", long_string("notify.channel.sms"))
        .with_header("x-failure-kind", long_string("configuration"))
        .with_header("x-failed-by", long_string("notification-service"));
    broker.publish_dead_letter("notify.channel.sms", &sms.body(), sms.properties()).await;
    let queue = dead_letter_queue(&broker);
    broker.wait_for_message_count(&queue, 1).await;

    let replay = dlq(&config, &["replay"]).await;

    assert_eq!(replay.status.code(), Some(1), "{replay}");
    assert!(replay.stdout.contains("replayed 0, skipped 0, failed 1"), "{replay}");
    assert!(replay.stderr.contains("notify.channel.sms"), "the error names the routing key: {replay}");
    assert!(replay.stderr.contains("stays in the dead letter queue"), "{replay}");
    broker.wait_for_message_count(&queue, 1).await;
    let kept = broker.get_from(&queue).await.expect("the message is still in the dead letter queue");
    assert_eq!(kept.raw, sms.body());
    assert_eq!(kept.header("x-failure-kind").as_deref(), Some("configuration"));
    broker.cleanup(&declared_queues(&broker, &["webhook"])).await;
}
