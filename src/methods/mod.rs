//! Request handlers: one function per request type, taking validated
//! parameters and the connection's user, returning the response `data` or a
//! [`MethodError`]. They never see sockets or frames; `controllers` parse,
//! route and answer. Hall subscriptions are not here (see `subscriptions`).

pub mod auth;
pub mod catalogue;
pub mod error;
pub mod params;
pub mod seats;

pub use error::MethodError;

use crate::core::db::Db;
use crate::shared::ids::{SessionId, UserId};

/// The logged-in user of a connection.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: UserId,
    pub username: String,
    /// The session row behind the token (`jti`).
    pub session: SessionId,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// What a handler may use.
pub struct Ctx<'a> {
    pub db: &'a Db,
    pub auth: &'a auth::AuthKeys,
    pub user: Option<&'a CurrentUser>,
}

impl Ctx<'_> {
    /// The user, or `UNAUTHORIZED`.
    pub fn require_user(&self) -> Result<&CurrentUser, MethodError> {
        self.user.ok_or(MethodError::Unauthorized)
    }
}
