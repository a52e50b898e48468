//! Fuzz target `envelope`: arbitrary bytes as a client's text frame.
//!
//! Runs what the server runs on a frame before any database call:
//! `Request::parse` (the envelope, the request type and every parameter of
//! `data`), then the writers of the answer frames. Nothing may panic, and
//! these must hold:
//!
//! * a parsed request has an `eid` of 1 to 128 characters and a type of
//!   the contract;
//! * a refused frame is `BAD_REQUEST`, or `UNKNOWN_METHOD` for a readable
//!   type that is none of the contract's, with a message for people; any
//!   `eid` it read back is valid too;
//! * every answer frame (response, error, push) is JSON whose `type` and
//!   `eid` are exactly the client's, whatever characters they hold.
//!
//! WebSocket text frames are UTF-8 (the transport refuses others); invalid
//! input is fed through `from_utf8_lossy`, so no input is wasted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use marquee::shared::protocol::answer::Empty;
use marquee::shared::protocol::{
    error_frame, frame, push_frame, ErrorCode, Request, MAX_EID_CHARS,
};
use serde_json::Value;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    match Request::parse(&text) {
        Ok((env, req)) => {
            assert_valid_eid(&env.eid);
            assert!(Request::NAMES.contains(&req.name()));
            let ok = frame(req.name(), Some(&env.eid), &Empty {});
            assert_echoes(&ok, req.name(), Some(&env.eid));
            let mut push = String::new();
            push_frame(&mut push, "hall_update", &env.eid, "{}", 1);
            assert_echoes(&push, "hall_update", Some(&env.eid));
        }
        Err(refused) => {
            assert!(!refused.error.message.is_empty());
            match refused.error.code {
                ErrorCode::BadRequest => {}
                ErrorCode::UnknownMethod => {
                    let kind = refused.kind.as_deref().expect("a readable type");
                    assert!(!Request::NAMES.contains(&kind), "{kind} is known");
                    assert!(refused.eid.is_some(), "UNKNOWN_METHOD after the eid");
                }
                other => panic!("parse answered {other:?}"),
            }
            if let Some(eid) = &refused.eid {
                assert_valid_eid(eid);
            }
            let kind = refused.reply_kind();
            let err = error_frame(kind, refused.eid.as_deref(), &refused.error);
            assert_echoes(&err, kind, refused.eid.as_deref());
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
