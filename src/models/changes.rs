//! The seat-change notification sent by the `seat_states` triggers on the
//! hall's channel (`hall_<hall id>`), as documented in docs/sql.md:
//! `{"s":<screening>,"v":<version>,"c":[[<seat>,"<status>",<user|null>],…]}`
//! or, when too large for NOTIFY, `{"s":…,"v":…,"r":1}` (resync).

use serde::Deserialize;

use crate::shared::ids::{ScreeningId, SeatId, UserId};

/// A seat's state on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeatStatus {
    Free,
    Held,
    Booked,
    Blocked,
}

impl SeatStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SeatStatus::Free => "free",
            SeatStatus::Held => "held",
            SeatStatus::Booked => "booked",
            SeatStatus::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "free" => Some(SeatStatus::Free),
            "held" => Some(SeatStatus::Held),
            "booked" => Some(SeatStatus::Booked),
            "blocked" => Some(SeatStatus::Blocked),
            _ => None,
        }
    }
}

/// One seat's new state in a change set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatChange {
    pub seat: SeatId,
    pub status: SeatStatus,
    /// The holder or booker; never sent to clients, only used for `mine`.
    pub user: Option<UserId>,
}

/// One committed change set of one screening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    pub screening: ScreeningId,
    pub version: i64,
    /// Empty with `resync` set: the change was too large to carry.
    pub seats: Vec<SeatChange>,
    pub resync: bool,
}

#[derive(Deserialize)]
struct Raw {
    s: i64,
    v: i64,
    #[serde(default)]
    c: Vec<(i64, SeatStatus, Option<i64>)>,
    #[serde(default)]
    r: Option<i64>,
}

impl ChangeSet {
    /// Parses a payload; `None` for anything malformed (logged by the caller).
    pub fn parse(payload: &str) -> Option<Self> {
        let raw: Raw = serde_json::from_str(payload).ok()?;
        Some(Self {
            screening: ScreeningId(raw.s),
            version: raw.v,
            seats: raw
                .c
                .into_iter()
                .map(|(seat, status, user)| SeatChange {
                    seat: SeatId(seat),
                    status,
                    user: user.map(UserId),
                })
                .collect(),
            resync: raw.r.is_some_and(|r| r != 0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let c = ChangeSet::parse(r#"{"s":3,"v":18,"c":[[5,"held",7],[6,"free",null]]}"#).unwrap();
        assert_eq!(c.screening, ScreeningId(3));
        assert_eq!(c.version, 18);
        assert_eq!(c.seats[0].user, Some(UserId(7)));
        assert_eq!(c.seats[1].status, SeatStatus::Free);
        assert!(!c.resync);
        let r = ChangeSet::parse(r#"{"s":3,"v":19,"r":1}"#).unwrap();
        assert!(r.resync && r.seats.is_empty());
        assert!(ChangeSet::parse(r#"{"s":3}"#).is_none());
        assert!(ChangeSet::parse(r#"{"s":3,"v":1,"c":[[1,"gone",null]]}"#).is_none());
    }
}
