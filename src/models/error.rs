//! The model layer's errors, and the one mapping from SQLSTATE to them.
//!
//! SQL raises business errors with its own class `MQ` (see docs/sql.md);
//! they are mapped by code, never by message text. Anything else is either
//! `Unavailable` (the database cannot be reached) or `Internal`.

use crate::core::CoreError;

/// A failed model call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("login required")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("the screening has started")]
    ScreeningClosed,
    /// A seat limit; the message is SQL's sentence for people, which names
    /// the limit (like `BadRequest`'s, it is written for the client).
    #[error("seat limit reached: {0}")]
    HoldLimit(String),
    #[error("seats unavailable")]
    SeatUnavailable(Vec<String>),
    #[error("hold expired")]
    HoldExpired(Vec<String>),
    /// A box-office seat rule refused the hold or booking.
    #[error("seat rule {rule}")]
    SeatRule {
        /// `orphan` or `companion`.
        rule: String,
        /// The seats the rule names (the orphans, or the companion seats).
        seats: Vec<String>,
    },
    #[error("username taken")]
    UsernameTaken,
    #[error("rate limited")]
    RateLimited { retry_after_s: u64 },
    /// The client address registered its quota of users this hour.
    #[error("registration limit reached")]
    RegistrationLimited { retry_after_s: u64 },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<CoreError> for ModelError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Unavailable(m) => ModelError::Unavailable(m),
            CoreError::Db(e) => from_pg(e),
            other => ModelError::Internal(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for ModelError {
    fn from(e: tokio_postgres::Error) -> Self {
        from_pg(e)
    }
}

fn seat_list(detail: Option<&str>) -> Vec<String> {
    detail
        .and_then(|d| serde_json::from_str::<Vec<String>>(d).ok())
        .unwrap_or_default()
}

/// The DETAIL of SEAT_RULE (MQ422): `{"rule":"orphan","seat_ids":["12"]}`.
#[derive(serde::Deserialize)]
struct SeatRuleDetail {
    rule: String,
    seat_ids: Vec<String>,
}

fn seat_rule(detail: Option<&str>) -> ModelError {
    match detail.and_then(|d| serde_json::from_str::<SeatRuleDetail>(d).ok()) {
        Some(d) => ModelError::SeatRule {
            rule: d.rule,
            seats: d.seat_ids,
        },
        // SQL always sends the detail; without it the answer would lie.
        None => ModelError::Internal(format!("SEAT_RULE without a readable detail: {detail:?}")),
    }
}

/// The one total function from a database error to a model error.
pub fn from_pg(e: tokio_postgres::Error) -> ModelError {
    let Some(db) = e.as_db_error() else {
        return match crate::core::error::classify(e) {
            CoreError::Unavailable(m) => ModelError::Unavailable(m),
            other => ModelError::Internal(other.to_string()),
        };
    };
    from_sql(db.code().code(), db.message(), db.detail())
}

/// The mapping of an error SQL raised, by its SQLSTATE: also for the errors
/// `api.seat_batch` caught and answered as rows (models::writer).
pub fn from_sql(code: &str, message: &str, detail: Option<&str>) -> ModelError {
    // Only what sql/ raises: the auth functions answer USERNAME_TAKEN and
    // RATE_LIMITED as outcome rows (raising would roll back the failure they
    // record), so those codes are mapped in methods::auth, not here.
    match code {
        "MQ400" => ModelError::BadRequest(message.to_owned()),
        "MQ401" => ModelError::Unauthorized,
        "MQ404" => ModelError::NotFound,
        "MQ409" => ModelError::SeatUnavailable(seat_list(detail)),
        "MQ410" => ModelError::ScreeningClosed,
        "MQ411" => ModelError::HoldLimit(message.to_owned()),
        "MQ412" => ModelError::HoldExpired(seat_list(detail)),
        "MQ422" => seat_rule(detail),
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections,
        // and a statement cancelled by a shutdown
        "57P01" | "57P02" | "57P03" | "53300" => ModelError::Unavailable(message.to_owned()),
        code => ModelError::Internal(format!("{message} ({code})")),
    }
}
