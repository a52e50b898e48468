//! Property test (issue 6, "Hostile input"): random sequences of
//! hold/release/book/cancel from six users on two replicas of one small
//! hall never break the invariants.
//!
//! After every case:
//! * no seat twice: a seat is `booked` exactly when one active
//!   `booking_seats` row of a confirmed booking of the same user names it,
//!   active rows are unique per seat, and a booking's rows are active
//!   exactly while it is confirmed;
//! * versions +1: the `version`s of the answers that changed something are
//!   exactly the versions between the subscribe snapshot and the database's
//!   final one, each once, and every subscriber saw `hall_update`s with
//!   consecutive versions (never a resync snapshot);
//! * every subscriber's view (its snapshot plus the updates it applied)
//!   equals `get_hall` and the database, `mine` marks included;
//! * each user's holds and bookings are what its own answers said.
//!
//! Answers are checked against the model as they come: holding seats one
//! already holds, and booking seats one holds, always succeed; another
//! user's booking is NOT_FOUND; nothing ever answers BAD_REQUEST,
//! HOLD_EXPIRED or INTERNAL.
//!
//! The operations run six at a time, each user's in order and different
//! users' concurrently, so requests race for the same seats on both
//! replicas.
//!
//! Why only a few cases: every case runs against real servers and
//! PostgreSQL (fresh connections, a fresh screening, 100-200 requests plus
//! the checks, about a second), and shrinking a failure re-runs whole
//! cases. Six cases and at most 32 shrink steps keep the binary well under
//! a minute when green and bounded when red; random seeds make each CI run
//! explore different sequences.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::harness::*;
use marquee::app::Server;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};

const USERS: usize = 6;
const ROWS: i32 = 3;
const PER_ROW: i32 = 4;
const SEATS: usize = (ROWS * PER_ROW) as usize;

#[derive(Debug, Clone)]
enum Op {
    /// Hold these seats (indices into the hall).
    Hold { user: usize, seats: Vec<usize> },
    /// Release: with `own`, seats picked among the user's holds.
    Release {
        user: usize,
        seats: Vec<usize>,
        own: bool,
    },
    /// Book: with `own`, seats picked among the user's holds.
    Book {
        user: usize,
        seats: Vec<usize>,
        own: bool,
    },
    /// Cancel: with `own`, one of the user's bookings, else another's.
    Cancel { user: usize, pick: usize, own: bool },
}

impl Op {
    fn user(&self) -> usize {
        match self {
            Op::Hold { user, .. }
            | Op::Release { user, .. }
            | Op::Book { user, .. }
            | Op::Cancel { user, .. } => *user,
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let seats = prop::collection::vec(0..SEATS, 1..=4);
    prop_oneof![
        4 => (user.clone(), seats.clone()).prop_map(|(user, seats)| Op::Hold { user, seats }),
        2 => (user.clone(), seats.clone(), prop::bool::weighted(0.7))
            .prop_map(|(user, seats, own)| Op::Release { user, seats, own }),
        3 => (user.clone(), seats, prop::bool::weighted(0.8))
            .prop_map(|(user, seats, own)| Op::Book { user, seats, own }),
        2 => (user, any::<usize>(), prop::bool::weighted(0.8))
            .prop_map(|(user, pick, own)| Op::Cancel { user, pick, own }),
    ]
}

/// Two replicas and six registered users, shared by the cases.
struct Env {
    app: TestApp,
    replica: Server,
    /// (token, user id) per user.
    users: Vec<(String, String)>,
    /// Successful changes of each kind over all cases, to show the cases
    /// reached every path (a run where nothing was ever booked or
    /// cancelled would prove little).
    done: std::sync::Mutex<BTreeMap<&'static str, usize>>,
}

impl Env {
    async fn start() -> Env {
        let app = TestApp::spawn().await;
        let replica = app.replica().await;
        let mut users = Vec::new();
        for i in 0..USERS {
            let (c, token, id) = logged_in(&app.server, &format!("prop{i}")).await;
            c.close().await;
            users.push((token, id));
        }
        Env {
            app,
            replica,
            users,
            done: Default::default(),
        }
    }

    /// Users and subscribers alternate between the replicas.
    fn server(&self, i: usize) -> &Server {
        if i.is_multiple_of(2) {
            &self.app.server
        } else {
            &self.replica
        }
    }
}

/// A user's connection and what its own answers told it.
struct Actor {
    c: Client,
    id: String,
    held: BTreeSet<String>,
    /// booking id -> (seat ids, confirmed)
    bookings: BTreeMap<String, (BTreeSet<String>, bool)>,
    /// Versions of this user's answers that changed a seat.
    changes: Vec<i64>,
    /// Kinds of the changes.
    kinds: Vec<&'static str>,
}

impl Actor {
    /// Notes an answer that changed a seat.
    fn changed(&mut self, kind: &'static str, f: &Value) {
        self.changes
            .push(f["data"]["version"].as_i64().expect("version"));
        self.kinds.push(kind);
    }
}

/// A subscription whose view is rebuilt from its pushes.
struct Watcher {
    eid: String,
    version: i64,
    /// seat id -> (status, mine)
    view: BTreeMap<String, (String, bool)>,
}

fn strs(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|s| s.as_str().expect("string id").to_owned())
        .collect()
}

/// A request; RATE_LIMITED (only a burst of one user's operations can
/// reach it) is waited out and retried, as a client would.
async fn call(c: &mut Client, kind: &str, data: Value) -> Value {
    loop {
        let f = c.request(kind, data.clone()).await;
        if f["error"] != "RATE_LIMITED" {
            return f;
        }
        let s = f["data"]["retry_after_s"].as_u64().unwrap_or(1);
        tokio::time::sleep(Duration::from_secs(s)).await;
    }
}

fn pick(from: &BTreeSet<String>, idx: &[usize]) -> Vec<String> {
    let all: Vec<&String> = from.iter().collect();
    idx.iter().map(|i| all[i % all.len()].clone()).collect()
}

/// Runs one operation and checks its answer against the user's model.
async fn apply(
    a: &mut Actor,
    op: &Op,
    screening: &str,
    seats: &[String],
    others_bookings: &[String],
) -> Result<(), TestCaseError> {
    let raw = |idx: &[usize]| -> Vec<String> { idx.iter().map(|i| seats[*i].clone()).collect() };
    // One's own holds when asked for and there are any, else any seats.
    let choose = |held: &BTreeSet<String>, own: bool, idx: &[usize]| {
        if own && !held.is_empty() {
            pick(held, idx)
        } else {
            raw(idx)
        }
    };
    match op {
        Op::Hold { seats: idx, .. } => {
            let want = raw(idx);
            let set: BTreeSet<String> = want.iter().cloned().collect();
            let f = call(&mut a.c, "hold_seats", seat_data(screening, &want)).await;
            let renewal = set.is_subset(&a.held);
            match f["error"].as_str() {
                None => {
                    prop_assert_eq!(strs(&f["data"]["seat_ids"]), set.clone(), "{}", f);
                    if !renewal {
                        a.changed("hold", &f);
                    }
                    a.held.extend(set);
                }
                Some("SEAT_UNAVAILABLE") => {
                    prop_assert!(!renewal, "renewing one's own holds failed: {}", f);
                    let bad = strs(&f["data"]["seat_ids"]);
                    prop_assert!(!bad.is_empty() && bad.is_subset(&set), "{}", f);
                    prop_assert!(bad.is_disjoint(&a.held), "own hold reported taken: {}", f);
                }
                Some("HOLD_LIMIT") => prop_assert!(!renewal, "renewal over the limit: {}", f),
                Some(_) => prop_assert!(false, "hold_seats: {}", f),
            }
        }
        Op::Release {
            seats: idx, own, ..
        } => {
            let want = choose(&a.held, *own, idx);
            let set: BTreeSet<String> = want.iter().cloned().collect();
            let f = call(&mut a.c, "release_seats", seat_data(screening, &want)).await;
            prop_assert!(f.get("error").is_none(), "release_seats: {}", f);
            let released = strs(&f["data"]["seat_ids"]);
            let expected: BTreeSet<String> = set.intersection(&a.held).cloned().collect();
            prop_assert_eq!(&released, &expected, "only and all own holds: {}", f);
            if !released.is_empty() {
                a.changed("release", &f);
            }
            for s in &released {
                a.held.remove(s);
            }
        }
        Op::Book {
            seats: idx, own, ..
        } => {
            let want = choose(&a.held, *own, idx);
            let set: BTreeSet<String> = want.iter().cloned().collect();
            let f = call(&mut a.c, "book_seats", seat_data(screening, &want)).await;
            let all_mine = set.is_subset(&a.held);
            match f["error"].as_str() {
                None => {
                    prop_assert!(all_mine, "booked seats not held: {}", f);
                    let b = &f["data"]["booking"];
                    prop_assert_eq!(strs(&b["seat_ids"]), set.clone(), "{}", f);
                    prop_assert_eq!(&b["status"], "confirmed");
                    a.changed("book", &f);
                    for s in &set {
                        a.held.remove(s);
                    }
                    let id = b["id"].as_str().expect("booking id").to_owned();
                    prop_assert!(a.bookings.insert(id, (set, true)).is_none());
                }
                Some("SEAT_UNAVAILABLE") => {
                    prop_assert!(!all_mine, "booking one's own holds failed: {}", f)
                }
                Some(_) => prop_assert!(false, "book_seats: {}", f),
            }
        }
        Op::Cancel { pick: n, own, .. } => {
            let mine: Vec<String> = a.bookings.keys().cloned().collect();
            let (id, is_mine) = if *own && !mine.is_empty() {
                (mine[n % mine.len()].clone(), true)
            } else if !others_bookings.is_empty() {
                (others_bookings[n % others_bookings.len()].clone(), false)
            } else {
                ("999999999".to_owned(), false)
            };
            let f = call(&mut a.c, "cancel_booking", json!({"booking_id": id})).await;
            if is_mine {
                prop_assert!(f.get("error").is_none(), "cancel own booking: {}", f);
                prop_assert_eq!(&f["data"]["booking"]["status"], "cancelled");
                let entry = a.bookings.get_mut(&id).expect("known");
                if entry.1 {
                    entry.1 = false;
                    a.changed("cancel", &f);
                }
            } else {
                prop_assert_eq!(&f["error"], "NOT_FOUND", "another's booking: {}", f);
            }
        }
    }
    Ok(())
}

async fn subscribe(c: &mut Client, screening: &str) -> Watcher {
    let f = c.subscribe(screening).await.0;
    assert!(f.get("error").is_none(), "subscribe: {f}");
    Watcher {
        eid: f["eid"].as_str().expect("eid").to_owned(),
        version: f["data"]["version"].as_i64().expect("version"),
        view: seat_views(&f["data"]["seats"]),
    }
}

/// Reads a watcher's pushes until it has seen `version`, applying each.
async fn catch_up(c: &mut Client, w: &mut Watcher, version: i64) -> Result<(), TestCaseError> {
    while w.version < version {
        let f = c.next_frame().await.expect("open while catching up");
        prop_assert_eq!(&f["type"], "hall_update", "only updates: {}", f);
        prop_assert_eq!(&f["eid"], &json!(w.eid));
        let v = f["data"]["version"].as_i64().expect("version");
        prop_assert_eq!(v, w.version + 1, "consecutive versions: {}", f);
        for (id, state) in seat_views(&f["data"]["seats"]) {
            prop_assert!(w.view.contains_key(&id), "unknown seat {}", id);
            w.view.insert(id, state);
        }
        w.version = v;
    }
    Ok(())
}

async fn run_case(env: &Env, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let (screening, seats) = screening(&env.app.db, ROWS, PER_ROW, Duration::from_secs(3600)).await;
    let sid: i64 = screening.parse().expect("id");

    // Fresh connections each case, so a failed case leaves nothing behind.
    let mut actors = Vec::new();
    for (i, (token, id)) in env.users.iter().enumerate() {
        let c = Client::connect_with(env.server(i), Connect::bearer(token))
            .await
            .expect("connect with token");
        actors.push(Actor {
            c,
            id: id.clone(),
            held: BTreeSet::new(),
            bookings: BTreeMap::new(),
            changes: Vec::new(),
            kinds: Vec::new(),
        });
    }
    let mut anons = vec![
        Client::connect(env.server(0)).await,
        Client::connect(env.server(1)).await,
    ];
    let mut watchers: Vec<Watcher> = Vec::new();
    for a in actors.iter_mut() {
        watchers.push(subscribe(&mut a.c, &screening).await);
    }
    for c in anons.iter_mut() {
        watchers.push(subscribe(c, &screening).await);
    }
    let v0 = watchers.iter().map(|w| w.version).min().expect("watchers");
    prop_assert!(watchers.iter().all(|w| w.version == v0), "no change yet");

    for window in ops.chunks(USERS) {
        let mut per_user: Vec<Vec<&Op>> = vec![Vec::new(); USERS];
        for op in window {
            per_user[op.user()].push(op);
        }
        let all_bookings: Vec<(usize, String)> = actors
            .iter()
            .enumerate()
            .flat_map(|(i, a)| a.bookings.keys().map(move |b| (i, b.clone())))
            .collect();
        let runs = actors
            .iter_mut()
            .enumerate()
            .zip(per_user)
            .map(|((i, a), mine)| {
                let others: Vec<String> = all_bookings
                    .iter()
                    .filter(|(u, _)| *u != i)
                    .map(|(_, b)| b.clone())
                    .collect();
                let (screening, seats) = (&screening, &seats);
                async move {
                    for op in mine {
                        apply(a, op, screening, seats, &others).await?;
                    }
                    Ok::<(), TestCaseError>(())
                }
            });
        for r in futures_util::future::join_all(runs).await {
            r?;
        }
    }

    // The database.
    let db = env.app.db.psql().await;
    let version: i64 = db
        .query_one(
            "SELECT version FROM screening_versions WHERE screening_id = $1",
            &[&sid],
        )
        .await
        .expect("version")
        .get(0);
    let rows = db
        .query(
            "SELECT seat_id::text, status, user_id::text FROM seat_states WHERE screening_id = $1",
            &[&sid],
        )
        .await
        .expect("seat states");
    let states: HashMap<String, (String, Option<String>)> = rows
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    prop_assert_eq!(states.len(), SEATS);

    // No seat twice.
    for (what, sql) in [
        (
            "a seat in two active bookings",
            "SELECT count(*) FROM (SELECT seat_id FROM booking_seats
              WHERE screening_id = $1 AND active GROUP BY seat_id HAVING count(*) > 1) d",
        ),
        (
            "booked without exactly one live booking of its holder, or the reverse",
            "SELECT count(*) FROM seat_states ss
              WHERE ss.screening_id = $1
                AND (ss.status = 'booked') <> (
                    SELECT count(*) = 1 FROM booking_seats bs JOIN bookings b ON b.id = bs.booking_id
                     WHERE bs.screening_id = ss.screening_id AND bs.seat_id = ss.seat_id AND bs.active
                       AND b.status = 'confirmed' AND b.id = ss.booking_id AND b.user_id = ss.user_id)",
        ),
        (
            "an active booking row on a seat that is not booked by that booking",
            "SELECT count(*) FROM booking_seats bs
               JOIN seat_states ss USING (screening_id, seat_id)
              WHERE bs.screening_id = $1 AND bs.active
                AND (ss.status <> 'booked' OR ss.booking_id IS DISTINCT FROM bs.booking_id)",
        ),
        (
            "a booking whose rows are active while cancelled, or inactive while confirmed",
            "SELECT count(*) FROM bookings b JOIN booking_seats bs ON bs.booking_id = b.id
              WHERE b.screening_id = $1 AND bs.active <> (b.status = 'confirmed')",
        ),
    ] {
        let n: i64 = db.query_one(sql, &[&sid]).await.expect(what).get(0);
        prop_assert_eq!(n, 0, "{}", what);
    }

    // Versions: one per change, no gaps, none shared.
    let mut changes: Vec<i64> = actors.iter().flat_map(|a| a.changes.clone()).collect();
    changes.sort_unstable();
    let expected: Vec<i64> = (v0 + 1..=version).collect();
    prop_assert_eq!(changes, expected, "versions of the changing answers");

    // Each user's seats are what its answers said.
    for a in &actors {
        let held: BTreeSet<String> = states
            .iter()
            .filter(|(_, (st, u))| st == "held" && u.as_deref() == Some(a.id.as_str()))
            .map(|(s, _)| s.clone())
            .collect();
        prop_assert_eq!(&held, &a.held, "holds of user {}", a.id);
        let booked: BTreeSet<String> = states
            .iter()
            .filter(|(_, (st, u))| st == "booked" && u.as_deref() == Some(a.id.as_str()))
            .map(|(s, _)| s.clone())
            .collect();
        let model: BTreeSet<String> = a
            .bookings
            .values()
            .filter(|(_, live)| *live)
            .flat_map(|(s, _)| s.iter().cloned())
            .collect();
        prop_assert_eq!(&booked, &model, "bookings of user {}", a.id);
    }

    // Every subscriber's view equals get_hall and the database.
    // Watchers were made in this order: one per user, then the anonymous.
    let (user_watchers, anon_watchers) = watchers.split_at_mut(USERS);
    let pairs = actors
        .iter_mut()
        .map(|a| (&mut a.c, Some(a.id.clone())))
        .chain(anons.iter_mut().map(|c| (c, None)))
        .zip(user_watchers.iter_mut().chain(anon_watchers.iter_mut()));
    for ((c, me), w) in pairs {
        catch_up(c, w, version).await?;
        let hall = c.get_hall(&screening).await.data();
        prop_assert_eq!(hall["version"].as_i64(), Some(version));
        prop_assert_eq!(&seat_views(&hall["seats"]), &w.view, "view vs get_hall");
        let db_view: BTreeMap<String, (String, bool)> = states
            .iter()
            .map(|(s, (st, u))| {
                let mine = me.is_some() && u.is_some() && *u == me;
                (s.clone(), (st.clone(), mine))
            })
            .collect();
        prop_assert_eq!(&db_view, &w.view, "view vs database");
        c.no_push("hall_update", Duration::ZERO).await;
        c.no_push("hall_snapshot", Duration::ZERO).await;
    }

    {
        let mut done = env.done.lock().expect("counts");
        for k in actors.iter().flat_map(|a| a.kinds.iter()) {
            *done.entry(k).or_default() += 1;
        }
    }
    for a in actors {
        a.c.close().await;
    }
    for c in anons {
        c.close().await;
    }
    Ok(())
}

#[test]
fn random_seat_traffic_keeps_the_invariants() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let env = rt.block_on(Env::start());
    let config = ProptestConfig {
        cases: 6,
        max_shrink_iters: 32,
        // Regressions are not replayed from files: each case needs the
        // servers above, and a failure prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = prop::collection::vec(op(), 100..=200);
    if let Err(e) = runner.run(&strategy, |ops| rt.block_on(run_case(&env, ops))) {
        panic!("{e}");
    }
    let done = env.done.lock().expect("counts").clone();
    eprintln!("changes over all cases: {done:?}");
    for kind in ["hold", "release", "book", "cancel"] {
        assert!(
            done.get(kind).is_some_and(|n| *n >= 6),
            "too few successful {kind}s to mean much: {done:?}"
        );
    }
}
