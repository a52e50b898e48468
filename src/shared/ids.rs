//! Typed identifiers. On the wire every id is an opaque JSON string; inside
//! the server it is the database's `bigint` (sessions: `uuid`), wrapped so a
//! seat id cannot be passed where a screening id is expected.

use std::fmt;

macro_rules! bigint_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl $name {
            /// Reads a wire id. `None` means the string names nothing (the
            /// caller answers `NOT_FOUND`, not `BAD_REQUEST`).
            pub fn parse(s: &str) -> Option<Self> {
                // Only canonical decimal forms: "007" or "+7" would name the
                // same row under two spellings.
                if s.is_empty() || s.len() > 19 || (s.len() > 1 && s.starts_with('0')) {
                    return None;
                }
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                s.parse::<i64>().ok().map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }
    };
}

bigint_id!(
    /// A row of `cinemas`.
    CinemaId
);
bigint_id!(
    /// A row of `halls`; also names the hall's NOTIFY channel.
    HallId
);
bigint_id!(
    /// A row of `films`.
    FilmId
);
bigint_id!(
    /// A row of `screenings`.
    ScreeningId
);
bigint_id!(
    /// A row of `seats`.
    SeatId
);
bigint_id!(
    /// A row of `users`.
    UserId
);
bigint_id!(
    /// A row of `bookings`.
    BookingId
);

/// A row of `sessions`; the JWT's `jti`.
pub type SessionId = uuid::Uuid;

/// An id read from a request: one that parsed, or a string that can name
/// nothing. The difference matters for the contract's order of errors: a
/// non-string id is `BAD_REQUEST` at once, an unknown one `NOT_FOUND` only
/// after the checks that rank before it (login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    Unknown,
}

/// An id that names nothing (the caller answers `NOT_FOUND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not found")]
pub struct NotFound;

impl<T> Lookup<T> {
    /// The value, or [`NotFound`].
    pub fn found(self) -> Result<T, NotFound> {
        match self {
            Lookup::Found(t) => Ok(t),
            Lookup::Unknown => Err(NotFound),
        }
    }
}

/// Seats of one screening as a request names them (`hold_seats`,
/// `release_seats`, `book_seats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatSelection {
    pub screening_id: Lookup<ScreeningId>,
    /// Duplicates removed, in the client's order; `Unknown` when any id
    /// names nothing.
    pub seat_ids: Lookup<Vec<SeatId>>,
}

/// The NOTIFY channel of a hall: one per hall, shared by its screenings.
pub fn hall_channel(hall: HallId) -> String {
    format!("hall_{}", hall.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_canonical_decimals() {
        assert_eq!(SeatId::parse("42"), Some(SeatId(42)));
        assert_eq!(SeatId::parse("0"), Some(SeatId(0)));
        assert_eq!(SeatId::parse("007"), None);
        assert_eq!(SeatId::parse("-1"), None);
        assert_eq!(SeatId::parse("+1"), None);
        assert_eq!(SeatId::parse(""), None);
        assert_eq!(SeatId::parse("abc"), None);
        assert_eq!(SeatId::parse("99999999999999999999"), None);
    }
}
