//! `hold_seats`, `release_seats`, `book_seats`, `cancel_booking`,
//! `get_bookings` (login required). Checks run in the contract's order:
//! BAD_REQUEST (parameters), UNAUTHORIZED, NOT_FOUND (ids naming nothing),
//! then the SQL function's own ordered checks.

use serde_json::{json, Value};

use super::params::{Lookup, Params};
use super::{Ctx, MethodError};
use crate::models::seats::{self, Booking};
use crate::shared::clock::rfc3339;
use crate::shared::ids::{BookingId, ScreeningId, SeatId};

fn booking_json(b: &Booking) -> Value {
    json!({
        "id": b.id, "screening_id": b.screening, "seat_ids": b.seats,
        "total": b.total, "currency": b.currency, "status": b.status,
        "created_at": rfc3339(&b.created_at),
    })
}

/// The parameters of `hold_seats`, `release_seats` and `book_seats`.
pub fn seat_params(
    p: &Params<'_>,
) -> Result<(Lookup<ScreeningId>, Lookup<Vec<SeatId>>), MethodError> {
    Ok((
        p.id("screening_id", ScreeningId::parse)?,
        p.ids("seat_ids", SeatId::parse)?,
    ))
}

/// The parameter of `cancel_booking`.
pub fn booking_param(p: &Params<'_>) -> Result<Lookup<BookingId>, MethodError> {
    p.id("booking_id", BookingId::parse)
}

pub async fn hold_seats(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<Value, MethodError> {
    let (screening, seat_ids) = seat_params(p)?;
    let user = ctx.require_user()?;
    let (screening, seat_ids) = (screening.found()?, seat_ids.found()?);
    let hold = seats::hold(ctx.db, user.id, screening, &seat_ids).await?;
    Ok(json!({
        "screening_id": screening, "seat_ids": seat_ids,
        "expires_at": rfc3339(&hold.expires_at), "version": hold.version,
    }))
}

pub async fn release_seats(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<Value, MethodError> {
    let (screening, seat_ids) = seat_params(p)?;
    let user = ctx.require_user()?;
    let (screening, seat_ids) = (screening.found()?, seat_ids.found()?);
    let r = seats::release(ctx.db, user.id, screening, &seat_ids).await?;
    Ok(json!({ "screening_id": screening, "seat_ids": r.seats, "version": r.version }))
}

pub async fn book_seats(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<Value, MethodError> {
    let (screening, seat_ids) = seat_params(p)?;
    let user = ctx.require_user()?;
    let (screening, seat_ids) = (screening.found()?, seat_ids.found()?);
    let (booking, version) = seats::book(ctx.db, user.id, screening, &seat_ids).await?;
    Ok(json!({ "booking": booking_json(&booking), "version": version }))
}

pub async fn cancel_booking(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<Value, MethodError> {
    let id = booking_param(p)?;
    let user = ctx.require_user()?;
    let (booking, version) = seats::cancel(ctx.db, user.id, id.found()?).await?;
    Ok(json!({ "booking": booking_json(&booking), "version": version }))
}

pub async fn get_bookings(ctx: &Ctx<'_>) -> Result<Value, MethodError> {
    let user = ctx.require_user()?;
    let list: Vec<Value> = seats::bookings(ctx.db, user.id)
        .await?
        .iter()
        .map(booking_json)
        .collect();
    Ok(json!({ "bookings": list }))
}
