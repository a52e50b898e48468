//! `hold_seats`, `release_seats`, `book_seats`, `cancel_booking`,
//! `get_bookings` (login required). Checks run in the contract's order:
//! BAD_REQUEST (parameters), UNAUTHORIZED, NOT_FOUND (ids naming nothing),
//! then the SQL function's own ordered checks.

use serde_json::{json, Value};

use super::params::{Lookup, Params, MAX_SEATS_PER_REQUEST};
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

/// The seat kinds of the contract, in the order the client lists them.
pub const SEAT_KINDS: [&str; 4] = ["standard", "vip", "wheelchair", "companion"];
/// The kinds `hold_best_available` chooses from when `kinds` is absent.
const DEFAULT_KINDS: [&str; 2] = ["standard", "vip"];

/// The parameters of `hold_best_available`, checked.
pub struct BestParams {
    pub screening: Lookup<ScreeningId>,
    /// 1 to [`MAX_SEATS_PER_REQUEST`]; SQL checks it against the seat
    /// limit, a setting the server does not cache.
    pub count: i32,
    /// A non-empty set of [`SEAT_KINDS`], without duplicates.
    pub kinds: Vec<&'static str>,
}

/// The parameters of `hold_best_available`: `count` an integer from 1 to
/// the most seats a request may name, `kinds` (absent or null: standard and
/// vip) a non-empty list of seat kinds; anything else is `BAD_REQUEST`.
pub fn best_params(p: &Params<'_>) -> Result<BestParams, MethodError> {
    let screening = p.id("screening_id", ScreeningId::parse)?;
    let count = match p.0.get("count") {
        Some(Value::Number(n)) => n
            .as_u64()
            .filter(|n| (1..=MAX_SEATS_PER_REQUEST as u64).contains(n))
            .and_then(|n| i32::try_from(n).ok()),
        _ => None,
    }
    .ok_or_else(|| {
        MethodError::bad(format!(
            "`count` must be a whole number from 1 to the seat limit (at most {MAX_SEATS_PER_REQUEST})"
        ))
    })?;
    let kinds = match p.0.get("kinds") {
        None | Some(Value::Null) => DEFAULT_KINDS.to_vec(),
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut kinds = Vec::with_capacity(SEAT_KINDS.len());
            for item in items {
                let kind = item
                    .as_str()
                    .and_then(|s| SEAT_KINDS.iter().copied().find(|k| *k == s))
                    .ok_or_else(|| {
                        MethodError::bad(
                            "`kinds` may only hold standard, vip, wheelchair and companion",
                        )
                    })?;
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            kinds
        }
        Some(_) => {
            return Err(MethodError::bad(
                "`kinds` must be a non-empty array of seat kinds",
            ))
        }
    };
    Ok(BestParams {
        screening,
        count,
        kinds,
    })
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

pub async fn hold_best_available(ctx: &Ctx<'_>, p: &Params<'_>) -> Result<Value, MethodError> {
    let BestParams {
        screening,
        count,
        kinds,
    } = best_params(p)?;
    let Some(user) = ctx.user else {
        // `count` is bounded by the seat limit, a setting only SQL knows, and BAD_REQUEST comes before
        // UNAUTHORIZED: SQL checks a logged-out caller's count first and then refuses it for having no user.
        if count > 1 {
            let id = match screening {
                Lookup::Found(id) => id,
                Lookup::Unknown => ScreeningId(0),
            };
            seats::hold_best(ctx.db, None, id, count, &kinds).await?;
        }
        return Err(MethodError::Unauthorized);
    };
    let screening = screening.found()?;
    let (seat_ids, hold) =
        seats::hold_best(ctx.db, Some(user.id), screening, count, &kinds).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn parse(v: Value) -> Result<BestParams, MethodError> {
        let m: Map<String, Value> = v.as_object().cloned().unwrap_or_default();
        best_params(&Params(&m))
    }

    #[test]
    fn best_params_default_kinds_and_dedupe() {
        let p = parse(json!({"screening_id": "7", "count": 3})).unwrap();
        assert_eq!(p.screening, Lookup::Found(ScreeningId(7)));
        assert_eq!((p.count, p.kinds), (3, vec!["standard", "vip"]));
        let p = parse(json!({"screening_id": "7", "count": 1, "kinds": null})).unwrap();
        assert_eq!(p.kinds, vec!["standard", "vip"]);
        let p = parse(json!({"screening_id": "7", "count": 100,
                             "kinds": ["companion", "wheelchair", "companion"]}))
        .unwrap();
        assert_eq!((p.count, p.kinds), (100, vec!["companion", "wheelchair"]));
    }

    #[test]
    fn best_params_refuse_what_sql_must_not_see() {
        for bad in [
            json!({"screening_id": "7"}),
            json!({"screening_id": "7", "count": 0}),
            json!({"screening_id": "7", "count": -1}),
            json!({"screening_id": "7", "count": 101}),
            json!({"screening_id": "7", "count": 2.0}),
            json!({"screening_id": "7", "count": "2"}),
            json!({"screening_id": "7", "count": 1e30}),
            json!({"screening_id": "7", "count": 2, "kinds": []}),
            json!({"screening_id": "7", "count": 2, "kinds": ["VIP"]}),
            json!({"screening_id": "7", "count": 2, "kinds": [null]}),
            json!({"screening_id": "7", "count": 2, "kinds": "vip"}),
            json!({"screening_id": 7, "count": 2}),
        ] {
            assert!(
                matches!(parse(bad.clone()), Err(MethodError::BadRequest(_))),
                "{bad}"
            );
        }
        // A string that names nothing is NOT_FOUND later, not BAD_REQUEST.
        let p = parse(json!({"screening_id": "x", "count": 2})).unwrap();
        assert_eq!(p.screening, Lookup::Unknown);
    }
}
