//! Cached credentials: OAuth2 access tokens for FCM, obtained with a signed
//! service-account assertion, and ES256 provider tokens for APNs.
//!
//! Both caches hand out a [`BearerToken`] with a serial number. When a
//! provider rejects a token, the sender requests a replacement with that
//! token, so concurrent sends that saw the same rejection cause one refresh.

use std::env::VarError;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use notify_core::{DeliveryError, FailureKind, Retryability};
use reqwest::header::HeaderValue;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use url::Url;

use super::error::{classify_transport_error, code_part, excerpt, PushError, ReadResponse};

/// OAuth2 scope that allows sending FCM messages.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// `grant_type` of a token request that carries a signed JWT (RFC 7523).
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Lifetime of the JWT assertion, the maximum Google accepts.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// Access tokens are replaced this long before they expire, or halfway
/// through their lifetime when that is shorter.
const ACCESS_TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Lifetime assumed for an access token whose response has no `expires_in`.
/// Google's tokens last one hour.
const DEFAULT_ACCESS_TOKEN_LIFETIME_SECS: u64 = 3600;
/// Age at which an APNs provider token is replaced. APNs rejects tokens
/// older than one hour with `ExpiredProviderToken`, and responds
/// `TooManyProviderTokenUpdates` to tokens renewed more than about every 20
/// minutes.
pub const PROVIDER_TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(50 * 60);

/// Source of the wall-clock time that tokens are issued and aged by.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Seconds since the Unix epoch, or 0 for a time before it.
fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// An `authorization` header value and the serial number of the token in
/// it. `Debug` hides the token.
#[derive(Clone)]
pub(super) struct BearerToken {
    header: HeaderValue,
    serial: u64,
}

impl BearerToken {
    /// Builds a header value of the form `{scheme} {token}`, marked as
    /// sensitive so that HTTP/2 header compression does not index it.
    fn new(scheme: &str, token: &str, serial: u64) -> Option<BearerToken> {
        let mut header = HeaderValue::from_str(&format!("{scheme} {token}")).ok()?;
        header.set_sensitive(true);
        Some(BearerToken { header, serial })
    }

    pub fn header(&self) -> &HeaderValue {
        &self.header
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerToken")
            .field("serial", &self.serial)
            .field("header", &"<redacted>")
            .finish()
    }
}

/// A failure to obtain a token, shared with every send that waited for the
/// same attempt. Converts into a [`DeliveryError`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(super) struct TokenError {
    retryability: Retryability,
    kind: FailureKind,
    code: String,
    message: String,
}

impl TokenError {
    fn permanent(kind: FailureKind, code: &str, message: String) -> TokenError {
        TokenError {
            retryability: Retryability::Permanent,
            kind,
            code: code.to_owned(),
            message,
        }
    }

    fn from_delivery(error: &DeliveryError) -> TokenError {
        TokenError {
            retryability: error.retryability(),
            kind: error.kind(),
            code: error.code().unwrap_or("token_failed").to_owned(),
            message: error.message().to_owned(),
        }
    }
}

impl From<TokenError> for DeliveryError {
    fn from(error: TokenError) -> DeliveryError {
        let delivery = match error.retryability {
            Retryability::Permanent => DeliveryError::permanent(error.kind, error.message),
            Retryability::Transient { retry_after } => {
                let transient = DeliveryError::transient(error.kind, error.message);
                match retry_after {
                    Some(delay) => transient.with_retry_after(delay),
                    None => transient,
                }
            }
        };
        delivery.with_code(error.code)
    }
}

/// Key text read from a file or an environment variable, with a
/// description of where it came from. `Debug` hides the text.
pub(super) struct KeyText {
    pub text: String,
    /// `file /path/to/key` or `environment variable NAME`.
    pub source_name: String,
}

impl fmt::Debug for KeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyText")
            .field("source_name", &self.source_name)
            .field("text", &"<redacted>")
            .finish()
    }
}

/// Reads a key from exactly one of a file and an environment variable.
pub(super) fn read_key_text<F>(
    (file_key, file): (&'static str, Option<&Path>),
    (env_key, variable): (&'static str, Option<&str>),
    read_env: &F,
) -> Result<KeyText, PushError>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    match (file, variable) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|source| PushError::ReadKeyFile {
                key: file_key,
                path: path.to_owned(),
                source,
            })?;
            Ok(KeyText {
                text,
                source_name: format!("file {}", path.display()),
            })
        }
        (None, Some(variable)) => match read_env(variable) {
            Ok(text) => Ok(KeyText {
                text,
                source_name: format!("environment variable `{variable}`"),
            }),
            Err(VarError::NotPresent) => Err(PushError::MissingKeyEnv {
                key: env_key,
                variable: variable.to_owned(),
            }),
            Err(VarError::NotUnicode(_)) => Err(PushError::NonUnicodeKeyEnv {
                key: env_key,
                variable: variable.to_owned(),
            }),
        },
        (Some(_), Some(_)) => Err(PushError::InvalidConfig {
            key: file_key,
            reason: format!("set only one of `{file_key}` and `{env_key}`"),
        }),
        (None, None) => Err(PushError::InvalidConfig {
            key: file_key,
            reason: format!("set `{file_key}` or `{env_key}`"),
        }),
    }
}

/// The parts of a Google service-account key file that token requests need.
pub(super) struct ServiceAccount {
    pub client_email: String,
    /// `kid` header of the assertion, when the file names its key.
    pub private_key_id: Option<String>,
    /// Token endpoint of the key, which is also the assertion's `aud`.
    pub token_uri: String,
    key: EncodingKey,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccount {
    /// Parses a service-account key file and checks that its key can sign.
    ///
    /// # Errors
    ///
    /// Returns a reason that names the missing or invalid field and never
    /// contains key material.
    pub fn parse(json: &str) -> Result<ServiceAccount, String> {
        // A JSON syntax error names only line and column, never the text.
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|err| format!("not valid JSON: {err}"))?;
        let field = |name: &str| -> Result<String, String> {
            match value.get(name) {
                Some(serde_json::Value::String(text)) if !text.is_empty() => Ok(text.clone()),
                Some(_) => Err(format!("`{name}` is not a non-empty string")),
                None => Err(format!("`{name}` is missing")),
            }
        };

        let client_email = field("client_email")?;
        let token_uri = field("token_uri")?;
        let private_key = field("private_key")?;
        let private_key_id = field("private_key_id").ok();

        let key = EncodingKey::from_rsa_pem(private_key.as_bytes())
            .map_err(|_| "`private_key` is not an RSA private key in PEM form".to_owned())?;
        // The RustCrypto backend parses the key only when signing.
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &serde_json::json!({}), &key)
            .map_err(|_| "`private_key` cannot sign RS256 JWTs".to_owned())?;

        Ok(ServiceAccount {
            client_email,
            private_key_id,
            token_uri,
            key,
        })
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

struct CachedAccessToken {
    token: BearerToken,
    refresh_at: SystemTime,
    expires_at: SystemTime,
}

#[derive(Default)]
struct AccessTokenState {
    current: Option<CachedAccessToken>,
    /// The failure of the latest request, until one succeeds.
    last_failure: Option<TokenError>,
    issued: u64,
}

impl AccessTokenState {
    fn unexpired(&self, now: SystemTime) -> Option<BearerToken> {
        self.current
            .as_ref()
            .filter(|cached| now < cached.expires_at)
            .map(|cached| cached.token.clone())
    }
}

/// FCM access tokens from a service-account key, cached until shortly
/// before they expire.
///
/// A tokio mutex is held during a token request, so concurrent sends wait
/// for one request instead of each making their own. Sends that waited for
/// a failed request return its error without asking again.
pub(super) struct AccessTokenSource {
    client: reqwest::Client,
    account: ServiceAccount,
    token_url: Url,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    /// Number of token requests finished. A waiter reads it before taking
    /// the lock, so a changed count shows that a request finished meanwhile.
    finished_requests: AtomicU64,
    state: tokio::sync::Mutex<AccessTokenState>,
}

impl fmt::Debug for AccessTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenSource")
            .field("account", &self.account)
            .field("token_url", &self.token_url.as_str())
            .finish_non_exhaustive()
    }
}

impl AccessTokenSource {
    pub fn new(
        client: reqwest::Client,
        account: ServiceAccount,
        token_url: Url,
        timeout: Duration,
        clock: Arc<dyn Clock>,
    ) -> AccessTokenSource {
        AccessTokenSource {
            client,
            account,
            token_url,
            timeout,
            clock,
            finished_requests: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(AccessTokenState::default()),
        }
    }

    /// Returns the cached access token, or requests a new one when it is
    /// missing or due for refresh.
    pub async fn token(&self) -> Result<BearerToken, TokenError> {
        let finished_seen = self.finished_requests.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let now = self.clock.now();

        if let Some(cached) = &state.current {
            if now < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        if let Some(failure) = self.failure_while_waiting(&state, finished_seen) {
            return state.unexpired(now).ok_or(failure);
        }

        match self.request_locked(&mut state, now).await {
            Ok(token) => Ok(token),
            Err(error) => match state.unexpired(now) {
                Some(token) => {
                    tracing::warn!(
                        error = %error,
                        "failed to refresh the FCM access token; using the current one until it expires"
                    );
                    Ok(token)
                }
                None => Err(error),
            },
        }
    }

    /// Returns a token other than `rejected`, which FCM refused: the newer
    /// one if another send already replaced it, else a newly requested one.
    pub async fn replace(&self, rejected: &BearerToken) -> Result<BearerToken, TokenError> {
        let finished_seen = self.finished_requests.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        let now = self.clock.now();

        if let Some(cached) = &state.current {
            if cached.token.serial != rejected.serial && now < cached.refresh_at {
                return Ok(cached.token.clone());
            }
        }
        if let Some(failure) = self.failure_while_waiting(&state, finished_seen) {
            return Err(failure);
        }

        if state
            .current
            .as_ref()
            .is_some_and(|cached| cached.token.serial == rejected.serial)
        {
            state.current = None;
        }
        self.request_locked(&mut state, now).await
    }

    /// Returns the failure of a request that finished while this caller
    /// waited for the lock.
    fn failure_while_waiting(
        &self,
        state: &AccessTokenState,
        finished_seen: u64,
    ) -> Option<TokenError> {
        if self.finished_requests.load(Ordering::Acquire) == finished_seen {
            return None;
        }
        state.last_failure.clone()
    }

    async fn request_locked(
        &self,
        state: &mut AccessTokenState,
        now: SystemTime,
    ) -> Result<BearerToken, TokenError> {
        let result = self.request(now, state.issued + 1).await;
        self.finished_requests.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok((token, lifetime)) => {
                state.issued = token.serial;
                state.current = Some(CachedAccessToken {
                    token: token.clone(),
                    refresh_at: now + refresh_delay(lifetime),
                    expires_at: now + lifetime,
                });
                state.last_failure = None;
                tracing::info!(
                    serial = token.serial,
                    expires_in_secs = lifetime.as_secs(),
                    "fetched an FCM access token"
                );
                Ok(token)
            }
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    code = %error.code,
                    "failed to fetch an FCM access token"
                );
                state.last_failure = Some(error.clone());
                Err(error)
            }
        }
    }

    /// Exchanges a new signed assertion for an access token. Returns the
    /// token and its lifetime.
    async fn request(
        &self,
        now: SystemTime,
        serial: u64,
    ) -> Result<(BearerToken, Duration), TokenError> {
        let assertion = self.assertion(now)?;
        let endpoint = "the FCM token endpoint";

        let result = self
            .client
            .post(self.token_url.clone())
            .form(&[
                ("grant_type", JWT_BEARER_GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await;
        let response = match result {
            Ok(response) => ReadResponse::read(response).await,
            Err(error) => {
                let error = classify_transport_error(endpoint, error, self.timeout);
                return Err(TokenError::from_delivery(&error));
            }
        };

        if !response.status.is_success() {
            return Err(classify_token_failure(&response));
        }

        let invalid = || {
            TokenError::from_delivery(
                &DeliveryError::transient(
                    FailureKind::Unavailable,
                    format!(
                        "{endpoint} responded {} without a usable access token",
                        response.status
                    ),
                )
                .with_code("oauth_invalid_response"),
            )
        };
        let parsed: TokenResponse =
            serde_json::from_slice(&response.body).map_err(|_| invalid())?;
        let token = BearerToken::new("Bearer", &parsed.access_token, serial)
            .filter(|_| !parsed.access_token.is_empty())
            .ok_or_else(invalid)?;
        let lifetime = Duration::from_secs(
            parsed
                .expires_in
                .unwrap_or(DEFAULT_ACCESS_TOKEN_LIFETIME_SECS),
        );
        Ok((token, lifetime))
    }

    /// Signs the RS256 JWT assertion that a token request carries.
    fn assertion(&self, now: SystemTime) -> Result<String, TokenError> {
        let issued_at = unix_seconds(now);
        let claims = AssertionClaims {
            iss: &self.account.client_email,
            scope: FCM_SCOPE,
            aud: &self.account.token_uri,
            iat: issued_at,
            exp: issued_at + ASSERTION_LIFETIME_SECS,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.account.private_key_id.clone();

        jsonwebtoken::encode(&header, &claims, &self.account.key).map_err(|_| {
            TokenError::permanent(
                FailureKind::Configuration,
                "oauth_signing_failed",
                "failed to sign the OAuth2 assertion with the FCM service-account key".to_owned(),
            )
        })
    }
}

/// Returns how long after issue an access token of `lifetime` is replaced.
fn refresh_delay(lifetime: Duration) -> Duration {
    lifetime
        .saturating_sub(ACCESS_TOKEN_REFRESH_MARGIN)
        .max(lifetime / 2)
}

/// Classifies a non-2xx response of the token endpoint.
///
/// 408, 429 and 5xx are transient. Other statuses mean the key, the account
/// or the token URL is wrong, which needs a configuration change.
fn classify_token_failure(response: &ReadResponse) -> TokenError {
    let status = response.status;
    let parsed: Option<TokenErrorResponse> = serde_json::from_slice(&response.body).ok();
    let (error, description) = parsed
        .map(|parsed| (parsed.error, parsed.error_description))
        .unwrap_or_default();

    let code = match code_part(&error) {
        Some(error) => format!("oauth_{error}"),
        None => format!("oauth_http_{}", status.as_u16()),
    };
    let mut message = format!("the FCM token endpoint responded {status}");
    if let Some(error) = code_part(&error) {
        message.push_str(&format!(": {error}"));
    }
    let description = excerpt(&description, "", "");
    if !description.is_empty() {
        message.push_str(&format!(" ({description})"));
    }

    let transient = |kind: FailureKind| {
        TokenError::from_delivery(
            &response
                .transient(kind, message.clone())
                .with_code(code.clone()),
        )
    };
    match status {
        StatusCode::REQUEST_TIMEOUT => transient(FailureKind::Timeout),
        StatusCode::TOO_MANY_REQUESTS => transient(FailureKind::RateLimited),
        status if status.is_server_error() => transient(FailureKind::Unavailable),
        status if status.is_client_error() || status.is_redirection() => TokenError::permanent(
            FailureKind::Configuration,
            &code,
            format!("{message}; check the service-account key and `channels.push.fcm.token_url`"),
        ),
        _ => transient(FailureKind::Unavailable),
    }
}

#[derive(Serialize)]
struct ProviderTokenClaims<'a> {
    iss: &'a str,
    iat: u64,
}

struct CachedProviderToken {
    token: BearerToken,
    issued_at: SystemTime,
}

impl CachedProviderToken {
    /// Returns true if the token is younger than [`PROVIDER_TOKEN_REFRESH_AFTER`]. A
    /// token issued after `now`, which happens when the clock is set back,
    /// is stale: APNs rejects an `iat` in the future.
    fn is_fresh(&self, now: SystemTime) -> bool {
        now.duration_since(self.issued_at)
            .is_ok_and(|age| age < PROVIDER_TOKEN_REFRESH_AFTER)
    }
}

#[derive(Default)]
struct ProviderTokenState {
    current: Option<CachedProviderToken>,
    issued: u64,
}

/// APNs provider tokens: ES256 JWTs with `kid` = key id, `iss` = team id
/// and `iat`, renewed after [`PROVIDER_TOKEN_REFRESH_AFTER`]. Signing is
/// local and quick, so a plain mutex guards the cache.
pub(super) struct ProviderTokenSigner {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    clock: Arc<dyn Clock>,
    state: Mutex<ProviderTokenState>,
}

impl fmt::Debug for ProviderTokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderTokenSigner")
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ProviderTokenSigner {
    /// Loads a `.p8` auth key and checks that it can sign.
    ///
    /// # Errors
    ///
    /// Returns a reason without key material.
    pub fn new(
        key_pem: &str,
        key_id: String,
        team_id: String,
        clock: Arc<dyn Clock>,
    ) -> Result<ProviderTokenSigner, String> {
        let key = EncodingKey::from_ec_pem(key_pem.as_bytes()).map_err(|_| {
            "not an EC private key in PKCS#8 PEM form (`-----BEGIN PRIVATE KEY-----`)".to_owned()
        })?;
        // The RustCrypto backend parses the key only when signing.
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &serde_json::json!({}), &key)
            .map_err(|_| {
                "the key cannot sign ES256 JWTs; APNs auth keys are P-256 keys".to_owned()
            })?;

        Ok(ProviderTokenSigner {
            key,
            key_id,
            team_id,
            clock,
            state: Mutex::new(ProviderTokenState::default()),
        })
    }

    /// Returns the cached provider token, or signs a new one when it is
    /// missing or due for renewal.
    pub fn token(&self) -> Result<BearerToken, TokenError> {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = state.current.as_ref().filter(|cached| cached.is_fresh(now)) {
            return Ok(cached.token.clone());
        }
        self.sign_locked(&mut state, now)
    }

    /// Returns a token other than `rejected`, which APNs refused as
    /// expired: the newer one if another send already replaced it, else a
    /// newly signed one.
    pub fn replace(&self, rejected: &BearerToken) -> Result<BearerToken, TokenError> {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = &state.current {
            if cached.token.serial != rejected.serial && cached.is_fresh(now) {
                return Ok(cached.token.clone());
            }
        }
        self.sign_locked(&mut state, now)
    }

    fn sign_locked(
        &self,
        state: &mut ProviderTokenState,
        now: SystemTime,
    ) -> Result<BearerToken, TokenError> {
        let failed = |reason: &str| {
            TokenError::permanent(
                FailureKind::Configuration,
                "apns_signing_failed",
                format!("failed to sign an APNs provider token: {reason}"),
            )
        };

        let mut header = Header::new(Algorithm::ES256);
        // Apple's examples have no `typ`, and APNs does not need one.
        header.typ = None;
        header.kid = Some(self.key_id.clone());
        let claims = ProviderTokenClaims {
            iss: &self.team_id,
            iat: unix_seconds(now),
        };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|_| failed("the auth key was rejected by the signer"))?;
        let token = BearerToken::new("bearer", &jwt, state.issued + 1)
            .ok_or_else(|| failed("the JWT is not a valid header value"))?;

        state.issued = token.serial;
        state.current = Some(CachedProviderToken {
            token: token.clone(),
            issued_at: now,
        });
        tracing::debug!(serial = token.serial, "signed an APNs provider token");
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;

    const APNS_KEY: &str = include_str!("../../tests/fixtures/test-only-apns-auth-key.p8");
    const APNS_PUBLIC_KEY: &str =
        include_str!("../../tests/fixtures/test-only-apns-auth-key.pub.pem");
    const SERVICE_ACCOUNT: &str =
        include_str!("../../tests/fixtures/test-only-fcm-service-account.json");

    /// A clock that moves only when the test advances it.
    #[derive(Debug)]
    struct ManualClock(AtomicU64);

    impl ManualClock {
        fn at(seconds: u64) -> Arc<ManualClock> {
            Arc::new(ManualClock(AtomicU64::new(seconds)))
        }

        fn advance(&self, by: Duration) {
            self.0.fetch_add(by.as_secs(), Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            UNIX_EPOCH + Duration::from_secs(self.0.load(Ordering::SeqCst))
        }
    }

    fn signer(clock: Arc<ManualClock>) -> ProviderTokenSigner {
        ProviderTokenSigner::new(APNS_KEY, "KEY1234567".into(), "TEAM123456".into(), clock).unwrap()
    }

    #[derive(Deserialize)]
    struct Claims {
        iss: String,
        iat: u64,
    }

    fn decode(token: &BearerToken) -> (Header, Claims) {
        let value = token.header().to_str().unwrap();
        let jwt = value.strip_prefix("bearer ").unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let key = DecodingKey::from_ec_pem(APNS_PUBLIC_KEY.as_bytes()).unwrap();
        let data = jsonwebtoken::decode::<Claims>(jwt, &key, &validation).unwrap();
        (data.header, data.claims)
    }

    #[test]
    fn provider_token_has_kid_iss_and_iat() {
        let signer = signer(ManualClock::at(1_700_000_000));

        let token = signer.token().unwrap();

        let (header, claims) = decode(&token);
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
        assert_eq!(claims.iss, "TEAM123456");
        assert_eq!(claims.iat, 1_700_000_000);
    }

    #[test]
    fn provider_token_is_reused_for_50_minutes() {
        let clock = ManualClock::at(1_700_000_000);
        let signer = signer(clock.clone());
        let first = signer.token().unwrap();

        clock.advance(Duration::from_secs(49 * 60 + 59));
        let reused = signer.token().unwrap();
        clock.advance(Duration::from_secs(1));
        let renewed = signer.token().unwrap();

        assert_eq!(reused.serial, first.serial);
        assert_ne!(renewed.serial, first.serial);
        assert_eq!(decode(&renewed).1.iat, 1_700_000_000 + 50 * 60);
    }

    #[test]
    fn provider_token_issued_in_future_is_renewed() {
        let clock = ManualClock::at(1_700_000_000);
        let signer = signer(clock.clone());
        let first = signer.token().unwrap();

        clock.0.store(1_699_999_000, Ordering::SeqCst);
        let renewed = signer.token().unwrap();

        assert_ne!(renewed.serial, first.serial);
    }

    #[test]
    fn replacing_rejected_provider_token_signs_once() {
        let clock = ManualClock::at(1_700_000_000);
        let signer = signer(clock.clone());
        let rejected = signer.token().unwrap();
        clock.advance(Duration::from_secs(600));

        let first_replacement = signer.replace(&rejected).unwrap();
        let second_replacement = signer.replace(&rejected).unwrap();

        assert_ne!(first_replacement.serial, rejected.serial);
        assert_eq!(second_replacement.serial, first_replacement.serial);
        assert_eq!(decode(&first_replacement).1.iat, 1_700_000_600);
    }

    #[test]
    fn rsa_key_is_not_an_apns_key() {
        let account: serde_json::Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
        let rsa_pem = account["private_key"].as_str().unwrap();

        let reason = ProviderTokenSigner::new(rsa_pem, "K".into(), "T".into(), ManualClock::at(0))
            .unwrap_err();

        assert!(reason.starts_with("not an EC private key"), "{reason}");
    }

    #[test]
    fn service_account_parses_fixture() {
        let account = ServiceAccount::parse(SERVICE_ACCOUNT).unwrap();

        assert_eq!(
            account.client_email,
            "test-only-sender@flatrender-test-only.iam.gserviceaccount.com"
        );
        assert_eq!(
            account.private_key_id.as_deref(),
            Some("test-only-key-0001")
        );
        assert_eq!(account.token_uri, "http://127.0.0.1:1/test-only-token");
    }

    #[test]
    fn service_account_errors_name_field_not_value() {
        let mut account: serde_json::Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
        account["private_key"] =
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n".into();
        let broken_key = account.to_string();
        account.as_object_mut().unwrap().remove("client_email");
        let missing_email = account.to_string();

        let key_reason = ServiceAccount::parse(&broken_key).unwrap_err();
        let email_reason = ServiceAccount::parse(&missing_email).unwrap_err();
        let syntax_reason = ServiceAccount::parse("{\"private_key\": \"MIIE").unwrap_err();

        assert!(key_reason.contains("`private_key`"), "{key_reason}");
        assert!(!key_reason.contains("bm90IGEga2V5"), "{key_reason}");
        assert_eq!(email_reason, "`client_email` is missing");
        assert!(
            syntax_reason.starts_with("not valid JSON"),
            "{syntax_reason}"
        );
        assert!(!syntax_reason.contains("MIIE"), "{syntax_reason}");
    }

    #[test]
    fn access_token_refresh_delay() {
        assert_eq!(
            refresh_delay(Duration::from_secs(3600)),
            Duration::from_secs(3300)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(400)),
            Duration::from_secs(200)
        );
        assert_eq!(refresh_delay(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn bearer_token_debug_hides_value() {
        let token = BearerToken::new("Bearer", "ya29.secret-access-token", 3).unwrap();

        let debug = format!("{token:?}");

        assert!(!debug.contains("ya29"), "{debug}");
        assert!(token.header().is_sensitive());
    }

    #[test]
    fn token_error_converts_with_retry_after() {
        let error = TokenError {
            retryability: Retryability::Transient {
                retry_after: Some(Duration::from_secs(9)),
            },
            kind: FailureKind::RateLimited,
            code: "oauth_http_429".to_owned(),
            message: "slow down".to_owned(),
        };

        let delivery = DeliveryError::from(error);

        assert!(delivery.is_transient());
        assert_eq!(delivery.retry_after(), Some(Duration::from_secs(9)));
        assert_eq!(delivery.code(), Some("oauth_http_429"));
    }
}
