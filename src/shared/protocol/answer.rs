//! The `data` of every response and push, as `Serialize` structs: the one
//! place that says what an answer looks like on the wire. They borrow from
//! the domain types the layers above pass around; `controllers` (answers)
//! and `subscriptions` (hall snapshots and updates) fill them in.
//!
//! Field order is byte order on the wire. The answers that used to be
//! built as JSON maps keep the alphabetical order those maps wrote.

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use serde_json::Value;

use super::{FEATURES, PROTOCOL_VERSION};
use crate::shared::clock::rfc3339;
use crate::shared::ids::{BookingId, CinemaId, FilmId, HallId, ScreeningId, SeatId, UserId};

/// Times are RFC 3339 strings in UTC.
fn time<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(t))
}

/// `{}`: `ping`, `logout`, `unsubscribe_hall`.
#[derive(Debug, Default, Serialize)]
pub struct Empty {}

/// The wire's `user` object.
#[derive(Debug, Serialize)]
pub struct UserOut<'a> {
    pub id: UserId,
    pub username: &'a str,
}

/// The `session` frame, first on every connection and again when its
/// session ends.
#[derive(Debug, Serialize)]
pub struct Session<'a> {
    features: &'static [&'static str],
    protocol: u32,
    /// Unique to the running process.
    server: &'a str,
    /// `null` when anonymous.
    user: Option<UserOut<'a>>,
}

impl<'a> Session<'a> {
    pub fn new(server: &'a str, user: Option<UserOut<'a>>) -> Self {
        Self {
            features: FEATURES,
            protocol: PROTOCOL_VERSION,
            server,
            user,
        }
    }
}

/// `auth_start`: `{"status":"user"}` or a candidate's enrolment.
#[derive(Debug, Serialize)]
pub struct AuthStarted {
    #[serde(flatten)]
    candidate: Option<Enrolment>,
    status: &'static str,
}

/// What a candidate needs to set up an authenticator app.
#[derive(Debug, Serialize)]
pub struct Enrolment {
    pub otpauth_url: String,
    /// An SVG data URL of `otpauth_url`.
    pub qr_code: String,
    /// Base32.
    pub secret: String,
}

impl AuthStarted {
    /// The name belongs to a user: log in with a code.
    pub fn user() -> Self {
        Self {
            candidate: None,
            status: "user",
        }
    }

    /// The name is free: this connection's candidate for it.
    pub fn candidate(enrolment: Enrolment) -> Self {
        Self {
            candidate: Some(enrolment),
            status: "candidate",
        }
    }
}

/// `auth_verify`.
#[derive(Debug, Serialize)]
pub struct AuthVerified<'a> {
    #[serde(serialize_with = "time")]
    pub expires_at: DateTime<Utc>,
    pub token: &'a str,
    pub user: UserOut<'a>,
}

/// `me`.
#[derive(Debug, Serialize)]
pub struct Me<'a> {
    pub user: UserOut<'a>,
}

/// `get_cinemas`.
#[derive(Debug, Serialize)]
pub struct Cinemas<'a> {
    pub cinemas: Vec<CinemaOut<'a>>,
}

#[derive(Debug, Serialize)]
pub struct CinemaOut<'a> {
    pub address: &'a str,
    pub city: &'a str,
    pub id: CinemaId,
    pub name: &'a str,
    /// An IANA zone name.
    pub timezone: &'a str,
}

/// `get_screenings`.
#[derive(Debug, Serialize)]
pub struct Screenings<'a> {
    pub screenings: Vec<ScreeningOut<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ScreeningOut<'a> {
    pub cinema_id: CinemaId,
    pub currency: &'a str,
    pub film: FilmOut<'a>,
    pub hall: HallRef<'a>,
    pub id: ScreeningId,
    /// Equal to `prices.standard`.
    pub price: i32,
    /// One price per seat kind.
    pub prices: &'a Value,
    pub seats_free: i32,
    pub seats_total: i32,
    #[serde(serialize_with = "time")]
    pub starts_at: DateTime<Utc>,
}

#[derive(Debug, Serialize)]
pub struct FilmOut<'a> {
    pub age_rating: &'a str,
    pub duration_min: i32,
    pub id: FilmId,
    pub title: &'a str,
}

/// A hall as screenings and snapshots name it.
#[derive(Debug, Serialize)]
pub struct HallRef<'a> {
    pub id: HallId,
    pub name: &'a str,
}

/// `hold_seats` and `hold_best_available`.
#[derive(Debug, Serialize)]
pub struct Held<'a> {
    #[serde(serialize_with = "time")]
    pub expires_at: DateTime<Utc>,
    pub screening_id: ScreeningId,
    pub seat_ids: &'a [SeatId],
    /// The screening's version right after this change.
    pub version: i64,
}

/// `release_seats`.
#[derive(Debug, Serialize)]
pub struct Released<'a> {
    pub screening_id: ScreeningId,
    /// Those actually released (own holds only).
    pub seat_ids: &'a [SeatId],
    pub version: i64,
}

/// A booking as its user sees it.
#[derive(Debug, Serialize)]
pub struct BookingOut<'a> {
    #[serde(serialize_with = "time")]
    pub created_at: DateTime<Utc>,
    pub currency: &'a str,
    pub id: BookingId,
    pub screening_id: ScreeningId,
    pub seat_ids: &'a [SeatId],
    /// `confirmed` or `cancelled`.
    pub status: &'a str,
    /// Minor units of `currency`.
    pub total: i32,
}

/// `book_seats` and `cancel_booking`.
#[derive(Debug, Serialize)]
pub struct BookingChanged<'a> {
    pub booking: BookingOut<'a>,
    pub version: i64,
}

/// `get_bookings`, newest first.
#[derive(Debug, Serialize)]
pub struct Bookings<'a> {
    pub bookings: Vec<BookingOut<'a>>,
}

/// A hall snapshot: the answer of `get_hall` and `subscribe_hall`, and the
/// `hall_snapshot` push.
#[derive(Debug, Serialize)]
pub struct HallSnapshotOut<'a> {
    pub screening_id: ScreeningId,
    pub hall: HallRef<'a>,
    pub version: i64,
    /// One price per seat kind.
    pub prices: &'a Value,
    pub seats: Vec<SeatOut<'a>>,
}

/// One seat of a snapshot.
#[derive(Debug, Serialize)]
pub struct SeatOut<'a> {
    pub id: SeatId,
    pub row: &'a str,
    pub number: i32,
    pub x: i32,
    pub y: i32,
    pub kind: &'a str,
    pub status: &'static str,
    /// Sent only when true: the receiving user's own hold or booking.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mine: bool,
}

/// The `hall_update` push: one committed change set.
#[derive(Debug, Serialize)]
pub struct HallUpdate {
    pub screening_id: ScreeningId,
    pub version: i64,
    pub seats: Vec<SeatChange>,
}

/// One seat of a change set.
#[derive(Debug, Serialize)]
pub struct SeatChange {
    pub id: SeatId,
    pub status: &'static str,
    /// As in [`SeatOut`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mine: bool,
}

/// The HTTP port's refusals: `{"error":"<CODE>"}`.
#[derive(Debug, Serialize)]
pub struct HttpError {
    pub error: &'static str,
}

/// `GET /health` (`ok`) and `GET /ready`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// Only for `/ready`: the pool reaches the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<bool>,
    /// Only for `/ready`: the LISTEN connection is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<bool>,
    /// `ok`, `ready` or `unavailable`.
    pub status: &'static str,
}

/// `GET /config.json`: how the web client finds the WebSocket port.
#[derive(Debug, Serialize)]
pub struct ClientConfig {
    pub protocol: u32,
    pub ws_port: u16,
}
