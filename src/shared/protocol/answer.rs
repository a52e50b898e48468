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

#[cfg(test)]
mod tests {
    //! The exact bytes: clients may not care about key order, but the
    //! answers must read as they did when they were JSON maps.

    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn bytes(v: &impl Serialize) -> String {
        serde_json::to_string(v).unwrap()
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn session_and_auth_answers() {
        let alice = || UserOut {
            id: UserId(12),
            username: "alice",
        };
        assert_eq!(
            bytes(&Session::new("r1", Some(alice()))),
            r#"{"features":["box_office"],"protocol":1,"server":"r1","user":{"id":"12","username":"alice"}}"#
        );
        assert_eq!(
            bytes(&Session::new("r1", None)),
            r#"{"features":["box_office"],"protocol":1,"server":"r1","user":null}"#
        );
        assert_eq!(bytes(&AuthStarted::user()), r#"{"status":"user"}"#);
        let enrolment = Enrolment {
            otpauth_url: "otpauth://x".into(),
            qr_code: "data:q".into(),
            secret: "AB".into(),
        };
        assert_eq!(
            bytes(&AuthStarted::candidate(enrolment)),
            r#"{"otpauth_url":"otpauth://x","qr_code":"data:q","secret":"AB","status":"candidate"}"#
        );
        let verified = AuthVerified {
            expires_at: at(),
            token: "t",
            user: alice(),
        };
        assert_eq!(
            bytes(&verified),
            r#"{"expires_at":"2030-01-02T03:04:05.000Z","token":"t","user":{"id":"12","username":"alice"}}"#
        );
        assert_eq!(bytes(&Empty {}), "{}");
    }

    #[test]
    fn seat_and_booking_answers() {
        let seats = [SeatId(1), SeatId(2)];
        let held = Held {
            expires_at: at(),
            screening_id: ScreeningId(7),
            seat_ids: &seats,
            version: 3,
        };
        assert_eq!(
            bytes(&held),
            r#"{"expires_at":"2030-01-02T03:04:05.000Z","screening_id":"7","seat_ids":["1","2"],"version":3}"#
        );
        let booking = || BookingOut {
            created_at: at(),
            currency: "EUR",
            id: BookingId(5),
            screening_id: ScreeningId(7),
            seat_ids: &seats,
            status: "confirmed",
            total: 2300,
        };
        let one = r#"{"created_at":"2030-01-02T03:04:05.000Z","currency":"EUR","id":"5","screening_id":"7","seat_ids":["1","2"],"status":"confirmed","total":2300}"#;
        let changed = BookingChanged {
            booking: booking(),
            version: 4,
        };
        assert_eq!(
            bytes(&changed),
            format!(r#"{{"booking":{one},"version":4}}"#)
        );
        let list = Bookings {
            bookings: vec![booking()],
        };
        assert_eq!(bytes(&list), format!(r#"{{"bookings":[{one}]}}"#));
    }

    #[test]
    fn catalogue_answers() {
        let prices = json!({"standard": 1150, "vip": 1550});
        let screening = ScreeningOut {
            cinema_id: CinemaId(1),
            currency: "EUR",
            film: FilmOut {
                age_rating: "12",
                duration_min: 120,
                id: FilmId(2),
                title: "Film",
            },
            hall: HallRef {
                id: HallId(3),
                name: "Saal 1",
            },
            id: ScreeningId(4),
            price: 1150,
            prices: &prices,
            seats_free: 9,
            seats_total: 10,
            starts_at: at(),
        };
        assert_eq!(
            bytes(&Screenings {
                screenings: vec![screening]
            }),
            concat!(
                r#"{"screenings":[{"cinema_id":"1","currency":"EUR","#,
                r#""film":{"age_rating":"12","duration_min":120,"id":"2","title":"Film"},"#,
                r#""hall":{"id":"3","name":"Saal 1"},"id":"4","price":1150,"#,
                r#""prices":{"standard":1150,"vip":1550},"seats_free":9,"seats_total":10,"#,
                r#""starts_at":"2030-01-02T03:04:05.000Z"}]}"#
            )
        );
        let cinema = CinemaOut {
            address: "Street 1",
            city: "Berlin",
            id: CinemaId(1),
            name: "Kino",
            timezone: "Europe/Berlin",
        };
        assert_eq!(
            bytes(&Cinemas {
                cinemas: vec![cinema]
            }),
            r#"{"cinemas":[{"address":"Street 1","city":"Berlin","id":"1","name":"Kino","timezone":"Europe/Berlin"}]}"#
        );
    }

    #[test]
    fn http_answers() {
        let ready = Health {
            database: Some(true),
            listener: Some(false),
            status: "unavailable",
        };
        assert_eq!(
            bytes(&ready),
            r#"{"database":true,"listener":false,"status":"unavailable"}"#
        );
        let ok = Health {
            database: None,
            listener: None,
            status: "ok",
        };
        assert_eq!(bytes(&ok), r#"{"status":"ok"}"#);
        let config = ClientConfig {
            protocol: 1,
            ws_port: 3001,
        };
        assert_eq!(bytes(&config), r#"{"protocol":1,"ws_port":3001}"#);
    }
}
