//! The conformance kit of notify-core, run against the email and webhook
//! plugins with real protocol peers: the testkit SMTP server and wiremock.

use std::sync::Arc;

use async_trait::async_trait;
use notify_channels::email::{EmailChannel, EmailConfig, TlsMode};
use notify_channels::webhook::{WebhookChannel, WebhookConfig};
use notify_core::conformance::{self, sample_content, ConformanceHarness, Scenario, Setup};
use notify_core::{ChannelKind, Notification, Recipient};
use notify_testkit::smtp::{Reply, SmtpServer, Stage};
use uuid::Uuid;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn notification(channel: ChannelKind, recipient: Recipient) -> Notification {
    Notification {
        notification_id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        channel,
        template: "render_completed".to_owned(),
        locale: "en".to_owned(),
        recipient,
        content: sample_content(channel),
        attempt: 1,
    }
}

/// One wiremock receiver, re-armed for each scenario, so the notification's
/// URL stays the same.
struct WebhookHarness {
    receiver: MockServer,
}

#[async_trait]
impl ConformanceHarness for WebhookHarness {
    async fn setup(&self, scenario: Scenario) -> Setup {
        self.receiver.reset().await;
        let response = match scenario {
            Scenario::Accept => ResponseTemplate::new(200),
            Scenario::Unavailable => ResponseTemplate::new(503),
            Scenario::RateLimited(wait) => ResponseTemplate::new(429).insert_header("Retry-After", wait.as_secs().to_string()),
            Scenario::Rejected => ResponseTemplate::new(400).set_body_string("bad request"),
            Scenario::Malformed => ResponseTemplate::new(200).set_body_raw(vec![0xff, 0x00, 0x7b], "application/json"),
        };
        Mock::given(any()).respond_with(response).mount(&self.receiver).await;
        let config = WebhookConfig {
            enabled: true,
            timeout_secs: 5,
            signing_secret: Some(WEBHOOK_SECRET.to_owned()),
            allow_loopback: true,
            ..WebhookConfig::default()
        };
        Setup { channel: Arc::new(WebhookChannel::new(&config).unwrap()), guard: Box::new(()) }
    }

    fn notification(&self) -> Notification {
        let url = format!("{}/hook", self.receiver.uri());
        notification(ChannelKind::Webhook, Recipient::Webhook { url })
    }

    fn secrets(&self) -> Vec<String> {
        vec![WEBHOOK_SECRET.to_owned(), WEBHOOK_SECRET.trim_start_matches("whsec_").to_owned()]
    }
}

/// A fresh SMTP server per scenario, with the scenario's reply scripted.
struct EmailHarness;

#[async_trait]
impl ConformanceHarness for EmailHarness {
    async fn setup(&self, scenario: Scenario) -> Setup {
        let server = SmtpServer::start("127.0.0.1:0").await.unwrap();
        match scenario {
            Scenario::Accept | Scenario::RateLimited(_) => {}
            Scenario::Unavailable => server.script_reply(Stage::RcptTo, Reply::new(451, "4.3.0 try again later")),
            Scenario::Rejected => server.script_reply(Stage::RcptTo, Reply::new(550, "5.1.1 no such user")),
            Scenario::Malformed => server.script_reply(Stage::DataEnd, Reply::new(999, "\u{fffd} garbage")),
        }
        let config = EmailConfig {
            enabled: true,
            host: "127.0.0.1".to_owned(),
            port: server.addr().port(),
            tls: TlsMode::None,
            from: "Flatrender <no-reply@flatrender.test>".to_owned(),
            timeout_secs: 5,
            ..EmailConfig::default()
        };
        Setup { channel: Arc::new(EmailChannel::new(&config).unwrap()), guard: Box::new(server) }
    }

    fn notification(&self) -> Notification {
        notification(ChannelKind::Email, conformance::sample_recipient(ChannelKind::Email))
    }

    fn secrets(&self) -> Vec<String> {
        // NOTE: the testkit SMTP server offers no AUTH, so no credentials are
        // configured and this check has nothing to look for yet.
        Vec::new()
    }

    fn supports(&self, scenario: Scenario) -> bool {
        // SMTP has no retry-after: a 4xx reply says "later", never when.
        !matches!(scenario, Scenario::RateLimited(_))
    }
}

#[tokio::test]
async fn webhook_passes_conformance_kit() {
    let harness = WebhookHarness { receiver: MockServer::start().await };
    conformance::run(&harness).await;
}

#[tokio::test]
async fn email_passes_conformance_kit() {
    conformance::run(&EmailHarness).await;
}
