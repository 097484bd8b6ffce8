//! The contacts store on SQLite and on the local PostgreSQL server, each
//! test in a database of its own.

mod common;

use common::TestDatabase;
use notify_core::PushPlatform;
use notify_fanout::quiet::QuietHours;
use notify_fanout::store::{ContactField, Device};
use notify_fanout::ContactStore;
use uuid::Uuid;

async fn contacts_round_trip(database: &TestDatabase) {
    let store = ContactStore::connect(&database.url()).await.unwrap();
    let tenant = Uuid::new_v4();
    let user = Uuid::new_v4();
    assert!(store.contact(tenant, user).await.unwrap().is_none(), "unknown user");

    store.upsert_user(tenant, user, Some("ada@example.com"), Some("Ada"), Some("de")).await.unwrap();
    // A later registration without a name keeps the stored one.
    store.upsert_user(tenant, user, Some("ada@example.org"), None, None).await.unwrap();
    store.set_field(tenant, user, ContactField::Phone, Some("+4915550100")).await.unwrap();
    store.set_field(tenant, user, ContactField::TimeZone, Some("Europe/Berlin")).await.unwrap();
    store.set_field(tenant, user, ContactField::TelegramChatId, Some("123456789")).await.unwrap();
    store.mark_email_verified(tenant, user, None).await.unwrap();
    store.set_quiet_hours(tenant, user, QuietHours::parse("22:00", "07:00")).await.unwrap();
    store.set_opt_out(tenant, user, "marketing", "email", true).await.unwrap();
    store.set_opt_out(tenant, user, "marketing", "sms", true).await.unwrap();
    store.set_opt_out(tenant, user, "marketing", "sms", false).await.unwrap();
    store.add_device(tenant, user, &Device { token: "token-a".into(), platform: PushPlatform::Fcm }).await.unwrap();
    store.add_device(tenant, user, &Device { token: "token-b".into(), platform: PushPlatform::Apns }).await.unwrap();

    let contact = store.contact(tenant, user).await.unwrap().unwrap();
    assert_eq!(contact.email.as_deref(), Some("ada@example.org"));
    assert_eq!(contact.name.as_deref(), Some("Ada"));
    assert_eq!(contact.locale.as_deref(), Some("de"));
    assert_eq!(contact.phone.as_deref(), Some("+4915550100"));
    assert_eq!(contact.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(contact.telegram_chat_id.as_deref(), Some("123456789"));
    assert!(contact.email_verified);
    assert!(!contact.banned);
    assert_eq!(contact.quiet_hours, QuietHours::parse("22:00", "07:00"));
    assert_eq!(contact.opt_outs.len(), 1);
    assert!(contact.opt_outs.contains(&("marketing".to_owned(), "email".to_owned())));
    let tokens: Vec<&str> = contact.devices.iter().map(|device| device.token.as_str()).collect();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.contains(&"token-a"));
    assert!(tokens.contains(&"token-b"));

    // Clearing a field stores NULL.
    store.set_field(tenant, user, ContactField::Phone, None).await.unwrap();
    store.set_quiet_hours(tenant, user, None).await.unwrap();
    let contact = store.contact(tenant, user).await.unwrap().unwrap();
    assert_eq!(contact.phone, None);
    assert_eq!(contact.quiet_hours, None);

    store.set_banned(tenant, user, true).await.unwrap();
    assert!(store.contact(tenant, user).await.unwrap().unwrap().banned);
    store.close().await;
}

async fn devices_and_tenants(database: &TestDatabase) {
    let store = ContactStore::connect(&database.url()).await.unwrap();
    let tenant = Uuid::new_v4();
    let first = Uuid::new_v4();
    let second = Uuid::new_v4();

    // A token registered by another user moves to that user.
    let device = Device { token: "token-shared".into(), platform: PushPlatform::Fcm };
    store.add_device(tenant, first, &device).await.unwrap();
    store.add_device(tenant, second, &device).await.unwrap();
    assert!(store.contact(tenant, first).await.unwrap().unwrap().devices.is_empty());
    assert_eq!(store.contact(tenant, second).await.unwrap().unwrap().devices, vec![device.clone()]);

    let notification = Uuid::new_v4();
    store.record_push(notification, "token-shared").await.unwrap();
    store.record_push(notification, "token-shared").await.unwrap();
    assert_eq!(store.push_token(notification).await.unwrap().as_deref(), Some("token-shared"));
    assert_eq!(store.push_token(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(store.remove_token("token-shared").await.unwrap(), 1);
    assert!(!store.remove_device(tenant, second, "token-shared").await.unwrap());

    assert!(!store.tenant_suspended(tenant).await.unwrap(), "unknown tenants are not suspended");
    store.set_tenant_suspended(tenant, true).await.unwrap();
    assert!(store.tenant_suspended(tenant).await.unwrap());

    store.add_webhook(tenant, "https://hooks.example.com/a").await.unwrap();
    store.add_webhook(tenant, "https://hooks.example.com/a").await.unwrap();
    store.add_webhook(tenant, "https://hooks.example.com/b").await.unwrap();
    assert_eq!(store.webhooks(tenant).await.unwrap().len(), 2);
    assert!(store.remove_webhook(tenant, "https://hooks.example.com/a").await.unwrap());
    assert_eq!(store.webhooks(tenant).await.unwrap(), vec!["https://hooks.example.com/b".to_owned()]);
    assert!(store.webhooks(Uuid::new_v4()).await.unwrap().is_empty());
    store.close().await;

    // Connecting again finds the migrations applied and the data kept.
    let reopened = ContactStore::connect(&database.url()).await.unwrap();
    assert!(reopened.tenant_suspended(tenant).await.unwrap());
    reopened.close().await;
}

#[tokio::test]
async fn sqlite_contacts_round_trip() {
    let database = TestDatabase::sqlite();
    contacts_round_trip(&database).await;
    database.remove().await;
}

#[tokio::test]
async fn postgres_contacts_round_trip() {
    let database = TestDatabase::postgres().await;
    contacts_round_trip(&database).await;
    database.remove().await;
}

#[tokio::test]
async fn sqlite_devices_and_tenants() {
    let database = TestDatabase::sqlite();
    devices_and_tenants(&database).await;
    database.remove().await;
}

#[tokio::test]
async fn postgres_devices_and_tenants() {
    let database = TestDatabase::postgres().await;
    devices_and_tenants(&database).await;
    database.remove().await;
}

#[tokio::test]
async fn unsupported_database_url_is_rejected() {
    let err = ContactStore::connect("mysql://root@127.0.0.1/contacts").await.unwrap_err().to_string();
    assert!(err.contains("fanout.database_url"), "{err}");
}
