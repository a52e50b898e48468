//! The wire contract's envelope (docs/protocol.md, "Frames"): parsing
//! a client frame into a request, and writing responses, errors and pushes.
//! Only this module knows the envelope's JSON shape.

use serde::Serialize;
use serde_json::{Map, Value};

use super::clock::now_ms;

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

/// A well-formed request.
#[derive(Debug)]
pub struct Request {
    pub kind: String,
    pub eid: String,
    pub data: Map<String, Value>,
}

/// What could be read of a frame that is not a well-formed request, so the
/// error answer can still echo it.
#[derive(Debug)]
pub struct Malformed {
    /// The `type`, when it was a string.
    pub kind: Option<String>,
    /// The `eid`, when it was valid.
    pub eid: Option<String>,
    pub message: &'static str,
}

/// Parses a text frame into a request. On failure, [`Malformed`] keeps the
/// `type` and `eid` that could be read, so the error (or the rate limiter's
/// answer) still echoes them.
pub fn parse_request(text: &str) -> Result<Request, Malformed> {
    let mut malformed = Malformed {
        kind: None,
        eid: None,
        message: "",
    };
    let mut obj = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => {
            malformed.message = "a frame must be a JSON object";
            return Err(malformed);
        }
        Err(_) => {
            malformed.message = "the frame is not valid JSON";
            return Err(malformed);
        }
    };
    let kind = match obj.remove("type") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    let eid = match obj.remove("eid") {
        Some(Value::String(s)) if valid_eid(&s) => Some(s),
        _ => None,
    };
    malformed.kind = kind.clone();
    malformed.eid = eid.clone();
    let (Some(kind), Some(eid)) = (kind, eid) else {
        malformed.message = if malformed.kind.is_none() {
            "`type` must be a non-empty string"
        } else {
            "`eid` must be a string of 1 to 128 characters"
        };
        return Err(malformed);
    };
    match obj.get("ts") {
        None | Some(Value::Number(_)) => {}
        Some(_) => {
            malformed.message = "`ts` must be a number";
            return Err(malformed);
        }
    }
    let data = match obj.remove("data") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            malformed.message = "`data` must be an object";
            return Err(malformed);
        }
    };
    Ok(Request { kind, eid, data })
}

fn valid_eid(s: &str) -> bool {
    !s.is_empty() && s.chars().count() <= MAX_EID_CHARS
}

#[derive(Serialize)]
struct Frame<'a, D: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: D,
    eid: Option<&'a str>,
    ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

/// A response (or push) frame with `data` serialized from `data`.
pub fn frame(kind: &str, eid: Option<&str>, data: &impl Serialize) -> String {
    let f = Frame {
        kind,
        data,
        eid,
        ts: now_ms(),
        error: None,
    };
    // Serializing our own structs to a String cannot fail: no maps with
    // non-string keys, no failing Serialize impls.
    serde_json::to_string(&f).unwrap_or_else(|_| internal_frame(kind, eid))
}

/// An error frame.
pub fn error_frame(kind: &str, eid: Option<&str>, err: &WireError) -> String {
    let mut data = Map::with_capacity(err.details.len() + 1);
    data.insert("message".into(), Value::String(err.message.clone()));
    for (k, v) in &err.details {
        data.insert(k.clone(), v.clone());
    }
    let f = Frame {
        kind,
        data,
        eid,
        ts: now_ms(),
        error: Some(err.code.as_str()),
    };
    serde_json::to_string(&f).unwrap_or_else(|_| internal_frame(kind, eid))
}

fn internal_frame(kind: &str, eid: Option<&str>) -> String {
    serde_json::json!({
        "type": kind, "data": {"message": "internal error"}, "eid": eid,
        "ts": now_ms(), "error": "INTERNAL"
    })
    .to_string()
}

/// A push whose `data` was serialized once for many subscribers: only the
/// `eid` and `ts` differ per connection, so they are spliced around the
/// shared bytes instead of re-serializing `data` per subscriber.
pub fn push_frame(out: &mut String, kind: &str, eid: &str, data_json: &str, ts: i64) {
    out.reserve(kind.len() + eid.len() + data_json.len() + 48);
    push_head(out, kind, data_json);
    // An eid is client text: escape it as JSON.
    write_json_str(out, eid);
    push_tail(out, ts);
}

/// A push frame up to its eid: `{"type":…,"data":…,"eid":`. With
/// [`push_tail`] around an eid from [`json_str`] it is [`push_frame`]'s
/// frame, for frames whose parts are shared by many subscribers.
pub fn push_head(out: &mut String, kind: &str, data_json: &str) {
    out.push_str("{\"type\":\"");
    out.push_str(kind);
    out.push_str("\",\"data\":");
    out.push_str(data_json);
    out.push_str(",\"eid\":");
}

/// A push frame after its eid: `,"ts":…}`.
pub fn push_tail(out: &mut String, ts: i64) {
    use std::fmt::Write;
    let _ = write!(out, ",\"ts\":{ts}}}");
}

/// `s` as a JSON string literal, quoted and escaped.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "null".into())
}

fn write_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(q) => out.push_str(&q),
        Err(_) => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_can_of_bad_frames() {
        let m = parse_request("nope").unwrap_err();
        assert!(m.kind.is_none() && m.eid.is_none());
        let m = parse_request(r#"{"type":"ping"}"#).unwrap_err();
        assert_eq!(m.kind.as_deref(), Some("ping"));
        let m = parse_request(r#"{"type":"ping","eid":"x","data":[]}"#).unwrap_err();
        assert_eq!(m.eid.as_deref(), Some("x"));
        let m = parse_request(r#"{"type":"ping","eid":"x","ts":"1"}"#).unwrap_err();
        assert_eq!(m.message, "`ts` must be a number");
        let eid = "e".repeat(129);
        let m = parse_request(&format!(r#"{{"type":"ping","eid":"{eid}"}}"#)).unwrap_err();
        assert!(m.eid.is_none());
        let r = parse_request(r#"{"type":"ping","eid":"p1","ts":5}"#).unwrap();
        assert_eq!((r.kind.as_str(), r.eid.as_str()), ("ping", "p1"));
    }

    #[test]
    fn push_frame_is_valid_json_with_escaped_eid() {
        let mut s = String::new();
        push_frame(&mut s, "hall_update", "a\"b", r#"{"v":1}"#, 7);
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["eid"], "a\"b");
        assert_eq!(v["data"]["v"], 1);
        assert_eq!(v["ts"], 7);
    }
}
