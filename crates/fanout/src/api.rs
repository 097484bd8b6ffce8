//! HTTP API for contacts and preferences, for other services and apps.
//!
//! | method and path | body | effect |
//! |---|---|---|
//! | `GET /v1/tenants/{tenant}/users/{user}` | | the stored contact |
//! | `PATCH /v1/tenants/{tenant}/users/{user}` | `{"email", "name", "phone", "locale", "time_zone"}`, each optional, `null` clears | sets fields |
//! | `POST /v1/tenants/{tenant}/users/{user}/devices` | `{"token": "...", "platform": "fcm" \| "apns"}` | registers a push device |
//! | `DELETE /v1/tenants/{tenant}/users/{user}/devices/{token}` | | removes it |
//! | `PUT /v1/tenants/{tenant}/users/{user}/telegram` | `{"chat_id": 123 \| "@name"}` | links a Telegram chat |
//! | `DELETE /v1/tenants/{tenant}/users/{user}/telegram` | | unlinks it |
//! | `PUT /v1/tenants/{tenant}/users/{user}/preferences/{category}/{channel}` | `{"enabled": bool}` | opts out of or back in to a category on a channel |
//! | `PUT /v1/tenants/{tenant}/users/{user}/quiet-hours` | `{"start": "22:00", "end": "07:00"}` | sets quiet hours in the user's time zone |
//! | `DELETE /v1/tenants/{tenant}/users/{user}/quiet-hours` | | clears them |
//! | `POST /v1/tenants/{tenant}/webhooks` | `{"url": "https://..."}` | adds a tenant webhook endpoint |
//! | `DELETE /v1/tenants/{tenant}/webhooks` | `{"url": "https://..."}` | removes it |
//!
//! With `fanout.api_token` set, every request must carry
//! `Authorization: Bearer <token>`. Others get 401, and rejections are
//! logged, at most one a second. Without a token the API is open to anyone who can reach its address.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use notify_core::envelope::is_valid_locale;
use notify_core::{ChannelKind, Recipient};
use serde::Deserialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};
use uuid::Uuid;

use crate::quiet::QuietHours;
use crate::rules::Category;
use crate::store::{parse_platform, platform_name, ContactField, ContactStore, Device};

/// Serves the API on `listener` until `shutdown` is cancelled.
///
/// # Errors
///
/// Returns the server's I/O error.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: ContactStore,
    token: Option<Arc<str>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(store, token))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Builds the API's routes over `store`, behind a check of `token` when one
/// is set.
pub fn router(store: ContactStore, token: Option<Arc<str>>) -> Router {
    let routes = Router::new()
        .route("/v1/tenants/{tenant}/users/{user}", get(get_contact).patch(patch_contact))
        .route("/v1/tenants/{tenant}/users/{user}/devices", post(add_device))
        .route("/v1/tenants/{tenant}/users/{user}/devices/{token}", delete(remove_device))
        .route("/v1/tenants/{tenant}/users/{user}/telegram", put(link_telegram).delete(unlink_telegram))
        .route("/v1/tenants/{tenant}/users/{user}/preferences/{category}/{channel}", put(set_preference))
        .route("/v1/tenants/{tenant}/users/{user}/quiet-hours", put(set_quiet_hours).delete(clear_quiet_hours))
        .route("/v1/tenants/{tenant}/webhooks", post(add_webhook).delete(remove_webhook))
        .with_state(store);
    match token {
        Some(token) => {
            let check = TokenCheck { token, rejections: Arc::default() };
            routes.layer(middleware::from_fn_with_state(check, require_token))
        }
        None => routes,
    }
}

/// State of the token check: the expected token and the rate limit of its warnings.
#[derive(Clone)]
struct TokenCheck {
    token: Arc<str>,
    rejections: Arc<RejectionLog>,
}

/// Rejects a request whose `Authorization` header is not `Bearer <token>`,
/// with the scheme in any case (RFC 9110 section 11.1). The comparison takes
/// the same time for every wrong token of a length.
async fn require_token(State(check): State<TokenCheck>, request: Request, next: Next) -> Response {
    let rejection = match bearer_credentials(&request) {
        Ok(presented) if bool::from(presented.as_bytes().ct_eq(check.token.as_bytes())) => return next.run(request).await,
        Ok(_) => "wrong token",
        Err(reason) => reason,
    };
    if let Some(left_out) = check.rejections.admit(Instant::now()) {
        // The log gets the route's pattern, not its path, so that no user id
        // or device token reaches it.
        let route = request.extensions().get::<MatchedPath>().map_or("no route", MatchedPath::as_str);
        warn!(
            method = %request.method(),
            route,
            reason = rejection,
            earlier_rejections_not_logged = left_out,
            "contacts API request rejected with 401"
        );
    }
    let body = Json(json!({ "error": "missing or invalid bearer token in the Authorization header" }));
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
}

/// Minimum time between two logged rejections, so that a client without
/// the token cannot flood the log.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Rate limit of the rejection warnings, with a count of those left out.
#[derive(Debug, Default)]
struct RejectionLog {
    state: Mutex<RejectionLogState>,
}

#[derive(Debug, Default)]
struct RejectionLogState {
    last_logged: Option<Instant>,
    left_out: u64,
}

impl RejectionLog {
    /// Returns how many rejections were left out since the last logged one
    /// when the rejection at `now` is to be logged, or `None` when it is to
    /// be left out as well.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let recent = state.last_logged.is_some_and(|last| now.saturating_duration_since(last) < REJECTION_LOG_INTERVAL);
        if recent {
            state.left_out += 1;
            return None;
        }
        state.last_logged = Some(now);
        Some(std::mem::take(&mut state.left_out))
    }
}

/// Returns the credentials of a `Bearer` `Authorization` header, or why
/// there are none.
fn bearer_credentials(request: &Request) -> Result<&str, &'static str> {
    let value = request.headers().get(header::AUTHORIZATION).ok_or("no Authorization header")?;
    let value = value.to_str().map_err(|_| "Authorization header is not text")?;
    match value.split_once(' ') {
        Some((scheme, credentials)) if scheme.eq_ignore_ascii_case("Bearer") => Ok(credentials),
        _ => Err("Authorization scheme is not Bearer"),
    }
}

/// An error response: status and a message for the caller.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl From<crate::error::StoreError> for ApiError {
    fn from(err: crate::error::StoreError) -> ApiError {
        error!(error = %err, "contacts API request failed");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "the contacts database failed; retry later".to_owned())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn ids(tenant: &str, user: &str) -> Result<(Uuid, Uuid), ApiError> {
    let tenant_id = Uuid::parse_str(tenant).map_err(|_| ApiError::invalid(format!("tenant id {tenant:?} is not a UUID")))?;
    let user_id = Uuid::parse_str(user).map_err(|_| ApiError::invalid(format!("user id {user:?} is not a UUID")))?;
    Ok((tenant_id, user_id))
}

fn no_content() -> ApiResult {
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_contact(State(store): State<ContactStore>, Path((tenant, user)): Path<(String, String)>) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    let Some(contact) = store.contact(tenant_id, user_id).await? else {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no contact for user {user_id} of tenant {tenant_id}")));
    };
    let devices: Vec<Value> = contact
        .devices
        .iter()
        .map(|device| json!({ "token": device.token, "platform": platform_name(device.platform) }))
        .collect();
    let opt_outs: Vec<Value> = contact
        .opt_outs
        .iter()
        .map(|(category, channel)| json!({ "category": category, "channel": channel }))
        .collect();
    let quiet_hours = contact.quiet_hours.map(|quiet| {
        let (start, end) = quiet.formatted();
        json!({ "start": start, "end": end })
    });
    Ok(Json(json!({
        "email": contact.email,
        "name": contact.name,
        "email_verified": contact.email_verified,
        "phone": contact.phone,
        "telegram_chat_id": contact.telegram_chat_id,
        "locale": contact.locale,
        "time_zone": contact.time_zone,
        "quiet_hours": quiet_hours,
        "banned": contact.banned,
        "devices": devices,
        "opt_outs": opt_outs,
    }))
    .into_response())
}

/// Checks one field value of a PATCH body.
fn checked_field(field: ContactField, value: &str) -> Result<(), ApiError> {
    let recipient_ok = |channel: ChannelKind, recipient: Value| Recipient::parse(channel, &recipient).map(|_| ()).map_err(|err| ApiError::invalid(err.to_string()));
    match field {
        ContactField::Email => recipient_ok(ChannelKind::Email, json!({ "email": value })),
        ContactField::Phone => recipient_ok(ChannelKind::Sms, json!({ "phone": value })),
        ContactField::Name => recipient_ok(ChannelKind::Email, json!({ "email": "user@example.com", "name": value })),
        ContactField::Locale if is_valid_locale(value) => Ok(()),
        ContactField::Locale => Err(ApiError::invalid(format!("`locale` {value:?} is not a language tag such as `de` or `pt-BR`"))),
        ContactField::TimeZone if value.parse::<chrono_tz::Tz>().is_ok() => Ok(()),
        ContactField::TimeZone => Err(ApiError::invalid(format!("`time_zone` {value:?} is not an IANA time zone such as `Europe/Berlin`"))),
        ContactField::TelegramChatId => recipient_ok(ChannelKind::Telegram, json!({ "chat_id": value })),
    }
}

async fn patch_contact(State(store): State<ContactStore>, Path((tenant, user)): Path<(String, String)>, Json(body): Json<Value>) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    let Value::Object(fields) = body else {
        return Err(ApiError::invalid("the body must be a JSON object"));
    };
    let mut updates = Vec::new();
    for (key, value) in &fields {
        let field = match key.as_str() {
            "email" => ContactField::Email,
            "name" => ContactField::Name,
            "phone" => ContactField::Phone,
            "locale" => ContactField::Locale,
            "time_zone" => ContactField::TimeZone,
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown field {other:?}; valid fields are email, name, phone, locale and time_zone"
                )))
            }
        };
        match value {
            Value::Null => updates.push((field, None)),
            Value::String(text) => {
                checked_field(field, text)?;
                updates.push((field, Some(text.clone())));
            }
            _ => return Err(ApiError::invalid(format!("`{key}` must be a string or null"))),
        }
    }
    for (field, value) in updates {
        store.set_field(tenant_id, user_id, field, value.as_deref()).await?;
    }
    no_content()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    token: String,
    platform: String,
}

async fn add_device(State(store): State<ContactStore>, Path((tenant, user)): Path<(String, String)>, Json(body): Json<DeviceBody>) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    let platform = parse_platform(&body.platform)
        .ok_or_else(|| ApiError::invalid(format!("`platform` {:?} is not fcm or apns", body.platform)))?;
    Recipient::parse(ChannelKind::Push, &json!({ "device_token": body.token, "platform": body.platform }))
        .map_err(|err| ApiError::invalid(err.to_string()))?;
    store.add_device(tenant_id, user_id, &Device { token: body.token, platform }).await?;
    no_content()
}

async fn remove_device(State(store): State<ContactStore>, Path((tenant, user, token)): Path<(String, String, String)>) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    if store.remove_device(tenant_id, user_id, &token).await? {
        no_content()
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "the user has no such device token".to_owned()))
    }
}

async fn link_telegram(State(store): State<ContactStore>, Path((tenant, user)): Path<(String, String)>, Json(body): Json<Value>) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    let chat_id = body.get("chat_id").cloned().unwrap_or(Value::Null);
    Recipient::parse(ChannelKind::Telegram, &json!({ "chat_id": chat_id })).map_err(|err| ApiError::invalid(err.to_string()))?;
    let chat_id = match chat_id {
        Value::Number(number) => number.to_string(),
        Value::String(name) => name,
        _ => return Err(ApiError::invalid("`chat_id` must be a number or an `@channel_name`")),
    };
    store.set_field(tenant_id, user_id, ContactField::TelegramChatId, Some(&chat_id)).await?;
    no_content()
}

async fn unlink_telegram(State(store): State<ContactStore>, Path((tenant, user)): Path<(String, String)>) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    store.set_field(tenant_id, user_id, ContactField::TelegramChatId, None).await?;
    no_content()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreferenceBody {
    enabled: bool,
}

async fn set_preference(
    State(store): State<ContactStore>,
    Path((tenant, user, category, channel)): Path<(String, String, String, String)>,
    Json(body): Json<PreferenceBody>,
) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    let category = Category::parse(&category)
        .ok_or_else(|| ApiError::invalid(format!("category {category:?} is not transactional or marketing")))?;
    let channel: ChannelKind = channel.parse().map_err(|err: notify_core::channel::UnknownChannel| ApiError::invalid(err.to_string()))?;
    store.set_opt_out(tenant_id, user_id, category.as_str(), channel.as_str(), !body.enabled).await?;
    no_content()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuietHoursBody {
    start: String,
    end: String,
}

async fn set_quiet_hours(State(store): State<ContactStore>, Path((tenant, user)): Path<(String, String)>, Json(body): Json<QuietHoursBody>) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    let quiet = QuietHours::parse(&body.start, &body.end)
        .ok_or_else(|| ApiError::invalid("`start` and `end` must be different HH:MM times such as 22:00 and 07:00"))?;
    store.set_quiet_hours(tenant_id, user_id, Some(quiet)).await?;
    no_content()
}

async fn clear_quiet_hours(State(store): State<ContactStore>, Path((tenant, user)): Path<(String, String)>) -> ApiResult {
    let (tenant_id, user_id) = ids(&tenant, &user)?;
    store.set_quiet_hours(tenant_id, user_id, None).await?;
    no_content()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
}

fn tenant_id(tenant: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(tenant).map_err(|_| ApiError::invalid(format!("tenant id {tenant:?} is not a UUID")))
}

async fn add_webhook(State(store): State<ContactStore>, Path(tenant): Path<String>, Json(body): Json<WebhookBody>) -> ApiResult {
    let tenant_id = tenant_id(&tenant)?;
    Recipient::parse(ChannelKind::Webhook, &json!({ "url": body.url })).map_err(|err| ApiError::invalid(err.to_string()))?;
    store.add_webhook(tenant_id, &body.url).await?;
    no_content()
}

async fn remove_webhook(State(store): State<ContactStore>, Path(tenant): Path<String>, Json(body): Json<WebhookBody>) -> ApiResult {
    let tenant_id = tenant_id(&tenant)?;
    if store.remove_webhook(tenant_id, &body.url).await? {
        no_content()
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "the tenant has no such webhook".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{RejectionLog, REJECTION_LOG_INTERVAL};

    #[test]
    fn rejection_log_leaves_out_bursts() {
        let log = RejectionLog::default();
        let start = Instant::now();
        assert_eq!(log.admit(start), Some(0));
        for offset_ms in [1, 10, 500] {
            assert_eq!(log.admit(start + Duration::from_millis(offset_ms)), None);
        }
        assert_eq!(log.admit(start + REJECTION_LOG_INTERVAL), Some(3), "the next line counts the burst");
        assert_eq!(log.admit(start + REJECTION_LOG_INTERVAL * 3), Some(0), "the count starts over");
    }
}
