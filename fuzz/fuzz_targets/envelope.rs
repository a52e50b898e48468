//! Fuzz target `envelope`: arbitrary bytes as a client's text frame.
//!
//! Runs what the server runs on a frame before any database call: the
//! envelope parser (`parse_request`), then the parameter reading of every
//! request type of the contract (`methods::validate`, the code path the
//! handlers use) on the frame's `data`, and the writers of the answer
//! frames. Nothing may panic, and these must hold:
//!
//! * a parsed request has a non-empty `type` and an `eid` of 1 to 128
//!   characters; a refused frame has a message for people, and any `eid`
//!   it read back is valid too;
//! * parameter reading only ever refuses with `BAD_REQUEST` and a message;
//! * every answer frame (response, error, push) is JSON whose `type` and
//!   `eid` are exactly the client's, whatever characters they hold.
//!
//! WebSocket text frames are UTF-8 (the transport refuses others); invalid
//! input is fed through `from_utf8_lossy`, so no input is wasted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee::controllers::dispatch::METHODS;
use marquee::methods::{validate, MethodError};
use marquee::shared::protocol::{
    error_frame, frame, parse_request, push_frame, ErrorCode, WireError, MAX_EID_CHARS,
};
use serde_json::{json, Value};

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    match parse_request(&text) {
        Ok(req) => {
            assert!(!req.kind.is_empty());
            assert_valid_eid(&req.eid);
            for kind in METHODS.iter().copied().chain([req.kind.as_str()]) {
                match validate(kind, &req.data) {
                    Ok(()) => {}
                    Err(MethodError::BadRequest(m)) => assert!(!m.is_empty(), "{kind}"),
                    Err(e) => panic!("{kind}: parameter reading answered {e:?}"),
                }
            }
            let ok = frame(&req.kind, Some(&req.eid), &json!({}));
            assert_echoes(&ok, &req.kind, Some(&req.eid));
            let mut push = String::new();
            push_frame(&mut push, "hall_update", &req.eid, "{}", 1);
            assert_echoes(&push, "hall_update", Some(&req.eid));
        }
        Err(bad) => {
            assert!(!bad.message.is_empty());
            if let Some(eid) = &bad.eid {
                assert_valid_eid(eid);
            }
            let kind = bad.kind.as_deref().unwrap_or("error");
            let w = WireError::new(ErrorCode::BadRequest, bad.message);
            let err = error_frame(kind, bad.eid.as_deref(), &w);
            assert_echoes(&err, kind, bad.eid.as_deref());
        }
    }
});

fn assert_valid_eid(eid: &str) {
    let n = eid.chars().count();
    assert!((1..=MAX_EID_CHARS).contains(&n), "eid of {n} characters");
}

fn assert_echoes(frame: &str, kind: &str, eid: Option<&str>) {
    let v: Value = serde_json::from_str(frame).expect("answer frames are JSON");
    assert_eq!(v["type"], kind);
    assert_eq!(v["eid"], eid.map_or(Value::Null, Value::from));
}
