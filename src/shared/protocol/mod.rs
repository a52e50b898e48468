//! The wire edge (docs/protocol.md): everything that knows the JSON of the
//! contract. Guideline 11 of the style models: serde types live here, inner
//! layers pass domain types.
//!
//! * [`request`]: a client frame read into one typed [`Request`], in the
//!   contract's order of checks (envelope, then type, then each field);
//! * [`answer`]: the `Serialize` shapes of every response and push `data`;
//! * [`frame`]: the envelope written around them.
//!
//! It must not know the database, the session or the sockets: what needs
//! them (login, lookups, limits) is decided above, in `controllers`.

pub mod answer;
pub mod frame;
pub mod request;

pub use frame::{error_frame, frame, json_str, push_frame, push_head, push_tail};
pub use request::{Envelope, Refused, Request};

use serde_json::{Map, Value};

/// Largest accepted text frame; a frame of exactly this size is allowed.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Longest accepted `eid`, in characters.
pub const MAX_EID_CHARS: usize = 128;
/// The protocol version announced in the session frame.
pub const PROTOCOL_VERSION: u32 = 1;
/// The additions to version 1 this server implements, announced in the
/// session frame's `features` (`box_office`: PROTOCOL.md "Box office (version 1.1)").
pub const FEATURES: &[&str] = &["box_office"];

/// The contract's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    UnknownMethod,
    Unauthorized,
    Forbidden,
    NotFound,
    RateLimited,
    InvalidCode,
    UsernameTaken,
    SeatUnavailable,
    SeatRule,
    HoldLimit,
    HoldExpired,
    ScreeningClosed,
    Limit,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::BadRequest,
        ErrorCode::UnknownMethod,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::RateLimited,
        ErrorCode::InvalidCode,
        ErrorCode::UsernameTaken,
        ErrorCode::SeatUnavailable,
        ErrorCode::SeatRule,
        ErrorCode::HoldLimit,
        ErrorCode::HoldExpired,
        ErrorCode::ScreeningClosed,
        ErrorCode::Limit,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::UnknownMethod => "UNKNOWN_METHOD",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::InvalidCode => "INVALID_CODE",
            ErrorCode::UsernameTaken => "USERNAME_TAKEN",
            ErrorCode::SeatUnavailable => "SEAT_UNAVAILABLE",
            ErrorCode::SeatRule => "SEAT_RULE",
            ErrorCode::HoldLimit => "HOLD_LIMIT",
            ErrorCode::HoldExpired => "HOLD_EXPIRED",
            ErrorCode::ScreeningClosed => "SCREENING_CLOSED",
            ErrorCode::Limit => "LIMIT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// An error answer: code, a message for people, and the code's details
/// (`seat_ids`, `retry_after_s`) merged into `data`.
#[derive(Debug, Clone)]
pub struct WireError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Map<String, Value>,
}

impl WireError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}
