//! Request handlers: one function per request type, taking the typed
//! parameters `shared::protocol::Request` read and the connection's user,
//! returning domain values (models' structs) or a [`MethodError`]. They
//! never see JSON, sockets or frames: `controllers` parse, route and write
//! the answers. Hall subscriptions are not here (see `subscriptions`).

pub mod auth;
pub mod catalogue;
pub mod error;
pub mod seats;

pub use error::MethodError;

use std::net::IpAddr;

use crate::core::db::Db;
use crate::models::writer::SeatWriter;
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
    /// Holds, releases, bookings and cancellations go through it.
    pub seats: &'a SeatWriter,
    pub auth: &'a auth::AuthKeys,
    pub user: Option<&'a CurrentUser>,
    /// The client address (TCP peer, or `X-Forwarded-For` behind a trusted
    /// proxy) that registration and wrong-code limits count against.
    pub address: IpAddr,
}

impl<'a> Ctx<'a> {
    /// The user, or `UNAUTHORIZED`.
    pub fn require_user(&self) -> Result<&'a CurrentUser, MethodError> {
        self.user.ok_or(MethodError::Unauthorized)
    }
}
