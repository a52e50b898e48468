//! docs/protocol.md "Connecting" and "Frames", over real WebSockets: the
//! session frame, eid/ts echo, every bad-input rule (and that none of them
//! closes the socket), the 64 KiB limit, the rate limit, the upgrade's path
//! and Origin checks, pipelining, and the ranking of error codes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::harness::*;
use futures_util::{SinkExt, StreamExt};
use marquee::app::Tuning;
use marquee::shared::config::Config;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

/// Words that would show SQL or internals leaking into a message.
const LEAKS: &[&str] = &[
    "select ",
    "insert ",
    "update ",
    "sqlstate",
    "error:",
    "relation",
    "function",
    "api.",
    "internal.",
    "seat_states",
    "mq4",
    "panicked",
    "tokio_postgres",
];

/// An error frame with this code, a message for people and no internals.
#[track_caller]
fn assert_error(f: &Value, code: &str) {
    assert_eq!(f["error"], code, "expected {code}: {f}");
    let msg = f["data"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("error without data.message: {f}"));
    assert!(!msg.trim().is_empty(), "empty message: {f}");
    let lower = msg.to_ascii_lowercase();
    for leak in LEAKS {
        assert!(!lower.contains(leak), "message leaks `{leak}`: {f}");
    }
    assert!(f["ts"].is_i64(), "numeric ts on errors: {f}");
}

/// Sends raw text and returns the next frame.
async fn raw(c: &mut Client, text: &str) -> Value {
    c.send_text(text).await;
    c.next_frame().await.expect("an answer, not a close")
}

/// The connection still answers a ping.
async fn still_open(c: &mut Client) {
    let pong = c.request("ping", json!({})).await;
    assert_eq!(pong["type"], "ping", "{pong}");
    assert!(pong.get("error").is_none(), "{pong}");
}

/// The HTTP status of a refused upgrade.
fn refused_status(r: Result<impl Sized, WsError>) -> u16 {
    match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected the upgrade to be refused"),
    }
}

#[tokio::test]
async fn the_session_frame_has_the_contracts_shape() {
    let app = TestApp::spawn().await;
    let before = now_ms();
    let c = app.client().await;
    let s = &c.session;
    let keys: HashSet<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["type", "data", "eid", "ts"]), "{s}");
    assert_eq!(s["type"], "session");
    assert_eq!(s["eid"], Value::Null);
    let ts = s["ts"].as_i64().expect("numeric ts");
    assert!((before - 5_000..=now_ms() + 5_000).contains(&ts), "{s}");
    let data_keys: HashSet<&str> = s["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        data_keys,
        HashSet::from(["user", "server", "protocol", "features"]),
        "{s}"
    );
    assert_eq!(s["data"]["user"], Value::Null);
    assert_eq!(s["data"]["protocol"], 1);
    assert_eq!(
        s["data"]["features"],
        serde_json::json!(["box_office"]),
        "version 1.1 announces the box office"
    );
}

#[tokio::test]
async fn the_session_frame_names_the_replica_and_each_replica_differs() {
    let app = TestApp::spawn().await;
    let c = app.client().await;
    let server = c.session["data"]["server"]
        .as_str()
        .expect("server is a string");
    assert!(!server.is_empty());
    assert_eq!(server, app.server.replica_id);

    // A second connection to the same replica names the same server; a
    // second replica on the same host names another.
    let again = app.client().await;
    assert_eq!(again.session["data"]["server"], server);
    let replica = app.replica().await;
    let other = Client::connect(&replica).await;
    let other_id = other.session["data"]["server"].as_str().unwrap();
    assert!(!other_id.is_empty());
    assert_ne!(other_id, server, "two replicas must differ");
}

#[tokio::test]
async fn eid_is_echoed_unchanged_within_128_characters() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    let ascii128 = "e".repeat(128);
    let wide128 = "é".repeat(128); // 128 characters, 256 bytes
    for eid in [
        "p1",
        "x",
        "ü-🎬-日本語 \"quoted\" \\ back",
        " spaces around ",
        ascii128.as_str(),
        wide128.as_str(),
    ] {
        let f = raw(
            &mut c,
            &json!({"type": "ping", "data": {}, "eid": eid}).to_string(),
        )
        .await;
        assert!(f.get("error").is_none(), "{eid}: {f}");
        assert_eq!(f["eid"], eid, "eid echoed unchanged");
        assert_eq!(f["type"], "ping");
    }

    // Too long, empty or not a string: BAD_REQUEST with eid null, type echoed.
    let ascii129 = "e".repeat(129);
    let wide129 = "é".repeat(129);
    for eid in [
        json!(ascii129),
        json!(wide129),
        json!(""),
        json!(7),
        json!(null),
        json!(["a"]),
    ] {
        let f = raw(
            &mut c,
            &json!({"type": "ping", "data": {}, "eid": eid}).to_string(),
        )
        .await;
        assert_error(&f, "BAD_REQUEST");
        assert_eq!(f["eid"], Value::Null, "{f}");
        assert_eq!(f["type"], "ping", "{f}");
        still_open(&mut c).await;
    }
}

#[tokio::test]
async fn ts_is_the_server_clock_and_optional_in_requests() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    for ts in [json!(1), json!(1_732_400_000_000_i64), json!(1.5)] {
        let before = now_ms();
        let f = raw(
            &mut c,
            &json!({"type": "ping", "eid": "t", "ts": ts}).to_string(),
        )
        .await;
        assert!(f.get("error").is_none(), "a numeric ts is fine: {f}");
        let got = f["ts"].as_i64().expect("integer ts");
        assert!(
            (before - 3_000..=now_ms() + 3_000).contains(&got),
            "ts is the server's clock, not the client's {ts}: {f}"
        );
    }
    // Without ts.
    let f = raw(&mut c, r#"{"type":"ping","eid":"no-ts"}"#).await;
    assert!(f.get("error").is_none(), "{f}");
    // A ts that is not a number.
    for ts in [json!("1732400000000"), json!(null), json!({}), json!(true)] {
        let f = raw(
            &mut c,
            &json!({"type": "ping", "eid": "bad-ts", "ts": ts}).to_string(),
        )
        .await;
        assert_error(&f, "BAD_REQUEST");
        assert_eq!(f["eid"], "bad-ts");
        assert_eq!(f["type"], "ping");
        still_open(&mut c).await;
    }
}

#[tokio::test]
async fn ping_answers_exactly() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    // No data at all: data defaults to {}.
    let f = raw(&mut c, r#"{"type":"ping","eid":"p1"}"#).await;
    let keys: HashSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["type", "data", "eid", "ts"]), "{f}");
    assert_eq!(f["type"], "ping");
    assert_eq!(f["data"], json!({}));
    assert_eq!(f["eid"], "p1");
    assert!(f["ts"].is_i64());
    // Data given is ignored by ping.
    let f = raw(&mut c, r#"{"type":"ping","eid":"p2","data":{"x":1}}"#).await;
    assert_eq!(f["data"], json!({}), "{f}");
    // data defaults to {} for other methods too.
    let f = raw(&mut c, r#"{"type":"get_cinemas","eid":"g"}"#).await;
    assert_eq!(f["data"], json!({"cinemas": []}), "{f}");
}

#[tokio::test]
async fn bad_frames_answer_bad_request_and_keep_the_socket() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;

    // (frame, expected type, expected eid)
    let cases: Vec<(String, Value, Value)> = vec![
        ("not json".into(), json!("error"), Value::Null),
        ("{\"type\":\"ping\",".into(), json!("error"), Value::Null),
        ("".into(), json!("error"), Value::Null),
        ("[1,2,3]".into(), json!("error"), Value::Null),
        (
            r#"[{"type":"ping","eid":"a"}]"#.into(),
            json!("error"),
            Value::Null,
        ),
        ("42".into(), json!("error"), Value::Null),
        ("\"ping\"".into(), json!("error"), Value::Null),
        ("null".into(), json!("error"), Value::Null),
        // Missing eid: the type is echoed.
        (r#"{"type":"ping"}"#.into(), json!("ping"), Value::Null),
        (
            r#"{"type":"get_hall","data":{}}"#.into(),
            json!("get_hall"),
            Value::Null,
        ),
        // Missing or non-string type: "error", the eid is echoed.
        (r#"{"eid":"e1"}"#.into(), json!("error"), json!("e1")),
        (
            r#"{"type":5,"eid":"e2"}"#.into(),
            json!("error"),
            json!("e2"),
        ),
        (
            r#"{"type":null,"eid":"e3"}"#.into(),
            json!("error"),
            json!("e3"),
        ),
        (
            r#"{"type":"","eid":"e4"}"#.into(),
            json!("error"),
            json!("e4"),
        ),
        (
            r#"{"type":{},"eid":"e5"}"#.into(),
            json!("error"),
            json!("e5"),
        ),
        // Neither.
        (r#"{}"#.into(), json!("error"), Value::Null),
        // data not an object.
        (
            r#"{"type":"ping","eid":"d1","data":"x"}"#.into(),
            json!("ping"),
            json!("d1"),
        ),
        (
            r#"{"type":"ping","eid":"d2","data":[]}"#.into(),
            json!("ping"),
            json!("d2"),
        ),
        (
            r#"{"type":"ping","eid":"d3","data":null}"#.into(),
            json!("ping"),
            json!("d3"),
        ),
        (
            r#"{"type":"get_cinemas","eid":"d4","data":5}"#.into(),
            json!("get_cinemas"),
            json!("d4"),
        ),
    ];
    for (frame, kind, eid) in cases {
        let f = raw(&mut c, &frame).await;
        assert_error(&f, "BAD_REQUEST");
        assert_eq!(f["type"], kind, "type for {frame:?}: {f}");
        assert_eq!(f["eid"], eid, "eid for {frame:?}: {f}");
        still_open(&mut c).await;
    }

    // A binary frame, even holding a valid request.
    c.send_binary(br#"{"type":"ping","eid":"bin"}"#.to_vec())
        .await;
    let f = c.next_frame().await.expect("an answer to a binary frame");
    assert_error(&f, "BAD_REQUEST");
    assert_eq!(f["type"], "error");
    still_open(&mut c).await;
}

#[tokio::test]
async fn unknown_type_answers_unknown_method() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    for kind in ["pong", "PING", "get_everything", "session", "hall_update"] {
        let f = raw(
            &mut c,
            &json!({"type": kind, "eid": "u1", "data": {}}).to_string(),
        )
        .await;
        assert_error(&f, "UNKNOWN_METHOD");
        assert_eq!(f["type"], kind);
        assert_eq!(f["eid"], "u1");
        still_open(&mut c).await;
    }
    // A huge type name is answered, but the message does not echo all of it.
    let long = "x".repeat(5000);
    let f = raw(&mut c, &json!({"type": long, "eid": "u2"}).to_string()).await;
    assert_error(&f, "UNKNOWN_METHOD");
    assert!(f["data"]["message"].as_str().unwrap().len() < 1000, "{f}");
}

#[tokio::test]
async fn frame_of_exactly_64_kib_passes_and_one_byte_more_closes_1009() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    let frame_of = |size: usize, eid: &str| {
        let empty = json!({"type": "ping", "eid": eid, "data": {"pad": ""}}).to_string();
        let f =
            json!({"type": "ping", "eid": eid, "data": {"pad": "x".repeat(size - empty.len())}})
                .to_string();
        assert_eq!(f.len(), size);
        f
    };
    let f = raw(&mut c, &frame_of(65_536, "big")).await;
    assert!(f.get("error").is_none(), "65,536 bytes are allowed: {f}");
    assert_eq!(f["eid"], "big");
    assert_eq!(f["data"], json!({}));
    still_open(&mut c).await;

    // The same size as a multi-byte text: the limit counts bytes.
    let empty = json!({"type": "ping", "eid": "wide", "data": {"pad": ""}}).to_string();
    let pad = "é".repeat((65_536 - empty.len()) / 2);
    let wide = json!({"type": "ping", "eid": "wide", "data": {"pad": pad}}).to_string();
    assert!(wide.len() <= 65_536);
    let f = raw(&mut c, &wide).await;
    assert!(f.get("error").is_none(), "{f}");

    c.send_text(frame_of(65_537, "too-big")).await;
    assert_eq!(c.close_code().await, Some(1009));

    // A binary frame over the limit closes too.
    let mut c = app.client().await;
    c.send_binary(vec![b' '; 65_537]).await;
    assert_eq!(c.close_code().await, Some(1009));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn read_json(ws: &mut Ws) -> Value {
    let m = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("timed out waiting for a frame")
        .expect("connection open")
        .expect("a frame");
    match m {
        Message::Text(t) => serde_json::from_str(&t).expect("json"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn rate_limit_burst_50_then_rate_limited_then_refilled() {
    let app = TestApp::spawn().await;
    let mut ws = raw_connect(&app.server, Connect::default())
        .await
        .expect("connect");
    assert_eq!(read_json(&mut ws).await["type"], "session");

    // 60 frames in one write: 50 pings, then a ping, a bad frame and more
    // pings. The bucket refills one token per 20 ms, far slower than these
    // are handled; the checks allow for the refill a stalled machine sees.
    const SENT: usize = 60;
    let t0 = std::time::Instant::now();
    for i in 0..SENT {
        let text = if i == 51 {
            "not json".to_owned()
        } else {
            json!({"type": "ping", "eid": format!("r{i}")}).to_string()
        };
        ws.feed(Message::text(text)).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    let mut answers: HashMap<String, Value> = HashMap::new();
    for _ in 0..SENT {
        let f = read_json(&mut ws).await;
        let eid = f["eid"].as_str().unwrap_or("(null)").to_owned();
        assert!(answers.insert(eid, f).is_none(), "one answer per request");
    }
    let refilled = (t0.elapsed().as_millis() / 20) as usize;
    for i in 0..50 {
        let f = &answers[&format!("r{i}")];
        assert!(f.get("error").is_none(), "request {i} of the burst: {f}");
    }
    let limited: Vec<&Value> = answers
        .values()
        .filter(|f| f.get("error").is_some())
        .collect();
    assert!(
        limited.len() >= (SENT - 50).saturating_sub(refilled).max(1),
        "{} of {SENT} limited, {refilled} tokens refilled meanwhile",
        limited.len()
    );
    if refilled == 0 {
        // The 51st is refused, with the type and eid echoed.
        let f = &answers["r50"];
        assert_error(f, "RATE_LIMITED");
        assert_eq!(f["type"], "ping");
        // So is a bad frame: rate limiting comes first.
        let f = &answers["(null)"];
        assert_error(f, "RATE_LIMITED");
        assert_eq!(f["type"], "error");
    }
    let mut retry = 0;
    for f in &limited {
        assert_error(f, "RATE_LIMITED");
        let r = f["data"]["retry_after_s"]
            .as_u64()
            .unwrap_or_else(|| panic!("integer retry_after_s: {f}"));
        assert!(r >= 1, "{f}");
        retry = retry.max(r);
    }
    assert_eq!(retry, 1, "one token comes back within a second");

    // After retry_after_s, requests pass again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    for i in 0..10 {
        ws.send(Message::text(
            json!({"type": "ping", "eid": format!("after{i}")}).to_string(),
        ))
        .await
        .expect("send");
        let f = read_json(&mut ws).await;
        assert_eq!(f["eid"], format!("after{i}"));
        assert!(f.get("error").is_none(), "passes after the wait: {f}");
    }
}

#[tokio::test]
async fn pipelined_requests_each_get_exactly_one_answer() {
    let app = TestApp::spawn().await;
    let (screening, _) = screening(&app.db, 2, 3, Duration::from_secs(3600)).await;
    let mut c = app.client().await;
    let kinds = [
        json!({"type": "ping"}),
        json!({"type": "get_cinemas"}),
        json!({"type": "get_screenings", "data": {}}),
        json!({"type": "get_hall", "data": {"screening_id": screening}}),
        json!({"type": "get_hall", "data": {"screening_id": "nope"}}),
        json!({"type": "no_such_method"}),
        json!({"type": "me"}),
    ];
    let mut expected = HashSet::new();
    for i in 0..20 {
        let mut f = kinds[i % kinds.len()].clone();
        let eid = format!("pipe-{i}");
        f["eid"] = json!(eid);
        expected.insert(eid);
        c.send_text(f.to_string()).await;
    }
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let f = c.next_frame().await.expect("answer");
        let eid = f["eid"].as_str().expect("eid").to_owned();
        assert!(expected.contains(&eid), "unexpected answer {f}");
        assert!(seen.insert(eid), "answered twice: {f}");
        let i: usize = f["eid"].as_str().unwrap()[5..].parse().unwrap();
        assert_eq!(f["type"], kinds[i % kinds.len()]["type"], "{f}");
    }
    assert_eq!(seen, expected);
    // Nothing more: the next frame is the answer to a new ping.
    c.send_text(r#"{"type":"ping","eid":"last"}"#).await;
    let f = c.next_frame().await.expect("answer");
    assert_eq!(f["eid"], "last", "no extra answers: {f}");
}

#[tokio::test]
async fn websocket_paths_other_than_root_and_ws_are_404() {
    let app = TestApp::spawn().await;
    for path in ["/nope", "/ws/x", "/health", "/socket", "/wss"] {
        let r = raw_connect(
            &app.server,
            Connect {
                path: Some(path.into()),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(refused_status(r), 404, "{path}");
    }
    for path in ["/", "/ws"] {
        let mut c = Client::connect_with(
            &app.server,
            Connect {
                path: Some(path.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(c.session["type"], "session");
        still_open(&mut c).await;
    }
}

#[tokio::test]
async fn origin_is_checked_at_the_upgrade() {
    let app = TestApp::spawn().await;
    let port = app.server.http_addr.port();
    let with_origin = |o: &str| Connect {
        origin: Some(o.into()),
        ..Default::default()
    };
    for bad in [
        "http://evil.example".to_string(),
        "null".into(),
        format!("https://localhost:{port}"),
        format!("http://localhost:{}", port.wrapping_add(1)),
        format!("http://localhost.evil.example:{port}"),
    ] {
        let r = raw_connect(&app.server, with_origin(&bad)).await;
        assert_eq!(refused_status(r), 403, "{bad}");
    }
    for good in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let mut c = Client::connect_with(&app.server, with_origin(&good))
            .await
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        still_open(&mut c).await;
    }
    // No Origin (a non-browser client).
    let mut c = Client::connect_with(&app.server, Connect::default())
        .await
        .expect("no origin");
    still_open(&mut c).await;
}

#[tokio::test]
async fn allowed_origins_overrides_the_default() {
    let db = TestDb::new().await;
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", db.url.as_str()),
        ("JWT_SECRET", JWT_SECRET),
        ("DB_POOL_SIZE", "4"),
        (
            "ALLOWED_ORIGINS",
            "https://tickets.example/, http://localhost:8080",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_vars(&vars).expect("config");
    let server = start(&db, config, Tuning::default()).await;
    let port = server.http_addr.port();
    let with_origin = |o: &str| Connect {
        origin: Some(o.into()),
        ..Default::default()
    };
    for good in ["https://tickets.example", "http://localhost:8080"] {
        let mut c = Client::connect_with(&server, with_origin(good))
            .await
            .unwrap_or_else(|e| panic!("{good}: {e}"));
        still_open(&mut c).await;
    }
    // The default origins are no longer allowed.
    for bad in [
        format!("http://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
        "https://evil.example".into(),
    ] {
        let r = raw_connect(&server, with_origin(&bad)).await;
        assert_eq!(refused_status(r), 403, "{bad}");
    }
    let mut c = Client::connect(&server).await;
    still_open(&mut c).await;

    // And the variable is validated.
    let mut bad = vars.clone();
    bad.insert("ALLOWED_ORIGINS".into(), "not an origin".into());
    let e = Config::from_vars(&bad).expect_err("a bad origin is refused");
    assert_eq!(e.var, "ALLOWED_ORIGINS");
}

#[tokio::test]
async fn login_required_methods_answer_unauthorized_when_anonymous() {
    let app = TestApp::spawn().await;
    let (screening, seats) = screening(&app.db, 2, 3, Duration::from_secs(3600)).await;
    let mut c = app.client().await;
    let s = json!({"screening_id": screening, "seat_ids": [seats[0]]});
    for (kind, data) in [
        ("hold_seats", s.clone()),
        ("release_seats", s.clone()),
        ("book_seats", s.clone()),
        ("cancel_booking", json!({"booking_id": "1"})),
        ("get_bookings", json!({})),
        ("me", json!({})),
    ] {
        let f = c.request(kind, data).await;
        assert_error(&f, "UNAUTHORIZED");
        assert_eq!(f["type"], kind);
    }
    // UNAUTHORIZED ranks before NOT_FOUND.
    let f = c
        .request(
            "hold_seats",
            json!({"screening_id": "nope", "seat_ids": ["nope"]}),
        )
        .await;
    assert_error(&f, "UNAUTHORIZED");
    let f = c
        .request(
            "hold_seats",
            json!({"screening_id": "99999999", "seat_ids": ["1"]}),
        )
        .await;
    assert_error(&f, "UNAUTHORIZED");
    let f = c
        .request("cancel_booking", json!({"booking_id": "nope"}))
        .await;
    assert_error(&f, "UNAUTHORIZED");
    // BAD_REQUEST ranks before UNAUTHORIZED.
    for data in [
        json!({"screening_id": 5, "seat_ids": [seats[0]]}),
        json!({"screening_id": screening, "seat_ids": [1]}),
        json!({"screening_id": screening, "seat_ids": seats[0]}),
        json!({"screening_id": screening, "seat_ids": []}),
        json!({"screening_id": screening}),
        json!({"seat_ids": [seats[0]]}),
        json!({"screening_id": null, "seat_ids": [seats[0]]}),
    ] {
        let f = c.request("hold_seats", data.clone()).await;
        assert_error(&f, "BAD_REQUEST");
        assert_eq!(f["type"], "hold_seats", "{data}: {f}");
    }
    let f = c.request("cancel_booking", json!({"booking_id": 1})).await;
    assert_error(&f, "BAD_REQUEST");
    let f = c.request("book_seats", json!({})).await;
    assert_error(&f, "BAD_REQUEST");
    still_open(&mut c).await;
}

#[tokio::test]
async fn string_ids_naming_nothing_are_not_found_other_ids_bad_request() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    for kind in ["get_hall", "subscribe_hall"] {
        for id in ["nope", "99999999", "007", "-1", "", "1e3"] {
            let f = c.request(kind, json!({"screening_id": id})).await;
            assert_error(&f, "NOT_FOUND");
            assert_eq!(f["type"], kind);
        }
        for id in [json!(5), json!(null), json!(["1"]), json!({"id": "1"})] {
            let f = c.request(kind, json!({"screening_id": id})).await;
            assert_error(&f, "BAD_REQUEST");
        }
        let f = c.request(kind, json!({})).await;
        assert_error(&f, "BAD_REQUEST");
    }
    // A failed subscribe subscribes to nothing: nothing is pushed.
    c.no_push("hall_update", Duration::from_millis(200)).await;
    still_open(&mut c).await;
}
