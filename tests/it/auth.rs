//! Authentication end to end (issue 3, docs/protocol.md "Connecting" and "Auth"):
//! registration and login with codes computed here like an authenticator
//! app, the QR code decoded back to its otpauth URL, replay and rate limits
//! across replicas, the candidate race, tokens at connect, revocation pushed
//! to every replica, expiry while a socket is open, the Origin allow-list,
//! secrets at rest, and the SQL rules called directly.
//!
//! The cookie endpoints (`POST /auth/session`, `POST /auth/logout`) are in
//! `tests/it/auth_http.rs`.

use std::time::{Duration, Instant};

use crate::harness::*;
use base64::Engine;
use marquee::app::Tuning;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The SVG behind a `data:image/svg+xml;base64,` URL.
fn svg_of(data_url: &str) -> String {
    let b64 = data_url
        .strip_prefix("data:image/svg+xml;base64,")
        .unwrap_or_else(|| panic!("not an SVG data URL: {data_url:.60}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("the data URL is base64");
    String::from_utf8(bytes).expect("the SVG is UTF-8")
}

/// The numeric value of `name="…"` in an SVG tag.
fn svg_attr(tag: &str, name: &str) -> Option<f64> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    tag[start..end].parse().ok()
}

/// Rasterises the SVG `qrcode` renders (a background `<rect>` and one
/// `<path d="M{x} {y}h{w}v{h}H{x}V{y}…">` of dark rectangles; dark `<rect>`s
/// are read too) into a greyscale bitmap: (width, height, pixels).
fn rasterise(svg: &str) -> (usize, usize, Vec<u8>) {
    let root = &svg[svg.find("<svg").expect("an <svg> element")..];
    let w = svg_attr(root, "width").expect("svg width") as usize;
    let h = svg_attr(root, "height").expect("svg height") as usize;
    let mut px = vec![255u8; w * h];
    let mut fill = |x0: f64, y0: f64, rw: f64, rh: f64| {
        let (x1, y1) = ((x0 + rw).round() as usize, (y0 + rh).round() as usize);
        for y in (y0.round() as usize)..y1.min(h) {
            for x in (x0.round() as usize)..x1.min(w) {
                px[y * w + x] = 0;
            }
        }
    };
    // Dark rects (a renderer variant); the light background is skipped.
    for tag in svg.split('<').filter(|t| t.starts_with("rect ")) {
        let dark = tag.contains("fill=\"#000") || tag.contains("fill=\"black");
        if dark {
            fill(
                svg_attr(tag, "x").unwrap_or(0.0),
                svg_attr(tag, "y").unwrap_or(0.0),
                svg_attr(tag, "width").expect("rect width"),
                svg_attr(tag, "height").expect("rect height"),
            );
        }
    }
    // The path: a sequence of M x y h w v h H x V y rectangles.
    let mut paths = 0;
    for tag in svg.split('<').filter(|t| t.starts_with("path ")) {
        paths += 1;
        let start = tag.find(" d=\"").expect("path d") + 4;
        let d = &tag[start..start + tag[start..].find('"').expect("d ends")];
        // Tokenise into (command, numbers).
        let mut cmds: Vec<(char, Vec<f64>)> = Vec::new();
        let mut num = String::new();
        let flush = |num: &mut String, cmds: &mut Vec<(char, Vec<f64>)>| {
            if !num.is_empty() {
                let v: f64 = num.parse().expect("a number in the path");
                cmds.last_mut().expect("a command first").1.push(v);
                num.clear();
            }
        };
        for ch in d.chars() {
            match ch {
                'M' | 'm' | 'h' | 'H' | 'v' | 'V' | 'z' | 'Z' | 'l' | 'L' => {
                    flush(&mut num, &mut cmds);
                    cmds.push((ch, Vec::new()));
                }
                ' ' | ',' => flush(&mut num, &mut cmds),
                '-' if !num.is_empty() => {
                    flush(&mut num, &mut cmds);
                    num.push(ch);
                }
                _ => num.push(ch),
            }
        }
        flush(&mut num, &mut cmds);
        // Every subpath is an axis-aligned rectangle: take its bounding box.
        let (mut x, mut y) = (0.0f64, 0.0f64);
        let mut bbox: Option<(f64, f64, f64, f64)> = None;
        let mut close = |b: &mut Option<(f64, f64, f64, f64)>| {
            if let Some((x0, y0, x1, y1)) = b.take() {
                fill(x0, y0, x1 - x0, y1 - y0);
            }
        };
        for (c, args) in cmds {
            match c {
                'M' => {
                    close(&mut bbox);
                    (x, y) = (args[0], args[1]);
                }
                'm' => {
                    close(&mut bbox);
                    (x, y) = (x + args[0], y + args[1]);
                }
                'h' => x += args[0],
                'H' => x = args[0],
                'v' => y += args[0],
                'V' => y = args[0],
                'l' => (x, y) = (x + args[0], y + args[1]),
                'L' => (x, y) = (args[0], args[1]),
                _ => {}
            }
            let b = bbox.get_or_insert((x, y, x, y));
            *b = (b.0.min(x), b.1.min(y), b.2.max(x), b.3.max(y));
        }
        close(&mut bbox);
    }
    assert!(paths <= 1, "expected one path of dark modules");
    (w, h, px)
}

/// Decodes the QR code of an SVG data URL (as a phone's camera would).
fn decode_qr(data_url: &str) -> String {
    let (w, h, px) = rasterise(&svg_of(data_url));
    let dark = px.iter().filter(|p| **p == 0).count();
    assert!(
        dark > w * h / 10,
        "the QR code has dark modules ({dark} of {} px)",
        w * h
    );
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| px[y * w + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "exactly one QR code in the image");
    let (_, content) = grids[0].decode().expect("the QR code decodes");
    content
}

/// The JSON of a JWT segment (0: header, 1: claims).
fn jwt_part(token: &str, i: usize) -> Value {
    let seg = token.split('.').nth(i).expect("a JWT segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(seg)
        .expect("base64url segment");
    serde_json::from_slice(&bytes).expect("JSON segment")
}

/// Signs claims with HS256 and `secret`.
fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A 6-digit code that matches none of the steps around now.
fn wrong_code(secret: &str) -> String {
    let near: Vec<String> = (-3..=3).map(|o| totp_code(secret, o)).collect();
    (0..)
        .map(|n: u32| format!("{:06}", (123_457 + n * 7919) % 1_000_000))
        .find(|c| !near.contains(c))
        .expect("a wrong code")
}

/// Waits, when the current 30 s step ends within `secs`, for the next one,
/// so codes computed now keep their offset when the server checks them.
async fn away_from_step_edge(secs: u64) {
    let left = secs_left_in_step();
    if left <= secs {
        tokio::time::sleep(Duration::from_millis(left * 1000 + 200)).await;
    }
}

/// auth_start of a new name: (the candidate answer, its secret).
async fn start_candidate(c: &mut Client, name: &str) -> (Value, String) {
    let s = c.ok("auth_start", json!({ "username": name })).await;
    assert_eq!(s["status"], "candidate", "{s}");
    let secret = s["secret"].as_str().expect("secret").to_owned();
    (s, secret)
}

/// Registers `name` on `c`; returns (verify answer, secret).
async fn register_full(c: &mut Client, name: &str) -> (Value, String) {
    let (_, secret) = start_candidate(c, name).await;
    let v = c
        .ok(
            "auth_verify",
            json!({"username": name, "code": totp_code(&secret, 0)}),
        )
        .await;
    (v, secret)
}

/// The error answer (whole frame) of a request that must fail with `code`.
async fn fails_with(c: &mut Client, kind: &str, data: Value, code: &str) -> Value {
    let r = c.request(kind, data.clone()).await;
    assert_eq!(r["error"], code, "{kind} {data}: {r}");
    r
}

/// An `auth_verify` that must fail with `expected`.
async fn verify_fails(c: &mut Client, name: &str, code: &str, expected: &str) -> Value {
    fails_with(
        c,
        "auth_verify",
        json!({"username": name, "code": code}),
        expected,
    )
    .await
}

async fn verify(c: &mut Client, name: &str, code: &str) -> Value {
    c.request("auth_verify", json!({"username": name, "code": code}))
        .await
}

/// Failures recorded in SQL for a name.
async fn failures(db: &TestDb, name: &str) -> i64 {
    db.scalar(&format!(
        "SELECT count(*) FROM auth_failures WHERE username = '{name}'"
    ))
    .await
    .expect("count")
    .parse()
    .expect("a number")
}

async fn with_token(server: &marquee::app::Server, token: &str, cookie: bool) -> Client {
    let opts = if cookie {
        Connect {
            token_cookie: Some(token.to_owned()),
            ..Default::default()
        }
    } else {
        Connect::bearer(token)
    };
    Client::connect_with(server, opts)
        .await
        .expect("the upgrade succeeds")
}

fn anonymous(c: &Client) -> bool {
    c.session["data"]["user"].is_null()
}

// ---------------------------------------------------------------------------
// Registration
// ---------------------------------------------------------------------------

#[tokio::test]
async fn registration_candidate_secret_qr_and_binding() {
    let app = TestApp::spawn().await;
    let mut c1 = app.client().await;
    let (cand, secret) = start_candidate(&mut c1, "Alice").await;

    // 160 bits of base32 (RFC 4226 §4): 32 characters, no padding.
    assert_eq!(secret.len(), 32, "{secret}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
        "{secret}"
    );
    let raw = totp_rs::Secret::try_from_base32(&secret)
        .expect("base32")
        .as_bytes()
        .to_vec();
    assert_eq!(raw.len(), 20);

    // The standard Key URI, with the name normalised.
    let url = format!(
        "otpauth://totp/Marquee:alice?secret={secret}&issuer=Marquee&algorithm=SHA1&digits=6&period=30"
    );
    assert_eq!(cand["otpauth_url"], url.as_str());
    let keys: Vec<&String> = cand.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        4,
        "status, qr_code, otpauth_url, secret: {cand}"
    );

    // The QR code is an SVG data URL that scans to that URL.
    let qr = cand["qr_code"].as_str().expect("qr_code");
    assert!(qr.starts_with("data:image/svg+xml;base64,"), "{qr:.40}");
    assert_eq!(decode_qr(qr), url);

    // Same connection: the same secret; another connection: its own.
    let (again, secret_again) = start_candidate(&mut c1, "alice").await;
    assert_eq!(secret_again, secret);
    assert_eq!(again["otpauth_url"], url.as_str());
    let mut c2 = app.client().await;
    let (_, other) = start_candidate(&mut c2, "ALICE").await;
    assert_ne!(other, secret, "each connection gets its own secret");

    // A code for the secret verifies; the name is stored lower-cased.
    let v = c1
        .ok(
            "auth_verify",
            json!({"username": "ALICE", "code": totp_code(&secret, 0)}),
        )
        .await;
    assert_eq!(v["user"]["username"], "alice");
    assert_eq!(
        app.db.scalar("SELECT username FROM users").await.as_deref(),
        Some("alice")
    );
    // The verify answer left the connection as it was.
    fails_with(&mut c1, "me", json!({}), "UNAUTHORIZED").await;
    // Now the name is a user for everyone.
    let mut c3 = app.client().await;
    assert_eq!(
        c3.ok("auth_start", json!({"username": "Alice"})).await,
        json!({"status": "user"})
    );
}

#[tokio::test]
async fn username_rules() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    let too_long = "a".repeat(33);
    for bad in [
        json!("ab"),
        json!(too_long),
        json!("al ice"),
        json!("ålice"),
        json!("alice!"),
        json!(""),
        json!(42),
        json!(null),
    ] {
        fails_with(
            &mut c,
            "auth_start",
            json!({ "username": bad }),
            "BAD_REQUEST",
        )
        .await;
        fails_with(
            &mut c,
            "auth_verify",
            json!({"username": bad, "code": "123456"}),
            "BAD_REQUEST",
        )
        .await;
    }
    fails_with(&mut c, "auth_start", json!({}), "BAD_REQUEST").await;
    // Nothing of that reached the failure log.
    assert_eq!(
        app.db
            .scalar("SELECT count(*) FROM auth_failures")
            .await
            .as_deref(),
        Some("0")
    );
    // The edges that are allowed.
    for good in ["abc", &"z".repeat(32), "a.b_c-9", "Bob.Smith"] {
        let s = c.ok("auth_start", json!({ "username": good })).await;
        assert_eq!(s["status"], "candidate", "{good}: {s}");
        assert!(s["otpauth_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("otpauth://totp/Marquee:{}?", good.to_lowercase())));
    }
}

#[tokio::test]
async fn malformed_codes_are_bad_requests_and_not_counted() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    let (_, secret) = start_candidate(&mut c, "dora").await;
    // Six malformed attempts: counted, they would rate-limit the right code.
    for bad in [
        json!("12345"),
        json!("1234567"),
        json!("12a456"),
        json!(" 12345"),
        json!(123456),
        json!(null),
    ] {
        fails_with(
            &mut c,
            "auth_verify",
            json!({"username": "dora", "code": bad}),
            "BAD_REQUEST",
        )
        .await;
    }
    fails_with(
        &mut c,
        "auth_verify",
        json!({"username": "dora"}),
        "BAD_REQUEST",
    )
    .await;
    assert_eq!(failures(&app.db, "dora").await, 0);
    let v = verify(&mut c, "dora", &totp_code(&secret, 0)).await;
    assert!(v.get("error").is_none(), "{v}");
}

#[tokio::test]
async fn totp_secret_is_encrypted_at_rest() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    let (_, secret) = register_full(&mut c, "erin").await;
    let raw = totp_rs::Secret::try_from_base32(&secret)
        .expect("base32")
        .as_bytes()
        .to_vec();
    let pg = app.db.psql().await;
    let stored: Vec<u8> = pg
        .query_one("SELECT totp_secret FROM users WHERE username = 'erin'", &[])
        .await
        .expect("user row")
        .get(0);
    // AES-256-GCM: a 12-byte nonce, the ciphertext, a 16-byte tag.
    assert_eq!(
        stored.len(),
        12 + raw.len() + 16,
        "{}",
        hex::encode(&stored)
    );
    assert!(
        !stored.windows(raw.len()).any(|w| w == raw.as_slice()),
        "the raw secret is stored in clear"
    );
    assert!(
        !stored.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the base32 secret is stored in clear"
    );
    // Two users with the same secret would still differ (a fresh nonce).
    let again: bool = pg
        .query_one(
            "SELECT count(DISTINCT substr(totp_secret, 1, 12)) = count(*) FROM users",
            &[],
        )
        .await
        .expect("query")
        .get(0);
    assert!(again);
}

// ---------------------------------------------------------------------------
// Verify, tokens, login
// ---------------------------------------------------------------------------

#[tokio::test]
async fn verify_answers_a_signed_token_that_logs_in() {
    let app = TestApp::spawn().await;
    let mut anon = app.client().await;
    let (v, _) = register_full(&mut anon, "frank").await;

    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 3, "token, user, expires_at: {v}");
    let user = v["user"].clone();
    assert_eq!(user["username"], "frank");
    let id = user["id"].as_str().expect("the user id is a string");
    assert_eq!(user.as_object().unwrap().len(), 2, "{user}");
    let db_id = app
        .db
        .scalar("SELECT id::text FROM users WHERE username = 'frank'")
        .await;
    assert_eq!(db_id.as_deref(), Some(id));

    // HS256, with the claims of the contract.
    let token = v["token"].as_str().expect("token");
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(jwt_part(token, 0)["alg"], "HS256");
    let claims = jwt_part(token, 1);
    let mut names: Vec<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    names.sort();
    assert_eq!(names, ["exp", "iat", "jti", "sub", "username"]);
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["username"], "frank");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!((iat - unix_now()).abs() <= 5, "iat is now: {iat}");
    assert_eq!(exp - iat, 604_800, "TOKEN_TTL defaults to 7 days");
    let jti = claims["jti"].as_str().expect("jti");
    let live = app
        .db
        .scalar(&format!(
            "SELECT count(*) FROM sessions WHERE id = '{jti}' AND user_id = {id} AND revoked_at IS NULL"
        ))
        .await;
    assert_eq!(live.as_deref(), Some("1"), "jti names a live session row");
    // The token really is signed with the server's key.
    let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    val.set_required_spec_claims(&["exp"]);
    jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &val,
    )
    .expect("the signature checks with JWT_SECRET");
    // expires_at is the token's exp.
    let expires =
        chrono::DateTime::parse_from_rfc3339(v["expires_at"].as_str().unwrap()).expect("RFC 3339");
    assert!(v["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!((expires.timestamp() - exp).abs() <= 1, "{v} vs exp {exp}");

    // Cookie and Bearer both log a connection in.
    for cookie in [true, false] {
        let mut c = with_token(&app.server, token, cookie).await;
        assert_eq!(c.session["data"]["user"], user, "{}", c.session);
        assert_eq!(c.ok("me", json!({})).await, json!({ "user": user }));
    }
    // Anonymous `me`.
    fails_with(&mut anon, "me", json!({}), "UNAUTHORIZED").await;
    let mut fresh = app.client().await;
    assert!(anonymous(&fresh));
    fails_with(&mut fresh, "me", json!({}), "UNAUTHORIZED").await;
}

#[tokio::test]
async fn login_of_an_existing_user_and_replay_across_replicas() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let mut reg = app.client().await;
    let (_, secret) = start_candidate(&mut reg, "gina").await;
    let reg_code = totp_code(&secret, 0);
    let v = reg
        .ok("auth_verify", json!({"username": "gina", "code": reg_code}))
        .await;
    let id = v["user"]["id"].clone();

    let mut a1 = app.client().await;
    assert_eq!(
        a1.ok("auth_start", json!({"username": "gina"})).await,
        json!({"status": "user"})
    );
    // The registration code cannot log in again, on either replica.
    verify_fails(&mut a1, "gina", &reg_code, "INVALID_CODE").await;
    let mut b1 = Client::connect(&b).await;
    verify_fails(&mut b1, "gina", &reg_code, "INVALID_CODE").await;

    // A fresh code (the next step, inside the skew) logs in on A…
    let fresh = totp_code(&secret, 1);
    let login = a1
        .ok("auth_verify", json!({"username": "Gina", "code": fresh}))
        .await;
    assert_eq!(login["user"]["id"], id);
    assert_eq!(login["user"]["username"], "gina");
    assert_ne!(login["token"], v["token"], "a new session");
    // …and is refused on B.
    verify_fails(&mut b1, "gina", &fresh, "INVALID_CODE").await;
    // A wrong code is refused too.
    verify_fails(&mut b1, "gina", &wrong_code(&secret), "INVALID_CODE").await;
    // The login token works on the other replica.
    let c = with_token(&b, login["token"].as_str().unwrap(), false).await;
    assert_eq!(c.session["data"]["user"]["id"], id);
}

/// Waits until `n` backends of this database wait for a lock.
async fn lock_waiters(db: &TestDb, n: i64) {
    let pg = db.psql().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let waiting: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()
                    AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{waiting} of {n} lock waiters");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_code_verified_at_once_on_two_replicas_wins_once() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    for round in 0..3 {
        let name = format!("hank{round}");
        let mut reg = app.client().await;
        let (_, secret) = register_full(&mut reg, &name).await;
        let mut ca = app.client().await;
        let mut cb = Client::connect(&b).await;
        let code = totp_code(&secret, 1);
        let (ra, rb) = if round == 0 {
            // Force the overlap: a DBA's transaction holds the user row
            // until both replicas are inside their SQL call, waiting.
            let pg = app.db.psql().await;
            pg.batch_execute(&format!(
                "BEGIN; SELECT 1 FROM users WHERE username = '{name}' FOR UPDATE"
            ))
            .await
            .expect("lock the user row");
            let (ra, rb, ()) = tokio::join!(
                verify(&mut ca, &name, &code),
                verify(&mut cb, &name, &code),
                async {
                    lock_waiters(&app.db, 2).await;
                    pg.batch_execute("COMMIT").await.expect("release");
                }
            );
            (ra, rb)
        } else {
            tokio::join!(verify(&mut ca, &name, &code), verify(&mut cb, &name, &code))
        };
        let oks = [&ra, &rb]
            .iter()
            .filter(|r| r.get("error").is_none())
            .count();
        assert_eq!(oks, 1, "round {round}: exactly one succeeds: {ra} / {rb}");
        let refused = if ra.get("error").is_some() { &ra } else { &rb };
        assert_eq!(refused["error"], "INVALID_CODE", "{refused}");
        let sessions = app
            .db
            .scalar(&format!(
                "SELECT count(*) FROM sessions s JOIN users u ON u.id = s.user_id WHERE u.username = '{name}'"
            ))
            .await;
        assert_eq!(sessions.as_deref(), Some("2"), "registration + one login");
    }
}

#[tokio::test]
async fn skew_is_one_step_either_way() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    let (_, secret) = start_candidate(&mut c, "ivan").await;
    away_from_step_edge(3).await;
    // Two steps ahead is outside the window.
    verify_fails(&mut c, "ivan", &totp_code(&secret, 2), "INVALID_CODE").await;
    verify_fails(&mut c, "ivan", &totp_code(&secret, -2), "INVALID_CODE").await;
    // One step behind registers (last step = now - 1)…
    let r = verify(&mut c, "ivan", &totp_code(&secret, -1)).await;
    assert!(r.get("error").is_none(), "{r}");
    // …so the current code, a later step, logs in.
    let r = verify(&mut c, "ivan", &totp_code(&secret, 0)).await;
    assert!(r.get("error").is_none(), "{r}");
}

// ---------------------------------------------------------------------------
// Rate limit
// ---------------------------------------------------------------------------

#[tokio::test]
async fn five_failures_rate_limit_every_replica_until_the_window_passes() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let mut reg = app.client().await;
    let (_, secret) = register_full(&mut reg, "jack").await;
    let mut a = app.client().await;
    let wrong = wrong_code(&secret);
    for i in 1..=5 {
        verify_fails(&mut a, "jack", &wrong, "INVALID_CODE").await;
        assert_eq!(failures(&app.db, "jack").await, i);
    }
    // The 6th, even with the right code, is rate limited.
    let r = verify_fails(&mut a, "jack", &totp_code(&secret, 1), "RATE_LIMITED").await;
    let retry = r["data"]["retry_after_s"].as_u64().expect("an integer");
    assert!((880..=900).contains(&retry), "{r}");
    assert!(r["data"]["message"].is_string());
    // Counted in SQL: the other replica agrees.
    let mut cb = Client::connect(&b).await;
    let r = verify_fails(&mut cb, "JACK", &totp_code(&secret, 1), "RATE_LIMITED").await;
    assert!(r["data"]["retry_after_s"].as_u64().unwrap() > 0);
    // Rate-limited attempts do not extend the lock-out.
    assert_eq!(failures(&app.db, "jack").await, 5);

    // 15 minutes later (moved in SQL, not slept) the right code works…
    let pg = app.db.psql().await;
    pg.execute(
        "UPDATE auth_failures SET failed_at = failed_at - interval '15 minutes'",
        &[],
    )
    .await
    .expect("age the failures");
    let ok = verify(&mut cb, "jack", &totp_code(&secret, 1)).await;
    assert!(ok.get("error").is_none(), "{ok}");
    // …and clears the count.
    assert_eq!(failures(&app.db, "jack").await, 0);
}

#[tokio::test]
async fn fourteen_minutes_is_not_enough() {
    // The window is sliding: failures 14 minutes old still count.
    let app = TestApp::spawn().await;
    let mut reg = app.client().await;
    let (_, secret) = register_full(&mut reg, "kate").await;
    let mut c = app.client().await;
    for _ in 0..5 {
        verify_fails(&mut c, "kate", &wrong_code(&secret), "INVALID_CODE").await;
    }
    app.db
        .psql()
        .await
        .execute(
            "UPDATE auth_failures SET failed_at = failed_at - interval '14 minutes'",
            &[],
        )
        .await
        .expect("age");
    let r = verify_fails(&mut c, "kate", &totp_code(&secret, 1), "RATE_LIMITED").await;
    let retry = r["data"]["retry_after_s"].as_u64().unwrap();
    assert!((40..=60).contains(&retry), "about a minute left: {r}");
}

#[tokio::test]
async fn a_success_clears_the_failure_count() {
    let app = TestApp::spawn().await;
    let mut reg = app.client().await;
    let (_, secret) = register_full(&mut reg, "liam").await;
    let mut c = app.client().await;
    let wrong = wrong_code(&secret);
    for _ in 0..4 {
        verify_fails(&mut c, "liam", &wrong, "INVALID_CODE").await;
    }
    let ok = verify(&mut c, "liam", &totp_code(&secret, 1)).await;
    assert!(ok.get("error").is_none(), "{ok}");
    assert_eq!(failures(&app.db, "liam").await, 0);
    // Had the 4 stayed, the 2nd of these would be the 6th attempt.
    for _ in 0..2 {
        verify_fails(&mut c, "liam", &wrong, "INVALID_CODE").await;
    }
}

#[tokio::test]
async fn a_name_without_user_or_candidate_here_is_an_invalid_code_that_counts() {
    let app = TestApp::spawn().await;
    let mut owner = app.client().await;
    // A candidate on another connection does not count for this one.
    let (_, secret) = start_candidate(&mut owner, "mona").await;
    let mut c = app.client().await;
    verify_fails(&mut c, "mona", &totp_code(&secret, 0), "INVALID_CODE").await;
    assert_eq!(failures(&app.db, "mona").await, 1);
    assert_eq!(
        app.db.scalar("SELECT count(*) FROM users").await.as_deref(),
        Some("0")
    );
    // Unknown names: 5 failures, then rate limited.
    for i in 1..=5 {
        verify_fails(&mut c, "nobody", "123456", "INVALID_CODE").await;
        assert_eq!(failures(&app.db, "nobody").await, i);
    }
    verify_fails(&mut c, "nobody", "123456", "RATE_LIMITED").await;
    // The candidate's own connection still registers.
    let r = verify(&mut owner, "mona", &totp_code(&secret, 0)).await;
    assert!(r.get("error").is_none(), "{r}");
}

// ---------------------------------------------------------------------------
// Candidate race
// ---------------------------------------------------------------------------

#[tokio::test]
async fn two_candidates_for_one_name_the_first_to_verify_wins() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let mut c1 = app.client().await;
    let mut c2 = Client::connect(&b).await;
    let (_, s1) = start_candidate(&mut c1, "nina").await;
    let (_, s2) = start_candidate(&mut c2, "nina").await;
    assert_ne!(s1, s2);
    let won = c2
        .ok(
            "auth_verify",
            json!({"username": "nina", "code": totp_code(&s2, 0)}),
        )
        .await;
    assert_eq!(won["user"]["username"], "nina");
    verify_fails(&mut c1, "nina", &totp_code(&s1, 0), "USERNAME_TAKEN").await;
    assert_eq!(
        failures(&app.db, "nina").await,
        0,
        "losing a race is no failure"
    );
    assert_eq!(
        c1.ok("auth_start", json!({"username": "nina"})).await,
        json!({"status": "user"})
    );
    // The winner's secret is the user's: the loser's codes do not log in.
    verify_fails(&mut c1, "nina", &totp_code(&s1, 1), "INVALID_CODE").await;
    let r = verify(&mut c1, "nina", &totp_code(&s2, 1)).await;
    assert_eq!(r["data"]["user"]["id"], won["user"]["id"], "{r}");
}

// ---------------------------------------------------------------------------
// Tokens at connect, logout, revocation, expiry
// ---------------------------------------------------------------------------

/// A server and olga's real token, which connects as olga (so each
/// variant of it in the tests below differs in one thing); (app, an
/// anonymous client, the token).
async fn olga_token() -> (TestApp, Client, String) {
    let app = TestApp::spawn().await;
    let mut anon = app.client().await;
    let (v, _) = register_full(&mut anon, "olga").await;
    let token = v["token"].as_str().unwrap().to_owned();
    assert!(!anonymous(&with_token(&app.server, &token, true).await));
    (app, anon, token)
}

#[tokio::test]
async fn bad_and_expired_tokens_connect_anonymously() {
    let (app, _, token) = olga_token().await;
    let claims = jwt_part(&token, 1);
    let now = unix_now();
    let mut expired = claims.clone();
    expired["iat"] = json!(now - 120);
    expired["exp"] = json!(now - 60);
    let mut other_user = claims.clone();
    other_user["sub"] = json!("999999");
    let forged = sign(&claims, b"another-secret-another-secret-another-0");
    let mut tampered_parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut tampered_claims = claims.clone();
    tampered_claims["username"] = json!("root");
    tampered_parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&tampered_claims).unwrap());
    let tampered = tampered_parts.join(".");
    let none_alg = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        token.split('.').nth(1).unwrap()
    );
    let cases = [
        ("garbage", "not-a-jwt".to_owned()),
        ("wrong signature", forged),
        ("tampered claims", tampered),
        ("alg none", none_alg),
        ("expired", sign(&expired, JWT_SECRET.as_bytes())),
        (
            "sub of another user",
            sign(&other_user, JWT_SECRET.as_bytes()),
        ),
    ];
    for (what, t) in &cases {
        for cookie in [true, false] {
            let c = with_token(&app.server, t, cookie).await;
            assert!(anonymous(&c), "{what} (cookie {cookie}): {}", c.session);
        }
    }
}

#[tokio::test]
async fn a_revoked_token_connects_anonymously() {
    let (app, mut anon, token) = olga_token().await;
    // Revoked: logout, then the token is refused at connect.
    let mut c = with_token(&app.server, &token, false).await;
    assert_eq!(c.ok("logout", json!({})).await, json!({}));
    for cookie in [true, false] {
        let c = with_token(&app.server, &token, cookie).await;
        assert!(anonymous(&c), "revoked (cookie {cookie}): {}", c.session);
    }
    // logout while anonymous is fine too.
    assert_eq!(anon.ok("logout", json!({})).await, json!({}));
}

/// Reads frames until a `session` push and a `hall_snapshot` arrived;
/// returns them in arrival order.
async fn session_then_snapshot(c: &mut Client) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = c.next_frame().await.expect("connection open");
        if f["type"] == "session" || f["type"] == "hall_snapshot" {
            got.push(f);
        }
    }
    got
}

fn mine_count(snapshot: &Value) -> usize {
    snapshot["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .filter(|s| s.get("mine").is_some())
        .count()
}

#[tokio::test]
async fn logout_revokes_the_token_on_every_connection_and_replica() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let (screening, seats) = screening(&app.db, 2, 3, Duration::from_secs(3600)).await;
    let (mut c1, token, id) = logged_in(&app.server, "paul").await;
    let mut c2 = with_token(&app.server, &token, true).await;
    let mut c3 = with_token(&b, &token, false).await;
    // Another user's session is not touched.
    let (mut other, _, _) = logged_in(&b, "quinn").await;
    assert_eq!(c3.session["data"]["user"]["id"], id.as_str());

    c2.hold(&screening, &[&seats[0]]).await.data();
    for c in [&mut c2, &mut c3] {
        let snap = c.subscribe(&screening).await.data();
        assert_eq!(mine_count(&snap), 1, "{snap}");
    }

    let t0 = Instant::now();
    assert_eq!(c1.ok("logout", json!({})).await, json!({}));
    // The connection that logged out is anonymous and told so.
    let s = c1.push("session").await;
    assert!(s["data"]["user"].is_null(), "{s}");
    assert!(s["eid"].is_null(), "{s}");
    fails_with(&mut c1, "me", json!({}), "UNAUTHORIZED").await;
    // Every other connection of the token, on both replicas: a session
    // push, then a snapshot without `mine`.
    for c in [&mut c2, &mut c3] {
        let frames = session_then_snapshot(c).await;
        assert_eq!(frames[0]["type"], "session", "session first: {frames:?}");
        assert!(frames[0]["data"]["user"].is_null(), "{}", frames[0]);
        let snap = &frames[1]["data"];
        assert_eq!(snap["screening_id"], screening.as_str());
        assert_eq!(mine_count(snap), 0, "no `mine` left: {snap}");
        let seat0 = snap["seats"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == seats[0].as_str())
            .expect("the held seat");
        assert_eq!(seat0["status"], "held", "the hold itself stays");
        fails_with(c, "me", json!({}), "UNAUTHORIZED").await;
        fails_with(
            c,
            "hold_seats",
            json!({"screening_id": screening, "seat_ids": [seats[1]]}),
            "UNAUTHORIZED",
        )
        .await;
    }
    // Pushed through NOTIFY, not found by the 30 s backstop.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    other.no_push("session", Duration::from_millis(300)).await;
    assert_eq!(other.ok("me", json!({})).await["user"]["username"], "quinn");
    // Revoked everywhere at connect.
    assert!(anonymous(&with_token(&b, &token, true).await));
}

#[tokio::test]
async fn a_token_expiring_on_an_open_socket_ends_its_session() {
    let db = TestDb::new().await;
    let mut cfg = config(&db);
    cfg.token_ttl = Duration::from_secs(4);
    let server = start(&db, cfg, Tuning::default()).await;
    let (screening, seats) = screening(&db, 1, 2, Duration::from_secs(3600)).await;
    let mut anon = Client::connect(&server).await;
    let (v, _) = register_full(&mut anon, "rita").await;
    let token = v["token"].as_str().unwrap().to_owned();
    let claims = jwt_part(&token, 1);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        4
    );
    let mut c = with_token(&server, &token, false).await;
    assert_eq!(c.session["data"]["user"]["username"], "rita");
    c.hold(&screening, &[&seats[0]]).await.data();
    let snap = c.subscribe(&screening).await.data();
    assert_eq!(mine_count(&snap), 1);
    let frames = session_then_snapshot(&mut c).await;
    assert_eq!(frames[0]["type"], "session");
    assert!(frames[0]["data"]["user"].is_null(), "{}", frames[0]);
    assert_eq!(mine_count(&frames[1]["data"]), 0);
    assert!(
        unix_now() >= claims["exp"].as_i64().unwrap(),
        "not before the token expired"
    );
    fails_with(&mut c, "me", json!({}), "UNAUTHORIZED").await;
    // And the expired token no longer logs in.
    assert!(anonymous(&with_token(&server, &token, true).await));
}

// ---------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_foreign_origin_is_refused_at_the_upgrade() {
    let app = TestApp::spawn().await;
    let (_, token, _) = logged_in(&app.server, "sam").await;
    let port = app.server.http_addr.port();
    for foreign in [
        "https://evil.example".to_owned(),
        "null".to_owned(),
        format!("http://127.0.0.1:{}", port + 1),
        format!("http://evil.127.0.0.1:{port}"),
    ] {
        let err = raw_connect(
            &app.server,
            Connect {
                token_cookie: Some(token.clone()),
                origin: Some(foreign.clone()),
                ..Default::default()
            },
        )
        .await
        .expect_err("a foreign origin is refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                assert_eq!(r.status().as_u16(), 403, "{foreign}")
            }
            e => panic!("{foreign}: expected HTTP 403, got {e}"),
        }
    }
    // The server's own origins, and no Origin at all (non-browser clients).
    for own in [
        Some(format!("http://127.0.0.1:{port}")),
        Some(format!("http://localhost:{port}")),
        None,
    ] {
        let c = Client::connect_with(
            &app.server,
            Connect {
                token_cookie: Some(token.clone()),
                origin: own.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{own:?} is allowed: {e}"));
        assert_eq!(c.session["data"]["user"]["username"], "sam");
    }
}

// ---------------------------------------------------------------------------
// The SQL rules, called directly like a DBA would
// ---------------------------------------------------------------------------

type Outcome = (String, Option<i32>, Option<i64>);

async fn sql_login(pg: &tokio_postgres::Client, name: &str, step: Option<i64>) -> Outcome {
    let r = pg
        .query_one(
            "SELECT outcome, retry_after_s, user_id FROM api.auth_login($1, $2, 3600)",
            &[&name, &step],
        )
        .await
        .expect("auth_login");
    (r.get(0), r.get(1), r.get(2))
}

async fn sql_register(
    pg: &tokio_postgres::Client,
    name: &str,
    secret: Option<&[u8]>,
    step: Option<i64>,
) -> Outcome {
    let r = pg
        .query_one(
            "SELECT outcome, retry_after_s, user_id FROM api.auth_register($1, $2, $3, 3600)",
            &[&name, &secret, &step],
        )
        .await
        .expect("auth_register");
    (r.get(0), r.get(1), r.get(2))
}

/// A database with `sqlbob` registered at step 1000 through the SQL API;
/// (database, connection, user id).
async fn sqlbob() -> (TestDb, tokio_postgres::Client, i64) {
    let db = TestDb::new().await;
    let pg = db.psql().await;
    let (o, _, uid) = sql_register(&pg, "sqlbob", Some(b"\x01\x02"), Some(1000)).await;
    assert_eq!(o, "ok");
    (db, pg, uid.expect("a user id"))
}

#[tokio::test]
async fn sql_login_refuses_replayed_steps_and_counts_them() {
    let (db, pg, uid) = sqlbob().await;
    // The registration step is the last accepted one.
    let last: i64 = pg
        .query_one("SELECT last_step FROM users WHERE id = $1", &[&uid])
        .await
        .unwrap()
        .get(0);
    assert_eq!(last, 1000);
    for step in [Some(1000), Some(999), None] {
        assert_eq!(
            sql_login(&pg, "sqlbob", step).await.0,
            "invalid",
            "{step:?}"
        );
    }
    assert_eq!(
        failures(&db, "sqlbob").await,
        3,
        "replays count as failures"
    );
    let (o, _, id) = sql_login(&pg, "SQLBob", Some(1001)).await;
    assert_eq!((o.as_str(), id), ("ok", Some(uid)));
    assert_eq!(failures(&db, "sqlbob").await, 0);
    assert_eq!(sql_login(&pg, "sqlbob", Some(1001)).await.0, "invalid");
    assert_eq!(sql_login(&pg, "sqlbob", Some(1002)).await.0, "ok");
}

#[tokio::test]
async fn sql_register_of_a_taken_name_is_taken_and_not_counted() {
    let (db, pg, _) = sqlbob().await;
    // A second candidate for a registered name: taken, not a failure.
    let before = failures(&db, "sqlbob").await;
    assert_eq!(
        sql_register(&pg, "sqlbob", Some(b"\x03"), Some(5000))
            .await
            .0,
        "taken"
    );
    assert_eq!(failures(&db, "sqlbob").await, before);
}

#[tokio::test]
async fn sql_registration_without_candidate_or_step_and_unknown_users_are_counted() {
    let db = TestDb::new().await;
    let pg = db.psql().await;
    // No candidate (null secret) or no matching step: invalid, counted.
    assert_eq!(
        sql_register(&pg, "sqlcat", None, Some(1)).await.0,
        "invalid"
    );
    assert_eq!(
        sql_register(&pg, "sqlcat", Some(b"\x04"), None).await.0,
        "invalid"
    );
    assert_eq!(failures(&db, "sqlcat").await, 2);
    // Unknown users: invalid, counted.
    assert_eq!(sql_login(&pg, "sqlnone", Some(1)).await.0, "invalid");
    assert_eq!(failures(&db, "sqlnone").await, 1);
}

#[tokio::test]
async fn sql_bad_names_are_bad_request_before_anything_is_recorded() {
    let db = TestDb::new().await;
    let pg = db.psql().await;
    // Bad names are BAD_REQUEST (MQ400) before anything is recorded.
    for bad in ["ab", "al ice", "ålice"] {
        let e = pg
            .query_one("SELECT outcome FROM api.auth_login($1, 1, 3600)", &[&bad])
            .await
            .expect_err("refused");
        assert_eq!(e.code().map(|c| c.code()), Some("MQ400"), "{bad}: {e}");
    }

    assert_eq!(
        db.scalar("SELECT count(*) FROM auth_failures")
            .await
            .as_deref(),
        Some("0")
    );
}

#[tokio::test]
async fn sql_sessions_revoke_live_check_and_dead_list() {
    let (_db, pg, _) = sqlbob().await;
    // Sessions: revoke, live check, dead list.
    let s: uuid::Uuid = pg
        .query_one(
            "SELECT session_id FROM api.auth_login('sqlbob', 1003, 3600)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let live = pg
        .query("SELECT * FROM api.session_user($1)", &[&s])
        .await
        .unwrap();
    assert_eq!(live.len(), 1);
    let revoked: bool = pg
        .query_one("SELECT api.revoke_session($1)", &[&s])
        .await
        .unwrap()
        .get(0);
    assert!(revoked);
    let again: bool = pg
        .query_one("SELECT api.revoke_session($1)", &[&s])
        .await
        .unwrap()
        .get(0);
    assert!(!again, "revoking twice changes nothing");
    assert!(pg
        .query("SELECT * FROM api.session_user($1)", &[&s])
        .await
        .unwrap()
        .is_empty());
    let dead: Vec<uuid::Uuid> = pg
        .query("SELECT * FROM api.dead_sessions($1)", &[&vec![s]])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(dead, vec![s]);
}

#[tokio::test]
async fn sql_attempt_counting_and_the_sliding_window() {
    let db = TestDb::new().await;
    let pg = db.psql().await;
    assert_eq!(
        sql_register(&pg, "sqldan", Some(b"\x05"), Some(10)).await.0,
        "ok"
    );
    for i in 1..=5 {
        assert_eq!(sql_login(&pg, "sqldan", None).await.0, "invalid", "#{i}");
    }
    // The 6th, with a right step, is rate limited for ~15 minutes.
    let (o, retry, _) = sql_login(&pg, "sqldan", Some(11)).await;
    assert_eq!(o, "rate_limited");
    let retry = retry.expect("retry_after_s");
    assert!((895..=900).contains(&retry), "{retry}");
    assert_eq!(
        sql_register(&pg, "sqldan", Some(b"\x06"), Some(11)).await.0,
        "rate_limited",
        "registration attempts share the count"
    );
    assert_eq!(failures(&db, "sqldan").await, 5, "not recorded");

    // Until the oldest of the 5 is 15 minutes old.
    pg.batch_execute(
        "UPDATE auth_failures SET failed_at = now() - interval '10 minutes' WHERE username = 'sqldan'",
    )
    .await
    .unwrap();
    let (o, retry, _) = sql_login(&pg, "sqldan", Some(11)).await;
    assert_eq!(o, "rate_limited");
    assert!((295..=300).contains(&retry.unwrap()), "{retry:?}");
    // A 6th failure from 14 minutes ago changes nothing: the 5 newest decide.
    pg.batch_execute(
        "INSERT INTO auth_failures (username, failed_at) VALUES ('sqldan', now() - interval '14 minutes')",
    )
    .await
    .unwrap();
    let (_, retry, _) = sql_login(&pg, "sqldan", Some(11)).await;
    assert!((295..=300).contains(&retry.unwrap()), "{retry:?}");
    // Failures 15 minutes old no longer count: 4 recent ones allow an attempt.
    pg.batch_execute(
        "UPDATE auth_failures SET failed_at = now() - interval '15 minutes'
          WHERE id IN (SELECT id FROM auth_failures WHERE username = 'sqldan'
                        ORDER BY failed_at DESC, id LIMIT 2)",
    )
    .await
    .unwrap();
    let (o, _, _) = sql_login(&pg, "sqldan", Some(11)).await;
    assert_eq!(o, "ok");
    assert_eq!(
        failures(&db, "sqldan").await,
        0,
        "a success clears the count"
    );
    // Other names are counted apart.
    for _ in 0..5 {
        sql_login(&pg, "sqlzed", None).await;
    }
    assert_eq!(sql_login(&pg, "sqlzed", None).await.0, "rate_limited");
    assert_eq!(sql_login(&pg, "sqldan", Some(12)).await.0, "ok");
}

// ---------------------------------------------------------------------------
// Abuse limits (version 1.1): registrations per address, wrong codes per
// name and address, per name, per address. The server trusts 127.0.0.1 as
// a proxy, so each test client names its own address in X-Forwarded-For.
// ---------------------------------------------------------------------------

/// A server on a fresh database that believes X-Forwarded-For from 127.0.0.1.
async fn behind_proxy() -> (marquee::app::Server, TestDb) {
    let db = TestDb::new().await;
    let mut config = config(&db);
    config.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    let server = start(&db, config, Tuning::default()).await;
    (server, db)
}

/// A client whose X-Forwarded-For is `xff`.
async fn from(server: &marquee::app::Server, xff: &str) -> Client {
    Client::connect_with(
        server,
        Connect {
            forwarded_for: Some(xff.to_owned()),
            ..Default::default()
        },
    )
    .await
    .expect("connect")
}

async fn admin(db: &TestDb, sql: &str) {
    db.psql().await.batch_execute(sql).await.expect(sql);
}

#[tokio::test]
async fn registrations_are_limited_per_client_address() {
    let (server, db) = behind_proxy().await;
    admin(&db, "SELECT admin.set_registration_limit(2)").await;
    let mut a = from(&server, "198.51.100.1").await;
    register_full(&mut a, "reg_one").await;
    register_full(&mut a, "reg_two").await;
    assert_eq!(
        db.scalar("SELECT string_agg(host(address), ',') FROM registrations")
            .await
            .as_deref(),
        Some("198.51.100.1,198.51.100.1"),
        "registrations are recorded with the client address"
    );
    let r = fails_with(
        &mut a,
        "auth_start",
        json!({"username": "reg_three"}),
        "RATE_LIMITED",
    )
    .await;
    let retry = r["data"]["retry_after_s"].as_u64().expect("an integer");
    assert!((3590..=3600).contains(&retry), "{r}");
    // Existing names are still answered: logging in is not registering.
    let s = a.ok("auth_start", json!({"username": "reg_one"})).await;
    assert_eq!(s["status"], "user");
    // Another connection from the same address is limited too; a forged
    // entry left of the proxy's own does not help.
    let mut forged = from(&server, "192.0.2.50, 198.51.100.1").await;
    fails_with(
        &mut forged,
        "auth_start",
        json!({"username": "reg_three"}),
        "RATE_LIMITED",
    )
    .await;
    // Another address is not.
    let mut b = from(&server, "198.51.100.2").await;
    start_candidate(&mut b, "reg_three").await;

    // A server that trusts no proxy counts the TCP peer, whatever the header says.
    let direct = start(&db, crate::harness::config(&db), Tuning::default()).await;
    admin(&db, "SELECT admin.set_registration_limit(3)").await;
    let mut d = Client::connect_with(
        &direct,
        Connect {
            forwarded_for: Some("203.0.113.1".into()),
            ..Default::default()
        },
    )
    .await
    .expect("connect");
    register_full(&mut d, "direct_one").await;
    assert_eq!(
        db.scalar("SELECT host(address) FROM registrations ORDER BY id DESC LIMIT 1")
            .await
            .as_deref(),
        Some("127.0.0.1")
    );

    // 0 turns the limit off.
    admin(&db, "SELECT admin.set_registration_limit(0)").await;
    register_full(&mut a, "reg_four").await;
}

#[tokio::test]
async fn a_candidate_from_before_the_limit_cannot_register_past_it() {
    let (server, db) = behind_proxy().await;
    admin(&db, "SELECT admin.set_registration_limit(1)").await;
    let mut a = from(&server, "198.51.100.3").await;
    let (_, secret) = start_candidate(&mut a, "early_two").await;
    register_full(&mut a, "early_one").await;
    let r = verify(&mut a, "early_two", &totp_code(&secret, 0)).await;
    assert_eq!(r["error"], "RATE_LIMITED", "{r}");
    assert_eq!(
        db.scalar("SELECT count(*) FROM users WHERE username = 'early_two'")
            .await
            .as_deref(),
        Some("0")
    );
}

#[tokio::test]
async fn a_stranger_cannot_lock_the_owner_out_from_another_address() {
    let (server, db) = behind_proxy().await;
    let mut owner = from(&server, "203.0.113.1").await;
    let (_, secret) = register_full(&mut owner, "olga").await;
    let wrong = wrong_code(&secret);
    let mut stranger = from(&server, "203.0.113.66").await;
    for _ in 0..5 {
        verify_fails(&mut stranger, "olga", &wrong, "INVALID_CODE").await;
    }
    let r = verify_fails(
        &mut stranger,
        "olga",
        &totp_code(&secret, 1),
        "RATE_LIMITED",
    )
    .await;
    assert!(r["data"]["retry_after_s"].as_u64().unwrap_or(0) > 0, "{r}");
    // The owner, from her own address, logs in with her right code.
    let ok = verify(&mut owner, "olga", &totp_code(&secret, 1)).await;
    assert!(ok.get("error").is_none(), "{ok}");

    // Per name over all addresses: with per_name 8, three more failures
    // from a third address lock olga everywhere, her own address included.
    admin(&db, "SELECT admin.set_login_limits(5, 8, 50)").await;
    let mut third = from(&server, "203.0.113.67").await;
    for _ in 0..3 {
        verify_fails(&mut third, "olga", &wrong, "INVALID_CODE").await;
    }
    verify_fails(&mut owner, "olga", &totp_code(&secret, 1), "RATE_LIMITED").await;
}

#[tokio::test]
async fn an_address_guessing_many_names_is_locked_for_all_of_them() {
    let (server, db) = behind_proxy().await;
    admin(&db, "SELECT admin.set_login_limits(5, 20, 4)").await;
    let mut guesser = from(&server, "192.0.2.7").await;
    for i in 0..4 {
        verify_fails(&mut guesser, &format!("guess{i}"), "123456", "INVALID_CODE").await;
    }
    verify_fails(&mut guesser, "guess_new", "123456", "RATE_LIMITED").await;
    // Another address guessing the same names is not affected.
    let mut other = from(&server, "192.0.2.8").await;
    verify_fails(&mut other, "guess0", "123456", "INVALID_CODE").await;
}

#[tokio::test]
async fn strangers_cannot_lock_a_name_before_it_is_registered() {
    let (server, _db) = behind_proxy().await;
    for addr in [
        "192.0.2.20",
        "192.0.2.21",
        "192.0.2.22",
        "192.0.2.23",
        "192.0.2.24",
    ] {
        let mut s = from(&server, addr).await;
        for _ in 0..5 {
            verify_fails(&mut s, "pia", "123456", "INVALID_CODE").await;
        }
    }
    // 25 failures for "pia" from elsewhere: more than per_name (20), yet
    // the owner registers the name and then logs in.
    let mut owner = from(&server, "192.0.2.1").await;
    let (_, secret) = register_full(&mut owner, "pia").await;
    let ok = verify(&mut owner, "pia", &totp_code(&secret, 1)).await;
    assert!(ok.get("error").is_none(), "{ok}");
}
