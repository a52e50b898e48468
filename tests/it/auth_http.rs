//! The auth cookie over HTTP (docs/protocol.md, "Ports and HTTP"): `POST /auth/session`
//! sets the HttpOnly cookie for a valid token and refuses bad ones with 401;
//! `POST /auth/logout` revokes the cookie's session everywhere and clears the
//! cookie; both refuse a foreign Origin with 403 (login CSRF).

use std::time::Duration;

use crate::harness::*;
use base64::Engine;
use marquee::app::Server;
use serde_json::{json, Value};

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

async fn post_session(
    server: &Server,
    body: &str,
    origin: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let mut h = vec![("content-type", "application/json")];
    if let Some(o) = origin {
        h.push(("origin", o));
    }
    http(server.http_addr, "POST", "/auth/session", &h, body).await
}

async fn post_logout(
    server: &Server,
    token: Option<&str>,
    origin: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let cookie = token.map(|t| format!("token={t}"));
    let mut h = Vec::new();
    if let Some(c) = &cookie {
        h.push(("cookie", c.as_str()));
    }
    if let Some(o) = origin {
        h.push(("origin", o));
    }
    http(server.http_addr, "POST", "/auth/logout", &h, "").await
}

fn own_origin(server: &Server) -> String {
    format!("http://127.0.0.1:{}", server.http_addr.port())
}

/// A fresh registration on `server`: the token.
async fn token_for(server: &Server, name: &str) -> String {
    let mut c = Client::connect(server).await;
    let (token, _) = register(&mut c, name).await;
    token
}

async fn connect_cookie(server: &Server, token: &str) -> Client {
    Client::connect_with(
        server,
        Connect {
            token_cookie: Some(token.to_owned()),
            ..Default::default()
        },
    )
    .await
    .expect("upgrade")
}

fn unauthorized(r: &(u16, Vec<(String, String)>, String), what: &str) {
    assert_eq!(r.0, 401, "{what}: {r:?}");
    let body: Value = serde_json::from_str(&r.2).unwrap_or_else(|_| panic!("{what}: {r:?}"));
    assert_eq!(body, json!({"error": "UNAUTHORIZED"}), "{what}");
    assert!(header(&r.1, "set-cookie").is_empty(), "{what}: no cookie");
}

#[tokio::test]
async fn post_session_sets_the_http_only_cookie() {
    let app = TestApp::spawn().await;
    let token = token_for(&app.server, "alice").await;
    let origin = own_origin(&app.server);
    for origin in [None, Some(origin.as_str())] {
        let (status, headers, body) =
            post_session(&app.server, &json!({ "token": token }).to_string(), origin).await;
        assert_eq!(status, 204, "{origin:?}: {body}");
        assert_eq!(
            header(&headers, "set-cookie"),
            [format!(
                "token={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age=604800"
            )]
        );
        assert_eq!(header(&headers, "cache-control"), ["no-store"]);
        assert!(body.is_empty(), "204 has no body: {body}");
    }
    // The browser sends the cookie back at the upgrade: logged in.
    let mut c = connect_cookie(&app.server, &token).await;
    assert_eq!(c.session["data"]["user"]["username"], "alice");
    assert_eq!(c.ok("me", json!({})).await["user"]["username"], "alice");
}

/// A server with `COOKIE_SECURE` and a one-hour token TTL, and bert's token.
async fn secure_server() -> (TestApp, String) {
    let app = TestApp::configured(|cfg| {
        cfg.cookie_secure = true;
        cfg.token_ttl = Duration::from_secs(3600);
    })
    .await;
    let token = token_for(&app.server, "bert").await;
    (app, token)
}

#[tokio::test]
async fn a_configured_token_ttl_is_the_tokens_lifetime() {
    let (_app, token) = secure_server().await;
    let seg = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seg)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
}

#[tokio::test]
async fn cookie_secure_marks_both_cookies_secure_with_the_ttl_as_max_age() {
    let (app, token) = secure_server().await;
    let server = &app.server;
    let (status, headers, _) =
        post_session(server, &json!({ "token": token }).to_string(), None).await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "set-cookie"),
        [format!(
            "token={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age=3600; Secure"
        )]
    );
    let (status, headers, _) = post_logout(server, Some(&token), None).await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "set-cookie"),
        ["token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0; Secure"]
    );
}

#[tokio::test]
async fn post_session_refuses_bad_tokens() {
    let app = TestApp::spawn().await;
    let token = token_for(&app.server, "cleo").await;
    let seg = token.split('.').nth(1).unwrap();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(seg)
            .unwrap(),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header_ = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let forged = jsonwebtoken::encode(
        &header_,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"another-secret-another-secret-another-0"),
    )
    .unwrap();
    claims["iat"] = json!(now - 120);
    claims["exp"] = json!(now - 60);
    let expired = jsonwebtoken::encode(
        &header_,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    for (what, body) in [
        ("garbage", json!({"token": "garbage"}).to_string()),
        ("wrong signature", json!({ "token": forged }).to_string()),
        ("expired", json!({ "token": expired }).to_string()),
        ("no token", json!({}).to_string()),
        ("token not a string", json!({"token": 42}).to_string()),
        ("not JSON", "token=abc".to_owned()),
        (
            "cookie injection",
            json!({ "token": format!("{token}; Domain=evil.example") }).to_string(),
        ),
    ] {
        unauthorized(&post_session(&app.server, &body, None).await, what);
    }
    // Revoked: logout on a socket, then the token no longer makes a cookie.
    let mut c = connect_cookie(&app.server, &token).await;
    c.ok("logout", json!({})).await;
    unauthorized(
        &post_session(&app.server, &json!({ "token": token }).to_string(), None).await,
        "revoked",
    );
}

#[tokio::test]
async fn post_logout_revokes_and_clears_the_cookie() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let token = token_for(&app.server, "dana").await;
    let mut open_a = connect_cookie(&app.server, &token).await;
    let mut open_b = connect_cookie(&b, &token).await;
    assert_eq!(open_b.session["data"]["user"]["username"], "dana");

    let (status, headers, _) =
        post_logout(&app.server, Some(&token), Some(&own_origin(&app.server))).await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&headers, "set-cookie"),
        ["token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"]
    );
    // Open sockets of that token, on both replicas, are logged out.
    for c in [&mut open_a, &mut open_b] {
        let s = c.push("session").await;
        assert!(s["data"]["user"].is_null(), "{s}");
    }
    // The session is revoked: a reconnect with the cookie is anonymous.
    let c = connect_cookie(&app.server, &token).await;
    assert!(c.session["data"]["user"].is_null(), "{}", c.session);
    unauthorized(
        &post_session(&app.server, &json!({ "token": token }).to_string(), None).await,
        "revoked by HTTP logout",
    );
    // Without a cookie (or with a stale one) the answer is the same.
    for t in [None, Some(token.as_str()), Some("garbage")] {
        let (status, headers, _) = post_logout(&app.server, t, None).await;
        assert_eq!(status, 204, "{t:?}");
        assert_eq!(
            header(&headers, "set-cookie"),
            ["token=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"]
        );
    }
}

const FOREIGN: &str = "https://evil.example";

#[tokio::test]
async fn a_foreign_origin_cannot_set_the_cookie() {
    let app = TestApp::spawn().await;
    let token = token_for(&app.server, "emma").await;
    let (status, headers, body) = post_session(
        &app.server,
        &json!({ "token": token }).to_string(),
        Some(FOREIGN),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(header(&headers, "set-cookie").is_empty());
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "FORBIDDEN"})
    );
}

#[tokio::test]
async fn a_foreign_origin_cannot_clear_the_cookie() {
    let app = TestApp::spawn().await;
    let token = token_for(&app.server, "emma").await;
    let (status, headers, _) = post_logout(&app.server, Some(&token), Some(FOREIGN)).await;
    assert_eq!(status, 403);
    assert!(header(&headers, "set-cookie").is_empty());
    // The session survived the cross-site logout attempt.
    let c = connect_cookie(&app.server, &token).await;
    assert_eq!(c.session["data"]["user"]["username"], "emma");
}
