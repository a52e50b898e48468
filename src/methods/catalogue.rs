//! `get_cinemas` and `get_screenings` (anonymous allowed). `get_hall` is
//! answered by the subscriptions layer, which owns snapshot rendering.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use super::params::{Lookup, Params};
use super::{Ctx, MethodError};
use crate::models::catalogue;
use crate::shared::clock::rfc3339;
use crate::shared::ids::CinemaId;

/// How far `get_screenings` looks ahead when `to` is not given.
const DEFAULT_WINDOW_DAYS: i64 = 7;
/// The longest window one `get_screenings` may ask for, so one answer stays
/// small (a year of screenings was tens of kilobytes). SQL checks it too.
pub const MAX_WINDOW_DAYS: i64 = 31;

pub async fn get_cinemas(ctx: &Ctx<'_>) -> Result<Value, MethodError> {
    let cinemas = catalogue::cinemas(ctx.db).await?;
    let list: Vec<Value> = cinemas
        .into_iter()
        .map(|c| {
            json!({"id": c.id, "name": c.name, "city": c.city, "address": c.address,
                   "timezone": c.timezone})
        })
        .collect();
    Ok(json!({ "cinemas": list }))
}

/// The parameters of `get_screenings`, defaults applied.
pub struct ScreeningsQuery {
    pub cinema: Option<Lookup<CinemaId>>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl ScreeningsQuery {
    pub fn parse(p: &Params<'_>, now: DateTime<Utc>) -> Result<Self, MethodError> {
        let cinema = p.opt_id("cinema_id", CinemaId::parse)?;
        let from = p.opt_time("from")?.unwrap_or(now);
        let to = p
            .opt_time("to")?
            .unwrap_or(from + Duration::days(DEFAULT_WINDOW_DAYS));
        if to - from > Duration::days(MAX_WINDOW_DAYS) {
            return Err(MethodError::bad(
                "ask for at most 31 days of screenings at a time (`to` - `from`)",
            ));
        }
        Ok(Self { cinema, from, to })
    }
}

pub async fn get_screenings(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<Value, MethodError> {
    let ScreeningsQuery { cinema, from, to } = ScreeningsQuery::parse(p, Utc::now())?;
    let cinema = match cinema {
        // A cinema id that names nothing gives an empty list, like an
        // unknown cinema.
        Some(Lookup::Unknown) => return Ok(json!({ "screenings": [] })),
        Some(Lookup::Found(c)) => Some(c),
        None => None,
    };
    let rows = catalogue::screenings(ctx.db, cinema, from, to).await?;
    let list: Vec<Value> = rows
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id, "cinema_id": s.cinema_id,
                "hall": {"id": s.hall_id, "name": s.hall_name},
                "film": {"id": s.film_id, "title": s.title, "duration_min": s.duration_min,
                         "age_rating": s.age_rating},
                "starts_at": rfc3339(&s.starts_at), "price": s.price, "currency": s.currency,
                "seats_total": s.seats_total, "seats_free": s.seats_free, "prices": s.prices,
            })
        })
        .collect();
    Ok(json!({ "screenings": list }))
}
