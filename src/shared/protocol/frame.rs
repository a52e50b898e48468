//! Writing frames: the envelope around a response's, an error's or a
//! push's `data`. Only this file knows the envelope's outgoing shape; what
//! goes inside `data` is `answer`'s.

use serde::Serialize;
use serde_json::{Map, Value};

use super::WireError;
use crate::shared::clock::now_ms;

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
    use crate::shared::protocol::ErrorCode;

    #[test]
    fn push_frame_is_valid_json_with_escaped_eid() {
        let mut s = String::new();
        push_frame(&mut s, "hall_update", "a\"b", r#"{"v":1}"#, 7);
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["eid"], "a\"b");
        assert_eq!(v["data"]["v"], 1);
        assert_eq!(v["ts"], 7);
    }

    #[test]
    fn an_error_frame_merges_the_details_into_data() {
        let w = WireError::new(ErrorCode::RateLimited, "slow down").with("retry_after_s", 2);
        let v: Value = serde_json::from_str(&error_frame("ping", Some("e"), &w)).unwrap();
        assert_eq!(v["error"], "RATE_LIMITED");
        assert_eq!(v["data"]["message"], "slow down");
        assert_eq!(v["data"]["retry_after_s"], 2);
        assert_eq!(
            (v["type"].as_str(), v["eid"].as_str()),
            (Some("ping"), Some("e"))
        );
    }
}
