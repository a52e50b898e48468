//! Three replicas on one database (issue 6, "Replicas and scale-out"):
//! every change made on any replica reaches the subscribers of all three,
//! with the same versions, +1 per change, in one order; under concurrent
//! changes from all three at once, every subscriber's view ends equal to
//! the database.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::harness::*;
use serde_json::{json, Value};

const HOUR: Duration = Duration::from_secs(3600);

/// Applies one `hall_update` to a view; returns its version.
fn apply(view: &mut BTreeMap<String, String>, update: &Value) -> i64 {
    for seat in update["data"]["seats"].as_array().expect("seats") {
        view.insert(
            seat["id"].as_str().expect("id").to_owned(),
            seat["status"].as_str().expect("status").to_owned(),
        );
    }
    update["data"]["version"].as_i64().expect("version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_each_replica_reaches_the_other_two() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let c = app.replica().await;
    let servers = [&app.server, &b, &c];
    let ids: HashSet<String> = servers.iter().map(|s| s.replica_id.clone()).collect();
    assert_eq!(ids.len(), 3, "three distinct replica ids");
    let (scr, s) = screening(&app.db, 3, 6, HOUR).await;

    // On each replica: a user and an anonymous watcher, all subscribed.
    let mut users = Vec::new();
    let mut watchers = Vec::new();
    for (i, srv) in servers.iter().enumerate() {
        let (u, _, _) = logged_in(srv, &format!("user{i}")).await;
        assert_eq!(u.session["data"]["server"], srv.replica_id.as_str());
        users.push(u);
        watchers.push(Client::connect(srv).await);
    }
    let mut v0 = None;
    for cl in users.iter_mut().chain(watchers.iter_mut()) {
        let snap = cl.subscribe(&scr).await.data();
        let v = snap["version"].as_i64().expect("version");
        assert_eq!(*v0.get_or_insert(v), v, "one version on every replica");
    }
    let mut version = v0.expect("subscribed");

    // Each replica in turn changes a seat; all six subscribers see it.
    let steps: Vec<(usize, &str, Vec<&String>, &str)> = vec![
        (0, "hold_seats", vec![&s[0], &s[1]], "held"),
        (1, "hold_seats", vec![&s[2]], "held"),
        (2, "hold_seats", vec![&s[3]], "held"),
        (2, "book_seats", vec![&s[3]], "booked"),
        (0, "release_seats", vec![&s[1]], "free"),
        (1, "book_seats", vec![&s[2]], "booked"),
    ];
    for (who, kind, seats, status) in steps {
        let r = users[who]
            .ok(kind, json!({"screening_id": scr, "seat_ids": seats}))
            .await;
        version += 1;
        assert_eq!(r["version"], version, "{kind} on replica {who}: {r}");
        for (i, cl) in users.iter_mut().chain(watchers.iter_mut()).enumerate() {
            let u = cl.push("hall_update").await;
            assert_eq!(
                u["data"]["version"], version,
                "subscriber {i} after {kind} on replica {who}: {u}"
            );
            let expect: Vec<Value> = seats
                .iter()
                .map(|id| {
                    // `mine` only for the user who made the change, and not for
                    // a seat that became free.
                    if i == who && status != "free" {
                        json!({"id": id, "status": status, "mine": true})
                    } else {
                        json!({"id": id, "status": status})
                    }
                })
                .collect();
            assert_eq!(u["data"]["seats"], json!(expect), "subscriber {i}: {u}");
        }
    }
    // A DBA's change (no replica involved) reaches all three as well.
    app.db
        .psql()
        .await
        .execute(
            "SELECT admin.block_seats($1::text::bigint, ARRAY[$2::text::bigint])",
            &[&scr, &s[5]],
        )
        .await
        .expect("block");
    version += 1;
    for cl in users.iter_mut().chain(watchers.iter_mut()) {
        let u = cl.push("hall_update").await;
        assert_eq!(u["data"]["version"], version);
        assert_eq!(
            u["data"]["seats"],
            json!([{"id": s[5], "status": "blocked"}])
        );
    }
    c.shutdown().await;
    b.shutdown().await;
    app.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_on_three_replicas_keep_every_view_equal_to_the_database() {
    let app = TestApp::spawn().await;
    let b = app.replica().await;
    let c = app.replica().await;
    let servers = [&app.server, &b, &c];
    let (scr, s) = screening(&app.db, 4, 10, HOUR).await;

    let mut watchers = Vec::new();
    let mut v0 = 0;
    let mut view0 = BTreeMap::new();
    for srv in &servers {
        for _ in 0..2 {
            let mut w = Client::connect(srv).await;
            let snap = w.subscribe(&scr).await.data();
            v0 = snap["version"].as_i64().expect("version");
            view0 = statuses(&snap);
            watchers.push(w);
        }
    }

    // Three users per replica, each cycling hold/release/hold/book over
    // seats of its own, all at once.
    const ROUNDS: usize = 4;
    let mut tasks = Vec::new();
    let mut n = 0;
    for (r, srv) in servers.iter().enumerate() {
        for k in 0..3 {
            let (mut u, _, _) = logged_in(srv, &format!("r{r}u{k}")).await;
            let mine: Vec<String> = s[n * 4..n * 4 + 4].to_vec();
            n += 1;
            let scr = scr.clone();
            tasks.push(tokio::spawn(async move {
                let mut versions = Vec::new();
                for (round, seat) in mine.iter().enumerate().take(ROUNDS) {
                    let d = json!({"screening_id": scr, "seat_ids": [seat]});
                    for kind in ["hold_seats", "release_seats", "hold_seats"] {
                        versions.push(u.ok(kind, d.clone()).await["version"].as_i64().unwrap());
                    }
                    if round % 2 == 0 {
                        versions.push(u.ok("book_seats", d).await["version"].as_i64().unwrap());
                    }
                }
                versions
            }));
        }
    }
    let mut answered = Vec::new();
    for t in tasks {
        answered.extend(t.await.expect("user task"));
    }
    answered.sort_unstable();
    let changes = answered.len() as i64;
    // Each change got its own version: v0+1 ..= v0+changes, no gap, no repeat.
    assert_eq!(answered, ((v0 + 1)..=(v0 + changes)).collect::<Vec<_>>());

    let db = app.db.psql().await;
    let rows = db
        .query(
            "SELECT seat_id::text, status FROM seat_states WHERE screening_id = $1::text::bigint",
            &[&scr],
        )
        .await
        .expect("seat states");
    let db_view: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let db_version: i64 = db
        .query_one(
            "SELECT version FROM screening_versions WHERE screening_id = $1::text::bigint",
            &[&scr],
        )
        .await
        .expect("version")
        .get(0);
    assert_eq!(db_version, v0 + changes);

    for (i, w) in watchers.iter_mut().enumerate() {
        let mut view = view0.clone();
        let mut version = v0;
        while version < db_version {
            let u = w.push("hall_update").await;
            let v = apply(&mut view, &u);
            assert_eq!(v, version + 1, "watcher {i}: versions +1 in order");
            version = v;
        }
        assert_eq!(view, db_view, "watcher {i} sees the database");
        w.no_push("hall_update", Duration::from_millis(100)).await;
    }
    c.shutdown().await;
    b.shutdown().await;
    app.server.shutdown().await;
}
