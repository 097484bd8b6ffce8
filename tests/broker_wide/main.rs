//! Faults that change the whole broker: a memory alarm that blocks every
//! publisher, and a restart of the broker application. They run in a test
//! binary of their own, because cargo runs test binaries one at a time and
//! these must not disturb the tests of `tests/it`, which run in parallel.
//! Within this binary, one test at a time holds the broker.

#[allow(dead_code)]
#[path = "../it/utils/mod.rs"]
mod utils;

mod alarm;
mod restart;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use wiremock::MockServer;

use utils::{DispatchMessage, TestBroker};

/// Held by each test for its whole run.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `rabbitmqctl` with `args` and returns its output, failing the test
/// with the tool's own message when it fails.
fn rabbitmqctl(args: &[&str]) -> String {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl must be installed beside the broker (see README)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rabbitmqctl {} failed: {}{}",
        args.join(" "),
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

async fn publish_webhooks(broker: &TestBroker, url: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let message = DispatchMessage::render_completed_webhook(url);
        ids.push(message.notification_id.to_string());
        broker.publish(&message.routing_key(), &message.body(), message.properties()).await;
    }
    ids
}

/// Counts the requests the receiver got per notification id.
async fn requests_per_notification(receiver: &MockServer) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for request in receiver.received_requests().await.unwrap() {
        let id = request.headers.get("webhook-id").unwrap().to_str().unwrap().to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
