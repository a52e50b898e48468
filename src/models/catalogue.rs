//! Cinemas, screenings and hall snapshots: the read side of the catalogue.

use chrono::{DateTime, Utc};

use super::changes::SeatStatus;
use super::ModelError;
use crate::core::db::Db;
use crate::shared::ids::{CinemaId, FilmId, HallId, ScreeningId, SeatId, UserId};

/// A row of `api.get_cinemas()`.
#[derive(Debug, Clone)]
pub struct Cinema {
    pub id: CinemaId,
    pub name: String,
    pub city: String,
    pub address: String,
    pub timezone: String,
}

/// A row of `api.get_screenings()`.
#[derive(Debug, Clone)]
pub struct Screening {
    pub id: ScreeningId,
    pub cinema_id: CinemaId,
    pub hall_id: HallId,
    pub hall_name: String,
    pub film_id: FilmId,
    pub title: String,
    pub duration_min: i32,
    pub age_rating: String,
    pub starts_at: DateTime<Utc>,
    pub price: i32,
    pub currency: String,
    pub seats_total: i32,
    pub seats_free: i32,
    /// One price per seat kind, as the wire's `prices` object.
    pub prices: serde_json::Value,
}

/// One seat of a hall snapshot.
#[derive(Debug, Clone)]
pub struct Seat {
    pub id: SeatId,
    pub row: String,
    pub number: i32,
    pub x: i32,
    pub y: i32,
    pub kind: String,
    pub status: SeatStatus,
    /// Holder or booker, for `mine`; never sent to clients.
    pub user: Option<UserId>,
}

/// A screening's seat map at one version (one MVCC snapshot in SQL).
#[derive(Debug, Clone)]
pub struct HallSnapshot {
    pub screening: ScreeningId,
    pub hall: HallId,
    pub hall_name: String,
    pub version: i64,
    /// One price per seat kind (`prices` of the snapshot).
    pub prices: serde_json::Value,
    pub seats: Vec<Seat>,
}

pub async fn cinemas(db: &Db) -> Result<Vec<Cinema>, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached("SELECT id, name, city, address, timezone FROM api.get_cinemas()")
        .await?;
    let rows = c.query(&st, &[]).await?;
    Ok(rows
        .iter()
        .map(|r| Cinema {
            id: CinemaId(r.get(0)),
            name: r.get(1),
            city: r.get(2),
            address: r.get(3),
            timezone: r.get(4),
        })
        .collect())
}

pub async fn screenings(
    db: &Db,
    cinema: Option<CinemaId>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Screening>, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached(
            "SELECT id, cinema_id, hall_id, hall_name, film_id, title, duration_min, age_rating,
                    starts_at, price, currency::text, seats_total, seats_free, prices
               FROM api.get_screenings($1, $2, $3)",
        )
        .await?;
    let rows = c.query(&st, &[&cinema.map(|c| c.0), &from, &to]).await?;
    Ok(rows
        .iter()
        .map(|r| Screening {
            id: ScreeningId(r.get(0)),
            cinema_id: CinemaId(r.get(1)),
            hall_id: HallId(r.get(2)),
            hall_name: r.get(3),
            film_id: FilmId(r.get(4)),
            title: r.get(5),
            duration_min: r.get(6),
            age_rating: r.get(7),
            starts_at: r.get(8),
            price: r.get(9),
            currency: r.get(10),
            seats_total: r.get(11),
            seats_free: r.get(12),
            prices: r
                .get::<_, Option<serde_json::Value>>(13)
                .unwrap_or_else(|| serde_json::json!({})),
        })
        .collect())
}

/// The hall a screening plays in (its NOTIFY channel), or `NotFound`.
pub async fn screening_hall(db: &Db, screening: ScreeningId) -> Result<HallId, ModelError> {
    let c = db.conn().await?;
    let st = c.prepare_cached("SELECT api.screening_hall($1)").await?;
    let row = c.query_one(&st, &[&screening.0]).await?;
    row.get::<_, Option<i64>>(0)
        .map(HallId)
        .ok_or(ModelError::NotFound)
}

/// The seat map of a screening, or `NotFound`.
pub async fn hall_snapshot(db: &Db, screening: ScreeningId) -> Result<HallSnapshot, ModelError> {
    let c = db.conn().await?;
    let st = c
        .prepare_cached(
            "SELECT screening_id, hall_id, hall_name, version, seat_id, row_label, number, x, y,
                    kind, status, user_id
               FROM api.hall_snapshot($1)",
        )
        .await?;
    let prices_st = c.prepare_cached("SELECT api.screening_prices($1)").await?;
    // Both queries go out together (pipelined on one connection): the
    // prices cost no extra round trip. They carry no version, so they need
    // not share the seats' MVCC snapshot.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&screening.0];
    let (rows, prices) = tokio::try_join!(c.query(&st, &params), c.query_one(&prices_st, &params))?;
    let prices = prices
        .get::<_, Option<serde_json::Value>>(0)
        .unwrap_or_else(|| serde_json::json!({}));
    let Some(first) = rows.first() else {
        return Err(ModelError::NotFound);
    };
    let mut snap = HallSnapshot {
        screening: ScreeningId(first.get(0)),
        hall: HallId(first.get(1)),
        hall_name: first.get(2),
        version: first.get(3),
        prices,
        seats: Vec::with_capacity(rows.len()),
    };
    for r in &rows {
        let status: &str = r.get(10);
        snap.seats.push(Seat {
            id: SeatId(r.get(4)),
            row: r.get(5),
            number: r.get(6),
            x: r.get(7),
            y: r.get(8),
            kind: r.get(9),
            status: SeatStatus::parse(status)
                .ok_or_else(|| ModelError::Internal(format!("unknown seat status {status}")))?,
            user: r.get::<_, Option<i64>>(11).map(UserId),
        });
    }
    Ok(snap)
}
