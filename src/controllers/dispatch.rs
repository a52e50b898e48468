//! Routes a well-formed request to its handler and turns the result into a
//! frame. The contract's order of checks is kept: envelope errors and the
//! rate limit come before this, parameter errors before login, login before
//! lookups.

use std::net::IpAddr;

use serde_json::Value;

use super::errors;
use super::State;
use crate::core::hub::Peer;
use crate::methods::auth::Candidates;
use crate::methods::params::Params;
use crate::methods::{self, Ctx, CurrentUser, MethodError};
use crate::shared::protocol::{error_frame, frame, ErrorCode, Request, WireError};

/// Every request type of the contract.
pub const METHODS: &[&str] = &[
    "ping",
    "auth_start",
    "auth_verify",
    "logout",
    "me",
    "get_cinemas",
    "get_screenings",
    "get_hall",
    "subscribe_hall",
    "unsubscribe_hall",
    "hold_seats",
    "hold_best_available",
    "release_seats",
    "book_seats",
    "cancel_booking",
    "get_bookings",
];

/// The per-connection state a request may read or change.
pub struct ConnState {
    pub peer: Peer,
    pub user: Option<CurrentUser>,
    pub candidates: Candidates,
    /// The client address per-address limits count against.
    pub address: IpAddr,
}

/// What the connection must do after a request.
pub enum Answer {
    /// Send this frame.
    Frame(String),
    /// Already queued (a subscribe answer must precede its pushes).
    Queued,
    /// Send this frame, then become anonymous (logout).
    LoggedOut(String),
}

/// Handles one request; the outcome label goes to metrics.
pub async fn handle(state: &State, conn: &mut ConnState, req: &Request) -> (Answer, &'static str) {
    let kind = req.kind.as_str();
    let p = Params(&req.data);
    let ctx = Ctx {
        db: &state.db,
        auth: &state.auth,
        user: conn.user.as_ref(),
        address: conn.address,
    };
    let result: Result<Value, Fail> = match kind {
        "ping" => Ok(Value::Object(Default::default())),
        "auth_start" => methods::auth::auth_start(&ctx, &p, &mut conn.candidates)
            .await
            .map_err(Fail::from),
        "auth_verify" => methods::auth::auth_verify(&ctx, &p, &mut conn.candidates)
            .await
            .map_err(Fail::from),
        "me" => methods::auth::me(&ctx).map_err(Fail::from),
        "logout" => match methods::auth::logout(&ctx).await {
            Ok(v) => {
                let was_in = conn.user.is_some();
                let f = frame(kind, Some(&req.eid), &v);
                return if was_in {
                    (Answer::LoggedOut(f), "ok")
                } else {
                    (Answer::Frame(f), "ok")
                };
            }
            Err(e) => Err(e.into()),
        },
        "get_cinemas" => methods::catalogue::get_cinemas(&ctx)
            .await
            .map_err(Fail::from),
        "get_screenings" => methods::catalogue::get_screenings(&ctx, &p)
            .await
            .map_err(Fail::from),
        "hold_seats" => methods::seats::hold_seats(&ctx, &p)
            .await
            .map_err(Fail::from),
        "hold_best_available" => methods::seats::hold_best_available(&ctx, &p)
            .await
            .map_err(Fail::from),
        "release_seats" => methods::seats::release_seats(&ctx, &p)
            .await
            .map_err(Fail::from),
        "book_seats" => methods::seats::book_seats(&ctx, &p)
            .await
            .map_err(Fail::from),
        "cancel_booking" => methods::seats::cancel_booking(&ctx, &p)
            .await
            .map_err(Fail::from),
        "get_bookings" => methods::seats::get_bookings(&ctx).await.map_err(Fail::from),
        "get_hall" => match methods::hall_param(&p) {
            Err(e) => Err(e.into()),
            Ok(id) => match id.found() {
                Err(e) => Err(e.into()),
                Ok(id) => {
                    let user = conn.user.as_ref().map(|u| u.id);
                    match state.router.get_hall(id, user).await {
                        Ok(json) => {
                            let mut out = String::new();
                            crate::shared::protocol::push_frame(
                                &mut out,
                                kind,
                                &req.eid,
                                &json,
                                crate::shared::clock::now_ms(),
                            );
                            return (Answer::Frame(out), "ok");
                        }
                        Err(e) => Err(Fail::Wire(errors::subscription(&e))),
                    }
                }
            },
        },
        "subscribe_hall" => match methods::hall_param(&p) {
            Err(e) => Err(e.into()),
            Ok(id) => match id.found() {
                Err(e) => Err(e.into()),
                Ok(id) => {
                    let user = conn.user.as_ref().map(|u| u.id);
                    match state.router.subscribe(&conn.peer, user, &req.eid, id).await {
                        Ok(()) => return (Answer::Queued, "ok"),
                        Err(e) => Err(Fail::Wire(errors::subscription(&e))),
                    }
                }
            },
        },
        "unsubscribe_hall" => match methods::hall_param(&p) {
            Err(e) => Err(e.into()),
            Ok(id) => {
                if let methods::params::Lookup::Found(id) = id {
                    state.router.unsubscribe(conn.peer.id, id);
                }
                Ok(Value::Object(Default::default()))
            }
        },
        _ => Err(Fail::Wire(WireError::new(
            ErrorCode::UnknownMethod,
            format!("unknown request type `{}`", truncate(kind, 64)),
        ))),
    };
    match result {
        Ok(v) => (Answer::Frame(frame(kind, Some(&req.eid), &v)), "ok"),
        Err(f) => {
            let w = match f {
                Fail::Method(e) => errors::method(&e),
                Fail::Wire(w) => w,
            };
            (
                Answer::Frame(error_frame(kind, Some(&req.eid), &w)),
                w.code.as_str(),
            )
        }
    }
}

enum Fail {
    Method(MethodError),
    Wire(WireError),
}

impl From<MethodError> for Fail {
    fn from(e: MethodError) -> Self {
        Fail::Method(e)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
