//! Authentication: `auth_start`, `auth_verify`, `me`, `logout`, and the
//! token check at connect.
//!
//! * TOTP per RFC 6238: SHA1, 6 digits, 30 s steps, one step of skew. The
//!   code is compared in constant time against each step of the window; the
//!   matched step goes to SQL, which refuses it atomically when it is not
//!   newer than the last accepted one (RFC 6238 §5.2) and counts failures.
//! * TOTP secrets are 160 random bits (RFC 4226 §4), stored encrypted with
//!   AES-256-GCM under `TOTP_KEY` (or a key derived from `JWT_SECRET`).
//! * Candidates (names being registered) live on their connection only and
//!   expire after 10 minutes; the first candidate to verify wins the name.
//! * Tokens are HS256 JWTs whose `jti` is a session row, so they can be
//!   revoked; every connect checks signature, expiry and revocation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use chrono::{TimeZone, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Ctx, CurrentUser, MethodError};
use crate::core::db::Db;
use crate::models::auth::{self as store, Outcome};
use crate::models::ModelError;
use crate::shared::config::Config;
use crate::shared::ids::{SessionId, UserId};
use crate::shared::username::Username;
use crate::shared::values::TotpCode;

/// How long a candidate's secret stays valid.
pub const CANDIDATE_TTL: Duration = Duration::from_secs(10 * 60);
/// Most names one connection may have candidates for at once.
const MAX_CANDIDATES: usize = 8;
const STEP_SECS: u64 = 30;

/// Keys and settings of authentication, built once from the config.
pub struct AuthKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    cipher: Aes256Gcm,
    issuer: String,
    token_ttl: Duration,
}

impl AuthKeys {
    /// `None` when no JWT secret is configured (the CLI fills it in before).
    pub fn from_config(config: &Config) -> Option<Self> {
        let jwt = config.jwt_secret.as_ref()?.expose().to_vec();
        let totp_key: Vec<u8> = match &config.totp_key {
            Some(k) => k.expose().to_vec(),
            None => {
                // A key derived from the JWT secret, so replicas sharing
                // JWT_SECRET agree without another variable.
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&jwt).ok()?;
                mac.update(b"marquee totp-secret encryption key v1");
                mac.finalize().into_bytes().to_vec()
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Some(Self {
            encoding: EncodingKey::from_secret(&jwt),
            decoding: DecodingKey::from_secret(&jwt),
            validation,
            cipher: Aes256Gcm::new_from_slice(&totp_key).ok()?,
            issuer: config.totp_issuer.clone(),
            token_ttl: config.token_ttl,
        })
    }

    pub fn token_ttl(&self) -> Duration {
        self.token_ttl
    }

    fn encrypt(&self, secret: &[u8]) -> Result<Vec<u8>, MethodError> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), secret)
            .map_err(|_| MethodError::Internal("encryption failed".into()))?;
        out.extend_from_slice(&ct);
        Ok(out)
    }

    fn decrypt(&self, stored: &[u8]) -> Result<Vec<u8>, MethodError> {
        if stored.len() < 12 {
            return Err(MethodError::Internal("stored secret too short".into()));
        }
        let (nonce, ct) = stored.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| {
                MethodError::Internal(
                    "stored TOTP secret does not decrypt (wrong TOTP_KEY?)".into(),
                )
            })
    }

    fn sign(&self, claims: &Claims) -> Result<String, MethodError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| MethodError::Internal(format!("token signing failed: {e}")))
    }

    /// Checks signature and expiry (not revocation, which needs SQL).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
            // RFC 7519 §4.1.4: not accepted "on or after" exp; jsonwebtoken
            // only refuses after it, so a token would still connect during
            // the second in which open sockets using it are logged out.
            .filter(|c| c.exp > Utc::now().timestamp())
    }
}

/// The token's claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id (a wire id string).
    pub sub: String,
    pub username: String,
    /// The session row.
    pub jti: SessionId,
    pub iat: i64,
    pub exp: i64,
}

impl Claims {
    /// The token's lifetime, seconds (the cookie's `Max-Age`).
    pub fn lifetime_s(&self) -> i64 {
        (self.exp - self.iat).max(0)
    }
}

/// Why a token did not log a connection in.
#[derive(Debug)]
pub enum TokenCheck {
    Valid(CurrentUser),
    /// Bad, expired or revoked: the connection is anonymous.
    Invalid,
    /// The database could not be asked about revocation.
    Unavailable,
}

/// The full check at connect: signature, expiry, and the session row.
pub async fn authenticate(db: &Db, keys: &AuthKeys, token: &str) -> TokenCheck {
    let Some(claims) = keys.verify(token) else {
        return TokenCheck::Invalid;
    };
    match store::session_user(db, claims.jti).await {
        Ok(Some(s)) if s.user.0.to_string() == claims.sub => TokenCheck::Valid(CurrentUser {
            id: s.user,
            username: s.username,
            session: claims.jti,
            expires_at: s.expires_at.min(
                Utc.timestamp_opt(claims.exp, 0)
                    .single()
                    .unwrap_or(s.expires_at),
            ),
        }),
        Ok(_) => TokenCheck::Invalid,
        Err(ModelError::Unavailable(_)) => TokenCheck::Unavailable,
        Err(e) => {
            tracing::error!(error = %e, "session check failed");
            TokenCheck::Unavailable
        }
    }
}

struct Candidate {
    secret: Vec<u8>,
    created: Instant,
}

/// The names this connection is registering.
#[derive(Default)]
pub struct Candidates(HashMap<String, Candidate>);

impl Candidates {
    fn live(&mut self, name: &Username) -> Option<&Candidate> {
        self.0.retain(|_, c| c.created.elapsed() < CANDIDATE_TTL);
        self.0.get(name.as_str())
    }
}

/// What `auth_start` found.
#[derive(Debug, Clone)]
pub enum Started {
    /// The name belongs to a user, who logs in with a code.
    User,
    /// The name is free: this connection's candidate secret for it.
    Candidate {
        /// The standard Key URI ([`otpauth_url`]).
        otpauth_url: String,
        /// `otpauth_url` as an SVG QR code in a data URL.
        qr_code: String,
        /// The secret, base32.
        secret: String,
    },
}

/// A successful `auth_verify`: a signed token for a new session.
#[derive(Debug, Clone)]
pub struct LoggedIn {
    pub token: String,
    pub user: UserId,
    pub username: Username,
    pub expires_at: chrono::DateTime<Utc>,
}

/// `auth_start`.
pub async fn auth_start(
    ctx: &Ctx<'_>,
    name: &Username,
    candidates: &mut Candidates,
) -> Result<Started, MethodError> {
    if store::find_user(ctx.db, name).await?.is_some() {
        return Ok(Started::User);
    }
    if let Some(retry_after_s) = store::registration_retry_after(ctx.db, ctx.address).await? {
        return Err(ModelError::RegistrationLimited { retry_after_s }.into());
    }
    let secret = match candidates.live(name) {
        Some(c) => c.secret.clone(),
        None => {
            if candidates.0.len() >= MAX_CANDIDATES {
                return Err(MethodError::bad(
                    "too many registrations in progress on this connection",
                ));
            }
            let mut s = vec![0u8; 20];
            rand::thread_rng().fill_bytes(&mut s);
            candidates.0.insert(
                name.as_str().to_owned(),
                Candidate {
                    secret: s.clone(),
                    created: Instant::now(),
                },
            );
            s
        }
    };
    let b32 = totp_rs::Secret::from(secret).to_base32();
    let url = otpauth_url(&ctx.auth.issuer, name, &b32);
    Ok(Started::Candidate {
        qr_code: qr_data_url(&url)?,
        otpauth_url: url,
        secret: b32,
    })
}

/// The standard Key URI (Google Authenticator's format).
pub fn otpauth_url(issuer: &str, name: &Username, secret_b32: &str) -> String {
    let enc = |s: &str| -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    };
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={}&algorithm=SHA1&digits=6&period=30",
        enc(issuer),
        enc(name.as_str()),
        enc(issuer)
    )
}

fn qr_data_url(text: &str) -> Result<String, MethodError> {
    let code = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| MethodError::Internal(format!("QR code: {e}")))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build();
    Ok(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    ))
}

/// The newest time step in now±1 whose code equals `code`, compared in
/// constant time.
pub fn matching_step(secret: &[u8], code: &str, now_s: u64) -> Option<i64> {
    let totp = totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .build_noncompliant();
    let origin = now_s / STEP_SECS;
    let mut found = None;
    for step in origin.saturating_sub(1)..=origin + 1 {
        let expected = totp.generate(step * STEP_SECS).to_string();
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(step as i64);
        }
    }
    found
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `auth_verify`.
pub async fn auth_verify(
    ctx: &Ctx<'_>,
    name: &Username,
    code: &TotpCode,
    candidates: &mut Candidates,
) -> Result<LoggedIn, MethodError> {
    let code = code.as_str();
    let ttl_s = i32::try_from(ctx.auth.token_ttl.as_secs()).unwrap_or(i32::MAX);
    let now = unix_now();
    let outcome = if let Some(c) = candidates.live(name) {
        let secret = c.secret.clone();
        let step = matching_step(&secret, code, now);
        let sealed = ctx.auth.encrypt(&secret)?;
        store::register(ctx.db, name, Some(&sealed), step, ttl_s, ctx.address).await?
    } else if let Some(user) = store::find_user(ctx.db, name).await? {
        let secret = ctx.auth.decrypt(&user.secret)?;
        let step = matching_step(&secret, code, now);
        store::login(ctx.db, name, step, ttl_s, ctx.address).await?
    } else {
        // No user and no candidate here: a failure that counts.
        store::register(ctx.db, name, None, None, ttl_s, ctx.address).await?
    };
    match outcome {
        Outcome::Ok(s) => {
            candidates.0.remove(name.as_str());
            let claims = Claims {
                sub: s.user.0.to_string(),
                username: name.as_str().to_owned(),
                jti: s.session,
                // Both from the session row, so exp - iat is exactly the
                // TTL (the cookie's Max-Age) even when the clock ticks into
                // the next second between SQL and here.
                iat: s.expires_at.timestamp() - i64::from(ttl_s),
                exp: s.expires_at.timestamp(),
            };
            Ok(LoggedIn {
                token: ctx.auth.sign(&claims)?,
                user: s.user,
                username: name.clone(),
                expires_at: s.expires_at,
            })
        }
        Outcome::Invalid => Err(MethodError::InvalidCode),
        Outcome::Taken => {
            candidates.0.remove(name.as_str());
            Err(ModelError::UsernameTaken.into())
        }
        Outcome::RateLimited { retry_after_s } => {
            Err(ModelError::RateLimited { retry_after_s }.into())
        }
        Outcome::RegistrationLimited { retry_after_s } => {
            Err(ModelError::RegistrationLimited { retry_after_s }.into())
        }
    }
}

/// `me`.
pub fn me<'a>(ctx: &Ctx<'a>) -> Result<&'a CurrentUser, MethodError> {
    ctx.require_user()
}

/// `logout`: revokes the session everywhere (also fine when anonymous).
pub async fn logout(ctx: &Ctx<'_>) -> Result<(), MethodError> {
    if let Some(u) = ctx.user {
        store::revoke(ctx.db, u.session).await?;
    }
    Ok(())
}

/// Revokes the session of a token (HTTP `POST /auth/logout`), if it is ours.
pub async fn revoke_token(db: &Db, keys: &AuthKeys, token: &str) -> Result<(), MethodError> {
    if let Some(c) = keys.verify(token) {
        store::revoke(db, c.jti).await?;
    }
    Ok(())
}

/// The session ids among `ids` that are no longer valid.
pub async fn dead_sessions(db: &Db, ids: &[SessionId]) -> Result<Vec<SessionId>, MethodError> {
    Ok(store::dead_sessions(db, ids).await?)
}

/// Housekeeping of the auth tables.
pub async fn prune(db: &Db) -> Result<(), MethodError> {
    Ok(store::prune(db).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vector_and_window() {
        // RFC 6238 appendix B, SHA1, T = 59 s -> 94287082 (8 digits);
        // the 6-digit code is the last six: 287082.
        let secret = b"12345678901234567890";
        assert_eq!(matching_step(secret, "287082", 59), Some(1));
        // One step of skew either way, not two.
        assert_eq!(matching_step(secret, "287082", 59 + 30), Some(1));
        assert_eq!(matching_step(secret, "287082", 59 + 60), None);
        assert_eq!(matching_step(secret, "000000", 59), None);
    }

    #[test]
    fn otpauth_url_is_standard() {
        let name = Username::parse("Alice").unwrap();
        assert_eq!(
            otpauth_url("Marquee", &name, "ABC"),
            "otpauth://totp/Marquee:alice?secret=ABC&issuer=Marquee&algorithm=SHA1&digits=6&period=30"
        );
    }
}
