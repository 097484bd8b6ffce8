//! The fan-out stage end to end: domain events published on the real broker,
//! dispatch messages and events read back from its queues.

mod common;

use std::collections::BTreeSet;

use common::{long_string, Harness, ReceivedMessage};
use lapin::types::{FieldTable, ShortString};
use lapin::BasicProperties;
use serde_json::{json, Value};
use uuid::Uuid;

/// Registers a user with an email address through the registration event.
async fn register(harness: &Harness, email: &str) -> Uuid {
    let user_id = Uuid::new_v4();
    let event = harness.event("identity.user.registered.v1", Some(user_id), json!({"email": email, "name": "Ada", "locale": "de"}));
    harness.publish_event(&event).await;
    user_id
}

async fn api_request(method: reqwest::Method, url: String, body: Option<Value>) -> reqwest::StatusCode {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("the contacts API answers").status()
}

fn render_completed(harness: &Harness, user_id: Uuid) -> Value {
    harness.event(
        "render.job.completed.v1",
        Some(user_id),
        json!({"project_name": "Riverside Loft", "download_url": "https://app.example.com/r/1"}),
    )
}

fn notification_ids(messages: &[ReceivedMessage]) -> BTreeSet<String> {
    messages
        .iter()
        .map(|message| message.body["data"]["notification_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn registration_sends_welcome_email() {
    let harness = Harness::start().await;
    let user_id = register(&harness, "ada@example.com").await;

    let emails = harness.wait_for(&harness.channel_queue("email"), 1).await;
    assert_eq!(emails.len(), 1);
    let dispatch = &emails[0];
    assert_eq!(dispatch.routing_key, "notify.channel.email");
    assert_eq!(dispatch.body["event_type"], "notification.created.v1");
    assert_eq!(dispatch.body["user_id"], json!(user_id));
    assert_eq!(dispatch.body["data"]["template"], "welcome");
    assert_eq!(dispatch.body["data"]["channel"], "email");
    assert_eq!(dispatch.body["data"]["locale"], "de");
    assert_eq!(dispatch.body["data"]["recipient"], json!({"email": "ada@example.com", "name": "Ada"}));
    assert_eq!(dispatch.body["data"]["variables"]["user_name"], "Ada");
    assert!(dispatch.body["data"]["variables"]["dashboard_url"].is_string());
    assert_eq!(dispatch.properties.delivery_mode(), &Some(2));
    assert_eq!(dispatch.header("x-event-type").as_deref(), Some("notification.created.v1"));
    assert_eq!(dispatch.header("x-tenant-id"), Some(harness.tenant_id.to_string()));
    assert!(dispatch.header("x-trace-id").is_some());

    // The dispatch message is valid for the dispatcher.
    let headers = notify_core::headers::read_dispatch_headers(&dispatch.properties, 3).unwrap();
    let raw = serde_json::to_vec(&dispatch.body).unwrap();
    let notify_core::envelope::ParsedBody::Valid(envelope) = notify_core::envelope::parse_dispatch(&raw) else {
        panic!("the dispatch message must parse as a valid dispatch request");
    };
    headers.check_against(&envelope).unwrap();

    let notification_id = dispatch.body["data"]["notification_id"].clone();
    let created = harness
        .wait_event(|event| event.routing_key == "notification.created.v1" && event.body["data"]["notification_id"] == notification_id)
        .await;
    assert_eq!(created.body["data"]["template"], "welcome");
    harness.cleanup().await;
}

#[tokio::test]
async fn render_completed_reaches_email_and_every_device() {
    let harness = Harness::start().await;
    let user_id = Uuid::new_v4();
    let base = format!("/v1/tenants/{}/users/{user_id}", harness.tenant_id);
    let status = api_request(reqwest::Method::PATCH, harness.api_url(&base), Some(json!({"email": "ada@example.com"}))).await;
    assert_eq!(status, 204);
    for (token, platform) in [("token-phone-1", "fcm"), ("token-tablet-2", "apns")] {
        let body = json!({"token": token, "platform": platform});
        let status = api_request(reqwest::Method::POST, harness.api_url(&format!("{base}/devices")), Some(body)).await;
        assert_eq!(status, 204);
    }

    harness.publish_event(&render_completed(&harness, user_id)).await;

    let emails = harness.wait_for(&harness.channel_queue("email"), 1).await;
    let pushes = harness.wait_for(&harness.channel_queue("push"), 2).await;
    assert_eq!(emails.len(), 1);
    assert_eq!(pushes.len(), 2);
    assert_eq!(emails[0].body["data"]["template"], "render_completed");
    assert_eq!(emails[0].body["data"]["variables"]["project_name"], "Riverside Loft");
    let tokens: BTreeSet<&str> = pushes.iter().map(|push| push.body["data"]["recipient"]["device_token"].as_str().unwrap()).collect();
    assert_eq!(tokens, BTreeSet::from(["token-phone-1", "token-tablet-2"]));
    let platforms: BTreeSet<&str> = pushes.iter().map(|push| push.body["data"]["recipient"]["platform"].as_str().unwrap()).collect();
    assert_eq!(platforms, BTreeSet::from(["apns", "fcm"]));
    let mut all = emails.clone();
    all.extend(pushes.clone());
    assert_eq!(notification_ids(&all).len(), 3, "each dispatch has its own notification id");
    // The rule sets an expiry a week after the event.
    assert!(emails[0].body["data"]["expires_at"].is_string());
    harness.cleanup().await;
}

#[tokio::test]
async fn opt_out_blocks_only_its_category_and_channel() {
    let harness = Harness::start().await;
    let user_id = register(&harness, "ada@example.com").await;
    harness.wait_for(&harness.channel_queue("email"), 1).await;
    let base = format!("/v1/tenants/{}/users/{user_id}", harness.tenant_id);
    let device = json!({"token": "token-phone-1", "platform": "fcm"});
    assert_eq!(api_request(reqwest::Method::POST, harness.api_url(&format!("{base}/devices")), Some(device)).await, 204);
    let opt_out = Some(json!({"enabled": false}));
    let push_transactional = harness.api_url(&format!("{base}/preferences/transactional/push"));
    assert_eq!(api_request(reqwest::Method::PUT, push_transactional, opt_out.clone()).await, 204);
    // A marketing opt-out never blocks transactional messages.
    let email_marketing = harness.api_url(&format!("{base}/preferences/marketing/email"));
    assert_eq!(api_request(reqwest::Method::PUT, email_marketing, opt_out).await, 204);

    harness.publish_event(&render_completed(&harness, user_id)).await;
    harness.barrier().await;

    let emails = harness.take_all(&harness.channel_queue("email")).await;
    let pushes = harness.take_all(&harness.channel_queue("push")).await;
    assert_eq!(emails.len(), 1, "the transactional email is sent");
    assert!(pushes.is_empty(), "the opted-out push channel gets nothing: {pushes:?}");
    harness.cleanup().await;
}

#[tokio::test]
async fn redelivered_event_keeps_notification_id() {
    let harness = Harness::start().await;
    let user_id = register(&harness, "ada@example.com").await;
    harness.wait_for(&harness.channel_queue("email"), 1).await;

    let event = render_completed(&harness, user_id);
    harness.publish_event(&event).await;
    harness.publish_event(&event).await;

    let emails = harness.wait_for(&harness.channel_queue("email"), 2).await;
    assert_eq!(emails.len(), 2, "each delivery of the event is published");
    assert_eq!(notification_ids(&emails).len(), 1, "both carry the same notification id");
    assert_eq!(emails[0].body["event_id"], emails[1].body["event_id"]);
    harness.cleanup().await;
}

#[tokio::test]
async fn unmatched_event_is_acked_and_ignored() {
    let harness = Harness::start().await;
    // Published straight to the stage's queue: no rule matches this type.
    let event = harness.event("studio.project.saved.v1", Some(Uuid::new_v4()), json!({}));
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from("x-event-type"), long_string("studio.project.saved.v1"));
    headers.insert(ShortString::from("x-tenant-id"), long_string(&harness.tenant_id.to_string()));
    headers.insert(ShortString::from("x-trace-id"), long_string(event["trace_id"].as_str().unwrap()));
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(headers);
    harness.publish_raw("", &harness.stage_queue, &serde_json::to_vec(&event).unwrap(), properties).await;
    harness.barrier().await;

    assert_eq!(harness.queue_counts(&harness.stage_queue).await.map(|(ready, _)| ready), Some(0), "the event was acked");
    for channel in common::CHANNELS {
        assert!(harness.take_all(&harness.channel_queue(channel)).await.is_empty(), "nothing on {channel}");
    }
    assert!(harness.take_all(&harness.dead_letter_queue()).await.is_empty(), "the event was not dead-lettered");
    let events = harness.observed_events().await;
    assert!(events.is_empty(), "no events for an unmatched event: {events:?}");
    harness.cleanup().await;
}

#[tokio::test]
async fn unknown_user_yields_no_recipient_failure() {
    let harness = Harness::start().await;
    let user_id = Uuid::new_v4();
    let event = harness.event("identity.payment.failed.v1", Some(user_id), json!({"amount": "49.00", "currency": "EUR"}));
    harness.publish_event(&event).await;

    let failed = harness
        .wait_event(|received| received.routing_key == "notification.failed.v1" && received.body["data"]["source_event_id"] == event["event_id"])
        .await;
    assert_eq!(failed.body["data"]["error"]["kind"], "no_recipient");
    assert_eq!(failed.body["data"]["template"], "payment_failed");
    assert_eq!(failed.body["user_id"], json!(user_id));
    assert_eq!(failed.body["trace_id"], event["trace_id"]);
    assert_eq!(failed.header("x-event-type").as_deref(), Some("notification.failed.v1"));
    assert!(harness.take_all(&harness.channel_queue("email")).await.is_empty());
    harness.cleanup().await;
}

#[tokio::test]
async fn invalid_events_are_dead_lettered() {
    let harness = Harness::start().await;
    let mut headers = FieldTable::default();
    headers.insert(ShortString::from("x-event-type"), long_string("render.job.completed.v1"));
    headers.insert(ShortString::from("x-tenant-id"), long_string(&harness.tenant_id.to_string()));
    headers.insert(ShortString::from("x-trace-id"), long_string("trace-1"));
    let json_properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("utf-8".into())
        .with_headers(headers);
    let events = format!("{}.events", harness.id);
    harness.publish_raw(&events, "render.job.completed.v1", b"{\"event_id\":", json_properties).await;
    // Valid JSON, but no contract headers at all.
    let event = render_completed(&harness, Uuid::new_v4());
    harness
        .publish_raw(&events, "render.job.completed.v1", &serde_json::to_vec(&event).unwrap(), BasicProperties::default())
        .await;

    let dead_letters = harness.wait_for(&harness.dead_letter_queue(), 2).await;
    assert_eq!(dead_letters.len(), 2);
    for dead_letter in &dead_letters {
        assert_eq!(dead_letter.header("x-original-routing-key").as_deref(), Some("render.job.completed.v1"));
        assert_eq!(dead_letter.header("x-failure-kind").as_deref(), Some("invalid_message"));
    }
    let reasons: Vec<String> = dead_letters.iter().map(|dead| dead.header("x-failure-reason").unwrap()).collect();
    assert!(reasons[0].contains("invalid envelope"), "{}", reasons[0]);
    assert!(reasons[1].contains("content-type"), "{}", reasons[1]);
    assert_eq!(harness.queue_counts(&harness.stage_queue).await.map(|(ready, _)| ready), Some(0));
    harness.cleanup().await;
}

#[tokio::test]
async fn banned_user_and_suspended_tenant_get_nothing() {
    let harness = Harness::start().await;
    let banned = register(&harness, "banned@example.com").await;
    let active = register(&harness, "active@example.com").await;
    harness.wait_for(&harness.channel_queue("email"), 2).await;

    harness.publish_event(&harness.event("identity.user.banned.v1", Some(banned), json!({}))).await;
    harness.publish_event(&render_completed(&harness, banned)).await;
    harness.barrier().await;
    assert!(harness.take_all(&harness.channel_queue("email")).await.is_empty(), "a banned user gets nothing");

    harness.publish_event(&harness.event("identity.tenant.suspended.v1", Some(active), json!({}))).await;
    let notices = harness.wait_for(&harness.channel_queue("email"), 1).await;
    assert_eq!(notices[0].body["data"]["template"], "tenant_suspended", "the suspension notice itself goes out");
    harness.publish_event(&render_completed(&harness, active)).await;
    harness.barrier().await;
    assert!(harness.take_all(&harness.channel_queue("email")).await.is_empty(), "a suspended tenant gets nothing");
    harness.cleanup().await;
}

#[tokio::test]
async fn recipient_gone_removes_device_token() {
    let harness = Harness::start().await;
    let user_id = register(&harness, "ada@example.com").await;
    harness.wait_for(&harness.channel_queue("email"), 1).await;
    let base = format!("/v1/tenants/{}/users/{user_id}", harness.tenant_id);
    for token in ["token-dead", "token-alive"] {
        let body = json!({"token": token, "platform": "fcm"});
        assert_eq!(api_request(reqwest::Method::POST, harness.api_url(&format!("{base}/devices")), Some(body)).await, 204);
    }
    harness.publish_event(&render_completed(&harness, user_id)).await;
    let pushes = harness.wait_for(&harness.channel_queue("push"), 2).await;
    let dead = pushes.iter().find(|push| push.body["data"]["recipient"]["device_token"] == "token-dead").unwrap();

    // The dispatcher's failure event names only the notification id.
    let failure = harness.event(
        "notification.failed.v1",
        Some(user_id),
        json!({
            "notification_id": dead.body["data"]["notification_id"],
            "channel": "push",
            "template": "render_completed",
            "attempts": 1,
            "error": {"kind": "recipient_gone", "message": "unregistered"}
        }),
    );
    harness.publish_event(&failure).await;

    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let contact = harness.store.contact(harness.tenant_id, user_id).await.unwrap().unwrap();
        let tokens: Vec<&str> = contact.devices.iter().map(|device| device.token.as_str()).collect();
        if tokens == ["token-alive"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "devices are still {tokens:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    harness.cleanup().await;
}

#[tokio::test]
async fn quiet_hours_hold_push_but_not_email() {
    let mut harness = Harness::start().await;
    let user_id = register(&harness, "ada@example.com").await;
    harness.wait_for(&harness.channel_queue("email"), 1).await;
    let base = format!("/v1/tenants/{}/users/{user_id}", harness.tenant_id);
    let device = json!({"token": "token-phone-1", "platform": "fcm"});
    assert_eq!(api_request(reqwest::Method::POST, harness.api_url(&format!("{base}/devices")), Some(device)).await, 204);
    assert_eq!(api_request(reqwest::Method::PATCH, harness.api_url(&base), Some(json!({"time_zone": "UTC"}))).await, 204);
    // A window from an hour ago to two hours ahead, in UTC.
    let now = chrono::Utc::now();
    let start = (now - chrono::Duration::hours(1)).format("%H:%M").to_string();
    let end = (now + chrono::Duration::hours(2)).format("%H:%M").to_string();
    let quiet = json!({"start": start, "end": end});
    assert_eq!(api_request(reqwest::Method::PUT, harness.api_url(&format!("{base}/quiet-hours")), Some(quiet)).await, 204);

    harness.publish_event(&render_completed(&harness, user_id)).await;
    harness.barrier().await;

    assert_eq!(harness.take_all(&harness.channel_queue("email")).await.len(), 1, "email is not held_messages");
    assert!(harness.take_all(&harness.channel_queue("push")).await.is_empty(), "push waits for the window to end");
    // Just under two hours, rounded up to the 15-minute step.
    let hold_queue = format!("{}.notify.fanout.hold.push.120m", harness.id);
    harness.track_queue(&hold_queue);
    let held_messages = harness.take_all(&hold_queue).await;
    assert_eq!(held_messages.len(), 1);
    assert_eq!(held_messages[0].body["data"]["recipient"]["device_token"], "token-phone-1");
    harness.cleanup().await;
}

#[tokio::test]
async fn urgent_rule_ignores_quiet_hours() {
    let harness = Harness::start().await;
    let user_id = Uuid::new_v4();
    let base = format!("/v1/tenants/{}/users/{user_id}", harness.tenant_id);
    let fields = json!({"phone": "+4915550100", "time_zone": "Europe/Berlin"});
    assert_eq!(api_request(reqwest::Method::PATCH, harness.api_url(&base), Some(fields)).await, 204);
    // A window of all but one minute of the day.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Berlin);
    let start = now.format("%H:%M").to_string();
    let end = (now - chrono::Duration::minutes(1)).format("%H:%M").to_string();
    let quiet = json!({"start": start, "end": end});
    assert_eq!(api_request(reqwest::Method::PUT, harness.api_url(&format!("{base}/quiet-hours")), Some(quiet)).await, 204);

    let event = harness.event("file.quota_exceeded.v1", Some(user_id), json!({"quota_name": "storage"}));
    harness.publish_event(&event).await;

    let messages = harness.wait_for(&harness.channel_queue("sms"), 1).await;
    assert_eq!(messages[0].body["data"]["template"], "quota_exceeded");
    assert_eq!(messages[0].body["data"]["recipient"], json!({"phone": "+4915550100"}));
    harness.cleanup().await;
}

#[tokio::test]
async fn tenant_webhooks_and_telegram_get_dispatches() {
    let harness = Harness::start().await;
    let user_id = Uuid::new_v4();
    let tenant = harness.tenant_id;
    for url in ["https://hooks.example.com/a", "https://hooks.example.com/b"] {
        let status = api_request(reqwest::Method::POST, harness.api_url(&format!("/v1/tenants/{tenant}/webhooks")), Some(json!({"url": url}))).await;
        assert_eq!(status, 204);
    }
    let telegram = harness.api_url(&format!("/v1/tenants/{tenant}/users/{user_id}/telegram"));
    assert_eq!(api_request(reqwest::Method::PUT, telegram, Some(json!({"chat_id": 123456789}))).await, 204);

    harness.publish_event(&render_completed(&harness, user_id)).await;
    let webhooks = harness.wait_for(&harness.channel_queue("webhook"), 2).await;
    let urls: BTreeSet<&str> = webhooks.iter().map(|message| message.body["data"]["recipient"]["url"].as_str().unwrap()).collect();
    assert_eq!(urls, BTreeSet::from(["https://hooks.example.com/a", "https://hooks.example.com/b"]));

    let snapshot = harness.event("render.snapshot.ready.v1", Some(user_id), json!({"project_name": "Loft", "snapshot_url": "https://x.test/s"}));
    harness.publish_event(&snapshot).await;
    let chats = harness.wait_for(&harness.channel_queue("telegram"), 1).await;
    assert_eq!(chats[0].body["data"]["recipient"], json!({"chat_id": 123456789}));
    assert_eq!(chats[0].body["data"]["template"], "snapshot_ready");
    harness.cleanup().await;
}

#[tokio::test]
async fn marketing_email_needs_verified_address() {
    let routes = "[[route]]\nevents = [\"studio.*.saved.v1\"]\ntemplate = \"welcome\"\nchannels = [\"email\"]\ncategory = \"marketing\"\n\
                  [route.constants]\nuser_name = \"Ada\"\ndashboard_url = \"https://x.test\"\n";
    let harness = Harness::start_with_routes(Some(routes)).await;
    let user_id = Uuid::new_v4();
    harness.store.upsert_user(harness.tenant_id, user_id, Some("ada@example.com"), None, None).await.unwrap();

    harness.publish_event(&harness.event("studio.project.saved.v1", Some(user_id), json!({}))).await;
    harness.publish_event(&harness.event("identity.user.email_verified.v1", Some(user_id), json!({}))).await;
    let after_verification = harness.event("studio.project.saved.v1", Some(user_id), json!({}));
    harness.publish_event(&after_verification).await;

    let emails = harness.wait_for(&harness.channel_queue("email"), 1).await;
    assert_eq!(emails.len(), 1, "only the event after the verification is sent");
    assert_eq!(emails[0].body["data"]["source_event_id"], after_verification["event_id"]);
    assert_eq!(emails[0].body["data"]["variables"]["user_name"], "Ada");

    // A marketing opt-out then stops it.
    harness.store.set_opt_out(harness.tenant_id, user_id, "marketing", "email", true).await.unwrap();
    harness.publish_event(&harness.event("studio.project.saved.v1", Some(user_id), json!({}))).await;
    let unknown_user = harness.event("studio.project.saved.v1", Some(Uuid::new_v4()), json!({}));
    harness.publish_event(&unknown_user).await;
    harness.wait_event(|received| received.body["data"]["source_event_id"] == unknown_user["event_id"]).await;
    assert!(harness.take_all(&harness.channel_queue("email")).await.is_empty());
    harness.cleanup().await;
}

#[tokio::test]
async fn contacts_api_rejects_invalid_values() {
    let harness = Harness::start().await;
    let base = format!("/v1/tenants/{}/users/{}", harness.tenant_id, Uuid::new_v4());
    let cases = [
        (reqwest::Method::PATCH, base.clone(), json!({"time_zone": "Mars/Olympus"})),
        (reqwest::Method::PATCH, base.clone(), json!({"phone": "0150 123"})),
        (reqwest::Method::PATCH, base.clone(), json!({"locale": "german"})),
        (reqwest::Method::PATCH, base.clone(), json!({"email": "no-at-sign"})),
        (reqwest::Method::PATCH, base.clone(), json!({"fax": "+4915550100"})),
        (reqwest::Method::POST, format!("{base}/devices"), json!({"token": "t-1", "platform": "windows"})),
        (reqwest::Method::PUT, format!("{base}/telegram"), json!({"chat_id": "not a chat"})),
        (reqwest::Method::PUT, format!("{base}/preferences/newsletter/email"), json!({"enabled": false})),
        (reqwest::Method::PUT, format!("{base}/preferences/marketing/fax"), json!({"enabled": false})),
        (reqwest::Method::PUT, format!("{base}/quiet-hours"), json!({"start": "25:00", "end": "07:00"})),
        (reqwest::Method::POST, format!("/v1/tenants/{}/webhooks", harness.tenant_id), json!({"url": "ftp://x.test"})),
        (reqwest::Method::PATCH, "/v1/tenants/not-a-uuid/users/also-not".to_owned(), json!({"phone": "+4915550100"})),
    ];
    for (method, path, body) in cases {
        let status = api_request(method.clone(), harness.api_url(&path), Some(body.clone())).await;
        assert_eq!(status, 400, "{method} {path} {body}");
    }
    let status = api_request(reqwest::Method::GET, harness.api_url(&base), None).await;
    assert_eq!(status, 404, "nothing was stored");
    harness.cleanup().await;
}

#[tokio::test]
async fn api_token_is_required_when_set() {
    let harness = Harness::start_with_api_token("t0ken-for-tests").await;
    let contact = harness.api_url(&format!("/v1/tenants/{}/users/{}", Uuid::new_v4(), Uuid::new_v4()));
    let client = reqwest::Client::new();
    let patch = |authorization: Option<&str>| {
        let mut request = client.patch(&contact).json(&json!({"email": "ada@example.com"}));
        if let Some(authorization) = authorization {
            request = request.header("Authorization", authorization);
        }
        request.send()
    };

    let missing = patch(None).await.expect("the contacts API answers");
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    let wrong = patch(Some("Bearer t0ken-for-test")).await.expect("the contacts API answers");
    assert_eq!(wrong.status(), 401);
    let not_bearer = patch(Some("Basic t0ken-for-tests")).await.expect("the contacts API answers");
    assert_eq!(not_bearer.status(), 401);
    let unread = client.get(&contact).send().await.expect("the contacts API answers");
    assert_eq!(unread.status(), 401, "reads need the token too");

    let accepted = patch(Some("Bearer t0ken-for-tests")).await.expect("the contacts API answers");
    assert_eq!(accepted.status(), 204);
    let lowercase_scheme = patch(Some("bearer t0ken-for-tests")).await.expect("the contacts API answers");
    assert_eq!(lowercase_scheme.status(), 204, "the scheme is case-insensitive");
    let read = client
        .get(&contact)
        .header("Authorization", "Bearer t0ken-for-tests")
        .send()
        .await
        .expect("the contacts API answers");
    assert_eq!(read.status(), 200);
    harness.cleanup().await;
}
