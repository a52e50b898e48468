//! The HTTP controller on `PORT`: `/health`, `/ready`, `/metrics` (exactly
//! that path; behind `METRICS_TOKEN` when set), the auth cookie (`POST
//! /auth/session`, `POST /auth/logout`), `/config.json` for the web client,
//! and the web client's static files. Connections, timeouts and the body
//! limit are `http_conn`'s.
//!
//! Cookie: `token=<jwt>; HttpOnly; SameSite=Lax; Path=/; Max-Age=<ttl>`
//! (`Secure` with `COOKIE_SECURE=true`). The POSTs check `Origin` against
//! the same allow-list as the WebSocket upgrade, so a foreign page cannot
//! plant or clear a cookie (login CSRF).

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use warp::http::{header, HeaderValue, Response, StatusCode};
use warp::{Filter, Rejection, Reply};

use super::{web, State};
use crate::methods::auth::{authenticate, revoke_token, TokenCheck};
use crate::shared::protocol::answer::{ClientConfig, Health, HttpError};
use crate::shared::protocol::request::session_token;
use crate::shared::protocol::{ErrorCode, PROTOCOL_VERSION};

/// Largest accepted request body (`413` above it, on every path).
pub const MAX_BODY: u64 = 16 * 1024;

fn json_reply(status: StatusCode, v: &impl Serialize) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(v), status).into_response()
}

/// A refusal on the HTTP port: the status and the contract's error code.
pub(super) fn error(status: StatusCode, code: ErrorCode) -> warp::reply::Response {
    json_reply(
        status,
        &HttpError {
            error: code.as_str(),
        },
    )
}

/// Every HTTP route.
pub fn routes(
    state: Arc<State>,
    ws_port: u16,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let st = move || {
        let s = state.clone();
        warp::any().map(move || s.clone())
    };
    let health = warp::get()
        .and(warp::path("health"))
        .and(warp::path::end())
        .map(|| {
            let ok = Health {
                database: None,
                listener: None,
                status: "ok",
            };
            json_reply(StatusCode::OK, &ok)
        });
    let ready = warp::get()
        .and(warp::path("ready"))
        .and(warp::path::end())
        .and(st())
        .then(|s: Arc<State>| async move {
            let db = s.db.ping().await;
            let listener = s.listener.is_up();
            let (status, word) = if db && listener {
                (StatusCode::OK, "ready")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            };
            let health = Health {
                database: Some(db),
                listener: Some(listener),
                status: word,
            };
            json_reply(status, &health)
        });
    // Exactly `/metrics`: `/metrics/` must not slip past a proxy rule that
    // hides `/metrics` (issue 12.7).
    let metrics = warp::get()
        .and(exact("/metrics"))
        .and(warp::header::optional::<String>("authorization"))
        .and(st())
        .map(|auth: Option<String>, s: Arc<State>| {
            if !metrics_allowed(&s, auth.as_deref()) {
                let mut r = error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return r;
            }
            let pool = s.db.status();
            let body = s.metrics.render(&[
                (
                    "marquee_db_pool_size",
                    "Connections in the pool.",
                    pool.size as f64,
                ),
                (
                    "marquee_db_pool_available",
                    "Idle connections in the pool.",
                    pool.available as f64,
                ),
                (
                    "marquee_db_pool_waiting",
                    "Requests waiting for a pooled connection.",
                    pool.waiting as f64,
                ),
                (
                    "marquee_listener_up",
                    "1 while the LISTEN connection is up.",
                    if s.listener.is_up() { 1.0 } else { 0.0 },
                ),
            ]);
            warp::reply::with_header(
                body,
                "content-type",
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .into_response()
        });
    let config = warp::get()
        .and(warp::path("config.json"))
        .and(warp::path::end())
        .map(move || {
            let config = ClientConfig {
                protocol: PROTOCOL_VERSION,
                ws_port,
            };
            json_reply(StatusCode::OK, &config)
        });
    // Path before method: an unknown path is 404, not 405.
    let session = warp::path!("auth" / "session")
        .and(warp::post())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::body::content_length_limit(MAX_BODY))
        .and(warp::body::bytes())
        .and(st())
        .then(set_session);
    let logout = warp::path!("auth" / "logout")
        .and(warp::post())
        .and(warp::header::optional::<String>("origin"))
        .and(warp::cookie::optional::<String>("token"))
        .and(st())
        .then(logout);
    let files = warp::get()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("if-none-match"))
        .and(warp::header::optional::<String>("host"))
        .and_then(
            move |path: warp::path::FullPath, inm: Option<String>, host: Option<String>| async move {
                let csp = web::content_security_policy(host.as_deref(), ws_port);
                web::serve(path.as_str(), inm.as_deref(), &csp).ok_or_else(warp::reject::not_found)
            },
        );
    health
        .or(ready)
        .or(metrics)
        .or(config)
        .or(session)
        .or(logout)
        .or(files)
        .recover(|r: Rejection| async move {
            let (status, code) = if r.is_not_found() {
                (StatusCode::NOT_FOUND, ErrorCode::NotFound)
            } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
                (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::BadRequest)
            } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BadRequest)
            } else {
                (StatusCode::BAD_REQUEST, ErrorCode::BadRequest)
            };
            Ok::<_, std::convert::Infallible>(error(status, code))
        })
}

/// Matches one path exactly (no trailing slash, nothing below it).
fn exact(path: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::full()
        .and_then(move |p: warp::path::FullPath| async move {
            if p.as_str() == path {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
}

/// With `METRICS_TOKEN` set, `/metrics` needs `Authorization: Bearer <token>`.
fn metrics_allowed(state: &State, authorization: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    let Some(token) = &state.config.metrics_token else {
        return true;
    };
    authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|given| bool::from(given.trim().as_bytes().ct_eq(token.expose())))
}

fn cookie(state: &State, value: &str, max_age: i64) -> String {
    let secure = if state.config.cookie_secure {
        "; Secure"
    } else {
        ""
    };
    format!("token={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}")
}

fn with_cookie(status: StatusCode, cookie: &str) -> warp::reply::Response {
    let mut r = Response::new(Bytes::new());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.into_response()
}

async fn set_session(origin: Option<String>, body: Bytes, s: Arc<State>) -> warp::reply::Response {
    if !s.origin_allowed(origin.as_deref()) {
        return error(StatusCode::FORBIDDEN, ErrorCode::Forbidden);
    }
    let Some(token) = session_token(&body) else {
        return error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized);
    };
    match authenticate(&s.db, &s.auth, &token).await {
        TokenCheck::Valid(_) => {
            let lifetime = s.auth.verify(&token).map(|c| c.lifetime_s()).unwrap_or(0);
            with_cookie(StatusCode::NO_CONTENT, &cookie(&s, &token, lifetime))
        }
        TokenCheck::Invalid => error(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
        TokenCheck::Unavailable => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable),
    }
}

async fn logout(
    origin: Option<String>,
    token: Option<String>,
    s: Arc<State>,
) -> warp::reply::Response {
    if !s.origin_allowed(origin.as_deref()) {
        return error(StatusCode::FORBIDDEN, ErrorCode::Forbidden);
    }
    if let Some(t) = token {
        if let Err(e) = revoke_token(&s.db, &s.auth, &t).await {
            tracing::warn!(error = %e, "logout could not revoke the session");
            return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable);
        }
    }
    with_cookie(StatusCode::NO_CONTENT, &cookie(&s, "", 0))
}
