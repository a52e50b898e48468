//! The seat writer (src/models/writer.rs, sql/47_seat_batch.sql): changes
//! that arrive while another one runs share one transaction, and each still
//! answers, fails and pushes exactly as it would alone.

use std::time::Duration;

use crate::harness::*;
use marquee::app::{Server, Tuning};
use serde_json::{json, Value};

const DAY: Duration = Duration::from_secs(86_400);

/// `marquee_seat_changes_total` and `marquee_seat_transactions_total`.
async fn writer_counts(server: &Server) -> (f64, f64) {
    let m = metrics(server.http_addr).await;
    (
        metric(&m, "marquee_seat_changes_total").expect("seat changes metric"),
        metric(&m, "marquee_seat_transactions_total").expect("seat transactions metric"),
    )
}

/// Waits until exactly one of the server's pooled connections waits for a lock.
async fn one_waits_for_a_lock(app: &TestApp, what: &str) {
    eventually(what, Duration::from_secs(10), || async {
        app.db
            .scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'marquee' AND datname = current_database()")
            .await
            .as_deref()
            == Some("1")
    })
    .await;
}

/// A DBA session holding the screening's version row in an open
/// transaction: every change of the screening waits for it until `COMMIT`.
async fn lock_version_row(db: &TestDb, screening: &str) -> tokio_postgres::Client {
    let dba = db.psql().await;
    dba.batch_execute(&format!(
        "BEGIN; SELECT version FROM screening_versions WHERE screening_id = {screening} FOR UPDATE"
    ))
    .await
    .expect("lock the version row");
    dba
}

fn version(v: &Value) -> i64 {
    v["version"]
        .as_i64()
        .unwrap_or_else(|| panic!("no version in {v}"))
}

/// The screening's version as the database has it.
async fn db_version(db: &TestDb, screening: &str) -> i64 {
    db.scalar(&format!(
        "SELECT version FROM screening_versions WHERE screening_id = {screening}"
    ))
    .await
    .expect("a version row")
    .parse()
    .expect("a number")
}

#[tokio::test]
async fn changes_that_arrive_together_share_a_transaction_and_answer_as_alone() {
    // A batch that waits never lets the next start beside it here, so the changes behind it all queue.
    let app = TestApp::tuned(Tuning {
        seat_stall: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    let mut halls = Vec::new();
    for _ in 0..6 {
        halls.push(screening(&app.db, 1, 2, DAY).await);
    }
    let mut users = Vec::new();
    for i in 0..8 {
        users.push(logged_in(&app.server, &format!("batch_user{i}")).await.0);
    }
    let (s0, s1, s2, s3, s4, s5) = (
        &halls[0], &halls[1], &halls[2], &halls[3], &halls[4], &halls[5],
    );

    // One at a time (each alone): what the batch will book, release, cancel and fail on.
    users[1].hold(&s1.0, &s1.1[..1]).await.data();
    users[2].hold(&s2.0, &s2.1[..1]).await.data();
    users[3].hold(&s3.0, &s3.1[..1]).await.data();
    let booking = users[3].book(&s3.0, &s3.1[..1]).await.data();
    let booking_id = booking["booking"]["id"].as_str().expect("id").to_owned();
    users[4].hold(&s4.0, &s4.1[..1]).await.data();
    let mut watcher = app.client().await;
    let snap = watcher.subscribe(&s5.0).await.data();
    let v5 = version(&snap);
    let before: Vec<i64> = {
        let mut v = Vec::new();
        for (id, _) in &halls {
            v.push(db_version(&app.db, id).await);
        }
        v
    };
    let (changes0, transactions0) = writer_counts(&app.server).await;

    // The writer's first change waits for a row lock a DBA session holds, so the next ones queue behind it.
    let dba = lock_version_row(&app.db, &s0.0).await;
    let e0 = users[0]
        .send("hold_seats", seat_data(&s0.0, &s0.1[..1]))
        .await
        .expect("send");
    one_waits_for_a_lock(&app, "the first hold waits for the lock").await;
    let e1 = users[1]
        .send("book_seats", seat_data(&s1.0, &s1.1[..1]))
        .await
        .expect("send");
    let e2 = users[2]
        .send("release_seats", seat_data(&s2.0, &s2.1[..1]))
        .await
        .expect("send");
    let e3 = users[3]
        .send("cancel_booking", json!({ "booking_id": booking_id }))
        .await
        .expect("send");
    let e5 = users[5]
        .send("hold_seats", seat_data(&s4.0, &s4.1[..1]))
        .await
        .expect("send");
    let e6 = users[6]
        .send("hold_seats", seat_data(&s5.0, &s5.1[..1]))
        .await
        .expect("send");
    let e7 = users[7]
        .send("hold_seats", seat_data(&s5.0, &s5.1[1..]))
        .await
        .expect("send");
    // Nothing but the lock holds them: give the frames time to reach the writer's queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    dba.batch_execute("COMMIT").await.expect("commit");

    let a0 = users[0].response(&e0).await;
    assert_eq!(version(&a0["data"]), before[0] + 1, "{a0}");
    let a1 = users[1].response(&e1).await;
    assert_eq!(a1["data"]["booking"]["status"], "confirmed", "{a1}");
    assert_eq!(version(&a1["data"]), before[1] + 1, "{a1}");
    let a2 = users[2].response(&e2).await;
    assert_eq!(a2["data"]["seat_ids"], json!([s2.1[0]]), "{a2}");
    assert_eq!(version(&a2["data"]), before[2] + 1, "{a2}");
    let a3 = users[3].response(&e3).await;
    assert_eq!(a3["data"]["booking"]["status"], "cancelled", "{a3}");
    assert_eq!(version(&a3["data"]), before[3] + 1, "{a3}");
    let a5 = users[5].response(&e5).await;
    assert_eq!(a5["error"], "SEAT_UNAVAILABLE", "{a5}");
    assert_eq!(a5["data"]["seat_ids"], json!([s4.1[0]]), "{a5}");
    let a6 = users[6].response(&e6).await;
    let a7 = users[7].response(&e7).await;
    let mut fives = vec![version(&a6["data"]), version(&a7["data"])];
    fives.sort();
    assert_eq!(fives, vec![v5 + 1, v5 + 2], "{a6} {a7}");

    // The refused hold changed nothing; the others are in the database and were pushed one by one.
    assert_eq!(db_version(&app.db, &s4.0).await, before[4]);
    assert_eq!(db_version(&app.db, &s5.0).await, v5 + 2);
    let u1 = watcher.push("hall_update").await;
    let u2 = watcher.push("hall_update").await;
    assert_eq!(
        (version(&u1["data"]), version(&u2["data"])),
        (v5 + 1, v5 + 2),
        "{u1} {u2}"
    );
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT string_agg(status, ',' ORDER BY seat_id) FROM seat_states WHERE screening_id IN ({}, {}, {})",
                s1.0, s2.0, s3.0
            ))
            .await
            .as_deref(),
        Some("booked,free,free,free,free,free")
    );

    // The first change ran alone; the six behind it, two of one screening among them, took one transaction.
    let (changes, transactions) = writer_counts(&app.server).await;
    assert_eq!(changes - changes0, 7.0);
    assert_eq!(transactions - transactions0, 2.0);
}

#[tokio::test]
async fn a_batch_of_one_change_per_transaction_runs_them_side_by_side() {
    let app = TestApp::configured(|c| c.seat_batch_max = 1).await;
    let (s, seats) = screening(&app.db, 1, 2, DAY).await;
    let (mut alice, _, _) = logged_in(&app.server, "alone_alice").await;
    let (mut bob, _, _) = logged_in(&app.server, "alone_bob").await;
    let (changes0, transactions0) = writer_counts(&app.server).await;

    // A DBA's lock keeps Alice's hold waiting; Bob's hold of another screening's seat is not stuck behind it.
    let (other, other_seats) = screening(&app.db, 1, 2, DAY).await;
    let dba = lock_version_row(&app.db, &s).await;
    let ea = alice
        .send("hold_seats", seat_data(&s, &seats[..1]))
        .await
        .expect("send");
    let b = bob.hold(&other, &other_seats[..1]).await.data();
    assert!(b["expires_at"].is_string(), "{b}");
    dba.batch_execute("COMMIT").await.expect("commit");
    let a = alice.response(&ea).await;
    assert!(a["data"]["expires_at"].is_string(), "{a}");

    let (changes, transactions) = writer_counts(&app.server).await;
    assert_eq!(
        (changes - changes0, transactions - transactions0),
        (2.0, 2.0)
    );
}

#[tokio::test]
async fn a_screening_stuck_behind_a_lock_does_not_stop_the_others() {
    let app = TestApp::spawn().await;
    let (s, seats) = screening(&app.db, 1, 2, DAY).await;
    let (other, other_seats) = screening(&app.db, 1, 2, DAY).await;
    let (mut alice, _, _) = logged_in(&app.server, "stuck_alice").await;
    let (mut bob, _, _) = logged_in(&app.server, "stuck_bob").await;

    let dba = lock_version_row(&app.db, &s).await;
    let ea = alice
        .send("hold_seats", seat_data(&s, &seats[..1]))
        .await
        .expect("send");
    one_waits_for_a_lock(&app, "Alice's hold waits for the lock").await;
    // Bob's changes of another screening go on beside it.
    let b = bob.hold(&other, &other_seats[..1]).await.data();
    assert!(b["expires_at"].is_string(), "{b}");
    let r = bob.release(&other, &other_seats[..1]).await.data();
    assert_eq!(r["seat_ids"], json!([other_seats[0]]), "{r}");
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT status FROM seat_states WHERE screening_id = {s} AND seat_id = {}",
                seats[0]
            ))
            .await
            .as_deref(),
        Some("free"),
        "Alice's hold is still waiting"
    );
    dba.batch_execute("COMMIT").await.expect("commit");
    let a = alice.response(&ea).await;
    assert!(a["data"]["expires_at"].is_string(), "{a}");
}

#[tokio::test]
async fn a_change_stuck_in_a_batch_runs_again_alone_while_the_others_commit() {
    let app = TestApp::tuned(Tuning {
        seat_stall: Duration::from_secs(3600),
        ..Default::default()
    })
    .await;
    let (a, a_seats) = screening(&app.db, 1, 2, DAY).await;
    let (b, b_seats) = screening(&app.db, 1, 2, DAY).await;
    let (c, c_seats) = screening(&app.db, 1, 2, DAY).await;
    let (mut alice, _, _) = logged_in(&app.server, "slow_alice").await;
    let (mut bob, _, _) = logged_in(&app.server, "slow_bob").await;
    let (mut carol, _, _) = logged_in(&app.server, "slow_carol").await;
    let (changes0, transactions0) = writer_counts(&app.server).await;

    // A DBA keeps one of a's seats locked; another DBA session holds b's version row for a moment, so that Bob's
    // hold of b runs alone and Alice's and Carol's queue behind it and then go together.
    let seat_lock = app.db.psql().await;
    seat_lock
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM seat_states WHERE screening_id = {a} AND seat_id = {} FOR UPDATE",
            a_seats[0]
        ))
        .await
        .expect("lock a seat");
    let version_lock = lock_version_row(&app.db, &b).await;
    let eb = bob
        .send("hold_seats", seat_data(&b, &b_seats[..1]))
        .await
        .expect("send");
    one_waits_for_a_lock(&app, "Bob's hold waits").await;
    let ea = alice
        .send("hold_seats", seat_data(&a, &a_seats[..1]))
        .await
        .expect("send");
    let ec = carol
        .send("hold_seats", seat_data(&c, &c_seats[..1]))
        .await
        .expect("send");
    tokio::time::sleep(Duration::from_millis(500)).await;
    version_lock.batch_execute("COMMIT").await.expect("commit");
    let rb = bob.response(&eb).await;
    assert!(rb["data"]["expires_at"].is_string(), "{rb}");

    // Alice's hold waits in the batch for the seat lock, gives up after the batch's lock timeout, and runs again
    // alone; Carol's, in the same batch, commits meanwhile.
    let rc = carol.response(&ec).await;
    assert!(rc["data"]["expires_at"].is_string(), "{rc}");
    one_waits_for_a_lock(&app, "Alice's hold waits alone").await;
    seat_lock.batch_execute("COMMIT").await.expect("commit");
    let ra = alice.response(&ea).await;
    assert!(ra["data"]["expires_at"].is_string(), "{ra}");
    assert_eq!(
        app.db
            .scalar(&format!(
                "SELECT status FROM seat_states WHERE screening_id = {a} AND seat_id = {}",
                a_seats[0]
            ))
            .await
            .as_deref(),
        Some("held")
    );

    // Bob's alone, Alice's and Carol's together, Alice's again alone.
    let (changes, transactions) = writer_counts(&app.server).await;
    assert_eq!(
        (changes - changes0, transactions - transactions0),
        (4.0, 3.0)
    );
}
