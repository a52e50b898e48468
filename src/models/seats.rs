//! Holds, releases, bookings and cancellations: thin calls of the `api.*`
//! functions, where every rule lives (all or nothing, limits, TTL, lock
//! order). Each call is one statement in its own transaction.

use chrono::{DateTime, Utc};

use super::ModelError;
use crate::core::db::Db;
use crate::shared::ids::{BookingId, ScreeningId, SeatId, UserId};
use crate::shared::values::SeatKind;

/// The answer of a hold.
#[derive(Debug, Clone)]
pub struct Hold {
    pub expires_at: DateTime<Utc>,
    pub version: i64,
}

/// The answer of a release.
#[derive(Debug, Clone)]
pub struct Release {
    pub seats: Vec<SeatId>,
    pub version: i64,
}

/// A booking as the user sees it.
#[derive(Debug, Clone)]
pub struct Booking {
    pub id: BookingId,
    pub screening: ScreeningId,
    pub seats: Vec<SeatId>,
    pub total: i32,
    pub currency: String,
    /// `confirmed` or `cancelled`.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

fn ids(seats: &[SeatId]) -> Vec<i64> {
    seats.iter().map(|s| s.0).collect()
}

/// Runs `sql`, a call of one of the `api.*` functions that take (user,
/// screening, seat ids) and answer one row.
async fn seat_call(
    db: &Db,
    sql: &str,
    user: UserId,
    screening: ScreeningId,
    seats: &[SeatId],
) -> Result<tokio_postgres::Row, ModelError> {
    let c = db.conn().await?;
    let st = c.prepare_cached(sql).await?;
    Ok(c.query_one(&st, &[&user.0, &screening.0, &ids(seats)])
        .await?)
}

pub async fn hold(
    db: &Db,
    user: UserId,
    screening: ScreeningId,
    seats: &[SeatId],
) -> Result<Hold, ModelError> {
    let sql = "SELECT expires_at, version FROM api.hold_seats($1, $2, $3)";
    let r = seat_call(db, sql, user, screening, seats).await?;
    Ok(Hold {
        expires_at: r.get(0),
        version: r.get(1),
    })
}

/// Holds the best `count` seats of the given kinds (`api.hold_best_available`);
/// returns the seats chosen (ascending) with the hold.
/// `user` is `None` only to have SQL check a logged-out caller's `count`
/// against the seat limit; it then answers `UNAUTHORIZED` at the latest.
pub async fn hold_best(
    db: &Db,
    user: Option<UserId>,
    screening: ScreeningId,
    count: i32,
    kinds: &[SeatKind],
) -> Result<(Vec<SeatId>, Hold), ModelError> {
    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let c = db.conn().await?;
    let st = c
        .prepare_cached(
            "SELECT seat_ids, expires_at, version FROM api.hold_best_available($1, $2, $3, $4)",
        )
        .await?;
    let r = c
        .query_one(&st, &[&user.map(|u| u.0), &screening.0, &count, &kinds])
        .await?;
    let seats: Vec<i64> = r.get(0);
    Ok((
        seats.into_iter().map(SeatId).collect(),
        Hold {
            expires_at: r.get(1),
            version: r.get(2),
        },
    ))
}

pub async fn release(
    db: &Db,
    user: UserId,
    screening: ScreeningId,
    seats: &[SeatId],
) -> Result<Release, ModelError> {
    let sql = "SELECT seat_ids, version FROM api.release_seats($1, $2, $3)";
    let r = seat_call(db, sql, user, screening, seats).await?;
    let released: Vec<i64> = r.get(0);
    Ok(Release {
        seats: released.into_iter().map(SeatId).collect(),
        version: r.get(1),
    })
}

const BOOKING_COLS: &str =
    "booking_id, screening_id, seat_ids, total, currency::text, status, created_at";

fn booking(r: &tokio_postgres::Row) -> Booking {
    let seats: Vec<i64> = r.get(2);
    Booking {
        id: BookingId(r.get(0)),
        screening: ScreeningId(r.get(1)),
        seats: seats.into_iter().map(SeatId).collect(),
        total: r.get(3),
        currency: r.get(4),
        status: r.get(5),
        created_at: r.get(6),
    }
}

/// Books the user's held seats; returns the booking and the new version.
pub async fn book(
    db: &Db,
    user: UserId,
    screening: ScreeningId,
    seats: &[SeatId],
) -> Result<(Booking, i64), ModelError> {
    let sql = format!("SELECT {BOOKING_COLS}, version FROM api.book_seats($1, $2, $3)");
    let r = seat_call(db, &sql, user, screening, seats).await?;
    Ok((booking(&r), r.get(7)))
}

/// Cancels one of the user's bookings; returns it and the version.
pub async fn cancel(db: &Db, user: UserId, id: BookingId) -> Result<(Booking, i64), ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached(&format!(
            "SELECT {BOOKING_COLS}, version FROM api.cancel_booking($1, $2)"
        ))
        .await?;
    let r = c.query_one(&st, &[&user.0, &id.0]).await?;
    Ok((booking(&r), r.get(7)))
}

/// The user's bookings, newest first.
pub async fn bookings(db: &Db, user: UserId) -> Result<Vec<Booking>, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached(&format!("SELECT {BOOKING_COLS} FROM api.get_bookings($1)"))
        .await?;
    let rows = c.query(&st, &[&user.0]).await?;
    Ok(rows.iter().map(booking).collect())
}

/// Frees expired holds; safe to run on every replica at once.
pub async fn sweep_expired(db: &Db) -> Result<i32, ModelError> {
    let c = db.conn().await?;
    let st = c.prepare_cached("SELECT api.sweep_expired_holds()").await?;
    Ok(c.query_one(&st, &[]).await?.get(0))
}
