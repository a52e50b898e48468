//! The one mapping from internal errors to the contract's error codes.
//! Internal and unavailable causes are logged here with their detail and
//! answered with a generic message: no SQL text reaches a client.

use crate::methods::MethodError;
use crate::models::ModelError;
use crate::shared::protocol::{ErrorCode, WireError};
use crate::subscriptions::SubscriptionError;

fn seats(code: ErrorCode, message: &str, ids: &[String]) -> WireError {
    WireError::new(code, message).with("seat_ids", ids.to_vec())
}

fn unavailable(cause: &str) -> WireError {
    tracing::warn!(cause, "database unavailable");
    WireError::new(
        ErrorCode::Unavailable,
        "the service is temporarily unavailable, please retry",
    )
}

fn internal(cause: &str) -> WireError {
    tracing::error!(cause, "internal error");
    WireError::new(ErrorCode::Internal, "internal error")
}

fn model(e: &ModelError) -> WireError {
    match e {
        ModelError::BadRequest(m) => WireError::new(ErrorCode::BadRequest, m.clone()),
        ModelError::Unauthorized => WireError::new(ErrorCode::Unauthorized, "please log in first"),
        ModelError::NotFound => WireError::new(ErrorCode::NotFound, "not found"),
        ModelError::ScreeningClosed => WireError::new(
            ErrorCode::ScreeningClosed,
            "too late: the screening has started (cancelling closes at the cut-off before it)",
        ),
        ModelError::HoldLimit(m) => WireError::new(ErrorCode::HoldLimit, m.clone()),
        ModelError::SeatUnavailable(ids) => seats(
            ErrorCode::SeatUnavailable,
            "some seats are not available",
            ids,
        ),
        ModelError::HoldExpired(ids) => seats(
            ErrorCode::HoldExpired,
            "your hold on some seats has expired; hold them again",
            ids,
        ),
        ModelError::SeatRule { rule, seats } => {
            let message = match rule.as_str() {
                "companion" => {
                    "a companion seat is for the person accompanying a wheelchair user: \
                     choose it together with a wheelchair space"
                }
                _ => {
                    "this choice would leave a single seat empty on its own, which nobody \
                     could buy; please move your choice over or include that seat"
                }
            };
            WireError::new(ErrorCode::SeatRule, message)
                .with("rule", rule.clone())
                .with("seat_ids", seats.clone())
        }
        ModelError::UsernameTaken => {
            WireError::new(ErrorCode::UsernameTaken, "this username was just taken")
        }
        ModelError::RateLimited { retry_after_s } => WireError::new(
            ErrorCode::RateLimited,
            "too many failed attempts, try again later",
        )
        .with("retry_after_s", *retry_after_s),
        ModelError::RegistrationLimited { retry_after_s } => WireError::new(
            ErrorCode::RateLimited,
            "too many new accounts from your address, try again later",
        )
        .with("retry_after_s", *retry_after_s),
        ModelError::Unavailable(cause) => unavailable(cause),
        ModelError::Internal(cause) => internal(cause),
    }
}

/// A method's error on the wire.
pub fn method(e: &MethodError) -> WireError {
    match e {
        MethodError::BadRequest(m) => WireError::new(ErrorCode::BadRequest, m.clone()),
        MethodError::Unauthorized => WireError::new(ErrorCode::Unauthorized, "please log in first"),
        MethodError::NotFound => WireError::new(ErrorCode::NotFound, "not found"),
        MethodError::InvalidCode => {
            WireError::new(ErrorCode::InvalidCode, "that code is not valid")
        }
        MethodError::Model(m) => model(m),
        MethodError::Internal(cause) => internal(cause),
    }
}

/// A subscription's error on the wire.
pub fn subscription(e: &SubscriptionError) -> WireError {
    match e {
        SubscriptionError::NotFound => WireError::new(ErrorCode::NotFound, "not found"),
        SubscriptionError::Limit => {
            WireError::new(ErrorCode::Limit, "at most 16 subscriptions per connection")
        }
        SubscriptionError::Unavailable(cause) => unavailable(cause),
        SubscriptionError::Internal(cause) => internal(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_internal_detail_reaches_the_wire() {
        let w = method(&MethodError::Model(ModelError::Internal(
            "relation \"seat_states\" does not exist".into(),
        )));
        assert_eq!(w.code, ErrorCode::Internal);
        assert!(!w.message.contains("seat_states"));
        let w = subscription(&SubscriptionError::Unavailable("connection refused".into()));
        assert_eq!(w.code, ErrorCode::Unavailable);
        assert!(!w.message.contains("refused"));
    }

    #[test]
    fn a_hold_limit_names_the_limit() {
        // SQL writes this sentence for people; the page shows it as it is.
        let said = "You can hold or book at most 4 seats for one screening.";
        let w = method(&MethodError::Model(ModelError::HoldLimit(said.into())));
        assert_eq!(w.code, ErrorCode::HoldLimit);
        assert_eq!(w.message, said);
    }
}
