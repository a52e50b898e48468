//! Wire JSON of snapshots and updates, written once per change and shared.

use serde::Serialize;

use crate::models::catalogue::HallSnapshot;
use crate::models::changes::ChangeSet;
use crate::shared::ids::{HallId, ScreeningId, SeatId, UserId};

#[derive(Serialize)]
struct HallRef<'a> {
    id: HallId,
    name: &'a str,
}

#[derive(Serialize)]
struct SeatOut<'a> {
    id: SeatId,
    row: &'a str,
    number: i32,
    x: i32,
    y: i32,
    kind: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mine: bool,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    screening_id: ScreeningId,
    hall: HallRef<'a>,
    version: i64,
    prices: &'a serde_json::Value,
    seats: Vec<SeatOut<'a>>,
}

/// The snapshot as `user` sees it (`mine` on their seats).
pub fn snapshot(s: &HallSnapshot, user: Option<UserId>) -> String {
    let out = SnapshotOut {
        screening_id: s.screening,
        hall: HallRef {
            id: s.hall,
            name: &s.hall_name,
        },
        version: s.version,
        prices: &s.prices,
        seats: s
            .seats
            .iter()
            .map(|seat| SeatOut {
                id: seat.id,
                row: &seat.row,
                number: seat.number,
                x: seat.x,
                y: seat.y,
                kind: &seat.kind,
                status: seat.status.as_str(),
                mine: user.is_some() && seat.user == user,
            })
            .collect(),
    };
    serde_json::to_string(&out).unwrap_or_default()
}

#[derive(Serialize)]
struct ChangeOut {
    id: SeatId,
    status: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    mine: bool,
}

#[derive(Serialize)]
struct UpdateOut {
    screening_id: ScreeningId,
    version: i64,
    seats: Vec<ChangeOut>,
}

/// The `hall_update` data as `user` sees it.
pub fn update(c: &ChangeSet, user: Option<UserId>) -> String {
    let out = UpdateOut {
        screening_id: c.screening,
        version: c.version,
        seats: c
            .seats
            .iter()
            .map(|s| ChangeOut {
                id: s.seat,
                status: s.status.as_str(),
                mine: user.is_some() && s.user == user,
            })
            .collect(),
    };
    serde_json::to_string(&out).unwrap_or_default()
}
