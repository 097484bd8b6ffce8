-- Contacts and preferences of the fan-out stage. Ids are UUID text, times
-- are Unix seconds and flags are 0 or 1, so the same queries run on SQLite
-- and PostgreSQL.
CREATE TABLE IF NOT EXISTS fanout_users (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    email TEXT,
    name TEXT,
    email_verified INTEGER NOT NULL DEFAULT 0,
    phone TEXT,
    telegram_chat_id TEXT,
    locale TEXT,
    time_zone TEXT,
    quiet_start_minute INTEGER,
    quiet_end_minute INTEGER,
    banned INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE TABLE IF NOT EXISTS fanout_devices (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    token TEXT NOT NULL,
    platform TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, user_id, token)
);
CREATE INDEX IF NOT EXISTS fanout_devices_token ON fanout_devices (token);
CREATE TABLE IF NOT EXISTS fanout_tenants (
    tenant_id TEXT PRIMARY KEY,
    suspended INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fanout_webhooks (
    tenant_id TEXT NOT NULL,
    url TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, url)
);
CREATE TABLE IF NOT EXISTS fanout_opt_outs (
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    category TEXT NOT NULL,
    channel TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id, category, channel)
);
CREATE TABLE IF NOT EXISTS fanout_push_notifications (
    notification_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS fanout_push_notifications_created ON fanout_push_notifications (created_at);
