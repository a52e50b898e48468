//! `get_cinemas` and `get_screenings` (anonymous allowed). `get_hall` is
//! answered by the subscriptions layer, which owns snapshot rendering.

use chrono::{DateTime, Utc};

use super::{Ctx, MethodError};
use crate::models::catalogue::{self, Cinema, Screening};
use crate::shared::ids::{CinemaId, Lookup};

pub async fn get_cinemas(ctx: &Ctx<'_>) -> Result<Vec<Cinema>, MethodError> {
    Ok(catalogue::cinemas(ctx.db).await?)
}

/// Screenings with `from` ≤ `starts_at` < `to`, of one cinema or all.
pub async fn get_screenings(
    ctx: &Ctx<'_>,
    cinema: Option<Lookup<CinemaId>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Screening>, MethodError> {
    let cinema = match cinema {
        // A cinema id that names nothing gives an empty list, like an
        // unknown cinema.
        Some(Lookup::Unknown) => return Ok(Vec::new()),
        Some(Lookup::Found(c)) => Some(c),
        None => None,
    };
    Ok(catalogue::screenings(ctx.db, cinema, from, to).await?)
}
