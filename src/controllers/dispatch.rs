//! Routes a parsed request to its handler and writes the answer. One flat
//! match over [`Request`]: the request types are listed once, in
//! `shared::protocol::request`. The contract's order of checks is kept:
//! envelope and parameter errors (`Request::parse`) and the rate limit come
//! before this; here login (`UNAUTHORIZED`, in the methods) comes before
//! lookups (`NOT_FOUND`: ids that parsed as [`Lookup::Unknown`]).

use std::net::IpAddr;

use serde::Serialize;

use super::{answers, errors, State};
use crate::core::hub::Peer;
use crate::methods::auth::Candidates;
use crate::methods::{self, Ctx, CurrentUser, MethodError};
use crate::shared::clock::now_ms;
use crate::shared::ids::{Lookup, NotFound};
use crate::shared::protocol::answer::Empty;
use crate::shared::protocol::{error_frame, frame, push_frame, Envelope, Request};
use crate::subscriptions::SubscriptionError;

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

/// Handles one request; the outcome label ("ok" or the error code) goes to
/// metrics.
pub async fn handle(
    state: &State,
    conn: &mut ConnState,
    env: &Envelope,
    request: Request,
) -> (Answer, &'static str) {
    let kind = request.name();
    match route(state, conn, kind, &env.eid, request).await {
        Ok(answer) => (answer, "ok"),
        Err(fail) => {
            let w = match fail {
                Fail::Method(e) => errors::method(&e),
                Fail::Subscription(e) => errors::subscription(&e),
            };
            (
                Answer::Frame(error_frame(kind, Some(&env.eid), &w)),
                w.code.as_str(),
            )
        }
    }
}

/// A response frame of `kind` to `eid`.
fn sent(kind: &str, eid: &str, data: &impl Serialize) -> Answer {
    Answer::Frame(frame(kind, Some(eid), data))
}

async fn route(
    state: &State,
    conn: &mut ConnState,
    kind: &'static str,
    eid: &str,
    request: Request,
) -> Result<Answer, Fail> {
    let ConnState {
        peer,
        user,
        candidates,
        address,
    } = conn;
    let ctx = Ctx {
        db: &state.db,
        seats: &state.seats,
        auth: &state.auth,
        user: user.as_ref(),
        address: *address,
    };
    let user_id = ctx.user.map(|u| u.id);
    Ok(match request {
        Request::Ping => sent(kind, eid, &Empty {}),
        Request::AuthStart { username } => {
            let started = methods::auth::auth_start(&ctx, &username, candidates).await?;
            sent(kind, eid, &answers::started(started))
        }
        Request::AuthVerify { username, code } => {
            let session = methods::auth::auth_verify(&ctx, &username, &code, candidates).await?;
            sent(kind, eid, &answers::verified(&session))
        }
        Request::Logout => {
            methods::auth::logout(&ctx).await?;
            let f = frame(kind, Some(eid), &Empty {});
            if ctx.user.is_some() {
                Answer::LoggedOut(f)
            } else {
                Answer::Frame(f)
            }
        }
        Request::Me => {
            let me = methods::auth::me(&ctx)?;
            sent(kind, eid, &answers::me(me))
        }
        Request::GetCinemas => {
            let list = methods::catalogue::get_cinemas(&ctx).await?;
            sent(kind, eid, &answers::cinemas(&list))
        }
        Request::GetScreenings {
            cinema_id,
            from,
            to,
        } => {
            let list = methods::catalogue::get_screenings(&ctx, cinema_id, from, to).await?;
            sent(kind, eid, &answers::screenings(&list))
        }
        Request::GetHall { screening_id } => {
            let json = state
                .router
                .get_hall(screening_id.found()?, user_id)
                .await?;
            // The snapshot is JSON already (rendered once, shared with pushes).
            let mut out = String::new();
            push_frame(&mut out, kind, eid, &json, now_ms());
            Answer::Frame(out)
        }
        Request::SubscribeHall { screening_id } => {
            let id = screening_id.found()?;
            state.router.subscribe(peer, user_id, eid, id).await?;
            Answer::Queued
        }
        Request::UnsubscribeHall { screening_id } => {
            // Not subscribed, or to nothing that exists: `{}` all the same.
            if let Lookup::Found(id) = screening_id {
                state.router.unsubscribe(peer.id, id);
            }
            sent(kind, eid, &Empty {})
        }
        Request::HoldSeats(selection) => {
            let held = methods::seats::hold_seats(&ctx, selection).await?;
            sent(kind, eid, &answers::held(&held))
        }
        Request::HoldBestAvailable {
            screening_id,
            count,
            kinds,
        } => {
            let held =
                methods::seats::hold_best_available(&ctx, screening_id, count, &kinds).await?;
            sent(kind, eid, &answers::held(&held))
        }
        Request::ReleaseSeats(selection) => {
            let (screening, released) = methods::seats::release_seats(&ctx, selection).await?;
            sent(kind, eid, &answers::released(screening, &released))
        }
        Request::BookSeats(selection) => {
            let (booking, version) = methods::seats::book_seats(&ctx, selection).await?;
            sent(kind, eid, &answers::booking_changed(&booking, version))
        }
        Request::CancelBooking { booking_id } => {
            let (booking, version) = methods::seats::cancel_booking(&ctx, booking_id).await?;
            sent(kind, eid, &answers::booking_changed(&booking, version))
        }
        Request::GetBookings => {
            let list = methods::seats::get_bookings(&ctx).await?;
            sent(kind, eid, &answers::bookings(&list))
        }
    })
}

/// Why a request failed, before it is mapped to a contract code (`errors`).
enum Fail {
    Method(MethodError),
    Subscription(SubscriptionError),
}

impl From<MethodError> for Fail {
    fn from(e: MethodError) -> Self {
        Fail::Method(e)
    }
}

impl From<SubscriptionError> for Fail {
    fn from(e: SubscriptionError) -> Self {
        Fail::Subscription(e)
    }
}

impl From<NotFound> for Fail {
    fn from(e: NotFound) -> Self {
        Fail::Method(e.into())
    }
}
