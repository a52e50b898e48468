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

use std::net::IpAddr;

use chrono::Utc;
use serde_json::{Map, Value};

use self::params::{Lookup, Params};
use crate::core::db::Db;
use crate::shared::ids::{ScreeningId, SessionId, UserId};

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
    /// The client address (TCP peer, or `X-Forwarded-For` behind a trusted
    /// proxy) that registration and wrong-code limits count against.
    pub address: IpAddr,
}

impl Ctx<'_> {
    /// The user, or `UNAUTHORIZED`.
    pub fn require_user(&self) -> Result<&CurrentUser, MethodError> {
        self.user.ok_or(MethodError::Unauthorized)
    }
}

/// The parameter of `get_hall`, `subscribe_hall` and `unsubscribe_hall`
/// (answered by the subscriptions layer).
pub fn hall_param(p: &Params<'_>) -> Result<Lookup<ScreeningId>, MethodError> {
    p.id("screening_id", ScreeningId::parse)
}

/// Reads the `data` of a request of type `kind` exactly as its handler
/// does first, with no database and no user: `Err` is the handler's
/// `BAD_REQUEST`, `Ok` means it would go on to the login and lookup checks.
/// Types that read no parameters pass, and so do unknown types (the
/// dispatcher answers those `UNKNOWN_METHOD`). The fuzz target in `fuzz/`
/// runs it on arbitrary input.
pub fn validate(kind: &str, data: &Map<String, Value>) -> Result<(), MethodError> {
    let p = Params(data);
    match kind {
        "auth_start" => auth::start_params(&p).map(drop),
        "auth_verify" => auth::verify_params(&p).map(drop),
        "get_screenings" => catalogue::ScreeningsQuery::parse(&p, Utc::now()).map(drop),
        "get_hall" | "subscribe_hall" | "unsubscribe_hall" => hall_param(&p).map(drop),
        "hold_seats" | "release_seats" | "book_seats" => seats::seat_params(&p).map(drop),
        "cancel_booking" => seats::booking_param(&p).map(drop),
        "hold_best_available" => seats::best_params(&p).map(drop),
        _ => Ok(()),
    }
}
