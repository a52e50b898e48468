//! docs/protocol.md "Seats and bookings", over real WebSockets against real
//! PostgreSQL: holds (all or nothing, renewal, the seat limit, closed
//! screenings, lookups and the order of errors), releases, bookings,
//! cancellations, the booking list, hold expiry, and the `version` of every
//! change answer matching the `hall_update` that carries the change.

use std::time::Duration;

use crate::harness::*;
use chrono::{DateTime, Utc};
use marquee::app::Tuning;
use serde_json::{json, Value};

const HOUR: Duration = Duration::from_secs(3600);

/// A server without the expiry sweep: the tests run it by hand.
fn no_sweep() -> Tuning {
    Tuning {
        sweep_every: None,
        ..Default::default()
    }
}

/// The keys of a JSON object, sorted.
fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// A JSON array of strings, sorted.
fn strs(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().expect("string id").to_owned())
        .collect();
    out.sort();
    out
}

fn sorted(ids: &[&String]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("a time string"))
        .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
        .with_timezone(&Utc)
}

/// (status, mine) of one seat in a snapshot.
fn seat(hall: &Value, id: &str) -> (String, bool) {
    let s = hall["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("seat {id} not in {hall}"));
    (
        s["status"].as_str().expect("status").to_owned(),
        s.get("mine") == Some(&Value::Bool(true)),
    )
}

async fn status(c: &mut Client, screening: &str, id: &str) -> String {
    let hall = c.get_hall(screening).await.data();
    seat(&hall, id).0
}

async fn sql(db: &TestDb, q: &str) {
    db.psql().await.batch_execute(q).await.expect(q);
}

/// The seat-state row as the database has it: (status, user id).
async fn db_seat(db: &TestDb, screening: &str, seat: &str) -> (String, Option<String>) {
    let c = db.psql().await;
    let r = c
        .query_one(
            "SELECT status, user_id::text FROM seat_states WHERE screening_id = $1::text::bigint AND seat_id = $2::text::bigint",
            &[&screening, &seat],
        )
        .await
        .expect("seat row");
    (r.get(0), r.get(1))
}

/// An anonymous client subscribed to a screening; returns the snapshot.
async fn watcher(app: &TestApp, screening: &str) -> (Client, Value) {
    let mut w = app.client().await;
    let snap = w.subscribe(screening).await.data();
    (w, snap)
}

/// The next hall_update's data, checked to be exactly `version`.
async fn update(w: &mut Client, version: &Value) -> Value {
    let u = w.push("hall_update").await;
    assert_eq!(&u["data"]["version"], version, "{u}");
    u["data"].clone()
}

/// The seats of a hall_update as (id, status), sorted.
fn changes(u: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = u["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn hold_answers_its_shape_and_is_all_or_nothing() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 2, 5, HOUR).await;
    let (mut alice, _, alice_id) = logged_in(&app.server, "alice").await;
    let (mut bob, _, bob_id) = logged_in(&app.server, "bob").await;
    let (mut w, snap) = watcher(&app, &s).await;
    let v0 = snap["version"].as_i64().unwrap();

    let before = Utc::now();
    let h = alice.hold(&s, &[&seats[0], &seats[1]]).await.data();
    assert_eq!(
        keys(&h),
        ["expires_at", "screening_id", "seat_ids", "version"]
    );
    assert_eq!(h["screening_id"], s);
    assert_eq!(strs(&h["seat_ids"]), sorted(&[&seats[0], &seats[1]]));
    // The default TTL is 10 minutes.
    let ttl = time(&h["expires_at"]) - before;
    assert!(
        (590..=610).contains(&ttl.num_seconds()),
        "expires_at {} is not ~10 minutes away",
        h["expires_at"]
    );
    assert_eq!(h["version"], v0 + 1);
    let u = update(&mut w, &h["version"]).await;
    assert_eq!(
        changes(&u),
        vec![
            (seats[0].clone(), "held".into()),
            (seats[1].clone(), "held".into())
        ]
    );

    // One unavailable seat fails the whole request and names only that seat.
    let r = bob.hold(&s, &[&seats[2], &seats[1], &seats[3]]).await.0;
    assert_eq!(r["error"], "SEAT_UNAVAILABLE", "{r}");
    assert_eq!(strs(&r["data"]["seat_ids"]), vec![seats[1].clone()]);
    assert!(r["data"]["message"].is_string());
    for id in [&seats[2], &seats[3]] {
        assert_eq!(db_seat(&app.db, &s, id).await, ("free".into(), None));
    }
    assert_eq!(
        db_seat(&app.db, &s, &seats[1]).await,
        ("held".into(), Some(alice_id.clone()))
    );

    // Booked and blocked seats are unavailable too, and listed together.
    alice.book(&s, &[&seats[0], &seats[1]]).await.data();
    app.db.block_seats(&s, &seats[4..5]).await;
    let r = bob
        .hold(&s, &[&seats[5], &seats[0], &seats[4], &seats[1]])
        .await
        .0;
    assert_eq!(r["error"], "SEAT_UNAVAILABLE", "{r}");
    assert_eq!(
        strs(&r["data"]["seat_ids"]),
        sorted(&[&seats[0], &seats[1], &seats[4]])
    );
    assert_eq!(db_seat(&app.db, &s, &seats[5]).await, ("free".into(), None));

    // Bob's successful hold is his; the DB agrees with the wire.
    bob.hold(&s, &[&seats[5]]).await.data();
    assert_eq!(
        db_seat(&app.db, &s, &seats[5]).await,
        ("held".into(), Some(bob_id))
    );
    // Duplicated ids count once.
    let h = bob.hold(&s, &[&seats[6], &seats[6]]).await.data();
    assert_eq!(strs(&h["seat_ids"]), vec![seats[6].clone()]);
}

#[tokio::test]
async fn renewing_ones_own_hold_moves_the_expiry_and_pushes_nothing() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 4, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let (mut w, _) = watcher(&app, &s).await;

    let first = alice.hold(&s, &[&seats[0]]).await.data();
    update(&mut w, &first["version"]).await;

    // The TTL is read on every request: a longer one shows in the renewal.
    sql(&app.db, "SELECT admin.set_hold_ttl(1200)").await;
    let renewed = alice.hold(&s, &[&seats[0]]).await.data();
    let moved = time(&renewed["expires_at"]) - time(&first["expires_at"]);
    assert!(
        (590..=610).contains(&moved.num_seconds()),
        "renewal moved the expiry by {moved}"
    );
    // Nothing changed for anybody: same version, no push.
    assert_eq!(renewed["version"], first["version"]);
    w.no_push("hall_update", Duration::from_millis(400)).await;

    // Renewing one seat and taking another pushes only the new one.
    let both = alice.hold(&s, &[&seats[0], &seats[1]]).await.data();
    assert_eq!(both["version"], first["version"].as_i64().unwrap() + 1);
    let u = update(&mut w, &both["version"]).await;
    assert_eq!(changes(&u), vec![(seats[1].clone(), "held".into())]);
}

/// A 3×10 hall with alice and bob logged in; (app, screening, seats,
/// alice, bob).
async fn alice_and_bob_in_a_30_seat_hall() -> (TestApp, String, Vec<String>, Client, Client) {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 3, 10, HOUR).await;
    let (alice, _, _) = logged_in(&app.server, "alice").await;
    let (bob, _, _) = logged_in(&app.server, "bob").await;
    (app, s, seats, alice, bob)
}

#[tokio::test]
async fn the_seat_limit_counts_held_and_booked_seats_per_user() {
    let (app, s, seats, mut alice, mut bob) = alice_and_bob_in_a_30_seat_hall().await;
    let all: Vec<&String> = seats.iter().collect();

    // More than 10 at once: refused, nothing held.
    assert_eq!(alice.hold(&s, &all[..11]).await.error(), "HOLD_LIMIT");
    assert_eq!(db_seat(&app.db, &s, &seats[0]).await.0, "free");

    // Exactly 10 is allowed; the 11th is not, alone or with renewals.
    alice.hold(&s, &all[..8]).await.data();
    alice.book(&s, &all[..2]).await.data();
    alice.hold(&s, &all[8..10]).await.data();
    assert_eq!(alice.hold(&s, &all[10..11]).await.error(), "HOLD_LIMIT");
    assert_eq!(alice.hold(&s, &all[5..11]).await.error(), "HOLD_LIMIT");
    // Renewing the ten is fine: still ten.
    alice.hold(&s, &all[2..10]).await.data();
    // The limit is per user: bob is not affected.
    bob.hold(&s, &all[10..20]).await.data();
    // HOLD_LIMIT ranks before SEAT_UNAVAILABLE.
    assert_eq!(alice.hold(&s, &all[10..11]).await.error(), "HOLD_LIMIT");

    // A released seat no longer counts.
    alice.release(&s, &all[9..10]).await.data();
    alice.hold(&s, &all[20..21]).await.data();
    assert_eq!(alice.hold(&s, &all[21..22]).await.error(), "HOLD_LIMIT");
}

#[tokio::test]
async fn the_seat_limit_is_a_setting_read_by_the_next_request() {
    let (app, s, seats, mut alice, mut bob) = alice_and_bob_in_a_30_seat_hall().await;
    let all: Vec<&String> = seats.iter().collect();
    // Alice at the default limit of 10 (two of them booked), bob too.
    alice.hold(&s, &all[2..10]).await.data();
    alice.hold(&s, &all[..2]).await.data();
    alice.book(&s, &all[..2]).await.data();
    bob.hold(&s, &all[10..20]).await.data();
    assert_eq!(alice.hold(&s, &all[20..21]).await.error(), "HOLD_LIMIT");

    sql(&app.db, "SELECT admin.set_seat_limit(12)").await;
    alice.hold(&s, &all[20..22]).await.data();
    assert_eq!(alice.hold(&s, &all[23..24]).await.error(), "HOLD_LIMIT");
    sql(&app.db, "SELECT admin.set_seat_limit(3)").await;
    assert_eq!(alice.hold(&s, &all[23..24]).await.error(), "HOLD_LIMIT");
    assert_eq!(bob.hold(&s, &all[24..25]).await.error(), "HOLD_LIMIT");
    // Seats already held are kept and can still be booked.
    alice.book(&s, &all[2..4]).await.data();
    let (mut carol, _, _) = logged_in(&app.server, "carol").await;
    carol.hold(&s, &all[24..27]).await.data();
    assert_eq!(carol.hold(&s, &all[27..28]).await.error(), "HOLD_LIMIT");
}

#[tokio::test]
async fn nothing_changes_once_the_screening_started() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 2, 10, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let all: Vec<&String> = seats.iter().collect();
    alice.hold(&s, &all[..10]).await.data();
    let booking = alice.book(&s, &all[..2]).await.data()["booking"].clone();
    let cancelled = alice.book(&s, &all[2..3]).await.data()["booking"].clone();
    let cancelled = alice
        .ok("cancel_booking", json!({"booking_id": cancelled["id"]}))
        .await["booking"]
        .clone();
    let (other, other_seats) = screening(&app.db, 1, 2, HOUR).await;

    sql(
        &app.db,
        &format!("UPDATE screenings SET starts_at = now() - interval '1 minute' WHERE id = {s}"),
    )
    .await;
    assert_eq!(
        alice.hold(&s, &all[15..16]).await.error(),
        "SCREENING_CLOSED"
    );
    // Renewal is refused too.
    assert_eq!(alice.hold(&s, &all[5..6]).await.error(), "SCREENING_CLOSED");
    assert_eq!(
        alice.release(&s, &all[5..6]).await.error(),
        "SCREENING_CLOSED"
    );
    assert_eq!(alice.book(&s, &all[5..6]).await.error(), "SCREENING_CLOSED");
    assert_eq!(
        alice
            .err("cancel_booking", json!({"booking_id": booking["id"]}))
            .await,
        "SCREENING_CLOSED"
    );
    assert_eq!(db_seat(&app.db, &s, &seats[0]).await.0, "booked");
    assert_eq!(db_seat(&app.db, &s, &seats[5]).await.0, "held");
    // Cancelling a cancelled booking answers it again, unchanged.
    let again = alice
        .ok("cancel_booking", json!({"booking_id": cancelled["id"]}))
        .await;
    assert_eq!(again["booking"], cancelled);

    // Order of errors: closed beats the limit (alice already has 10) ...
    assert_eq!(
        alice.hold(&s, &all[10..12]).await.error(),
        "SCREENING_CLOSED"
    );
    // ... and beats unavailable seats ...
    assert_eq!(alice.hold(&s, &all[..1]).await.error(), "SCREENING_CLOSED");
    // ... but an unknown seat (or a seat of another hall) beats closed.
    assert_eq!(
        alice
            .err(
                "hold_seats",
                json!({"screening_id": s, "seat_ids": [seats[10], "999999999"]})
            )
            .await,
        "NOT_FOUND"
    );
    assert_eq!(
        alice.hold(&s, &[&seats[10], &other_seats[0]]).await.error(),
        "NOT_FOUND"
    );
    assert_eq!(
        alice.book(&s, &[&other_seats[1]]).await.error(),
        "NOT_FOUND"
    );

    // A screening starting right now is closed as well.
    let (now, now_seats) = screening(&app.db, 1, 2, Duration::ZERO).await;
    assert_eq!(
        alice.hold(&now, &[&now_seats[0]]).await.error(),
        "SCREENING_CLOSED"
    );
    // Other screenings are unaffected.
    alice.hold(&other, &[&other_seats[0]]).await.data();
}

#[tokio::test]
async fn unknown_ids_answer_not_found() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 3, HOUR).await;
    let (_, other_seats) = screening(&app.db, 1, 3, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;

    for (screening, seat) in [
        ("999999999", seats[0].as_str()),            // unknown screening
        ("abc", seats[0].as_str()),                  // a string naming nothing
        ("", seats[0].as_str()),                     // empty
        ("007", seats[0].as_str()),                  // not the canonical spelling
        ("99999999999999999999", seats[0].as_str()), // beyond bigint
        (s.as_str(), "999999999"),                   // unknown seat
        (s.as_str(), "seat-1"),                      // a string naming nothing
        (s.as_str(), other_seats[0].as_str()),       // a seat of another hall
    ] {
        for method in ["hold_seats", "release_seats", "book_seats"] {
            let r = alice
                .request(
                    method,
                    json!({"screening_id": screening, "seat_ids": [seat]}),
                )
                .await;
            assert_eq!(r["error"], "NOT_FOUND", "{method} {screening} {seat}: {r}");
        }
    }
    // A mix of a good and an unknown seat holds nothing.
    let r = alice.hold(&s, &[&seats[1], &other_seats[1]]).await.0;
    assert_eq!(r["error"], "NOT_FOUND", "{r}");
    assert_eq!(db_seat(&app.db, &s, &seats[1]).await.0, "free");
    // NOT_FOUND ranks before SEAT_UNAVAILABLE and HOLD_LIMIT.
    alice.hold(&s, &[&seats[2]]).await.data();
    sql(&app.db, "SELECT admin.set_seat_limit(1)").await;
    let (mut bob, _, _) = logged_in(&app.server, "bob").await;
    let r = bob
        .request(
            "hold_seats",
            json!({"screening_id": s, "seat_ids": [seats[2], seats[1], "42424242"]}),
        )
        .await;
    assert_eq!(r["error"], "NOT_FOUND", "{r}");

    for id in ["999999999", "x", "0"] {
        assert_eq!(alice.cancel(id).await.error(), "NOT_FOUND");
    }
    assert_eq!(
        alice
            .err("get_hall", json!({"screening_id": "999999999"}))
            .await,
        "NOT_FOUND"
    );
}

/// The setup of the refusal tests: a 1×3 hall, alice logged in, and an
/// anonymous client.
async fn alice_and_anon() -> (TestApp, String, Vec<String>, Client, Client) {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 3, HOUR).await;
    let (alice, _, _) = logged_in(&app.server, "alice").await;
    let anon = app.client().await;
    (app, s, seats, alice, anon)
}

const SEAT_METHODS: [&str; 3] = ["hold_seats", "release_seats", "book_seats"];

#[tokio::test]
async fn malformed_seat_requests_are_bad_request_before_unauthorized_and_not_found() {
    let (app, s, seats, mut alice, mut anon) = alice_and_anon().await;
    let bad = [
        json!({"screening_id": s, "seat_ids": seats[0]}), // not an array
        json!({"screening_id": s, "seat_ids": []}),       // empty
        json!({"screening_id": s, "seat_ids": [1]}),      // not a string
        json!({"screening_id": s, "seat_ids": [seats[0], null]}),
        json!({"screening_id": s, "seat_ids": {"0": seats[0]}}),
        json!({"screening_id": s}),                         // missing
        json!({"screening_id": 1, "seat_ids": [seats[0]]}), // not a string
        json!({"screening_id": null, "seat_ids": [seats[0]]}),
        json!({"seat_ids": [seats[0]]}),
        // BAD_REQUEST ranks before NOT_FOUND.
        json!({"screening_id": "999999999", "seat_ids": []}),
        json!({"screening_id": "nope", "seat_ids": ["nope", 2]}),
    ];
    for method in SEAT_METHODS {
        for data in &bad {
            for c in [&mut alice, &mut anon] {
                // BAD_REQUEST ranks before UNAUTHORIZED: anonymous gets it too.
                let r = c.request(method, data.clone()).await;
                assert_eq!(r["error"], "BAD_REQUEST", "{method} {data}: {r}");
            }
        }
    }
    // None of it reached the seats.
    assert_eq!(db_seat(&app.db, &s, &seats[0]).await.0, "free");
}

#[tokio::test]
async fn anonymous_seat_requests_are_unauthorized_before_not_found() {
    let (app, s, seats, _, mut anon) = alice_and_anon().await;
    for method in SEAT_METHODS {
        for data in [
            seat_data(&s, &[&seats[0]]),
            json!({"screening_id": "999999999", "seat_ids": ["x"]}),
        ] {
            assert_eq!(anon.err(method, data).await, "UNAUTHORIZED");
        }
    }
    // None of it reached the seats.
    assert_eq!(db_seat(&app.db, &s, &seats[0]).await.0, "free");
}

#[tokio::test]
async fn malformed_cancel_booking_is_bad_request_even_anonymous() {
    let (_app, _, _, mut alice, mut anon) = alice_and_anon().await;
    for data in [
        json!({}),
        json!({"booking_id": 5}),
        json!({"booking_id": ["1"]}),
    ] {
        assert_eq!(
            anon.err("cancel_booking", data.clone()).await,
            "BAD_REQUEST"
        );
        assert_eq!(alice.err("cancel_booking", data).await, "BAD_REQUEST");
    }
}

#[tokio::test]
async fn anonymous_cancel_booking_and_get_bookings_are_unauthorized() {
    let (_app, _, _, _, mut anon) = alice_and_anon().await;
    assert_eq!(
        anon.err("cancel_booking", json!({"booking_id": "999999999"}))
            .await,
        "UNAUTHORIZED"
    );
    assert_eq!(anon.err("get_bookings", json!({})).await, "UNAUTHORIZED");
}

#[tokio::test]
async fn release_frees_only_ones_own_holds() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 6, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let (mut bob, _, bob_id) = logged_in(&app.server, "bob").await;
    let (mut w, _) = watcher(&app, &s).await;
    let v = alice.hold(&s, &[&seats[0], &seats[1]]).await.data()["version"].clone();
    update(&mut w, &v).await;
    let v = bob.hold(&s, &[&seats[2]]).await.data()["version"].clone();
    update(&mut w, &v).await;
    alice.book(&s, &[&seats[1]]).await.data();
    w.push("hall_update").await;

    // Bob's hold, alice's booking and a free seat are ignored.
    let r = alice
        .release(&s, &[&seats[3], &seats[2], &seats[0], &seats[1]])
        .await
        .data();
    assert_eq!(strs(&r["seat_ids"]), vec![seats[0].clone()]);
    let u = update(&mut w, &r["version"]).await;
    assert_eq!(changes(&u), vec![(seats[0].clone(), "free".into())]);
    assert_eq!(
        db_seat(&app.db, &s, &seats[2]).await,
        ("held".into(), Some(bob_id))
    );
    assert_eq!(db_seat(&app.db, &s, &seats[1]).await.0, "booked");
    assert_eq!(status(&mut alice, &s, &seats[0]).await, "free");

    // Releasing nothing changes nothing: the current version, no push.
    let r2 = alice.release(&s, &[&seats[0]]).await.data();
    assert_eq!(strs(&r2["seat_ids"]), Vec::<String>::new());
    assert_eq!(r2["version"], r["version"]);
    w.no_push("hall_update", Duration::from_millis(300)).await;

    // Bob's release of his own hold works.
    let r = bob.release(&s, &[&seats[2], &seats[4]]).await.data();
    assert_eq!(strs(&r["seat_ids"]), vec![seats[2].clone()]);
    update(&mut w, &r["version"]).await;
}

#[tokio::test]
async fn booking_turns_ones_own_live_holds_into_a_booking() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 8, HOUR).await;
    let (mut alice, alice_token, alice_id) = logged_in(&app.server, "alice").await;
    let (mut bob, _, _) = logged_in(&app.server, "bob").await;
    let (mut w, _) = watcher(&app, &s).await;
    // Alice watches too, on another socket: the booking push carries `mine`.
    let mut alice2 = Client::connect_with(&app.server, Connect::bearer(&alice_token))
        .await
        .unwrap();
    alice2.subscribe(&s).await.data();

    let v = alice
        .hold(&s, &[&seats[0], &seats[1], &seats[2]])
        .await
        .data()["version"]
        .clone();
    update(&mut w, &v).await;
    update(&mut alice2, &v).await;
    bob.hold(&s, &[&seats[3]]).await.data();
    w.push("hall_update").await;
    alice2.push("hall_update").await;
    app.db.block_seats(&s, &seats[4..5]).await;
    w.push("hall_update").await;
    alice2.push("hall_update").await;

    // Someone else's hold, a blocked seat, a free seat: SEAT_UNAVAILABLE,
    // listing just those, and alice's holds stay as they were.
    for (other, label) in [
        (&seats[3], "held by bob"),
        (&seats[4], "blocked"),
        (&seats[5], "free"),
    ] {
        let r = alice.book(&s, &[&seats[0], other]).await.0;
        assert_eq!(r["error"], "SEAT_UNAVAILABLE", "{label}: {r}");
        assert_eq!(strs(&r["data"]["seat_ids"]), vec![other.clone()], "{label}");
        assert_eq!(db_seat(&app.db, &s, &seats[0]).await.0, "held");
    }
    assert_eq!(bob.book(&s, &[&seats[0]]).await.error(), "SEAT_UNAVAILABLE");

    let before = Utc::now() - chrono::Duration::seconds(5);
    let r = alice.book(&s, &[&seats[1], &seats[0]]).await.data();
    assert_eq!(keys(&r), ["booking", "version"]);
    let b = &r["booking"];
    assert_eq!(
        keys(b),
        [
            "created_at",
            "currency",
            "id",
            "screening_id",
            "seat_ids",
            "status",
            "total"
        ]
    );
    assert!(b["id"].is_string());
    assert_eq!(b["screening_id"], s);
    assert_eq!(strs(&b["seat_ids"]), sorted(&[&seats[0], &seats[1]]));
    assert_eq!(b["total"], 2 * 1250);
    assert_eq!(b["currency"], "EUR");
    assert_eq!(b["status"], "confirmed");
    let created = time(&b["created_at"]);
    assert!(created > before && created < Utc::now() + chrono::Duration::seconds(5));

    // The push carrying the booking has the answer's version; `mine` only
    // for alice's own socket.
    let u = update(&mut w, &r["version"]).await;
    assert_eq!(
        changes(&u),
        vec![
            (seats[0].clone(), "booked".into()),
            (seats[1].clone(), "booked".into())
        ]
    );
    assert!(u["seats"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x.get("mine").is_none()));
    let mine = update(&mut alice2, &r["version"]).await;
    assert!(
        mine["seats"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["mine"] == true),
        "{mine}"
    );
    assert_eq!(
        db_seat(&app.db, &s, &seats[0]).await,
        ("booked".into(), Some(alice_id))
    );

    // A booked seat cannot be booked again, by anyone.
    assert_eq!(
        alice.book(&s, &[&seats[0]]).await.error(),
        "SEAT_UNAVAILABLE"
    );
    assert_eq!(bob.book(&s, &[&seats[1]]).await.error(), "SEAT_UNAVAILABLE");
    // The remaining hold books on its own; total is price x seats.
    let one = alice.book(&s, &[&seats[2]]).await.data();
    assert_eq!(one["booking"]["total"], 1250);
    assert_ne!(one["booking"]["id"], b["id"]);
}

#[tokio::test]
async fn expired_holds_answer_hold_expired_before_and_after_the_sweep() {
    // No sweep in this server: the test runs it by hand.
    let TestApp { db, server } = TestApp::tuned(no_sweep()).await;
    let (s, seats) = screening(&db, 1, 6, HOUR).await;
    let (mut alice, _, _) = logged_in(&server, "alice").await;
    let (mut bob, _, _) = logged_in(&server, "bob").await;
    let mut w = Client::connect(&server).await;
    w.subscribe(&s).await.data();

    sql(&db, "SELECT admin.set_hold_ttl(1)").await;
    let h = alice
        .hold(&s, &[&seats[0], &seats[1], &seats[2]])
        .await
        .data();
    update(&mut w, &h["version"]).await;
    sql(&db, "SELECT admin.set_hold_ttl(600)").await;
    let live = alice.hold(&s, &[&seats[3]]).await.data();
    update(&mut w, &live["version"]).await;

    // The seat reads free as soon as the hold lapsed, before any sweep.
    wait_until_free(&mut bob, &s, &seats[0]).await;
    assert_eq!(db_seat(&db, &s, &seats[0]).await.0, "held", "no sweep ran");
    let r = alice.book(&s, &[&seats[3], &seats[0]]).await.0;
    assert_eq!(r["error"], "HOLD_EXPIRED", "{r}");
    assert_eq!(strs(&r["data"]["seat_ids"]), vec![seats[0].clone()]);
    assert_eq!(db_seat(&db, &s, &seats[3]).await.0, "held");
    // SEAT_UNAVAILABLE ranks before HOLD_EXPIRED.
    let r = alice.book(&s, &[&seats[0], &seats[5]]).await.0;
    assert_eq!(r["error"], "SEAT_UNAVAILABLE", "{r}");
    assert_eq!(strs(&r["data"]["seat_ids"]), vec![seats[5].clone()]);

    // The sweep frees the seats and remembers whose hold lapsed.
    let swept = db.scalar("SELECT api.sweep_expired_holds()").await;
    assert_eq!(swept.as_deref(), Some("3"));
    let u = w.push("hall_update").await;
    assert_eq!(
        changes(&u["data"]),
        vec![
            (seats[0].clone(), "free".into()),
            (seats[1].clone(), "free".into()),
            (seats[2].clone(), "free".into())
        ]
    );
    assert_eq!(db_seat(&db, &s, &seats[0]).await, ("free".into(), None));
    let r = alice.book(&s, &[&seats[0]]).await.0;
    assert_eq!(r["error"], "HOLD_EXPIRED", "{r}");
    assert_eq!(strs(&r["data"]["seat_ids"]), vec![seats[0].clone()]);

    // Once somebody else took the seat, it is simply unavailable.
    bob.hold(&s, &[&seats[1]]).await.data();
    assert_eq!(
        alice.book(&s, &[&seats[1]]).await.error(),
        "SEAT_UNAVAILABLE"
    );
    // Holding it again makes it bookable again.
    alice.hold(&s, &[&seats[2]]).await.data();
    alice.book(&s, &[&seats[2]]).await.data();
    server.shutdown().await;
}

async fn wait_until_free(c: &mut Client, s: &str, seat: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = status(c, s, seat).await;
        if st == "free" {
            return;
        }
        assert_eq!(st, "held");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hold never lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_lapsed_hold_reads_free_before_the_sweep_and_the_sweep_pushes_it() {
    // Without a sweep: get_hall, subscribe_hall and other users see it free.
    let TestApp { db, server } = TestApp::tuned(no_sweep()).await;
    let (s, seats) = screening(&db, 1, 3, HOUR).await;
    let (mut alice, _, _) = logged_in(&server, "alice").await;
    let (mut bob, _, _) = logged_in(&server, "bob").await;
    sql(&db, "SELECT admin.set_hold_ttl(1)").await;
    let h = alice.hold(&s, &[&seats[0], &seats[1]]).await.data();
    let expires = time(&h["expires_at"]);
    assert!(expires - Utc::now() <= chrono::Duration::seconds(1));
    let hall = alice.get_hall(&s).await.data();
    assert_eq!(seat(&hall, &seats[0]), ("held".into(), true));
    wait_until_free(&mut bob, &s, &seats[0]).await;
    assert!(Utc::now() >= expires - chrono::Duration::milliseconds(50));
    let hall = alice.subscribe(&s).await.data();
    assert_eq!(seat(&hall, &seats[0]), ("free".into(), false));
    assert_eq!(seat(&hall, &seats[1]), ("free".into(), false));
    assert_eq!(hall["version"], h["version"], "lapsing is not a change");
    assert_eq!(db_seat(&db, &s, &seats[0]).await.0, "held", "no sweep ran");
    // Another user can take it right away; the change is pushed.
    let taken = bob.hold(&s, &[&seats[0]]).await.data();
    let u = update(&mut alice, &taken["version"]).await;
    assert_eq!(changes(&u), vec![(seats[0].clone(), "held".into())]);
    // Taking one's own lapsed hold again is a change too (subscribers saw
    // the seat free), unlike renewing a live hold.
    let again = alice.hold(&s, &[&seats[1]]).await.data();
    let u = update(&mut alice, &again["version"]).await;
    assert_eq!(
        u["seats"],
        json!([{"id": seats[1], "status": "held", "mine": true}])
    );
    server.shutdown().await;

    // With the sweep running (every second), the subscriber sees it freed.
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 3, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let (mut w, _) = watcher(&app, &s).await;
    sql(&app.db, "SELECT admin.set_hold_ttl(1)").await;
    let h = alice.hold(&s, &[&seats[1]]).await.data();
    update(&mut w, &h["version"]).await;
    let freed = update(&mut w, &json!(h["version"].as_i64().unwrap() + 1)).await;
    assert_eq!(changes(&freed), vec![(seats[1].clone(), "free".into())]);
    assert!(Utc::now() >= time(&h["expires_at"]));
    assert_eq!(db_seat(&app.db, &s, &seats[1]).await, ("free".into(), None));
    let hall = w.get_hall(&s).await.data();
    assert_eq!(hall["version"], freed["version"]);
}

#[tokio::test]
async fn cancel_frees_the_seats_of_ones_own_booking_once() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 6, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let (mut bob, _, _) = logged_in(&app.server, "bob").await;
    let (mut w, _) = watcher(&app, &s).await;
    alice.hold(&s, &[&seats[0], &seats[1]]).await.data();
    let booked = alice.book(&s, &[&seats[0], &seats[1]]).await.data();
    let booking = booked["booking"].clone();
    w.push("hall_update").await;
    update(&mut w, &booked["version"]).await;

    // Another user's booking does not exist for bob.
    let r = bob
        .request("cancel_booking", json!({"booking_id": booking["id"]}))
        .await;
    assert_eq!(r["error"], "NOT_FOUND", "{r}");
    assert_eq!(db_seat(&app.db, &s, &seats[0]).await.0, "booked");

    let c = alice
        .ok("cancel_booking", json!({"booking_id": booking["id"]}))
        .await;
    assert_eq!(keys(&c), ["booking", "version"]);
    let mut expected = booking.clone();
    expected["status"] = json!("cancelled");
    assert_eq!(c["booking"], expected);
    let u = update(&mut w, &c["version"]).await;
    assert_eq!(
        changes(&u),
        vec![
            (seats[0].clone(), "free".into()),
            (seats[1].clone(), "free".into())
        ]
    );
    assert_eq!(status(&mut bob, &s, &seats[0]).await, "free");

    // Twice: the cancelled booking again, unchanged; nothing pushed.
    let again = alice
        .ok("cancel_booking", json!({"booking_id": booking["id"]}))
        .await;
    assert_eq!(again["booking"], c["booking"]);
    assert_eq!(again["version"], c["version"]);
    w.no_push("hall_update", Duration::from_millis(300)).await;

    // The freed seats can be held and booked again, by anyone.
    bob.hold(&s, &[&seats[0]]).await.data();
    let b2 = bob.book(&s, &[&seats[0]]).await.data();
    assert_ne!(b2["booking"]["id"], booking["id"]);
    // Cancelling alice's old booking again does not touch bob's seat.
    alice
        .ok("cancel_booking", json!({"booking_id": booking["id"]}))
        .await;
    assert_eq!(db_seat(&app.db, &s, &seats[0]).await.0, "booked");
}

#[tokio::test]
async fn get_bookings_lists_ones_own_newest_first() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 8, HOUR).await;
    let (s2, seats2) = screening(&app.db, 1, 2, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let (mut bob, _, _) = logged_in(&app.server, "bob").await;
    assert_eq!(
        alice.ok("get_bookings", json!({})).await,
        json!({"bookings": []})
    );

    let mut ids = Vec::new();
    for (sc, seat) in [(&s, &seats[0]), (&s2, &seats2[0]), (&s, &seats[1])] {
        alice.hold(sc, &[seat]).await.data();
        let b = alice.book(sc, &[seat]).await.data();
        ids.push(b["booking"].clone());
    }
    bob.hold(&s, &[&seats[2]]).await.data();
    let bobs = bob.book(&s, &[&seats[2]]).await.data()["booking"].clone();
    let cancelled = alice
        .ok("cancel_booking", json!({"booking_id": ids[1]["id"]}))
        .await["booking"]
        .clone();

    let list = alice.ok("get_bookings", json!({})).await;
    assert_eq!(keys(&list), ["bookings"]);
    let got = list["bookings"].as_array().unwrap();
    assert_eq!(got.len(), 3, "{list}");
    assert_eq!(got[0], ids[2]);
    assert_eq!(
        got[1], cancelled,
        "cancelled bookings stay listed, as cancelled"
    );
    assert_eq!(got[2], ids[0]);
    let bob_list = bob.ok("get_bookings", json!({})).await;
    assert_eq!(bob_list, json!({"bookings": [bobs]}));
}
