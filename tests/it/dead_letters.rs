//! Invalid messages go straight to the dead letter queue, once each, with a
//! reason, and the service keeps serving the messages behind them.

use std::time::Duration;

use lapin::types::AMQPValue;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::utils::messages::long_string;
use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

struct InvalidCase {
    name: &'static str,
    body: Vec<u8>,
    message: DispatchMessage,
    kind: &'static str,
    /// Whether the message is readable enough to get a failed event.
    named: bool,
}

fn invalid_cases(url: &str) -> Vec<InvalidCase> {
    let valid = || DispatchMessage::render_completed_webhook(url);
    let case = |name, message: DispatchMessage, kind, named| InvalidCase { name, body: message.body(), message, kind, named };
    let mut cases = vec![
        case("missing trace header", valid().without_header("x-trace-id"), "invalid_message", true),
        case(
            "contradictory tenant header",
            valid().with_header("x-tenant-id", long_string(&uuid::Uuid::new_v4().to_string())),
            "invalid_message",
            true,
        ),
        case("negative retry count", valid().with_header("x-retry-count", AMQPValue::LongInt(-4)), "invalid_message", true),
        case(
            "wrong content type",
            DispatchMessage { content_type: Some("text/plain".to_owned()), ..valid() },
            "invalid_message",
            true,
        ),
    ];

    let mut unknown_template = valid();
    unknown_template.data_mut()["template"] = json!("render_complete");
    cases.push(case("unknown template", unknown_template, "unknown_template", true));

    let mut path_template = valid();
    path_template.data_mut()["template"] = json!("../secrets");
    cases.push(case("template with path characters", path_template, "invalid_message", true));

    let mut mismatch = valid();
    mismatch.data_mut()["channel"] = json!("email");
    cases.push(case("channel mismatch", mismatch, "channel_mismatch", true));

    let mut bad_recipient = valid();
    bad_recipient.data_mut()["recipient"] = json!({"url": "ftp://example.com/hook"});
    cases.push(case("invalid recipient", bad_recipient, "invalid_recipient", true));

    let mut missing_variable = valid();
    missing_variable.data_mut()["variables"] = json!({"project_name": "Intro"});
    cases.push(case("missing variable", missing_variable, "invalid_content", true));

    let mut truncated = case("truncated json", valid(), "invalid_message", false);
    truncated.body = br#"{"template":"welcome","recipient":"#.to_vec();
    cases.push(truncated);

    let mut not_utf8 = case("non-utf8 body", valid(), "invalid_message", false);
    not_utf8.body = vec![b'{', 0xff, 0xfe, b'}'];
    cases.push(not_utf8);

    let mut oversized = case("oversized body", valid(), "invalid_message", false);
    oversized.body = vec![b' '; 70 * 1024];
    cases.push(oversized);
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_invalid_message_is_dead_lettered_once() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(1).named("only the valid one").mount(&receiver).await;
    let service = ServiceProcess::start(&broker, ServiceSettings::webhook(), &["webhook"]).await;
    let url = format!("{}/hook", receiver.uri());

    let cases = invalid_cases(&url);
    for case in &cases {
        let mut properties = case.message.properties();
        properties = properties.with_message_id(case.name.into());
        broker.publish("notify.channel.webhook", &case.body, properties).await;
    }
    let valid = DispatchMessage::render_completed_webhook(&url);
    broker.publish(&valid.routing_key(), &valid.body(), valid.properties()).await;

    let dead_letters = broker.dead_letters(cases.len()).await;
    for case in &cases {
        let matching: Vec<_> = dead_letters
            .iter()
            .filter(|dead| dead.properties.message_id().as_ref().map(|id| id.as_str()) == Some(case.name))
            .collect();
        assert_eq!(matching.len(), 1, "{}: exactly one dead letter", case.name);
        let dead = matching[0];
        assert_eq!(dead.header("x-failure-kind").as_deref(), Some(case.kind), "{}: kind", case.name);
        assert!(!dead.header("x-failure-reason").unwrap_or_default().is_empty(), "{}: reason", case.name);
        assert_eq!(dead.header("x-original-routing-key").as_deref(), Some("notify.channel.webhook"), "{}", case.name);
        assert_eq!(dead.raw, case.body, "{}: original body", case.name);
        assert!(dead.header("x-retry-count").is_none() || case.name == "negative retry count", "{}: first delivery", case.name);
    }

    let named = cases.iter().filter(|case| case.named).count();
    let failed = broker.events_of_type("notification.failed.v1", named).await;
    for case in cases.iter().filter(|case| case.named) {
        let id = case.message.notification_id.to_string();
        assert!(failed.iter().any(|event| event.body["data"]["notification_id"] == id.as_str()), "{}: failed event", case.name);
    }
    broker.events_of_type("notification.delivered.v1", 1).await;
    assert!(broker.dead_letters_within(Duration::from_millis(500)).await.is_empty(), "no second dead letter");
    assert!(!service.log().contains("panicked"));
    receiver.verify().await;
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_do_not_block_the_queue() {
    let broker = TestBroker::new().await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).expect(1).mount(&receiver).await;
    let mut settings = ServiceSettings::webhook();
    settings.prefetch = 1;
    settings.concurrency = 1;
    let service = ServiceProcess::start(&broker, settings, &["webhook"]).await;
    let url = format!("{}/hook", receiver.uri());

    let truncated = DispatchMessage::render_completed_webhook(&url);
    broker.publish("notify.channel.webhook", br#"{"template":"welcome","recipient":"#, truncated.properties()).await;
    let mut misspelt = DispatchMessage::render_completed_webhook(&url);
    misspelt.data_mut()["template"] = json!("welcom");
    broker.publish(&misspelt.routing_key(), &misspelt.body(), misspelt.properties()).await;
    let valid = DispatchMessage::render_completed_webhook(&url);
    broker.publish(&valid.routing_key(), &valid.body(), valid.properties()).await;

    let dead = broker.dead_letters(2).await;
    assert_eq!(dead[0].header("x-failure-kind").as_deref(), Some("invalid_message"));
    assert_eq!(dead[1].header("x-failure-kind").as_deref(), Some("unknown_template"));
    assert!(dead[1].header("x-failure-reason").unwrap().contains("welcom"));
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await;
    assert_eq!(delivered[0].body["data"]["notification_id"], valid.notification_id.to_string());
    assert!(broker.dead_letters_within(Duration::from_millis(300)).await.is_empty());
    receiver.verify().await;
    service.shutdown(&broker).await;
}
