//! Contacts and preferences per (tenant, user): addresses, devices, locale,
//! time zone, opt-outs and quiet hours, plus tenant flags and webhooks.
//!
//! One code path serves SQLite and PostgreSQL through `sqlx::Any`: ids are
//! stored as text, times as Unix seconds and flags as 0 or 1, and queries
//! use `$1` placeholders, which both databases accept.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use notify_core::PushPlatform;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::error::StoreError;
use crate::quiet::QuietHours;

/// Migrations in order; a version is applied once and recorded.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/sqlite/0001_contacts.sql"))];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("../migrations/postgres/0001_contacts.sql"))];

/// How long push notification ids are kept to map a `recipient_gone`
/// failure back to its device token.
const PUSH_RECORD_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A push device of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub token: String,
    pub platform: PushPlatform,
}

/// Contact details, devices and preferences of one user.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Contact {
    pub email: Option<String>,
    pub name: Option<String>,
    pub email_verified: bool,
    pub phone: Option<String>,
    /// A numeric chat id or an `@channel_name`, as text.
    pub telegram_chat_id: Option<String>,
    pub locale: Option<String>,
    /// IANA time zone name such as `Europe/Berlin`.
    pub time_zone: Option<String>,
    pub quiet_hours: Option<QuietHours>,
    pub banned: bool,
    pub devices: Vec<Device>,
    /// (category, channel) pairs the user opted out of.
    pub opt_outs: BTreeSet<(String, String)>,
}

/// A user field that the API sets on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactField {
    Email,
    Name,
    Phone,
    TelegramChatId,
    Locale,
    TimeZone,
}

impl ContactField {
    /// The column; never user input, so it is safe to splice into SQL.
    fn column(self) -> &'static str {
        match self {
            ContactField::Email => "email",
            ContactField::Name => "name",
            ContactField::Phone => "phone",
            ContactField::TelegramChatId => "telegram_chat_id",
            ContactField::Locale => "locale",
            ContactField::TimeZone => "time_zone",
        }
    }
}

/// The contacts database.
#[derive(Debug, Clone)]
pub struct ContactStore {
    pool: AnyPool,
    backend: Backend,
}

impl ContactStore {
    /// Connects to `sqlite://…` or `postgres://…` and applies the migrations.
    ///
    /// # Errors
    ///
    /// Returns [`StoreError`] for an unsupported URL, a failed connection or
    /// a failed migration.
    pub async fn connect(url: &str) -> Result<ContactStore, StoreError> {
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(notify_core::config::redact_url(url)));
        };
        sqlx::any::install_default_drivers();
        // SQLite allows one writer at a time, so more connections only wait on its lock.
        let max_connections = if backend == Backend::Sqlite { 1 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|source| StoreError::Connect { url: notify_core::config::redact_url(url), source })?;
        let store = ContactStore { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        sqlx::query("CREATE TABLE IF NOT EXISTS fanout_schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::Migrate { version: 0, source })?;
        for &(version, sql) in migrations {
            let applied = sqlx::query("SELECT version FROM fanout_schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&self.pool)
                .await
                .map_err(|source| StoreError::Migrate { version, source })?;
            if applied.is_some() {
                continue;
            }
            let mut transaction = self.pool.begin().await.map_err(|source| StoreError::Migrate { version, source })?;
            // The migration files hold no `;` inside statements, so splitting
            // on it yields whole statements. Each uses IF NOT EXISTS, so two
            // instances that start together do not fail each other.
            for statement in sql.split(';').map(str::trim).filter(|s| !is_comment_only(s)) {
                sqlx::query(statement)
                    .execute(&mut *transaction)
                    .await
                    .map_err(|source| StoreError::Migrate { version, source })?;
            }
            sqlx::query("INSERT INTO fanout_schema_migrations (version, applied_at) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING")
                .bind(version)
                .bind(now())
                .execute(&mut *transaction)
                .await
                .map_err(|source| StoreError::Migrate { version, source })?;
            transaction.commit().await.map_err(|source| StoreError::Migrate { version, source })?;
        }
        Ok(())
    }

    /// Creates the user, or fills in the given fields of an existing one;
    /// `None` keeps the stored value.
    pub async fn upsert_user(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        email: Option<&str>,
        name: Option<&str>,
        locale: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO fanout_users (tenant_id, user_id, email, name, locale, updated_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET \
             email = COALESCE(excluded.email, fanout_users.email), \
             name = COALESCE(excluded.name, fanout_users.name), \
             locale = COALESCE(excluded.locale, fanout_users.locale), \
             updated_at = excluded.updated_at",
        )
        .bind(tenant_id.to_string())
        .bind(user_id.to_string())
        .bind(email.map(str::to_owned))
        .bind(name.map(str::to_owned))
        .bind(locale.map(str::to_owned))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Sets or clears one field, creating the user when unknown.
    pub async fn set_field(&self, tenant_id: Uuid, user_id: Uuid, field: ContactField, value: Option<&str>) -> Result<(), StoreError> {
        let column = field.column();
        let sql = format!(
            "INSERT INTO fanout_users (tenant_id, user_id, {column}, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, user_id) DO UPDATE SET {column} = excluded.{column}, updated_at = excluded.updated_at"
        );
        sqlx::query(&sql)
            .bind(tenant_id.to_string())
            .bind(user_id.to_string())
            .bind(value.map(str::to_owned))
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks the user's address as verified, storing `email` when given.
    pub async fn mark_email_verified(&self, tenant_id: Uuid, user_id: Uuid, email: Option<&str>) -> Result<(), StoreError> {
        self.upsert_user(tenant_id, user_id, email, None, None).await?;
        self.set_flag("fanout_users", "email_verified", tenant_id, Some(user_id), true).await
    }

    /// Sets the banned flag, creating the user when unknown.
    pub async fn set_banned(&self, tenant_id: Uuid, user_id: Uuid, banned: bool) -> Result<(), StoreError> {
        self.upsert_user(tenant_id, user_id, None, None, None).await?;
        self.set_flag("fanout_users", "banned", tenant_id, Some(user_id), banned).await
    }

    /// Sets the tenant's suspended flag.
    pub async fn set_tenant_suspended(&self, tenant_id: Uuid, suspended: bool) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO fanout_tenants (tenant_id, suspended, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET suspended = excluded.suspended, updated_at = excluded.updated_at",
        )
        .bind(tenant_id.to_string())
        .bind(i64::from(suspended))
        .bind(now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn set_flag(&self, table: &str, column: &str, tenant_id: Uuid, user_id: Option<Uuid>, value: bool) -> Result<(), StoreError> {
        let sql = match user_id {
            Some(_) => format!("UPDATE {table} SET {column} = $1, updated_at = $2 WHERE tenant_id = $3 AND user_id = $4"),
            None => format!("UPDATE {table} SET {column} = $1, updated_at = $2 WHERE tenant_id = $3"),
        };
        let mut query = sqlx::query(&sql).bind(i64::from(value)).bind(now()).bind(tenant_id.to_string());
        if let Some(user_id) = user_id {
            query = query.bind(user_id.to_string());
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Whether the tenant is suspended; unknown tenants are not.
    pub async fn tenant_suspended(&self, tenant_id: Uuid) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT suspended FROM fanout_tenants WHERE tenant_id = $1")
            .bind(tenant_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64, _>("suspended")? != 0,
            None => false,
        })
    }

    /// Sets the user's quiet hours, or clears them with `None`.
    pub async fn set_quiet_hours(&self, tenant_id: Uuid, user_id: Uuid, quiet: Option<QuietHours>) -> Result<(), StoreError> {
        self.upsert_user(tenant_id, user_id, None, None, None).await?;
        sqlx::query("UPDATE fanout_users SET quiet_start_minute = $1, quiet_end_minute = $2, updated_at = $3 WHERE tenant_id = $4 AND user_id = $5")
            .bind(quiet.map(|q| i64::from(q.start_minute)))
            .bind(quiet.map(|q| i64::from(q.end_minute)))
            .bind(now())
            .bind(tenant_id.to_string())
            .bind(user_id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds a push device to the user, creating the user when unknown. A
    /// token moves with its device, so it is removed from any other user.
    pub async fn add_device(&self, tenant_id: Uuid, user_id: Uuid, device: &Device) -> Result<(), StoreError> {
        self.upsert_user(tenant_id, user_id, None, None, None).await?;
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM fanout_devices WHERE token = $1 AND NOT (tenant_id = $2 AND user_id = $3)")
            .bind(device.token.clone())
            .bind(tenant_id.to_string())
            .bind(user_id.to_string())
            .execute(&mut *transaction)
            .await?;
        sqlx::query(
            "INSERT INTO fanout_devices (tenant_id, user_id, token, platform, created_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (tenant_id, user_id, token) DO UPDATE SET platform = excluded.platform",
        )
        .bind(tenant_id.to_string())
        .bind(user_id.to_string())
        .bind(device.token.clone())
        .bind(platform_name(device.platform).to_owned())
        .bind(now())
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Removes one device of the user; returns whether it existed.
    pub async fn remove_device(&self, tenant_id: Uuid, user_id: Uuid, token: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM fanout_devices WHERE tenant_id = $1 AND user_id = $2 AND token = $3")
            .bind(tenant_id.to_string())
            .bind(user_id.to_string())
            .bind(token.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Removes a device token from every user; returns how many rows went.
    pub async fn remove_token(&self, token: &str) -> Result<u64, StoreError> {
        let result = sqlx::query("DELETE FROM fanout_devices WHERE token = $1")
            .bind(token.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// Records which device token a push notification went to, so that a
    /// later `recipient_gone` failure can name the token.
    pub async fn record_push(&self, notification_id: Uuid, token: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO fanout_push_notifications (notification_id, token, created_at) VALUES ($1, $2, $3) ON CONFLICT (notification_id) DO NOTHING")
            .bind(notification_id.to_string())
            .bind(token.to_owned())
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes push records past the retention period and returns their count.
    /// NOTE: the stage calls this only when it starts.
    pub async fn prune_push_records(&self) -> Result<u64, StoreError> {
        let cutoff = now() - i64::try_from(PUSH_RECORD_RETENTION.as_secs()).unwrap_or(i64::MAX);
        let result = sqlx::query("DELETE FROM fanout_push_notifications WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// The device token a push notification went to, if recorded.
    pub async fn push_token(&self, notification_id: Uuid) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT token FROM fanout_push_notifications WHERE notification_id = $1")
            .bind(notification_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("token")?),
            None => None,
        })
    }

    /// Opts the user out of, or back in to, one category on one channel.
    pub async fn set_opt_out(&self, tenant_id: Uuid, user_id: Uuid, category: &str, channel: &str, opted_out: bool) -> Result<(), StoreError> {
        self.upsert_user(tenant_id, user_id, None, None, None).await?;
        let sql = if opted_out {
            "INSERT INTO fanout_opt_outs (tenant_id, user_id, category, channel) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (tenant_id, user_id, category, channel) DO NOTHING"
        } else {
            "DELETE FROM fanout_opt_outs WHERE tenant_id = $1 AND user_id = $2 AND category = $3 AND channel = $4"
        };
        sqlx::query(sql)
            .bind(tenant_id.to_string())
            .bind(user_id.to_string())
            .bind(category.to_owned())
            .bind(channel.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds a webhook endpoint to the tenant.
    pub async fn add_webhook(&self, tenant_id: Uuid, url: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO fanout_webhooks (tenant_id, url, created_at) VALUES ($1, $2, $3) ON CONFLICT (tenant_id, url) DO NOTHING")
            .bind(tenant_id.to_string())
            .bind(url.to_owned())
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes a webhook endpoint; returns whether it existed.
    pub async fn remove_webhook(&self, tenant_id: Uuid, url: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM fanout_webhooks WHERE tenant_id = $1 AND url = $2")
            .bind(tenant_id.to_string())
            .bind(url.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// The tenant's webhook endpoints, oldest first.
    pub async fn webhooks(&self, tenant_id: Uuid) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT url FROM fanout_webhooks WHERE tenant_id = $1 ORDER BY created_at, url")
            .bind(tenant_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| row.try_get("url").map_err(StoreError::from)).collect()
    }

    /// The user's contact, devices and opt-outs, or `None` for an unknown user.
    pub async fn contact(&self, tenant_id: Uuid, user_id: Uuid) -> Result<Option<Contact>, StoreError> {
        let tenant = tenant_id.to_string();
        let user = user_id.to_string();
        let row = sqlx::query(
            "SELECT email, name, email_verified, phone, telegram_chat_id, locale, time_zone, \
             quiet_start_minute, quiet_end_minute, banned FROM fanout_users WHERE tenant_id = $1 AND user_id = $2",
        )
        .bind(tenant.clone())
        .bind(user.clone())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut contact = contact_from_row(&row)?;

        let devices = sqlx::query("SELECT token, platform FROM fanout_devices WHERE tenant_id = $1 AND user_id = $2 ORDER BY created_at, token")
            .bind(tenant.clone())
            .bind(user.clone())
            .fetch_all(&self.pool)
            .await?;
        for device in devices {
            let token: String = device.try_get("token")?;
            let platform: String = device.try_get("platform")?;
            let platform = parse_platform(&platform).ok_or(StoreError::Corrupt { column: "fanout_devices.platform", value: platform })?;
            contact.devices.push(Device { token, platform });
        }

        let opt_outs = sqlx::query("SELECT category, channel FROM fanout_opt_outs WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        for opt_out in opt_outs {
            contact.opt_outs.insert((opt_out.try_get("category")?, opt_out.try_get("channel")?));
        }
        Ok(Some(contact))
    }
}

fn contact_from_row(row: &AnyRow) -> Result<Contact, StoreError> {
    let start: Option<i64> = row.try_get("quiet_start_minute")?;
    let end: Option<i64> = row.try_get("quiet_end_minute")?;
    let quiet_hours = match (start, end) {
        (Some(start), Some(end)) => Some(QuietHours::from_minutes(start, end).ok_or(StoreError::Corrupt {
            column: "fanout_users.quiet_start_minute",
            value: format!("{start}..{end}"),
        })?),
        _ => None,
    };
    Ok(Contact {
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        email_verified: row.try_get::<i64, _>("email_verified")? != 0,
        phone: row.try_get("phone")?,
        telegram_chat_id: row.try_get("telegram_chat_id")?,
        locale: row.try_get("locale")?,
        time_zone: row.try_get("time_zone")?,
        quiet_hours,
        banned: row.try_get::<i64, _>("banned")? != 0,
        devices: Vec::new(),
        opt_outs: BTreeSet::new(),
    })
}

fn is_comment_only(statement: &str) -> bool {
    statement.lines().all(|line| line.trim().is_empty() || line.trim_start().starts_with("--"))
}

fn now() -> i64 {
    Utc::now().timestamp()
}

pub fn platform_name(platform: PushPlatform) -> &'static str {
    match platform {
        PushPlatform::Fcm => "fcm",
        PushPlatform::Apns => "apns",
    }
}

pub fn parse_platform(name: &str) -> Option<PushPlatform> {
    match name {
        "fcm" => Some(PushPlatform::Fcm),
        "apns" => Some(PushPlatform::Apns),
        _ => None,
    }
}
