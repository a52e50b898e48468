//! docs/protocol.md "Hall subscription" and the fan-out behind it, over real
//! WebSockets against real PostgreSQL, with several replicas on one
//! database: pushes across replicas, `mine`, changes made in plain SQL,
//! gap-free versions under concurrency, subscribe without a gap, races for
//! the same seats, subscription bookkeeping, oversized change sets, a lost
//! LISTEN connection, and slow consumers.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harness::*;
use futures_util::future::join_all;
use futures_util::SinkExt;
use marquee::app::{Server, Tuning};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const HOUR: Duration = Duration::from_secs(3600);

/// A client's picture of a hall: the last snapshot with every update since
/// applied, checking that versions grow by exactly one.
#[derive(Debug, Clone, PartialEq)]
struct View {
    version: i64,
    /// seat id -> (status, mine)
    seats: BTreeMap<String, (String, bool)>,
}

impl View {
    fn from_snapshot(d: &Value) -> View {
        let seats = seat_views(&d["seats"]);
        View {
            version: d["version"].as_i64().expect("version"),
            seats,
        }
    }

    /// Applies a `hall_update` or `hall_snapshot` frame.
    fn apply(&mut self, f: &Value) {
        let d = &f["data"];
        match f["type"].as_str() {
            Some("hall_update") => {
                let v = d["version"].as_i64().expect("version");
                assert_eq!(v, self.version + 1, "versions must grow by one: {f}");
                for s in d["seats"].as_array().expect("seats") {
                    let id = s["id"].as_str().expect("id");
                    let slot = self
                        .seats
                        .get_mut(id)
                        .unwrap_or_else(|| panic!("update names an unknown seat: {f}"));
                    *slot = (
                        s["status"].as_str().expect("status").to_owned(),
                        s.get("mine") == Some(&Value::Bool(true)),
                    );
                }
                self.version = v;
            }
            Some("hall_snapshot") => {
                let next = View::from_snapshot(d);
                assert!(next.version >= self.version, "snapshot went back: {f}");
                *self = next;
            }
            other => panic!("not a push: {other:?} {f}"),
        }
    }

    /// Statuses only (what every client must agree on).
    fn statuses(&self) -> BTreeMap<String, String> {
        self.seats
            .iter()
            .map(|(k, (s, _))| (k.clone(), s.clone()))
            .collect()
    }
}

/// Reads pushes into `view` until it reaches `version`; returns the frames.
async fn follow(c: &mut Client, view: &mut View, version: i64) -> Vec<Value> {
    let mut seen = Vec::new();
    // Pushes that never get there (e.g. the same snapshot over and over)
    // fail the test instead of hanging it.
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    while view.version < version {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at version {} of {version} after {} pushes",
            view.version,
            seen.len()
        );
        let f = c
            .next_frame()
            .await
            .expect("connection closed while following");
        if f["type"] == "hall_update" || f["type"] == "hall_snapshot" {
            view.apply(&f);
            seen.push(f);
        }
    }
    assert_eq!(view.version, version, "overshot");
    seen
}

/// The database's truth: the screening's version and each seat's status
/// (lapsed holds read as free).
async fn db_view(db: &TestDb, screening: &str) -> (i64, BTreeMap<String, String>) {
    let c = db.psql().await;
    let version: i64 = c
        .query_one(
            "SELECT version FROM screening_versions WHERE screening_id = $1::text::bigint",
            &[&screening],
        )
        .await
        .expect("version")
        .get(0);
    let seats = c
        .query(
            "SELECT seat_id::text,
                    CASE WHEN status = 'held' AND hold_expires_at <= now() THEN 'free' ELSE status END
               FROM seat_states WHERE screening_id = $1::text::bigint",
            &[&screening],
        )
        .await
        .expect("seats")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    (version, seats)
}

async fn sql(db: &TestDb, q: &str) {
    db.psql().await.batch_execute(q).await.expect(q);
}

fn ids_sql(ids: &[String]) -> String {
    format!("ARRAY[{}]::bigint[]", ids.join(","))
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
    k.sort();
    k
}

/// Subscribes and returns the view of the answer.
async fn subscribe(c: &mut Client, screening: &str) -> View {
    let snap = c.subscribe(screening).await.data();
    View::from_snapshot(&snap)
}

/// One value of the Prometheus text of a server.
/// A server with one pooled connection (snapshot reads happen one after
/// the other, and a test can make them wait), and a subscriber of a 20×25
/// hall: (app, screening, its seats, subscriber, its view).
async fn one_connection_subscriber() -> (TestApp, String, Vec<String>, Client, View) {
    let app = TestApp::configured(|c| c.pool_size = 1).await;
    let (s, seats) = screening(&app.db, 20, 25, HOUR).await;
    let mut w = Client::connect(&app.server).await;
    let view = subscribe(&mut w, &s).await;
    (app, s, seats, w, view)
}

async fn metric(server: &Server, name: &str) -> f64 {
    let (status, _, body) = http(server.http_addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
        .trim()
        .parse()
        .expect("a number")
}

/// Polls a condition every 20 ms until it holds (or fails after `WAIT`).
macro_rules! wait_for {
    ($what:expr, $cond:expr) => {{
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if $cond {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {}",
                $what
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }};
}

async fn ready(server: &Server) -> u16 {
    http(server.http_addr, "GET", "/ready", &[], "").await.0
}

#[tokio::test]
async fn a_hold_on_one_replica_is_pushed_to_a_subscriber_on_another() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let (s, seats) = screening(&app.db, 2, 3, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let mut w = Client::connect(&b).await;
    assert_ne!(w.session["data"]["server"], alice.session["data"]["server"]);

    // The answer: the snapshot, with the request's eid.
    let r = w.subscribe(&s).await.0;
    assert_eq!(r["type"], "subscribe_hall");
    let eid = r["eid"].clone();
    let snap = &r["data"];
    assert_eq!(
        keys(snap),
        ["hall", "prices", "screening_id", "seats", "version"]
    );
    assert_eq!(snap["screening_id"], s);
    assert_eq!(keys(&snap["hall"]), ["id", "name"]);
    assert!(snap["hall"]["id"].is_string() && snap["hall"]["name"].is_string());
    let v0 = snap["version"].as_i64().expect("version is an integer");
    assert!(v0 >= 0);
    let list = snap["seats"].as_array().unwrap();
    assert_eq!(list.len(), 6);
    for (i, seat) in list.iter().enumerate() {
        assert_eq!(
            keys(seat),
            ["id", "kind", "number", "row", "status", "x", "y"],
            "{seat}"
        );
        assert_eq!(seat["id"], seats[i]);
        assert_eq!(seat["status"], "free");
        assert_eq!(seat["kind"], "standard");
    }
    assert_eq!(list[0]["row"], "A");
    assert_eq!(list[0]["number"], 1);
    assert_eq!(list[4]["row"], "B");
    assert_eq!(list[4]["number"], 2);
    assert_eq!(
        (list[4]["x"].as_i64(), list[4]["y"].as_i64()),
        (Some(1), Some(1))
    );
    // get_hall answers the same snapshot without subscribing.
    let hall = alice.get_hall(&s).await.data();
    assert_eq!(&hall, snap);

    let h = alice.hold(&s, &[&seats[1], &seats[4]]).await.data();
    let u = w.push("hall_update").await;
    assert_eq!(u["eid"], eid, "pushes carry the subscribe request's eid");
    assert!(u["ts"].is_i64());
    assert!(u.get("error").is_none());
    assert_eq!(keys(&u["data"]), ["screening_id", "seats", "version"]);
    assert_eq!(u["data"]["screening_id"], s);
    assert_eq!(u["data"]["version"], v0 + 1);
    assert_eq!(u["data"]["version"], h["version"]);
    let mut got = u["data"]["seats"].as_array().unwrap().clone();
    got.sort_by_key(|x| x["id"].as_str().unwrap().to_owned());
    let mut want = vec![
        json!({"id": seats[1], "status": "held"}),
        json!({"id": seats[4], "status": "held"}),
    ];
    want.sort_by_key(|x| x["id"].as_str().unwrap().to_owned());
    assert_eq!(got, want, "seats carry id and status only: {u}");

    // And the other way round: a change on B reaches a subscriber on A.
    let (mut bob, _, _) = logged_in(&b, "bob").await;
    let mut wa = app.client().await;
    let mut va = subscribe(&mut wa, &s).await;
    let h = bob.hold(&s, &[&seats[0]]).await.data();
    follow(&mut wa, &mut va, h["version"].as_i64().unwrap()).await;
    assert_eq!(va.seats[&seats[0]], ("held".to_string(), false));
    b.shutdown().await;
}

#[tokio::test]
async fn mine_marks_only_the_holders_own_seats_on_the_holders_connections() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let (s, seats) = screening(&app.db, 1, 6, HOUR).await;
    let (mut alice, alice_token, alice_id) = logged_in(&app.server, "alice").await;
    let (mut bob, _, bob_id) = logged_in(&b, "bob").await;
    // Alice watches on another socket (on the other replica), bob and an
    // anonymous client watch too.
    let mut alice2 = Client::connect_with(&b, Connect::bearer(&alice_token))
        .await
        .unwrap();
    let mut va = subscribe(&mut alice2, &s).await;
    let mut vb = subscribe(&mut bob, &s).await;
    let mut anon = app.client().await;
    let mut vn = subscribe(&mut anon, &s).await;

    let h = alice.hold(&s, &[&seats[0], &seats[1]]).await.data();
    let v = h["version"].as_i64().unwrap();
    let fa = follow(&mut alice2, &mut va, v).await;
    let fb = follow(&mut bob, &mut vb, v).await;
    let fnn = follow(&mut anon, &mut vn, v).await;
    for seat in &fa[0]["data"]["seats"].as_array().unwrap()[..] {
        assert_eq!(keys(seat), ["id", "mine", "status"]);
        assert_eq!(seat["mine"], true);
    }
    for f in [&fb[0], &fnn[0]] {
        for seat in f["data"]["seats"].as_array().unwrap() {
            assert_eq!(keys(seat), ["id", "status"], "no mine, no user: {f}");
        }
    }

    // A DBA's statement that gives one seat to each of them: one change set,
    // each sees only their own seat as mine.
    sql(
        &app.db,
        &format!(
            "UPDATE seat_states SET status = 'held', hold_expires_at = now() + interval '10 minutes',
                    user_id = CASE seat_id WHEN {} THEN {alice_id} ELSE {bob_id} END
              WHERE screening_id = {s} AND seat_id IN ({}, {})",
            seats[2], seats[2], seats[3]
        ),
    )
    .await;
    let v = v + 1;
    follow(&mut alice2, &mut va, v).await;
    follow(&mut bob, &mut vb, v).await;
    follow(&mut anon, &mut vn, v).await;
    let mine = |view: &View| -> Vec<String> {
        view.seats
            .iter()
            .filter(|(_, (_, m))| *m)
            .map(|(k, _)| k.clone())
            .collect()
    };
    let mut alices = vec![seats[0].clone(), seats[1].clone(), seats[2].clone()];
    alices.sort();
    assert_eq!(mine(&va), alices);
    assert_eq!(mine(&vb), vec![seats[3].clone()]);
    assert!(mine(&vn).is_empty());

    // Booked seats are mine too; snapshots mark them for their owner only.
    let bk = alice.book(&s, &[&seats[0]]).await.data();
    let v = bk["version"].as_i64().unwrap();
    follow(&mut alice2, &mut va, v).await;
    follow(&mut bob, &mut vb, v).await;
    assert_eq!(va.seats[&seats[0]], ("booked".to_string(), true));
    assert_eq!(vb.seats[&seats[0]], ("booked".to_string(), false));
    for (c, expected) in [
        (&mut alice, alices.clone()),
        (&mut bob, vec![seats[3].clone()]),
    ] {
        let snap = View::from_snapshot(&c.get_hall(&s).await.data());
        assert_eq!(mine(&snap), expected);
    }
    let snap = View::from_snapshot(&anon.get_hall(&s).await.data());
    assert!(mine(&snap).is_empty());
    // Released seats lose the mark.
    let r = alice.release(&s, &[&seats[1]]).await.data();
    follow(&mut alice2, &mut va, r["version"].as_i64().unwrap()).await;
    assert_eq!(va.seats[&seats[1]], ("free".to_string(), false));
    b.shutdown().await;
}

#[tokio::test]
async fn changes_made_in_plain_sql_are_pushed() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let (s, seats) = screening(&app.db, 2, 4, HOUR).await;
    let mut wa = app.client().await;
    let mut va = subscribe(&mut wa, &s).await;
    let mut wb = Client::connect(&b).await;
    let mut vb = subscribe(&mut wb, &s).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    alice.hold(&s, &[&seats[5]]).await.data();

    // A DBA's plain UPDATE (a free and a held seat), as documented.
    sql(
        &app.db,
        &format!(
            "UPDATE seat_states SET status = 'blocked', user_id = NULL, hold_expires_at = NULL
              WHERE screening_id = {s} AND seat_id IN ({}, {}, {})",
            seats[0], seats[1], seats[5]
        ),
    )
    .await;
    let target = va.version + 2;
    let frames = follow(&mut wa, &mut va, target).await;
    let last = &frames.last().unwrap()["data"]["seats"];
    assert_eq!(last.as_array().unwrap().len(), 3, "one change set: {last}");
    for id in [&seats[0], &seats[1], &seats[5]] {
        assert_eq!(va.seats[id].0, "blocked");
    }
    // admin.block_seats and admin.unblock_seats.
    let mut q = app.db.psql().await;
    let n: i32 = q
        .query_one(
            &format!("SELECT admin.block_seats({s}, {})", ids_sql(&seats[2..4])),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    follow(&mut wa, &mut va, target + 1).await;
    assert_eq!(va.seats[&seats[3]].0, "blocked");
    q.batch_execute(&format!(
        "SELECT admin.unblock_seats({s}, {})",
        ids_sql(&seats[..1])
    ))
    .await
    .unwrap();
    follow(&mut wa, &mut va, target + 2).await;
    assert_eq!(va.seats[&seats[0]].0, "free");
    // Several statements in one DBA transaction: one change set each, in
    // commit order.
    let tx = q.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "UPDATE seat_states SET status = 'blocked' WHERE screening_id = {s} AND seat_id = {};
         UPDATE seat_states SET status = 'free' WHERE screening_id = {s} AND seat_id = {};",
        seats[6], seats[1]
    ))
    .await
    .unwrap();
    tx.commit().await.unwrap();
    follow(&mut wa, &mut va, target + 4).await;
    // A statement that changes nothing visible pushes nothing.
    sql(
        &app.db,
        &format!(
            "UPDATE seat_states SET status = 'free' WHERE screening_id = {s} AND status = 'free'"
        ),
    )
    .await;

    follow(&mut wb, &mut vb, target + 4).await;
    assert_eq!(va, vb);
    let (version, truth) = db_view(&app.db, &s).await;
    assert_eq!((va.version, va.statuses()), (version, truth));
    wa.no_push("hall_update", Duration::from_millis(300)).await;
    b.shutdown().await;
}

#[tokio::test]
async fn versions_grow_by_one_without_gaps_across_a_concurrent_burst() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let (s, seats) = screening(&app.db, 4, 10, HOUR).await;
    let mut wa = app.client().await;
    let mut va = subscribe(&mut wa, &s).await;
    let mut wb = Client::connect(&b).await;
    let mut vb = subscribe(&mut wb, &s).await;

    let users = join_all((0..6).map(|i| {
        let server = if i % 2 == 0 { &app.server } else { &b };
        async move { logged_in(server, &format!("user{i}")).await.0 }
    }))
    .await;
    // Each user churns through holds and releases on seats that overlap
    // with its neighbours', so some requests collide.
    let work = users.into_iter().enumerate().map(|(i, mut c)| {
        let s = s.clone();
        let seats = seats.clone();
        tokio::spawn(async move {
            let mut changed = 0;
            for round in 0..8 {
                let a = &seats[(i * 5 + round) % seats.len()];
                let z = &seats[(i * 5 + round + 3) % seats.len()];
                let r = c.hold(&s, &[a, z]).await.0;
                match r["error"].as_str() {
                    None => changed += 1,
                    Some("SEAT_UNAVAILABLE") => {}
                    Some(e) => panic!("unexpected {e}: {r}"),
                }
                if round % 2 == 1 {
                    let r = c.release(&s, &[a, z]).await.data();
                    if !r["seat_ids"].as_array().unwrap().is_empty() {
                        changed += 1;
                    }
                }
            }
            changed
        })
    });
    let dba = {
        let db_url = app.db.url.clone();
        let s = s.clone();
        let seats = seats.clone();
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&db_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for i in 0..6 {
                let seat = &seats[30 + i];
                c.batch_execute(&format!(
                    "SELECT admin.block_seats({s}, ARRAY[{seat}]::bigint[]);
                     UPDATE seat_states SET status = 'free' WHERE screening_id = {s} AND seat_id = {seat};"
                ))
                .await
                .unwrap();
            }
        })
    };
    let mut changes = 12; // the DBA's
    for h in join_all(work).await {
        changes += h.unwrap();
    }
    dba.await.unwrap();

    let (version, truth) = db_view(&app.db, &s).await;
    assert_eq!(version, va.version + changes, "one version per change set");
    follow(&mut wa, &mut va, version).await;
    follow(&mut wb, &mut vb, version).await;
    assert_eq!(va.statuses(), truth);
    assert_eq!(vb.statuses(), truth);
    let snap = View::from_snapshot(&wa.get_hall(&s).await.data());
    assert_eq!(va, snap);
    wa.no_push("hall_update", Duration::from_millis(200)).await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_change_right_after_subscribing_always_arrives_and_only_once() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let (s, seats) = screening(&app.db, 1, 4, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let (mut bob, _, _) = logged_in(&app.server, "bob").await;

    // Deterministically: the subscribe on B has LISTENed and taken its
    // snapshot (its read waits for a lock), then a hold commits on A and
    // its notification reaches B before the answer is sent.
    let lock = HallsLock::take(&app.db).await;
    let mut w = Client::connect(&b).await;
    w.send_text(
        json!({"type": "subscribe_hall", "eid": "sub", "data": {"screening_id": s}}).to_string(),
    )
    .await;
    lock.wait_for_waiters(1).await;
    let before = metric(&b, "marquee_notifications_received_total").await;
    let h = alice.hold(&s, &[&seats[3]]).await.data();
    wait_for!(
        "the notification on B",
        metric(&b, "marquee_notifications_received_total").await > before
    );
    lock.release().await;
    let answer = w.response("sub").await;
    let mut view = View::from_snapshot(&answer["data"]);
    assert_eq!(
        view.seats[&seats[3]].0, "free",
        "the snapshot predates the hold"
    );
    let frames = follow(&mut w, &mut view, h["version"].as_i64().unwrap()).await;
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["type"], "hall_update");
    assert_eq!(frames[0]["eid"], "sub");
    w.no_push("hall_update", Duration::from_millis(100)).await;
    w.close().await;

    let mut held = [false, false];
    // Each round subscribes on a fresh connection to replica B, so the
    // channel is LISTENed afresh, while a change commits on replica A: at
    // the same time (half the rounds) or right after the answer. Two users
    // take turns (the request rate limit is per connection), each toggling
    // a hold on their own seat, so every round is one change.
    for round in 0..24 {
        let who = round % 2;
        let holder = if who == 0 { &mut alice } else { &mut bob };
        held[who] = !held[who];
        let kind = if held[who] {
            "hold_seats"
        } else {
            "release_seats"
        };
        let req = seat_data(&s, &[&seats[who]]);
        let mut w = Client::connect(&b).await;
        let (view, change) = if round % 4 < 2 {
            let (snap, change) = tokio::join!(
                w.request("subscribe_hall", json!({"screening_id": s})),
                holder.request(kind, req),
            );
            assert!(snap.get("error").is_none(), "{snap}");
            (View::from_snapshot(&snap["data"]), change)
        } else {
            let view = subscribe(&mut w, &s).await;
            (view, holder.request(kind, req).await)
        };
        assert!(change.get("error").is_none(), "{change}");
        let version = change["data"]["version"].as_i64().unwrap();
        let mut view = view;
        if version > view.version {
            // Committed after the snapshot: pushed, as one update.
            let frames = follow(&mut w, &mut view, version).await;
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0]["type"], "hall_update");
        } else {
            // Committed before: in the snapshot, and not pushed again.
            w.no_push("hall_update", Duration::from_millis(30)).await;
        }
        let (v, truth) = db_view(&app.db, &s).await;
        assert_eq!((view.version, view.statuses()), (v, truth), "round {round}");
        w.close().await;
    }

    // Subscribers that stay: each sees every later change exactly once.
    let mut watchers = Vec::new();
    for round in 0..16 {
        let mut w = Client::connect(&b).await;
        let seat = &seats[1 + round % 3];
        let c = if round % 2 == 0 { &mut alice } else { &mut bob };
        let (snap, _) = tokio::join!(
            w.request("subscribe_hall", json!({"screening_id": s})),
            async {
                let r = c.hold(&s, &[seat]).await.0;
                if r.get("error").is_none() {
                    c.release(&s, &[seat]).await.data();
                }
            }
        );
        watchers.push((w, View::from_snapshot(&snap["data"])));
    }
    let (version, truth) = db_view(&app.db, &s).await;
    for (w, view) in watchers.iter_mut() {
        follow(w, view, version).await;
        assert_eq!(view.statuses(), truth);
        // Nothing twice: nothing more arrives.
        w.no_push("hall_update", Duration::from_millis(50)).await;
    }
    b.shutdown().await;
}

#[tokio::test]
async fn twenty_users_race_for_five_seats_on_two_replicas() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let (s, seats) = screening(&app.db, 1, 5, HOUR).await;
    let mut watchers = Vec::new();
    for server in [&app.server, &b, &app.server, &b] {
        let mut w = Client::connect(server).await;
        let v = subscribe(&mut w, &s).await;
        watchers.push((w, v));
    }
    let users = join_all((0..20).map(|i| {
        let server = if i % 2 == 0 { &app.server } else { &b };
        async move {
            let (c, _, id) = logged_in(server, &format!("racer{i}")).await;
            (c, id)
        }
    }))
    .await;

    // Round 1: everyone wants all five at once; all or nothing means
    // exactly one user gets them.
    let results = join_all(users.into_iter().map(|(mut c, id)| {
        let s = s.clone();
        let seats = seats.clone();
        tokio::spawn(async move {
            let all: Vec<&String> = seats.iter().collect();
            let r = c.hold(&s, &all).await.0;
            (c, id, r)
        })
    }))
    .await;
    let mut users = Vec::new();
    let mut winners = 0;
    for r in results {
        let (mut c, id, r) = r.unwrap();
        match r["error"].as_str() {
            None => {
                winners += 1;
                let all: Vec<&String> = seats.iter().collect();
                c.release(&s, &all).await.data();
            }
            Some("SEAT_UNAVAILABLE") => {}
            Some(e) => panic!("unexpected {e}: {r}"),
        }
        users.push((c, id));
    }
    assert_eq!(winners, 1, "exactly one all-or-nothing winner");

    // Round 2: everyone tries each seat alone, in their own order, then
    // books what they got.
    let results = join_all(users.into_iter().enumerate().map(|(i, (mut c, id))| {
        let s = s.clone();
        let seats = seats.clone();
        tokio::spawn(async move {
            let mut won = Vec::new();
            for k in 0..seats.len() {
                let seat = &seats[(i + k * 3) % seats.len()];
                let r = c.hold(&s, &[seat]).await.0;
                match r["error"].as_str() {
                    None => won.push(seat.clone()),
                    Some("SEAT_UNAVAILABLE") => {}
                    Some(e) => panic!("unexpected {e}: {r}"),
                }
            }
            if !won.is_empty() {
                let ws: Vec<&String> = won.iter().collect();
                c.book(&s, &ws).await.data();
            }
            (c, id, won)
        })
    }))
    .await;
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    let mut clients = Vec::new();
    for r in results {
        let (c, id, won) = r.unwrap();
        for seat in won {
            assert!(
                owner.insert(seat.clone(), id.clone()).is_none(),
                "{seat} won twice"
            );
        }
        clients.push(c);
    }
    assert_eq!(owner.len(), 5, "every seat has exactly one winner");

    // Nobody else can book them now.
    for (i, c) in clients.iter_mut().enumerate().take(4) {
        let seat = &seats[i];
        assert_eq!(c.book(&s, &[seat]).await.error(), "SEAT_UNAVAILABLE");
    }
    // The database agrees: each seat booked once, by its winner.
    let q = app.db.psql().await;
    let rows = q
        .query(
            "SELECT bs.seat_id::text, b.user_id::text, count(*) OVER (PARTITION BY bs.seat_id)
               FROM booking_seats bs JOIN bookings b ON b.id = bs.booking_id
              WHERE bs.screening_id = $1::text::bigint AND bs.active AND b.status = 'confirmed'",
            &[&s],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    for r in &rows {
        let (seat, user, n): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(n, 1, "seat {seat} booked more than once");
        assert_eq!(owner[&seat], user);
    }
    let (version, truth) = db_view(&app.db, &s).await;
    assert!(truth.values().all(|st| st == "booked"));
    for (w, view) in watchers.iter_mut() {
        follow(w, view, version).await;
        assert_eq!(view.statuses(), truth);
    }
    b.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_without_a_subscription_answers_empty_and_a_bad_id_is_bad_request() {
    let app = TestApp::spawn().await;
    let (s, _) = screening(&app.db, 1, 4, HOUR).await;
    let mut w = app.client().await;
    // Not subscribed (or naming nothing): still {}.
    for id in [s.as_str(), "999999999", "nope"] {
        let r = w
            .request("unsubscribe_hall", json!({"screening_id": id}))
            .await;
        assert_eq!(r["data"], json!({}), "{r}");
        assert!(r.get("error").is_none());
    }
    assert_eq!(
        w.err("unsubscribe_hall", json!({"screening_id": 5})).await,
        "BAD_REQUEST"
    );
}

#[tokio::test]
async fn unsubscribe_stops_pushes_and_resubscribe_replaces() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 4, HOUR).await;
    let (s2, seats2) = screening(&app.db, 1, 2, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let mut w = app.client().await;

    let first = w.subscribe(&s).await.0;
    let second = w.subscribe(&s).await.0;
    assert_ne!(first["eid"], second["eid"]);
    assert_eq!(metric(&app.server, "marquee_subscriptions").await, 1.0);
    alice.hold(&s, &[&seats[0]]).await.data();
    let u = w.push("hall_update").await;
    assert_eq!(u["eid"], second["eid"], "the new eid");
    w.no_push("hall_update", Duration::from_millis(300)).await;

    // A failed subscribe leaves the old one in place.
    let bad = w
        .request("subscribe_hall", json!({"screening_id": "999999999"}))
        .await;
    assert_eq!(bad["error"], "NOT_FOUND");
    assert_eq!(
        w.err("subscribe_hall", json!({"screening_id": 7})).await,
        "BAD_REQUEST"
    );
    alice.hold(&s, &[&seats[1]]).await.data();
    let u = w.push("hall_update").await;
    assert_eq!(u["eid"], second["eid"]);

    // Two screenings at once: each push carries its own subscription's eid.
    let other = w.subscribe(&s2).await.0;
    alice.hold(&s2, &[&seats2[0]]).await.data();
    let u = w.push("hall_update").await;
    assert_eq!(u["eid"], other["eid"]);
    assert_eq!(u["data"]["screening_id"], s2);

    // Unsubscribing stops the pushes of that screening only.
    let r = w
        .request("unsubscribe_hall", json!({"screening_id": s}))
        .await;
    assert_eq!(r["data"], json!({}));
    assert_eq!(metric(&app.server, "marquee_subscriptions").await, 1.0);
    alice.hold(&s, &[&seats[2]]).await.data();
    alice.hold(&s2, &[&seats2[1]]).await.data();
    let u = w.push("hall_update").await;
    assert_eq!(u["data"]["screening_id"], s2);
    w.no_push("hall_update", Duration::from_millis(300)).await;
    let r = w
        .request("unsubscribe_hall", json!({"screening_id": s}))
        .await;
    assert_eq!(r["data"], json!({}));

    // Subscribing again after unsubscribing works (a fresh LISTEN).
    w.ok("unsubscribe_hall", json!({"screening_id": s2})).await;
    let mut view = subscribe(&mut w, &s).await;
    let r = alice.release(&s, &[&seats[0]]).await.data();
    follow(&mut w, &mut view, r["version"].as_i64().unwrap()).await;
    // Closing the connection drops its subscriptions.
    w.close().await;
    wait_for!(
        "the subscription gauge to drop",
        metric(&app.server, "marquee_subscriptions").await == 0.0
    );
}

#[tokio::test]
async fn a_connection_has_at_most_sixteen_subscriptions() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for _ in 0..17 {
        ids.push(screening(&app.db, 1, 1, HOUR).await.0);
    }
    let mut w = app.client().await;
    for id in &ids[..16] {
        w.subscribe(id).await.data();
    }
    let r = w
        .request("subscribe_hall", json!({"screening_id": ids[16]}))
        .await;
    assert_eq!(r["error"], "LIMIT", "{r}");
    assert!(r["data"]["message"].is_string());
    // Re-subscribing to one of the sixteen is a replacement, not a 17th.
    w.ok("subscribe_hall", json!({"screening_id": ids[3]}))
        .await;
    // Another connection has its own sixteen.
    let mut other = app.client().await;
    other
        .ok("subscribe_hall", json!({"screening_id": ids[16]}))
        .await;
    // After unsubscribing one, there is room again.
    w.ok("unsubscribe_hall", json!({"screening_id": ids[0]}))
        .await;
    w.ok("subscribe_hall", json!({"screening_id": ids[16]}))
        .await;
    assert_eq!(
        w.err("subscribe_hall", json!({"screening_id": ids[0]}))
            .await,
        "LIMIT"
    );
}

#[tokio::test]
async fn a_change_set_too_large_for_one_notification_sends_a_snapshot() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    // 500 seats: blocking them all cannot fit in one 8000-byte NOTIFY.
    let (s, seats) = screening(&app.db, 20, 25, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let mut wb = Client::connect(&b).await;
    let mut vb = subscribe(&mut wb, &s).await;
    // alice holds one seat and watches: her snapshots mark it as hers.
    let h = alice.hold(&s, &[&seats[499]]).await.data();
    let mut va = View::from_snapshot(&alice.subscribe(&s).await.data());
    assert_eq!(va.version, h["version"].as_i64().unwrap());
    follow(&mut wb, &mut vb, va.version).await;

    sql(
        &app.db,
        &format!("SELECT admin.block_seats({s}, {})", ids_sql(&seats[..499])),
    )
    .await;
    let (version, truth) = db_view(&app.db, &s).await;
    for (c, view) in [(&mut wb, &mut vb), (&mut alice, &mut va)] {
        let snap = c.push("hall_snapshot").await;
        assert_eq!(snap["data"]["version"], version);
        assert_eq!(
            keys(&snap["data"]),
            ["hall", "prices", "screening_id", "seats", "version"]
        );
        view.apply(&snap);
        assert_eq!(view.statuses(), truth);
        c.no_push("hall_update", Duration::from_millis(100)).await;
    }
    assert_eq!(va.seats[&seats[499]], ("held".to_string(), true));
    assert_eq!(vb.seats[&seats[499]], ("held".to_string(), false));
    assert_eq!(va.seats[&seats[0]].0, "blocked");

    // Small changes are updates again.
    let r = alice.release(&s, &[&seats[499]]).await.data();
    let u = wb.push("hall_update").await;
    assert_eq!(u["data"]["version"], r["version"]);
    vb.apply(&u);

    // A burst of large changes from two sessions, each a resync: every
    // subscriber still ends at the final state.
    let all = ids_sql(&seats);
    let runs = (0..2).map(|k| {
        let url = app.db.url.clone();
        let s = s.clone();
        let all = all.clone();
        tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for i in 0..12 {
                let f = if (i + k) % 2 == 0 { "unblock" } else { "block" };
                c.batch_execute(&format!("SELECT admin.{f}_seats({s}, {all})"))
                    .await
                    .unwrap();
            }
        })
    });
    for r in join_all(runs).await {
        r.unwrap();
    }
    let (version, truth) = db_view(&app.db, &s).await;
    for (c, view) in [(&mut wb, &mut vb), (&mut alice, &mut va)] {
        follow(c, view, version).await;
        assert_eq!(view.statuses(), truth);
    }
    b.shutdown().await;
}

#[tokio::test]
async fn a_lost_listen_connection_heals_and_resyncs_subscribers() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 2, 4, HOUR).await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let mut w = app.client().await;
    let mut view = subscribe(&mut w, &s).await;
    assert_eq!(ready(&app.server).await, 200);
    assert_eq!(
        metric(&app.server, "marquee_listener_reconnects_total").await,
        0.0
    );

    // Keep it down for a while (no new connections to this database), and
    // change a seat meanwhile: that notification is lost.
    let admin = {
        let (c, conn) = tokio_postgres::connect(&admin_conn(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    };
    let db_name = &app.db.name;
    admin
        .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
              WHERE application_name = 'marquee-listener' AND datname = $1",
            &[db_name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    wait_for!("/ready to say 503", ready(&app.server).await == 503);
    let missed = alice.hold(&s, &[&seats[2]]).await.data();
    admin
        .batch_execute(&format!("ALTER DATABASE {db_name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();

    // Back: the subscriber gets a snapshot with what it missed.
    let snap = w.push("hall_snapshot").await;
    view.apply(&snap);
    assert!(view.version >= missed["version"].as_i64().unwrap());
    assert_eq!(view.seats[&seats[2]].0, "held");
    wait_for!("/ready to recover", ready(&app.server).await == 200);
    assert_eq!(
        metric(&app.server, "marquee_listener_reconnects_total").await,
        1.0
    );

    // Later updates still arrive, as updates.
    let r = alice.hold(&s, &[&seats[3]]).await.data();
    let frames = follow(&mut w, &mut view, r["version"].as_i64().unwrap()).await;
    assert_eq!(frames.last().unwrap()["type"], "hall_update");

    // Killed once more, plainly: a snapshot again, and pushes go on.
    let q = app.db.psql().await;
    q.batch_execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE application_name = 'marquee-listener' AND datname = current_database()",
    )
    .await
    .unwrap();
    let snap = w.push("hall_snapshot").await;
    view.apply(&snap);
    wait_for!(
        "a second reconnect",
        metric(&app.server, "marquee_listener_reconnects_total").await == 2.0
    );
    let r = alice.release(&s, &[&seats[3]]).await.data();
    follow(&mut w, &mut view, r["version"].as_i64().unwrap()).await;
    let (version, truth) = db_view(&app.db, &s).await;
    assert_eq!((view.version, view.statuses()), (version, truth));
    // New subscriptions work too (LISTEN on the new connection).
    let mut w2 = app.client().await;
    let mut v2 = subscribe(&mut w2, &s).await;
    let r = alice.hold(&s, &[&seats[4]]).await.data();
    follow(&mut w2, &mut v2, r["version"].as_i64().unwrap()).await;
}

#[tokio::test]
async fn a_slow_consumer_is_cut_off_while_others_keep_receiving() {
    let db = TestDb::new().await;
    let server = start(
        &db,
        config(&db),
        Tuning {
            send_queue_bytes: 256 * 1024,
            ..Default::default()
        },
    )
    .await;
    // 2000 seats: a snapshot is ~180 KB.
    let (s, seats) = screening(&db, 40, 50, HOUR).await;

    // The stuck client subscribes, asks for the hall many times (answers it
    // never reads, which fill the socket buffers and its queue), and never
    // reads again.
    let mut stuck = raw_connect(&server, Connect::default()).await.unwrap();
    stuck
        .send(Message::text(
            json!({"type": "subscribe_hall", "eid": "stuck", "data": {"screening_id": s}})
                .to_string(),
        ))
        .await
        .unwrap();
    for i in 0..45 {
        stuck
            .send(Message::text(
                json!({"type": "get_hall", "eid": format!("g{i}"), "data": {"screening_id": s}})
                    .to_string(),
            ))
            .await
            .unwrap();
    }
    wait_for!(
        "the stuck client's subscription",
        metric(&server, "marquee_subscriptions").await == 1.0
    );

    // The normal subscriber reads everything, in its own task, and says
    // how far it got.
    let mut normal = Client::connect(&server).await;
    let view = subscribe(&mut normal, &s).await;
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(view.version));
    let (target_tx, mut target_rx) = tokio::sync::watch::channel(i64::MAX);
    let follower = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut view = view;
            let mut frames = 0usize;
            loop {
                let target = *target_rx.borrow_and_update();
                if view.version >= target {
                    return (normal, view, frames);
                }
                tokio::select! {
                    f = normal.next_frame() => {
                        let f = f.expect("the normal subscriber stays connected");
                        view.apply(&f);
                        seen.store(view.version, std::sync::atomic::Ordering::Relaxed);
                        frames += 1;
                    }
                    _ = target_rx.changed() => {}
                }
            }
        })
    };

    // One change at a time, each followed by the normal subscriber (a
    // reader that keeps up); now and then all seats at once (a snapshot
    // push). The stuck client's queue overflows.
    let all = ids_sql(&seats);
    let q = db.psql().await;
    let mut rounds = 0;
    while metric(&server, "marquee_slow_consumers_closed_total").await < 1.0 {
        let seat = &seats[rounds % 10];
        let f = if rounds % 20 < 10 { "block" } else { "unblock" };
        let target = if rounds % 5 == 4 {
            all.clone()
        } else {
            format!("ARRAY[{seat}]::bigint[]")
        };
        q.batch_execute(&format!("SELECT admin.{f}_seats({s}, {target})"))
            .await
            .unwrap();
        let (version, _) = db_view(&db, &s).await;
        wait_for!(
            "the normal subscriber to keep up",
            seen.load(std::sync::atomic::Ordering::Relaxed) >= version
        );
        rounds += 1;
        assert!(rounds < 300, "the stuck client was never cut off");
    }
    // More changes after the cut, small and large.
    // (Each followed by the normal subscriber: its queue is small too.)
    let (mut alice, _, _) = logged_in(&server, "alice").await;
    macro_rules! settle {
        () => {{
            let (version, _) = db_view(&db, &s).await;
            wait_for!(
                "the normal subscriber to keep up",
                seen.load(std::sync::atomic::Ordering::Relaxed) >= version
            );
        }};
    }
    q.batch_execute(&format!("SELECT admin.unblock_seats({s}, {all})"))
        .await
        .unwrap();
    settle!();
    alice.hold(&s, &[&seats[0]]).await.data();
    settle!();
    q.batch_execute(&format!("SELECT admin.block_seats({s}, {all})"))
        .await
        .unwrap();
    settle!();
    q.batch_execute(&format!(
        "SELECT admin.unblock_seats({s}, ARRAY[{}]::bigint[])",
        seats[5]
    ))
    .await
    .unwrap();
    let (version, truth) = db_view(&db, &s).await;
    target_tx.send(version).unwrap();
    let (normal, view, frames) = follower.await.unwrap();
    assert!(frames > 0);
    assert_eq!(view.statuses(), truth);
    assert_eq!(view.version, version);
    // Exactly one socket was cut off, and counted once.
    assert_eq!(
        metric(&server, "marquee_slow_consumers_closed_total").await,
        1.0
    );

    // The stuck client, reading at last: what was already in flight, then
    // the close frame with 1013.
    let code = tokio::time::timeout(WAIT, async {
        use futures_util::StreamExt;
        while let Some(m) = stuck.next().await {
            match m {
                Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
                Ok(Message::Close(None)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
        None
    })
    .await
    .expect("the stuck client gets its close frame");
    assert_eq!(code, Some(1013));
    drop(normal);
    wait_for!(
        "the stuck connection to be gone",
        metric(&server, "marquee_connections").await <= 1.0
    );
    server.shutdown().await;
}

/// Holds `LOCK TABLE halls` in a transaction: snapshot reads of the server
/// (which join halls) wait, while seat changes (which do not) go through.
/// Lets a test commit changes between a snapshot's start and its end.
struct HallsLock(tokio_postgres::Client);

impl HallsLock {
    async fn take(db: &TestDb) -> HallsLock {
        let c = db.psql().await;
        c.batch_execute("BEGIN; LOCK TABLE halls IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        HallsLock(c)
    }

    /// Waits until `n` server queries wait for the lock.
    async fn wait_for_waiters(&self, n: i64) {
        wait_for!(format!("{n} snapshot reads to wait for the lock"), {
            let waiting: i64 = self
                .0
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND application_name = 'marquee'
                        AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            waiting == n
        });
    }

    async fn release(self) {
        self.0.batch_execute("COMMIT").await.unwrap();
    }
}

#[tokio::test]
async fn a_large_change_committed_while_a_subscribe_reads_its_snapshot_is_not_lost() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 20, 25, HOUR).await;
    let all = ids_sql(&seats);
    let mut w = app.client().await;

    // The subscribe has LISTENed and started its snapshot; then a change
    // too large to carry (a resync notice) commits and arrives.
    let lock = HallsLock::take(&app.db).await;
    w.send_text(
        json!({"type": "subscribe_hall", "eid": "sub", "data": {"screening_id": s}}).to_string(),
    )
    .await;
    lock.wait_for_waiters(1).await;
    let before = metric(&app.server, "marquee_notifications_received_total").await;
    sql(&app.db, &format!("SELECT admin.block_seats({s}, {all})")).await;
    wait_for!(
        "the resync notice",
        metric(&app.server, "marquee_notifications_received_total").await > before
    );
    lock.release().await;

    let answer = w.response("sub").await;
    let mut view = View::from_snapshot(&answer["data"]);
    let (version, truth) = db_view(&app.db, &s).await;
    assert_eq!(
        view.version,
        version - 1,
        "the snapshot predates the change"
    );
    follow(&mut w, &mut view, version).await;
    assert_eq!(view.statuses(), truth);
}

#[tokio::test]
async fn a_large_change_committed_while_a_resync_reads_its_snapshot_is_not_lost() {
    let (TestApp { db, server }, s, seats, mut w, mut view) = one_connection_subscriber().await;
    let all = ids_sql(&seats);

    // Change 1 (too large: a resync) arrives; its snapshot read waits.
    let lock = HallsLock::take(&db).await;
    sql(&db, &format!("SELECT admin.block_seats({s}, {all})")).await;
    lock.wait_for_waiters(1).await;
    // Change 2 (too large as well) commits and arrives meanwhile.
    let before = metric(&server, "marquee_notifications_received_total").await;
    sql(&db, &format!("SELECT admin.unblock_seats({s}, {all})")).await;
    wait_for!(
        "the second resync notice",
        metric(&server, "marquee_notifications_received_total").await > before
    );
    lock.release().await;

    // The first snapshot is stale; the subscriber must still end up at
    // change 2.
    let (version, truth) = db_view(&db, &s).await;
    follow(&mut w, &mut view, version).await;
    assert_eq!(view.statuses(), truth);
    server.shutdown().await;
}

#[tokio::test]
async fn a_change_already_in_a_resync_snapshot_is_not_pushed_again() {
    // The resync's read can be made to wait for the one connection:
    // changes arriving meanwhile are then older than its snapshot.
    let (TestApp { db, server }, s, seats, mut w, mut view) = one_connection_subscriber().await;
    let all = ids_sql(&seats);

    // Another client's get_hall takes the only connection and waits.
    let lock = HallsLock::take(&db).await;
    let mut other = Client::connect(&server).await;
    other
        .send_text(json!({"type": "get_hall", "eid": "g", "data": {"screening_id": s}}).to_string())
        .await;
    lock.wait_for_waiters(1).await;
    // A resync notice (the resync waits for the connection), then a small
    // change, both held back for the subscriber.
    let before = metric(&server, "marquee_notifications_received_total").await;
    sql(&db, &format!("SELECT admin.block_seats({s}, {all})")).await;
    sql(
        &db,
        &format!(
            "SELECT admin.unblock_seats({s}, ARRAY[{}]::bigint[])",
            seats[7]
        ),
    )
    .await;
    wait_for!(
        "both notifications",
        metric(&server, "marquee_notifications_received_total").await >= before + 2.0
    );
    lock.release().await;
    other.response("g").await;

    // The snapshot already has the small change: it must not follow as an
    // update (View::apply checks every update is exactly one newer).
    let snap = w.push("hall_snapshot").await;
    view.apply(&snap);
    let (version, truth) = db_view(&db, &s).await;
    assert_eq!(view.version, version);
    assert_eq!(view.statuses(), truth);
    let r = sql_version_after(
        &db,
        &format!(
            "SELECT admin.unblock_seats({s}, ARRAY[{}]::bigint[])",
            seats[8]
        ),
    )
    .await;
    let frames = follow(&mut w, &mut view, r).await;
    let kinds: Vec<(String, i64)> = frames
        .iter()
        .map(|f| {
            (
                f["type"].as_str().unwrap().to_owned(),
                f["data"]["version"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(kinds, vec![("hall_update".to_string(), r)]);
    assert_eq!(view.seats[&seats[8]].0, "free");
    server.shutdown().await;
}

/// Runs SQL and returns the screening version the database has after it
/// (of the only screening with that version change: the test's own).
async fn sql_version_after(db: &TestDb, q: &str) -> i64 {
    sql(db, q).await;
    db.scalar("SELECT max(version) FROM screening_versions")
        .await
        .expect("a version")
        .parse()
        .unwrap()
}
