//! `hold_seats`, `hold_best_available`, `release_seats`, `book_seats`,
//! `cancel_booking`, `get_bookings` (login required). Checks run in the
//! contract's order: BAD_REQUEST (parameters, already read by
//! `shared::protocol`), UNAUTHORIZED, NOT_FOUND (ids naming nothing), then
//! the SQL function's own ordered checks.

use chrono::{DateTime, Utc};

use super::{Ctx, CurrentUser, MethodError};
use crate::models::seats::{self, Booking, Release};
use crate::shared::ids::{BookingId, Lookup, ScreeningId, SeatId, SeatSelection};
use crate::shared::values::SeatKind;

/// A hold that was taken (or renewed): the answer of `hold_seats` and
/// `hold_best_available`.
#[derive(Debug, Clone)]
pub struct Held {
    pub screening: ScreeningId,
    /// The seats asked for (duplicates removed), or those chosen.
    pub seats: Vec<SeatId>,
    pub expires_at: DateTime<Utc>,
    /// The screening's version right after the change.
    pub version: i64,
}

/// The user, then the seats: `UNAUTHORIZED` ranks before `NOT_FOUND`.
fn user_and_seats<'a>(
    ctx: &Ctx<'a>,
    selection: SeatSelection,
) -> Result<(&'a CurrentUser, ScreeningId, Vec<SeatId>), MethodError> {
    let user = ctx.require_user()?;
    Ok((
        user,
        selection.screening_id.found()?,
        selection.seat_ids.found()?,
    ))
}

pub async fn hold_seats(ctx: &Ctx<'_>, selection: SeatSelection) -> Result<Held, MethodError> {
    let (user, screening, seats) = user_and_seats(ctx, selection)?;
    let hold = ctx.seats.hold(user.id, screening, seats.clone()).await?;
    Ok(Held {
        screening,
        seats,
        expires_at: hold.expires_at,
        version: hold.version,
    })
}

pub async fn hold_best_available(
    ctx: &Ctx<'_>,
    screening: Lookup<ScreeningId>,
    count: i32,
    kinds: &[SeatKind],
) -> Result<Held, MethodError> {
    let Some(user) = ctx.user else {
        // `count` is bounded by the seat limit, a setting only SQL knows, and BAD_REQUEST comes before
        // UNAUTHORIZED: SQL checks a logged-out caller's count first and then refuses it for having no user.
        if count > 1 {
            let id = match screening {
                Lookup::Found(id) => id,
                Lookup::Unknown => ScreeningId(0),
            };
            seats::hold_best(ctx.db, None, id, count, kinds).await?;
        }
        return Err(MethodError::Unauthorized);
    };
    let screening = screening.found()?;
    let (seats, hold) = seats::hold_best(ctx.db, Some(user.id), screening, count, kinds).await?;
    Ok(Held {
        screening,
        seats,
        expires_at: hold.expires_at,
        version: hold.version,
    })
}

/// Releases the user's own holds among `seat_ids`; returns the screening
/// with what was released.
pub async fn release_seats(
    ctx: &Ctx<'_>,
    selection: SeatSelection,
) -> Result<(ScreeningId, Release), MethodError> {
    let (user, screening, seats) = user_and_seats(ctx, selection)?;
    let released = ctx.seats.release(user.id, screening, seats).await?;
    Ok((screening, released))
}

/// Books the user's held seats; returns the booking and the new version.
pub async fn book_seats(
    ctx: &Ctx<'_>,
    selection: SeatSelection,
) -> Result<(Booking, i64), MethodError> {
    let (user, screening, seats) = user_and_seats(ctx, selection)?;
    Ok(ctx.seats.book(user.id, screening, seats).await?)
}

/// Cancels one of the user's bookings; returns it and the version.
pub async fn cancel_booking(
    ctx: &Ctx<'_>,
    booking: Lookup<BookingId>,
) -> Result<(Booking, i64), MethodError> {
    let user = ctx.require_user()?;
    Ok(ctx.seats.cancel(user.id, booking.found()?).await?)
}

/// The user's bookings, newest first.
pub async fn get_bookings(ctx: &Ctx<'_>) -> Result<Vec<Booking>, MethodError> {
    let user = ctx.require_user()?;
    Ok(seats::bookings(ctx.db, user.id).await?)
}
