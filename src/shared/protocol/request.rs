//! Reading a client frame into one typed [`Request`]. Parse, don't
//! validate: a handler is given the ids, usernames, codes, counts and kinds
//! the contract allows, never a `data` object to read.
//!
//! The contract's order of the checks that need neither the database nor
//! the session is kept here, first to last:
//!
//! 1. the frame is a JSON object, else `BAD_REQUEST` (`eid` null, `type`
//!    `"error"`);
//! 2. `type` is a non-empty string and `eid` a string of 1 to 128
//!    characters (`BAD_REQUEST`, echoing whichever of the two was readable);
//! 3. `ts`, when present, is a number and `data`, when present, an object;
//! 4. `type` names a request of the contract, else `UNKNOWN_METHOD`;
//! 5. the fields of `data`, in the order listed per request below, else
//!    `BAD_REQUEST`.
//!
//! An id that is a string but names nothing is no error here: it comes back
//! as [`Lookup::Unknown`] and is answered `NOT_FOUND` after the login check
//! (`UNAUTHORIZED` ranks between the two), in `controllers::dispatch`.
//!
//! The one request body of the HTTP port, `POST /auth/session`'s, is read
//! here too ([`session_token`]).

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use super::{ErrorCode, WireError, MAX_EID_CHARS};
use crate::shared::ids::{BookingId, CinemaId, Lookup, ScreeningId, SeatId, SeatSelection};
use crate::shared::username::Username;
use crate::shared::values::{SeatKind, TotpCode};

/// Most seats one request may name (`seat_ids`, `count`).
pub const MAX_SEATS_PER_REQUEST: usize = 100;
/// How far `get_screenings` looks ahead when `to` is not given.
pub const DEFAULT_WINDOW_DAYS: i64 = 7;
/// The longest window one `get_screenings` may ask for, so one answer stays
/// small (a year of screenings was tens of kilobytes). SQL checks it too.
pub const MAX_WINDOW_DAYS: i64 = 31;
/// How much of an unknown `type` an `UNKNOWN_METHOD` message quotes.
const QUOTED_TYPE_CHARS: usize = 64;

/// What the envelope of a well-formed request carries besides its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The client's correlation id, 1 to 128 characters, echoed unchanged.
    pub eid: String,
}

/// A frame refused before it reached a handler. What could be read of it
/// is kept, so the answer (or the rate limiter's, which ranks first) still
/// echoes it.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The `type`, when it was a non-empty string.
    pub kind: Option<String>,
    /// The `eid`, when it was valid.
    pub eid: Option<String>,
    /// `BAD_REQUEST` or `UNKNOWN_METHOD`, with a message for people.
    pub error: WireError,
}

impl Refused {
    /// The `type` of the answer: the client's, or `error` when unreadable.
    pub fn reply_kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("error")
    }
}

/// One request of the contract with its parameters read and checked.
/// Field names are the wire's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    /// `username` (a string, then a valid name).
    AuthStart {
        username: Username,
    },
    /// `username` and `code` (both strings), then the name's rules, then
    /// the code's six digits.
    AuthVerify {
        username: Username,
        code: TotpCode,
    },
    Logout,
    Me,
    GetCinemas,
    /// `cinema_id` (optional), `from`, `to` (optional RFC 3339 times; null
    /// is absent), then the window of at most [`MAX_WINDOW_DAYS`]. The
    /// defaults are applied: `from` now, `to` `from` + 7 days.
    GetScreenings {
        cinema_id: Option<Lookup<CinemaId>>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    /// `screening_id`.
    GetHall {
        screening_id: Lookup<ScreeningId>,
    },
    /// `screening_id`.
    SubscribeHall {
        screening_id: Lookup<ScreeningId>,
    },
    /// `screening_id`.
    UnsubscribeHall {
        screening_id: Lookup<ScreeningId>,
    },
    /// `screening_id`, then `seat_ids` (1 to 100 string ids, duplicates
    /// removed in order; any id naming nothing makes the list unknown).
    HoldSeats(SeatSelection),
    /// `screening_id`, `count`, `kinds` (absent or null: standard and vip).
    HoldBestAvailable {
        screening_id: Lookup<ScreeningId>,
        /// 1 to [`MAX_SEATS_PER_REQUEST`]; SQL checks it against the seat
        /// limit, a setting the server does not cache.
        count: i32,
        /// A non-empty set of kinds, without duplicates, in the client's order.
        kinds: Vec<SeatKind>,
    },
    /// As `HoldSeats`.
    ReleaseSeats(SeatSelection),
    /// As `HoldSeats`.
    BookSeats(SeatSelection),
    /// `booking_id`.
    CancelBooking {
        booking_id: Lookup<BookingId>,
    },
    GetBookings,
}

/// The one list of request types: each variant with its wire name. The
/// names, [`Request::name`] and the metrics labels come from it; parsing
/// is checked against it by the tests below.
macro_rules! request_names {
    ($($variant:ident = $name:literal,)*) => {
        impl Request {
            /// Every request type of the contract, as the wire spells it.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            /// The wire `type` of this request.
            pub fn name(&self) -> &'static str {
                match self {
                    $(Request::$variant { .. } => $name,)*
                }
            }
        }
    };
}

request_names! {
    Ping = "ping",
    AuthStart = "auth_start",
    AuthVerify = "auth_verify",
    Logout = "logout",
    Me = "me",
    GetCinemas = "get_cinemas",
    GetScreenings = "get_screenings",
    GetHall = "get_hall",
    SubscribeHall = "subscribe_hall",
    UnsubscribeHall = "unsubscribe_hall",
    HoldSeats = "hold_seats",
    HoldBestAvailable = "hold_best_available",
    ReleaseSeats = "release_seats",
    BookSeats = "book_seats",
    CancelBooking = "cancel_booking",
    GetBookings = "get_bookings",
}

impl Request {
    /// Reads a text frame (see the module doc for the order of checks).
    pub fn parse(text: &str) -> Result<(Envelope, Request), Refused> {
        Self::parse_at(text, Utc::now())
    }

    /// [`Request::parse`] with `now` for `get_screenings`' default window.
    pub fn parse_at(text: &str, now: DateTime<Utc>) -> Result<(Envelope, Request), Refused> {
        let (kind, eid, data) = envelope(text)?;
        match Self::read(&kind, &Fields(&data), now) {
            Ok(request) => Ok((Envelope { eid }, request)),
            Err(error) => Err(Refused {
                kind: Some(kind),
                eid: Some(eid),
                error,
            }),
        }
    }

    /// The metrics label of a frame's `type`: its name when it is one of
    /// [`Request::NAMES`], else `unknown` (bounded label cardinality).
    pub fn label(kind: Option<&str>) -> &'static str {
        Self::NAMES
            .iter()
            .copied()
            .find(|n| Some(*n) == kind)
            .unwrap_or("unknown")
    }

    fn read(kind: &str, f: &Fields<'_>, now: DateTime<Utc>) -> Result<Request, WireError> {
        Ok(match kind {
            "ping" => Request::Ping,
            "auth_start" => Request::AuthStart {
                username: username(f.str("username")?)?,
            },
            "auth_verify" => {
                let (name, code) = (f.str("username")?, f.str("code")?);
                Request::AuthVerify {
                    username: username(name)?,
                    code: TotpCode::parse(code).ok_or_else(|| bad("`code` must be 6 digits"))?,
                }
            }
            "logout" => Request::Logout,
            "me" => Request::Me,
            "get_cinemas" => Request::GetCinemas,
            "get_screenings" => screenings(f, now)?,
            "get_hall" => Request::GetHall {
                screening_id: f.id("screening_id", ScreeningId::parse)?,
            },
            "subscribe_hall" => Request::SubscribeHall {
                screening_id: f.id("screening_id", ScreeningId::parse)?,
            },
            "unsubscribe_hall" => Request::UnsubscribeHall {
                screening_id: f.id("screening_id", ScreeningId::parse)?,
            },
            "hold_seats" => Request::HoldSeats(f.seats()?),
            "hold_best_available" => Request::HoldBestAvailable {
                screening_id: f.id("screening_id", ScreeningId::parse)?,
                count: f.count()?,
                kinds: f.kinds()?,
            },
            "release_seats" => Request::ReleaseSeats(f.seats()?),
            "book_seats" => Request::BookSeats(f.seats()?),
            "cancel_booking" => Request::CancelBooking {
                booking_id: f.id("booking_id", BookingId::parse)?,
            },
            "get_bookings" => Request::GetBookings,
            other => {
                return Err(WireError::new(
                    ErrorCode::UnknownMethod,
                    format!(
                        "unknown request type `{}`",
                        truncate(other, QUOTED_TYPE_CHARS)
                    ),
                ))
            }
        })
    }
}

/// The token of `POST /auth/session`'s body `{"token":"<jwt>"}`, when it
/// is a string of cookie-safe characters (a JWT is base64url segments and
/// dots: nothing that could end the `Set-Cookie` value). `None` answers 401.
pub fn session_token(body: &[u8]) -> Option<String> {
    let Value::Object(mut obj) = serde_json::from_slice::<Value>(body).ok()? else {
        return None;
    };
    match obj.remove("token") {
        Some(Value::String(t))
            if t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Some(t)
        }
        _ => None,
    }
}

/// Steps 1 to 3 of the module doc: the frame's `type`, `eid` and `data`.
fn envelope(text: &str) -> Result<(String, String, Map<String, Value>), Refused> {
    let mut refused = Refused {
        kind: None,
        eid: None,
        error: bad(""),
    };
    let refuse = |mut r: Refused, message: &str| {
        r.error = bad(message);
        Err(r)
    };
    let mut obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => return refuse(refused, "a frame must be a JSON object"),
        Err(_) => return refuse(refused, "the frame is not valid JSON"),
    };
    refused.kind = match obj.remove("type") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    refused.eid = match obj.remove("eid") {
        Some(Value::String(s)) if valid_eid(&s) => Some(s),
        _ => None,
    };
    let (Some(kind), Some(eid)) = (refused.kind.clone(), refused.eid.clone()) else {
        let message = if refused.kind.is_none() {
            "`type` must be a non-empty string"
        } else {
            "`eid` must be a string of 1 to 128 characters"
        };
        return refuse(refused, message);
    };
    if !matches!(obj.get("ts"), None | Some(Value::Number(_))) {
        return refuse(refused, "`ts` must be a number");
    }
    let data = match obj.remove("data") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return refuse(refused, "`data` must be an object"),
    };
    Ok((kind, eid, data))
}

fn valid_eid(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_EID_CHARS
}

fn bad(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::BadRequest, message)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn username(raw: &str) -> Result<Username, WireError> {
    Username::parse(raw).ok_or_else(|| bad("usernames are 3 to 32 characters of a-z, 0-9, _ . -"))
}

/// `get_screenings`, defaults applied.
fn screenings(f: &Fields<'_>, now: DateTime<Utc>) -> Result<Request, WireError> {
    let cinema_id = f.opt_id("cinema_id", CinemaId::parse)?;
    let from = f.opt_time("from")?.unwrap_or(now);
    let to = f
        .opt_time("to")?
        .unwrap_or(from + Duration::days(DEFAULT_WINDOW_DAYS));
    if to - from > Duration::days(MAX_WINDOW_DAYS) {
        return Err(bad(
            "ask for at most 31 days of screenings at a time (`to` - `from`)",
        ));
    }
    Ok(Request::GetScreenings {
        cinema_id,
        from,
        to,
    })
}

/// A view of `data`: every getter returns a typed value or `BAD_REQUEST`.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// A required id field.
    fn id<T>(&self, key: &str, parse: fn(&str) -> Option<T>) -> Result<Lookup<T>, WireError> {
        match self.0.get(key) {
            Some(Value::String(s)) => Ok(parse(s).map_or(Lookup::Unknown, Lookup::Found)),
            Some(_) => Err(bad(format!("`{key}` must be a string id"))),
            None => Err(bad(format!("`{key}` is required"))),
        }
    }

    /// An optional id field (`null` counts as absent).
    fn opt_id<T>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<Option<Lookup<T>>, WireError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.id(key, parse).map(Some),
        }
    }

    /// A required, non-empty list of string ids, duplicates removed.
    fn ids<T: PartialEq>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<Lookup<Vec<T>>, WireError> {
        let not_ids = || bad(format!("`{key}` must be an array of string ids"));
        let items = match self.0.get(key) {
            None => return Err(bad(format!("`{key}` is required"))),
            Some(Value::Array(items)) => items,
            Some(_) => return Err(not_ids()),
        };
        if items.is_empty() || items.len() > MAX_SEATS_PER_REQUEST {
            return Err(bad(format!(
                "`{key}` must hold 1 to {MAX_SEATS_PER_REQUEST} ids"
            )));
        }
        let mut out = Vec::with_capacity(items.len());
        let mut unknown = false;
        for item in items {
            let Value::String(s) = item else {
                return Err(not_ids());
            };
            match parse(s) {
                Some(id) if !out.contains(&id) => out.push(id),
                Some(_) => {}
                None => unknown = true,
            }
        }
        Ok(if unknown {
            Lookup::Unknown
        } else {
            Lookup::Found(out)
        })
    }

    /// `screening_id`, then `seat_ids`.
    fn seats(&self) -> Result<SeatSelection, WireError> {
        Ok(SeatSelection {
            screening_id: self.id("screening_id", ScreeningId::parse)?,
            seat_ids: self.ids("seat_ids", SeatId::parse)?,
        })
    }

    /// A required string.
    fn str(&self, key: &str) -> Result<&str, WireError> {
        match self.0.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(bad(format!("`{key}` must be a string"))),
            None => Err(bad(format!("`{key}` is required"))),
        }
    }

    /// An optional RFC 3339 time (`null` counts as absent).
    fn opt_time(&self, key: &str) -> Result<Option<DateTime<Utc>>, WireError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| bad(format!("`{key}` must be an RFC 3339 time"))),
            Some(_) => Err(bad(format!("`{key}` must be an RFC 3339 time string"))),
        }
    }

    /// `count`: a whole number from 1 to [`MAX_SEATS_PER_REQUEST`] (`2.0`
    /// and `"2"` are not).
    fn count(&self) -> Result<i32, WireError> {
        match self.0.get("count") {
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|n| (1..=MAX_SEATS_PER_REQUEST as u64).contains(n))
                .and_then(|n| i32::try_from(n).ok()),
            _ => None,
        }
        .ok_or_else(|| {
            bad(format!(
                "`count` must be a whole number from 1 to the seat limit (at most {MAX_SEATS_PER_REQUEST})"
            ))
        })
    }

    /// `kinds`: absent or null for the default, else a non-empty list of
    /// seat kinds (duplicates dropped).
    fn kinds(&self) -> Result<Vec<SeatKind>, WireError> {
        let items = match self.0.get("kinds") {
            None | Some(Value::Null) => return Ok(SeatKind::BEST_DEFAULT.to_vec()),
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(_) => return Err(bad("`kinds` must be a non-empty array of seat kinds")),
        };
        let mut kinds = Vec::with_capacity(SeatKind::ALL.len());
        for item in items {
            let kind = item.as_str().and_then(SeatKind::parse).ok_or_else(|| {
                bad("`kinds` may only hold standard, vip, wheelchair and companion")
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
    }

    fn parse(text: &str) -> Result<Request, Refused> {
        Request::parse_at(text, now()).map(|(_, r)| r)
    }

    /// A request of `kind` with `data`.
    fn req(kind: &str, data: Value) -> Result<Request, Refused> {
        parse(&json!({"type": kind, "eid": "e1", "data": data}).to_string())
    }

    /// The message of a refused request, checking it is a BAD_REQUEST that
    /// echoes the client's type and eid.
    fn refused(kind: &str, data: Value) -> String {
        let r = req(kind, data.clone()).expect_err(&format!("{kind} {data} is refused"));
        assert_eq!(r.error.code, ErrorCode::BadRequest, "{kind} {data}");
        assert_eq!(
            (r.kind.as_deref(), r.eid.as_deref()),
            (Some(kind), Some("e1"))
        );
        r.error.message
    }

    fn seats(ids: &[i64]) -> Lookup<Vec<SeatId>> {
        Lookup::Found(ids.iter().copied().map(SeatId).collect())
    }

    #[test]
    fn unreadable_frames_are_bad_requests_with_what_could_be_read() {
        for (text, message) in [
            ("nope", "the frame is not valid JSON"),
            ("[1]", "a frame must be a JSON object"),
            (r#""ping""#, "a frame must be a JSON object"),
        ] {
            let r = parse(text).unwrap_err();
            assert_eq!(
                (r.error.code, r.error.message.as_str()),
                (ErrorCode::BadRequest, message)
            );
            assert_eq!((r.reply_kind(), &r.kind, &r.eid), ("error", &None, &None));
        }
        // No type: the eid is still echoed, under type "error".
        let r = parse(r#"{"eid":"e1","type":""}"#).unwrap_err();
        assert_eq!(r.error.message, "`type` must be a non-empty string");
        assert_eq!((r.reply_kind(), r.eid.as_deref()), ("error", Some("e1")));
        // The type is checked before the eid; both are echoed when valid.
        let r = parse(r#"{"type":5,"eid":7}"#).unwrap_err();
        assert_eq!(r.error.message, "`type` must be a non-empty string");
        let r = parse(r#"{"type":"ping"}"#).unwrap_err();
        assert_eq!(
            r.error.message,
            "`eid` must be a string of 1 to 128 characters"
        );
        assert_eq!((r.kind.as_deref(), r.eid), (Some("ping"), None));
        let long = "é".repeat(MAX_EID_CHARS + 1);
        let r = parse(&json!({"type": "ping", "eid": long}).to_string()).unwrap_err();
        assert_eq!(r.eid, None, "129 characters are one too many");
        let longest = "é".repeat(MAX_EID_CHARS);
        let (env, _) =
            Request::parse(&json!({"type": "ping", "eid": longest}).to_string()).unwrap();
        assert_eq!(env.eid, longest);
    }

    #[test]
    fn ts_and_data_are_checked_before_the_type_is_looked_up() {
        for (frame, message) in [
            (
                json!({"type": "nope", "eid": "e", "ts": "1"}),
                "`ts` must be a number",
            ),
            (
                json!({"type": "nope", "eid": "e", "data": []}),
                "`data` must be an object",
            ),
            (
                json!({"type": "ping", "eid": "e", "data": null}),
                "`data` must be an object",
            ),
        ] {
            let r = parse(&frame.to_string()).unwrap_err();
            assert_eq!(
                (r.error.code, r.error.message.as_str()),
                (ErrorCode::BadRequest, message)
            );
            assert_eq!(r.eid.as_deref(), Some("e"));
        }
        let (env, r) = Request::parse(r#"{"type":"ping","eid":"p1","ts":5}"#).unwrap();
        assert_eq!((env.eid.as_str(), r), ("p1", Request::Ping));
    }

    #[test]
    fn an_unknown_type_is_unknown_method_before_any_field_is_read() {
        let r = req("hold_everything", json!({"screening_id": 5})).unwrap_err();
        assert_eq!(r.error.code, ErrorCode::UnknownMethod);
        assert_eq!(r.error.message, "unknown request type `hold_everything`");
        assert_eq!(
            (r.kind.as_deref(), r.eid.as_deref()),
            (Some("hold_everything"), Some("e1"))
        );
        let r = req(&"x".repeat(100), json!({})).unwrap_err();
        assert_eq!(
            r.error.message,
            format!("unknown request type `{}`", "x".repeat(64))
        );
        // Names are exact.
        assert_eq!(
            req("Ping", json!({})).unwrap_err().error.code,
            ErrorCode::UnknownMethod
        );
    }

    #[test]
    fn every_name_parses_to_its_own_request_and_nothing_else_does() {
        let data = json!({"screening_id": "1", "seat_ids": ["1"], "booking_id": "1",
                          "username": "alice", "code": "123456", "count": 1});
        let mut seen = Vec::new();
        for name in Request::NAMES {
            let r = req(name, data.clone()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(r.name(), *name);
            assert_eq!(Request::label(Some(name)), *name);
            assert!(!seen.contains(name), "{name} is listed twice");
            seen.push(name);
        }
        assert_eq!(Request::NAMES.len(), 16, "the contract's request types");
        assert_eq!(Request::label(Some("nope")), "unknown");
        assert_eq!(Request::label(None), "unknown");
    }

    #[test]
    fn requests_without_parameters_ignore_data() {
        for (name, r) in [
            ("ping", Request::Ping),
            ("logout", Request::Logout),
            ("me", Request::Me),
            ("get_cinemas", Request::GetCinemas),
            ("get_bookings", Request::GetBookings),
        ] {
            assert_eq!(req(name, json!({"screening_id": 5, "x": [1]})).unwrap(), r);
            assert_eq!(
                parse(&json!({"type": name, "eid": "e"}).to_string()).unwrap(),
                r
            );
        }
    }

    #[test]
    fn auth_requests_read_the_name_then_the_code() {
        assert_eq!(
            req("auth_start", json!({"username": "Alice"})).unwrap(),
            Request::AuthStart {
                username: Username::parse("alice").unwrap()
            }
        );
        assert_eq!(refused("auth_start", json!({})), "`username` is required");
        assert_eq!(
            refused("auth_start", json!({"username": 5})),
            "`username` must be a string"
        );
        let rules = "usernames are 3 to 32 characters of a-z, 0-9, _ . -";
        assert_eq!(refused("auth_start", json!({"username": "ab"})), rules);
        // auth_verify: both must be strings before the name's rules apply,
        // and the name's rules before the code's.
        assert_eq!(
            refused("auth_verify", json!({"username": "ab"})),
            "`code` is required"
        );
        assert_eq!(
            refused("auth_verify", json!({"username": "ab", "code": 123456})),
            "`code` must be a string"
        );
        assert_eq!(
            refused("auth_verify", json!({"username": "ab", "code": "x"})),
            rules
        );
        for code in ["12345", "12345a", "１２３４５６"] {
            assert_eq!(
                refused("auth_verify", json!({"username": "bob", "code": code})),
                "`code` must be 6 digits"
            );
        }
        assert_eq!(
            req("auth_verify", json!({"username": "BOB", "code": "012345"})).unwrap(),
            Request::AuthVerify {
                username: Username::parse("bob").unwrap(),
                code: TotpCode::parse("012345").unwrap()
            }
        );
    }

    #[test]
    fn get_screenings_applies_the_defaults_and_bounds_the_window() {
        let day = Duration::days(1);
        assert_eq!(
            req("get_screenings", json!({})).unwrap(),
            Request::GetScreenings {
                cinema_id: None,
                from: now(),
                to: now() + day * 7
            }
        );
        assert_eq!(
            req(
                "get_screenings",
                json!({"cinema_id": "x", "from": "2030-01-02T00:00:00+02:00", "to": null})
            )
            .unwrap(),
            Request::GetScreenings {
                cinema_id: Some(Lookup::Unknown),
                from: Utc.with_ymd_and_hms(2030, 1, 1, 22, 0, 0).unwrap(),
                to: Utc.with_ymd_and_hms(2030, 1, 8, 22, 0, 0).unwrap()
            }
        );
        let r = req(
            "get_screenings",
            json!({"cinema_id": "3", "to": "2030-01-31T12:00:00Z"}),
        );
        assert!(matches!(
            r.unwrap(),
            Request::GetScreenings {
                cinema_id: Some(Lookup::Found(CinemaId(3))),
                ..
            }
        ));
        assert_eq!(
            refused("get_screenings", json!({"cinema_id": 3})),
            "`cinema_id` must be a string id"
        );
        assert_eq!(
            refused("get_screenings", json!({"from": "yesterday"})),
            "`from` must be an RFC 3339 time"
        );
        assert_eq!(
            refused("get_screenings", json!({"from": 1, "to": true})),
            "`from` must be an RFC 3339 time string"
        );
        let window = "ask for at most 31 days of screenings at a time (`to` - `from`)";
        // `to` alone is measured from now.
        assert_eq!(
            refused("get_screenings", json!({"to": "2030-02-01T12:00:01Z"})),
            window
        );
        assert_eq!(
            refused(
                "get_screenings",
                json!({"from": "2031-01-01T00:00:00Z", "to": "2031-03-01T00:00:00Z"})
            ),
            window
        );
    }

    #[test]
    fn hall_requests_read_the_screening_id() {
        for name in ["get_hall", "subscribe_hall", "unsubscribe_hall"] {
            assert_eq!(refused(name, json!({})), "`screening_id` is required");
            assert_eq!(
                refused(name, json!({"screening_id": 7})),
                "`screening_id` must be a string id"
            );
            for (id, lookup) in [
                ("7", Lookup::Found(ScreeningId(7))),
                ("007", Lookup::Unknown),
            ] {
                let r = req(name, json!({"screening_id": id})).unwrap();
                let got = match r {
                    Request::GetHall { screening_id }
                    | Request::SubscribeHall { screening_id }
                    | Request::UnsubscribeHall { screening_id } => screening_id,
                    other => panic!("{name} parsed as {other:?}"),
                };
                assert_eq!(got, lookup, "{name} {id}");
            }
        }
    }

    #[test]
    fn seat_requests_read_the_screening_then_the_seats() {
        for name in ["hold_seats", "release_seats", "book_seats"] {
            let selection = |data: Value| match req(name, data).unwrap() {
                Request::HoldSeats(s) | Request::ReleaseSeats(s) | Request::BookSeats(s) => s,
                other => panic!("{name} parsed as {other:?}"),
            };
            assert_eq!(
                selection(json!({"screening_id": "2", "seat_ids": ["5", "4", "5"]})),
                SeatSelection {
                    screening_id: Lookup::Found(ScreeningId(2)),
                    seat_ids: seats(&[5, 4]),
                },
                "duplicates dropped, order kept"
            );
            assert_eq!(
                selection(json!({"screening_id": "2", "seat_ids": ["1", "x", "1"]})).seat_ids,
                Lookup::Unknown,
                "an id naming nothing makes the list NOT_FOUND later"
            );
            assert_eq!(
                refused(name, json!({"screening_id": 2, "seat_ids": 5})),
                "`screening_id` must be a string id",
                "the screening is read first"
            );
            assert_eq!(
                refused(name, json!({"screening_id": "2"})),
                "`seat_ids` is required"
            );
            let not_ids = "`seat_ids` must be an array of string ids";
            assert_eq!(
                refused(name, json!({"screening_id": "2", "seat_ids": "5"})),
                not_ids
            );
            // A non-string anywhere is BAD_REQUEST even after an unknown id.
            let data = json!({"screening_id": "x", "seat_ids": ["x", 2]});
            assert_eq!(refused(name, data), not_ids);
            let size = "`seat_ids` must hold 1 to 100 ids";
            assert_eq!(
                refused(name, json!({"screening_id": "2", "seat_ids": []})),
                size
            );
            let many: Vec<String> = (0..101).map(|i| i.to_string()).collect();
            assert_eq!(
                refused(name, json!({"screening_id": "2", "seat_ids": many})),
                size
            );
        }
    }

    #[test]
    fn hold_best_available_reads_count_and_kinds() {
        let best = |data: Value| match req("hold_best_available", data).unwrap() {
            Request::HoldBestAvailable {
                screening_id,
                count,
                kinds,
            } => (screening_id, count, kinds),
            other => panic!("parsed as {other:?}"),
        };
        use SeatKind::*;
        assert_eq!(
            best(json!({"screening_id": "7", "count": 3})),
            (Lookup::Found(ScreeningId(7)), 3, vec![Standard, Vip])
        );
        assert_eq!(
            best(json!({"screening_id": "7", "count": 1, "kinds": null})).2,
            vec![Standard, Vip]
        );
        assert_eq!(
            best(json!({"screening_id": "7", "count": 100,
                        "kinds": ["companion", "wheelchair", "companion"]})),
            (
                Lookup::Found(ScreeningId(7)),
                100,
                vec![Companion, Wheelchair]
            )
        );
        // A string that names nothing is NOT_FOUND later, not BAD_REQUEST.
        assert_eq!(
            best(json!({"screening_id": "x", "count": 2})).0,
            Lookup::Unknown
        );
        let count = "`count` must be a whole number from 1 to the seat limit (at most 100)";
        for bad in [
            json!(null),
            json!(0),
            json!(-1),
            json!(101),
            json!(2.0),
            json!("2"),
            json!(1e30),
        ] {
            let data = json!({"screening_id": "7", "count": bad});
            assert_eq!(refused("hold_best_available", data), count, "count {bad}");
        }
        assert_eq!(
            refused("hold_best_available", json!({"screening_id": "7"})),
            count
        );
        let only = "`kinds` may only hold standard, vip, wheelchair and companion";
        let list = "`kinds` must be a non-empty array of seat kinds";
        for (kinds, message) in [
            (json!([]), list),
            (json!("vip"), list),
            (json!(["VIP"]), only),
            (json!([null]), only),
            (json!(["vip", 1]), only),
        ] {
            let data = json!({"screening_id": "7", "count": 2, "kinds": kinds});
            assert_eq!(
                refused("hold_best_available", data),
                message,
                "kinds {kinds}"
            );
        }
        // The screening first, then count, then kinds.
        assert_eq!(
            refused(
                "hold_best_available",
                json!({"screening_id": 7, "count": 0, "kinds": []})
            ),
            "`screening_id` must be a string id"
        );
        assert_eq!(
            refused(
                "hold_best_available",
                json!({"screening_id": "7", "count": 0, "kinds": []})
            ),
            count
        );
    }

    #[test]
    fn the_session_body_gives_a_cookie_safe_token_or_nothing() {
        assert_eq!(
            session_token(br#"{"token":"eyJ.a-b_c.9"}"#).as_deref(),
            Some("eyJ.a-b_c.9")
        );
        for body in [
            &b"nope"[..],
            br#"["t"]"#,
            br#"{"token":5}"#,
            br#"{"tok":"abc"}"#,
            br#"{"token":"a;b"}"#,
            br#"{"token":"a b"}"#,
            br#"{"token":"a\r\nSet-Cookie: x"}"#,
        ] {
            assert_eq!(
                session_token(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn cancel_booking_reads_the_booking_id() {
        assert_eq!(
            req("cancel_booking", json!({"booking_id": "12"})).unwrap(),
            Request::CancelBooking {
                booking_id: Lookup::Found(BookingId(12))
            }
        );
        assert_eq!(
            req("cancel_booking", json!({"booking_id": "-1"})).unwrap(),
            Request::CancelBooking {
                booking_id: Lookup::Unknown
            }
        );
        assert_eq!(
            refused("cancel_booking", json!({})),
            "`booking_id` is required"
        );
        assert_eq!(
            refused("cancel_booking", json!({"booking_id": null})),
            "`booking_id` must be a string id"
        );
    }
}
