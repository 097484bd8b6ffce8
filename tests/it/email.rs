//! Email through the whole pipeline: rendering, SMTP, and the refusal of
//! values that would inject headers.

use std::time::Duration;

use notify_testkit::smtp::SmtpServer;
use serde_json::json;

use crate::utils::{DispatchMessage, ServiceProcess, ServiceSettings, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_is_multipart_with_stable_message_id() {
    let broker = TestBroker::new().await;
    let smtp = SmtpServer::start("127.0.0.1:0").await.unwrap();
    let service = ServiceProcess::start(&broker, ServiceSettings::email(smtp.addr().port()), &["email"]).await;

    let mut message = DispatchMessage::render_completed_email("user@example.com");
    message.data_mut()["locale"] = json!("de");
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    broker.events_of_type("notification.delivered.v1", 1).await;
    let mail = smtp.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(mail.rcpt_to, ["user@example.com"]);
    let raw = String::from_utf8_lossy(&mail.data).into_owned();
    assert!(raw.contains(&format!("<{}@", message.notification_id)), "Message-ID from the notification id:\n{raw}");
    assert!(raw.contains("multipart/alternative"), "text and HTML parts:\n{raw}");
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_break_in_subject_variable_is_never_sent() {
    let broker = TestBroker::new().await;
    let smtp = SmtpServer::start("127.0.0.1:0").await.unwrap();
    let service = ServiceProcess::start(&broker, ServiceSettings::email(smtp.addr().port()), &["email"]).await;

    let mut message = DispatchMessage::render_completed_email("user@example.com");
    message.data_mut()["variables"]["project_name"] = json!("A-100\r\nBcc: intruder@example.net\r\n\r\nInjected");
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let dead = broker.dead_letters(1).await.remove(0);
    assert_eq!(dead.header("x-failure-kind").as_deref(), Some("invalid_content"));
    let failed = broker.events_of_type("notification.failed.v1", 1).await.remove(0);
    assert_eq!(failed.body["data"]["error"]["kind"], "invalid_content");
    assert!(smtp.messages().is_empty(), "nothing reaches the mail server");
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_rejection_is_permanent_and_temporary_failure_retries() {
    let broker = TestBroker::new().await;
    let smtp = SmtpServer::start("127.0.0.1:0").await.unwrap();
    let service = ServiceProcess::start(&broker, ServiceSettings::email(smtp.addr().port()), &["email"]).await;

    smtp.reply_to_next_rcpt(450, "4.2.1 mailbox busy");
    let busy = DispatchMessage::render_completed_email("busy@example.com");
    broker.publish(&busy.routing_key(), &busy.body(), busy.properties()).await;
    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["attempts"], 2, "450 is retried");

    smtp.reply_to_next_rcpt(550, "5.1.1 no such user");
    let unknown = DispatchMessage::render_completed_email("nobody@example.com");
    broker.publish(&unknown.routing_key(), &unknown.body(), unknown.properties()).await;
    let dead = broker.dead_letters(1).await.remove(0);
    assert_eq!(dead.header("x-failure-kind").as_deref(), Some("rejected"));
    assert_eq!(dead.header("x-failure-code").as_deref(), Some("smtp_550"));
    assert!(dead.header("x-retry-count").is_none(), "550 is not retried");
    service.shutdown(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_implicit_tls_is_delivered() {
    let broker = TestBroker::new().await;
    let smtp = SmtpServer::start_implicit_tls("127.0.0.1:0").await.unwrap();
    let ca_file = std::env::temp_dir().join(format!("notify-it-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&ca_file, notify_testkit::TEST_CA_PEM).unwrap();
    let mut settings = ServiceSettings::email(smtp.addr().port());
    settings.channels_toml = settings
        .channels_toml
        .replace("tls = \"none\"", &format!("tls = \"tls\"\nca_file = \"{}\"", ca_file.display()));
    let service = ServiceProcess::start(&broker, settings, &["email"]).await;

    let message = DispatchMessage::render_completed_email("user@example.com");
    broker.publish(&message.routing_key(), &message.body(), message.properties()).await;

    let delivered = broker.events_of_type("notification.delivered.v1", 1).await.remove(0);
    assert_eq!(delivered.body["data"]["notification_id"], message.notification_id.to_string());
    let mail = smtp.wait_for(1, Duration::from_secs(10)).await.remove(0);
    assert_eq!(mail.rcpt_to, ["user@example.com"]);
    service.shutdown(&broker).await;
    std::fs::remove_file(ca_file).unwrap();
}
