//! A conformance kit for channel plugins, ours or a team's.
//!
//! A plugin's tests implement [`ConformanceHarness`]: given a [`Scenario`],
//! build the plugin against a provider stand-in (a wiremock server, a test
//! SMTP server) that answers every request that way. [`run`] then checks
//! what the dispatcher relies on:
//!
//! - an accepted send returns a [`Receipt`] that names its provider;
//! - the provider's transient and permanent answers are classified as such;
//! - a provider's retry-after is passed on, never shortened;
//! - a malformed provider answer, content of another channel, a recipient of
//!   another channel, and odd text (empty, huge, control characters) never
//!   make the plugin panic, and the mismatches are permanent errors;
//! - no error's text or debug output contains a configured secret.
//!
//! Enable the `conformance` feature of `notify-core` in the plugin crate's
//! dev-dependencies to use it.

use std::any::Any;
use std::fmt::Write as _;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::FutureExt;

use crate::channel::{Channel, ChannelKind, Notification, Receipt};
use crate::content::{Content, EmailContent, ParseMode};
use crate::error::DeliveryError;
use crate::recipient::{ChatId, PushPlatform, Recipient};

/// The retry-after the kit asks a provider stand-in to send, in seconds.
pub const RETRY_AFTER_SECS: u64 = 7;

/// The response of the provider stand-in to every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The provider accepts the message.
    Accept,
    /// The provider is down or overloaded: retrying later can help.
    Unavailable,
    /// The provider asks to wait this long before the next request.
    RateLimited(Duration),
    /// The provider refuses the message for good (invalid request, unknown recipient).
    Rejected,
    /// The provider's response cannot be parsed (truncated or garbage body).
    Malformed,
}

/// A plugin built for one scenario, with whatever must stay alive while it runs.
pub struct Setup {
    pub channel: Arc<dyn Channel>,
    /// The provider stand-in, dropped when the scenario is done.
    pub guard: Box<dyn Any + Send>,
}

/// The parts a plugin's tests provide to run the kit.
#[async_trait]
pub trait ConformanceHarness: Send + Sync {
    /// Builds the plugin against a provider stand-in answering as `scenario` says.
    async fn setup(&self, scenario: Scenario) -> Setup;

    /// A valid notification for the plugin's channel.
    fn notification(&self) -> Notification;

    /// Secrets the plugin was configured with; no error may show them.
    fn secrets(&self) -> Vec<String>;

    /// Whether the provider can give this answer at all; SMTP, for one, has
    /// no retry-after. The kit skips unsupported scenarios.
    fn supports(&self, scenario: Scenario) -> bool {
        let _ = scenario;
        true
    }
}

/// Runs every check and panics with the list of those that failed.
pub async fn run<H: ConformanceHarness>(harness: &H) {
    let failures = check(harness).await;
    if !failures.is_empty() {
        let mut report = String::from("channel plugin failed the conformance kit:\n");
        for failure in &failures {
            let _ = writeln!(report, "- {failure}");
        }
        panic!("{report}");
    }
}

/// Runs every check and returns a description of each failure.
pub async fn check<H: ConformanceHarness>(harness: &H) -> Vec<String> {
    let mut failures = Vec::new();
    let secrets: Vec<String> = harness.secrets().into_iter().filter(|secret| !secret.is_empty()).collect();
    let notification = harness.notification();

    check_accept(harness, &notification, &mut failures).await;
    let classified = [
        (Scenario::Unavailable, Expect::Transient(None)),
        (Scenario::RateLimited(Duration::from_secs(RETRY_AFTER_SECS)), Expect::Transient(Some(RETRY_AFTER_SECS))),
        (Scenario::Rejected, Expect::Permanent),
        (Scenario::Malformed, Expect::NoPanic),
    ];
    for (scenario, expect) in classified {
        if !harness.supports(scenario) {
            continue;
        }
        let setup = harness.setup(scenario).await;
        let outcome = send_catching(setup.channel.as_ref(), &notification).await;
        judge(&format!("{scenario:?} answer"), outcome, expect, &secrets, &mut failures);
    }

    let setup = harness.setup(Scenario::Accept).await;
    for (name, odd, expect) in odd_inputs(&notification) {
        let outcome = send_catching(setup.channel.as_ref(), &odd).await;
        judge(name, outcome, expect, &secrets, &mut failures);
    }
    failures
}

async fn check_accept<H: ConformanceHarness>(harness: &H, notification: &Notification, failures: &mut Vec<String>) {
    let setup = harness.setup(Scenario::Accept).await;
    if setup.channel.kind() != notification.channel {
        failures.push(format!(
            "plugin serves {} but the harness notification is for {}",
            setup.channel.kind(),
            notification.channel
        ));
    }
    match send_catching(setup.channel.as_ref(), notification).await {
        Outcome::Sent(receipt) if receipt.provider.is_empty() => failures.push("accepted send returned a receipt without a provider name".to_owned()),
        Outcome::Sent(_) => {}
        Outcome::Failed(error) => failures.push(format!("accepted send returned an error: {error}")),
        Outcome::Panicked(reason) => failures.push(format!("accepted send panicked: {reason}")),
    }
}

/// The expected result of a send.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A transient error, with at least this retry-after in seconds when set.
    Transient(Option<u64>),
    Permanent,
    /// Any result but a panic.
    NoPanic,
}

enum Outcome {
    Sent(Receipt),
    Failed(DeliveryError),
    Panicked(String),
}

async fn send_catching(channel: &dyn Channel, notification: &Notification) -> Outcome {
    match AssertUnwindSafe(channel.send(notification)).catch_unwind().await {
        Ok(Ok(receipt)) => Outcome::Sent(receipt),
        Ok(Err(error)) => Outcome::Failed(error),
        Err(panic) => Outcome::Panicked(
            panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".to_owned()),
        ),
    }
}

fn judge(name: &str, outcome: Outcome, expect: Expect, secrets: &[String], failures: &mut Vec<String>) {
    let error = match outcome {
        Outcome::Panicked(reason) => {
            failures.push(format!("{name}: plugin panicked: {reason}"));
            return;
        }
        Outcome::Sent(_) => {
            if !matches!(expect, Expect::NoPanic) {
                failures.push(format!("{name}: expected an error ({expect:?}), got a receipt"));
            }
            return;
        }
        Outcome::Failed(error) => error,
    };
    match expect {
        Expect::Transient(minimum) => {
            if !error.is_transient() {
                failures.push(format!("{name}: expected a transient error, got a permanent one: {error}"));
            }
            if let Some(seconds) = minimum {
                let floor = Duration::from_secs(seconds);
                if error.retry_after().is_none_or(|after| after < floor) {
                    failures.push(format!(
                        "{name}: expected a retry-after of at least {seconds} s, got {:?}",
                        error.retry_after()
                    ));
                }
            }
        }
        Expect::Permanent => {
            if error.is_transient() {
                failures.push(format!("{name}: expected a permanent error, got a transient one: {error}"));
            }
        }
        Expect::NoPanic => {}
    }
    if error.message().trim().is_empty() {
        failures.push(format!("{name}: error has an empty message"));
    }
    let shown = shown_text(&error);
    for secret in secrets {
        if shown.contains(secret.as_str()) {
            failures.push(format!("{name}: error text or debug output contains a configured secret"));
        }
    }
}

/// Everything of an error that can reach a log, an event or a header.
fn shown_text(error: &DeliveryError) -> String {
    let mut text = format!("{error}\n{error:?}\n");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let _ = writeln!(text, "{cause}\n{cause:?}");
        source = cause.source();
    }
    text
}

/// Variations of a valid notification that a plugin must survive.
fn odd_inputs(valid: &Notification) -> Vec<(&'static str, Notification, Expect)> {
    let mut inputs = Vec::new();
    let foreign_content = if valid.channel == ChannelKind::Sms {
        Content::Push { title: "t".into(), body: "b".into() }
    } else {
        Content::Sms { body: "hello".into() }
    };
    inputs.push(("content of another channel", Notification { content: foreign_content, ..valid.clone() }, Expect::Permanent));

    let foreign_recipient = if valid.channel == ChannelKind::Webhook {
        Recipient::Sms { phone: "+15550100".into() }
    } else {
        Recipient::Webhook { url: "https://example.com/hook".into() }
    };
    inputs.push(("recipient of another channel", Notification { recipient: foreign_recipient, ..valid.clone() }, Expect::Permanent));

    for (name, text) in [
        ("empty text", String::new()),
        ("huge text", "x".repeat(100_000)),
        ("control and bidi characters", "a\u{0}b\u{7}c\u{202e}d\u{feff}e😀".to_owned()),
    ] {
        inputs.push((name, Notification { content: with_text(&valid.content, &text), ..valid.clone() }, Expect::NoPanic));
    }
    inputs
}

/// `content` with every text field replaced by `text`.
fn with_text(content: &Content, text: &str) -> Content {
    match content {
        Content::Email(email) => Content::Email(EmailContent {
            subject: text.replace(['\r', '\n'], " "),
            text: text.to_owned(),
            html: email.html.as_ref().map(|_| text.to_owned()),
        }),
        Content::Sms { .. } => Content::Sms { body: text.to_owned() },
        Content::Telegram { parse_mode, .. } => Content::Telegram { text: text.to_owned(), parse_mode: *parse_mode },
        Content::Push { .. } => Content::Push { title: text.to_owned(), body: text.to_owned() },
        Content::Webhook { data, .. } => Content::Webhook { message: text.to_owned(), data: data.clone() },
    }
}

/// A recipient of each channel, for harnesses that need one.
pub fn sample_recipient(channel: ChannelKind) -> Recipient {
    match channel {
        ChannelKind::Email => Recipient::Email { email: "user@example.com".into(), name: Some("Ada".into()) },
        ChannelKind::Sms => Recipient::Sms { phone: "+15550100".into() },
        ChannelKind::Telegram => Recipient::Telegram { chat_id: ChatId::Id(100_000_001) },
        ChannelKind::Push => Recipient::Push { device_token: "device-token-0001".into(), platform: PushPlatform::Fcm },
        ChannelKind::Webhook => Recipient::Webhook { url: "https://example.com/hook".into() },
    }
}

/// Content of each channel, for harnesses that need it.
pub fn sample_content(channel: ChannelKind) -> Content {
    match channel {
        ChannelKind::Email => Content::Email(EmailContent {
            subject: "Your render is ready".into(),
            text: "Download it at https://example.com/r/1".into(),
            html: Some("<p>Download it <a href=\"https://example.com/r/1\">here</a>.</p>".into()),
        }),
        ChannelKind::Sms => Content::Sms { body: "Your render is ready: https://example.com/r/1".into() },
        ChannelKind::Telegram => Content::Telegram { text: "<b>Render ready</b>".into(), parse_mode: ParseMode::Html },
        ChannelKind::Push => Content::Push { title: "Render ready".into(), body: "Intro finished rendering".into() },
        ChannelKind::Webhook => Content::Webhook {
            message: "Render of Intro finished".into(),
            data: serde_json::json!({"project_name": "Intro"}),
        },
    }
}
