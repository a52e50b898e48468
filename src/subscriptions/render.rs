//! Wire JSON of snapshots and updates, written once per change and shared.
//! The shapes are `shared::protocol::answer`'s; this fills them from the
//! models' snapshot and change set, with `mine` for one user.

use crate::models::catalogue::HallSnapshot;
use crate::models::changes::ChangeSet;
use crate::shared::ids::UserId;
use crate::shared::protocol::answer::{HallRef, HallSnapshotOut, HallUpdate, SeatChange, SeatOut};

/// The snapshot as `user` sees it (`mine` on their seats).
pub fn snapshot(s: &HallSnapshot, user: Option<UserId>) -> String {
    let out = HallSnapshotOut {
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

/// The `hall_update` data as `user` sees it.
pub fn update(c: &ChangeSet, user: Option<UserId>) -> String {
    let out = HallUpdate {
        screening_id: c.screening,
        version: c.version,
        seats: c
            .seats
            .iter()
            .map(|s| SeatChange {
                id: s.seat,
                status: s.status.as_str(),
                mine: user.is_some() && s.user == user,
            })
            .collect(),
    };
    serde_json::to_string(&out).unwrap_or_default()
}
