//! Users and sessions. The TOTP arithmetic and the encryption of secrets are
//! done by the caller; SQL does the bookkeeping that must be atomic across
//! replicas: the failure window, the last accepted time step, the first
//! candidate to claim a name, and session revocation.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::ModelError;
use crate::core::db::Db;
use crate::shared::ids::{SessionId, UserId};
use crate::shared::username::Username;

/// A user as seen by the login check.
#[derive(Debug, Clone)]
pub struct StoredUser {
    pub id: UserId,
    /// Ciphertext of the TOTP secret.
    pub secret: Vec<u8>,
    /// The last accepted TOTP time step (codes at or before it are replays).
    pub last_step: Option<i64>,
}

/// A successful login or registration.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user: UserId,
    pub session: SessionId,
    pub expires_at: DateTime<Utc>,
}

/// What a login or registration attempt came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Ok(NewSession),
    Invalid,
    Taken,
    RateLimited {
        retry_after_s: u64,
    },
    /// The client address registered `registrations_per_hour` users already.
    RegistrationLimited {
        retry_after_s: u64,
    },
}

/// The user behind a valid session.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user: UserId,
    pub username: String,
    pub expires_at: DateTime<Utc>,
}

pub async fn find_user(db: &Db, name: &Username) -> Result<Option<StoredUser>, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached("SELECT user_id, totp_secret, last_step FROM api.auth_user($1)")
        .await?;
    Ok(c.query_opt(&st, &[&name.as_str()])
        .await?
        .map(|r| StoredUser {
            id: UserId(r.get(0)),
            secret: r.get(1),
            last_step: r.get(2),
        }))
}

fn outcome_of(r: &tokio_postgres::Row) -> Result<Outcome, ModelError> {
    let kind: &str = r.get(0);
    Ok(match kind {
        "ok" => Outcome::Ok(NewSession {
            user: UserId(r.get(2)),
            session: r.get(3),
            expires_at: r.get(4),
        }),
        "invalid" => Outcome::Invalid,
        "taken" => Outcome::Taken,
        "rate_limited" => Outcome::RateLimited {
            retry_after_s: r.get::<_, Option<i32>>(1).unwrap_or(1).max(1) as u64,
        },
        "registration_limited" => Outcome::RegistrationLimited {
            retry_after_s: r.get::<_, Option<i32>>(1).unwrap_or(1).max(1) as u64,
        },
        other => {
            return Err(ModelError::Internal(format!(
                "unknown auth outcome {other}"
            )))
        }
    })
}

/// Runs one of the auth functions that answer an outcome row
/// (`api.auth_login`, `api.auth_register`), named with its arguments.
async fn attempt(
    db: &Db,
    call: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Outcome, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached(&format!(
            "SELECT outcome, retry_after_s, user_id, session_id, expires_at FROM {call}"
        ))
        .await?;
    outcome_of(&c.query_one(&st, params).await?)
}

/// Records a login attempt; `step` is the time step the code matched, if any.
pub async fn login(
    db: &Db,
    name: &Username,
    step: Option<i64>,
    ttl_s: i32,
    address: IpAddr,
) -> Result<Outcome, ModelError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&name.as_str(), &step, &ttl_s, &address];
    attempt(db, "api.auth_login($1, $2, $3, $4)", &params).await
}

/// Records a registration attempt of this connection's candidate (`secret`
/// is `None` when the connection has none for this name).
pub async fn register(
    db: &Db,
    name: &Username,
    secret: Option<&[u8]>,
    step: Option<i64>,
    ttl_s: i32,
    address: IpAddr,
) -> Result<Outcome, ModelError> {
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&name.as_str(), &secret, &step, &ttl_s, &address];
    attempt(db, "api.auth_register($1, $2, $3, $4, $5)", &params).await
}

/// Seconds until `address` may register another user, or `None` when it may
/// now (`registrations_per_hour`).
pub async fn registration_retry_after(db: &Db, address: IpAddr) -> Result<Option<u64>, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached("SELECT api.registration_retry_after($1)")
        .await?;
    let retry: Option<i32> = c.query_one(&st, &[&address]).await?.get(0);
    Ok(retry.map(|s| s.max(1) as u64))
}

/// The user of a session when it is valid (not revoked, not expired).
pub async fn session_user(db: &Db, id: SessionId) -> Result<Option<SessionUser>, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached("SELECT user_id, username, expires_at FROM api.session_user($1)")
        .await?;
    Ok(c.query_opt(&st, &[&id]).await?.map(|r| SessionUser {
        user: UserId(r.get(0)),
        username: r.get(1),
        expires_at: r.get(2),
    }))
}

/// Revokes a session everywhere (SQL notifies every replica).
pub async fn revoke(db: &Db, id: SessionId) -> Result<(), ModelError> {
    let c = db.conn().await?;
    let st = c.prepare_cached("SELECT api.revoke_session($1)").await?;
    c.query_one(&st, &[&id]).await?;
    Ok(())
}

/// Those of `ids` that are revoked, expired or gone.
pub async fn dead_sessions(db: &Db, ids: &[SessionId]) -> Result<Vec<SessionId>, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached("SELECT id FROM api.dead_sessions($1) AS id")
        .await?;
    Ok(c.query(&st, &[&ids])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Housekeeping of old failures and sessions.
pub async fn prune(db: &Db) -> Result<(), ModelError> {
    let c = db.conn().await?;
    let st = c.prepare_cached("SELECT api.prune_auth()").await?;
    c.query(&st, &[]).await?;
    Ok(())
}
