//! The box office (PROTOCOL.md "Box office (version 1.1)") beyond the pgTAP
//! file `tests/sql/box_office.sql`:
//!
//! * a property test against a brute-force oracle written here from the
//!   contract's words: random layouts (aisles, kinds), random occupancy
//!   (free, lapsed, held, booked, blocked, the user's own), random
//!   requests; every `api.hold_seats` answer equals the oracle's verdict
//!   and every `api.hold_best_available` answer is the oracle's block.
//!   Each case runs in one transaction that is rolled back, straight
//!   through tokio-postgres, so thousands of cases take seconds;
//! * concurrency: 20 best-available requests at once on one hall get
//!   disjoint seats, requests fail only when no block is left, and pairs of
//!   racing holds that together would isolate a seat never both succeed;
//! * over real WebSockets and two replicas: the orphan rule switched by a
//!   DBA holds for the next request on the other replica, best available
//!   is pushed like any hold, and bad parameters never reach SQL.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::harness::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio_postgres::{Client as PgClient, NoTls};

// ---------------------------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------------------------

/// A seat's state at the start of a case, from the requesting user's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Free,
    /// Held by someone else, hold lapsed (reads free).
    LapsedOther,
    /// Held by the user, hold lapsed (reads free).
    LapsedMine,
    HeldOther,
    HeldMine,
    BookedOther,
    BookedMine,
    Blocked,
}

#[derive(Debug, Clone)]
struct Seat {
    id: i64,
    y: i32,
    x: i32,
    kind: char,
    st: St,
}

impl Seat {
    fn open(&self) -> bool {
        matches!(self.st, St::Free | St::LapsedOther | St::LapsedMine)
    }
    fn mine_live(&self) -> bool {
        matches!(self.st, St::HeldMine | St::BookedMine)
    }
}

/// What a request answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Accepted; the seats held (ascending).
    Held(Vec<i64>),
    Unavailable(Vec<i64>),
    HoldLimit,
    Rule(&'static str, Vec<i64>),
    BadRequest,
}

struct Hall {
    seats: Vec<Seat>,
    orphan_rule: bool,
    /// The setting `seat_limit` of the case.
    seat_limit: usize,
}

impl Hall {
    fn at(&self, y: i32, x: i32) -> Option<&Seat> {
        self.seats.iter().find(|s| s.y == y && s.x == x)
    }

    /// Orphans made by holding `set`, straight from the definition.
    fn orphans(&self, set: &BTreeSet<i64>) -> Vec<i64> {
        let open_after = |s: &Seat| s.open() && !set.contains(&s.id);
        let mut out: Vec<i64> = self
            .seats
            .iter()
            .filter(|f| open_after(f))
            .filter(|f| {
                let nbrs: Vec<&Seat> = [f.x - 1, f.x + 1]
                    .iter()
                    .filter_map(|&x| self.at(f.y, x))
                    .collect();
                nbrs.iter().any(|n| set.contains(&n.id))
                    && !nbrs.iter().any(|n| open_after(n))
                    && nbrs.iter().any(|n| n.open())
            })
            .map(|f| f.id)
            .collect();
        out.sort_unstable();
        out
    }

    /// Lengths of the runs before the request.
    fn runs(&self) -> Vec<usize> {
        let mut out = Vec::new();
        for s in self.seats.iter().filter(|s| s.open()) {
            // Count each run once, from its leftmost seat.
            if self.at(s.y, s.x - 1).is_some_and(Seat::open) {
                continue;
            }
            let mut len = 0;
            while self.at(s.y, s.x + len as i32).is_some_and(Seat::open) {
                len += 1;
            }
            out.push(len);
        }
        out
    }

    fn mine_count_with(&self, set: &BTreeSet<i64>) -> usize {
        self.seats
            .iter()
            .filter(|s| s.mine_live() || set.contains(&s.id))
            .count()
    }

    fn companion(&self, set: &BTreeSet<i64>) -> Option<Verdict> {
        let comps: Vec<i64> = self
            .seats
            .iter()
            .filter(|s| set.contains(&s.id) && s.kind == 'c')
            .map(|s| s.id)
            .collect();
        if comps.is_empty() {
            return None;
        }
        let wheelchair = self
            .seats
            .iter()
            .any(|s| s.kind == 'w' && (set.contains(&s.id) || s.mine_live()));
        (!wheelchair).then_some(Verdict::Rule("companion", comps))
    }

    fn hold(&self, set: &BTreeSet<i64>) -> Verdict {
        if self.mine_count_with(set) > self.seat_limit {
            return Verdict::HoldLimit;
        }
        let unavailable: Vec<i64> = self
            .seats
            .iter()
            .filter(|s| set.contains(&s.id))
            .filter(|s| {
                matches!(
                    s.st,
                    St::HeldOther | St::BookedOther | St::BookedMine | St::Blocked
                )
            })
            .map(|s| s.id)
            .collect();
        if !unavailable.is_empty() {
            return Verdict::Unavailable(unavailable);
        }
        if let Some(v) = self.companion(set) {
            return v;
        }
        if self.orphan_rule {
            let orphans = self.orphans(set);
            if !orphans.is_empty() {
                let n = self
                    .seats
                    .iter()
                    .filter(|s| set.contains(&s.id) && s.st != St::HeldMine)
                    .count();
                if self.runs().iter().any(|&l| l == n || l >= n + 2) {
                    return Verdict::Rule("orphan", orphans);
                }
            }
        }
        Verdict::Held(set.iter().copied().collect())
    }

    fn best(&self, n: usize, kinds: &[char]) -> Verdict {
        if n > self.seat_limit {
            return Verdict::BadRequest;
        }
        if self.mine_count_with(&BTreeSet::new()) + n > self.seat_limit {
            return Verdict::HoldLimit;
        }
        let min_x = self.seats.iter().map(|s| s.x).min().unwrap_or(0) as i64;
        let max_x = self.seats.iter().map(|s| s.x).max().unwrap_or(0) as i64;
        let py = (2 * self.seats.iter().map(|s| s.y).max().unwrap_or(0) / 3) as i64;
        let n64 = n as i64;
        // (makes an orphan, score x 2n, y, first x, seats)
        let mut best: Option<(bool, i64, i32, i32, Vec<i64>)> = None;
        for first in &self.seats {
            let block: Option<Vec<&Seat>> = (0..n as i32)
                .map(|i| {
                    self.at(first.y, first.x + i)
                        .filter(|s| s.open() && kinds.contains(&s.kind))
                })
                .collect();
            let Some(block) = block else { continue };
            let set: BTreeSet<i64> = block.iter().map(|s| s.id).collect();
            let orphan = self.orphan_rule && !self.orphans(&set).is_empty();
            let sum: i64 = block.iter().map(|s| s.x as i64).sum();
            let score =
                (2 * sum - n64 * (min_x + max_x)).abs() + 3 * n64 * (first.y as i64 - py).abs();
            let cand = (orphan, score, first.y, first.x, set.into_iter().collect());
            let better = match &best {
                None => true,
                Some(b) => (cand.0, cand.1, cand.2, cand.3) < (b.0, b.1, b.2, b.3),
            };
            if better {
                best = Some(cand);
            }
        }
        let Some((_, _, _, _, seats)) = best else {
            return Verdict::Unavailable(vec![]);
        };
        let set: BTreeSet<i64> = seats.iter().copied().collect();
        if let Some(v) = self.companion(&set) {
            return v;
        }
        Verdict::Held(seats)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Running cases in SQL
// ---------------------------------------------------------------------------------------------------------------

async fn connect(db: &TestDb) -> PgClient {
    let (c, conn) = tokio_postgres::connect(&db.url, NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

fn ids_of(detail: &str) -> Vec<i64> {
    serde_json::from_str::<Vec<String>>(detail)
        .expect("a JSON array of ids")
        .iter()
        .map(|s| s.parse().expect("an id"))
        .collect()
}

/// An SQL error as a verdict.
fn verdict_of(e: &tokio_postgres::Error) -> Verdict {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a DB error: {e}"));
    let detail = db.detail().unwrap_or("");
    match db.code().code() {
        "MQ409" => Verdict::Unavailable(ids_of(detail)),
        "MQ411" => Verdict::HoldLimit,
        "MQ400" => Verdict::BadRequest,
        "MQ422" => {
            let v: Value = serde_json::from_str(detail).expect("SEAT_RULE detail is JSON");
            let rule = match v["rule"].as_str() {
                Some("orphan") => "orphan",
                Some("companion") => "companion",
                other => panic!("unknown rule {other:?}"),
            };
            Verdict::Rule(rule, ids_of(&v["seat_ids"].to_string()))
        }
        code => panic!("unexpected error {code}: {}", db.message()),
    }
}

struct Fixture {
    cinema: i64,
    film: i64,
    me: i64,
    other: i64,
}

async fn fixture(c: &PgClient) -> Fixture {
    let r = c
        .query_one(
            "SELECT admin.create_cinema('Prop cinema', 'Testville', '1 Test Street', 'UTC'),
                    admin.create_film('Prop film', 90, '0')",
            &[],
        )
        .await
        .expect("fixture");
    let users = c
        .query(
            "INSERT INTO users (username, totp_secret, last_step)
             VALUES ('prop_me', '\\x00'::bytea, 0), ('prop_other', '\\x00'::bytea, 0) RETURNING id",
            &[],
        )
        .await
        .expect("users");
    Fixture {
        cinema: r.get(0),
        film: r.get(1),
        me: users[0].get(0),
        other: users[1].get(0),
    }
}

fn random_layout(rng: &mut StdRng) -> Vec<String> {
    loop {
        let rows = rng.gen_range(1..=4);
        let width = rng.gen_range(1..=9);
        let layout: Vec<String> = (0..rows)
            .map(|_| {
                (0..width)
                    .map(|_| match rng.gen_range(0..100) {
                        0..=49 => 's',
                        50..=64 => '.',
                        65..=79 => 'v',
                        80..=89 => 'w',
                        _ => 'c',
                    })
                    .collect()
            })
            .collect();
        if layout.iter().any(|r| r.chars().any(|ch| ch != '.')) {
            return layout;
        }
    }
}

fn random_state(rng: &mut StdRng) -> St {
    match rng.gen_range(0..100) {
        0..=49 => St::Free,
        50..=57 => St::LapsedOther,
        58..=61 => St::LapsedMine,
        62..=71 => St::HeldOther,
        72..=78 => St::HeldMine,
        79..=84 => St::BookedOther,
        85..=89 => St::BookedMine,
        _ => St::Blocked,
    }
}

/// Builds the case's hall and occupancy inside the open transaction.
async fn build(c: &PgClient, f: &Fixture, case: usize, rng: &mut StdRng) -> (i64, Hall) {
    let layout = random_layout(rng);
    let orphan_rule = rng.gen_bool(0.85);
    let seat_limit = if rng.gen_bool(0.3) {
        rng.gen_range(1..=6)
    } else {
        10
    };
    let scr: i64 = c
        .query_one(
            "SELECT admin.create_screening(admin.create_hall_layout($1, $2, $3), $4,
                                           now() + interval '1 day', 1000, 'EUR')",
            &[&f.cinema, &format!("Hall {case}"), &layout, &f.film],
        )
        .await
        .expect("hall")
        .get(0);
    let rows = c
        .query(
            "SELECT s.id, s.y, s.x, s.kind FROM seats AS s JOIN screenings AS sc ON sc.hall_id = s.hall_id
              WHERE sc.id = $1 ORDER BY s.y, s.x",
            &[&scr],
        )
        .await
        .expect("seats");
    let seats: Vec<Seat> = rows
        .iter()
        .map(|r| Seat {
            id: r.get(0),
            y: r.get(1),
            x: r.get(2),
            kind: r.get::<_, String>(3).chars().next().unwrap_or('s'),
            st: random_state(rng),
        })
        .collect();
    let bookings = c
        .query(
            "INSERT INTO bookings (user_id, screening_id, total, currency)
             VALUES ($1, $3, 0, 'EUR'), ($2, $3, 0, 'EUR') RETURNING id",
            &[&f.me, &f.other, &scr],
        )
        .await
        .expect("bookings");
    let (mine_b, other_b): (i64, i64) = (bookings[0].get(0), bookings[1].get(0));
    let mut ids = Vec::new();
    let mut status = Vec::new();
    let mut users: Vec<Option<i64>> = Vec::new();
    let mut expiry: Vec<Option<f64>> = Vec::new();
    let mut booking: Vec<Option<i64>> = Vec::new();
    for s in &seats {
        let (st, user, exp, b) = match s.st {
            St::Free => ("free", None, None, None),
            St::LapsedOther => ("held", Some(f.other), Some(-60.0), None),
            St::LapsedMine => ("held", Some(f.me), Some(-60.0), None),
            St::HeldOther => ("held", Some(f.other), Some(600.0), None),
            St::HeldMine => ("held", Some(f.me), Some(600.0), None),
            St::BookedOther => ("booked", Some(f.other), None, Some(other_b)),
            St::BookedMine => ("booked", Some(f.me), None, Some(mine_b)),
            St::Blocked => ("blocked", None, None, None),
        };
        ids.push(s.id);
        status.push(st);
        users.push(user);
        expiry.push(exp);
        booking.push(b);
    }
    c.execute(
        "UPDATE seat_states AS ss
            SET status = u.status, user_id = u.user_id, booking_id = u.booking_id,
                hold_expires_at = now() + make_interval(secs => u.expiry)
           FROM unnest($2::bigint[], $3::text[], $4::bigint[], $5::float8[], $6::bigint[])
                AS u(seat_id, status, user_id, expiry, booking_id)
          WHERE ss.screening_id = $1 AND ss.seat_id = u.seat_id",
        &[&scr, &ids, &status, &users, &expiry, &booking],
    )
    .await
    .expect("occupancy");
    c.execute(
        "UPDATE settings SET value = CASE key WHEN 'orphan_rule' THEN $1::int ELSE $2::int END
          WHERE key IN ('orphan_rule', 'seat_limit')",
        &[&i32::from(orphan_rule), &(seat_limit as i32)],
    )
    .await
    .expect("settings");
    (
        scr,
        Hall {
            seats,
            orphan_rule,
            seat_limit,
        },
    )
}

/// A random hold request: mostly seats next to each other in a row,
/// mostly open ones, so the rules get exercised.
fn random_request(rng: &mut StdRng, hall: &Hall) -> BTreeSet<i64> {
    let size: i32 = rng.gen_range(1..=4);
    let pool: Vec<&Seat> = if rng.gen_bool(0.8) {
        hall.seats.iter().filter(|s| s.open()).collect()
    } else {
        hall.seats.iter().collect()
    };
    let pool = if pool.is_empty() {
        hall.seats.iter().collect()
    } else {
        pool
    };
    let anchor = pool[rng.gen_range(0..pool.len())];
    let mut set = BTreeSet::from([anchor.id]);
    if rng.gen_bool(0.7) {
        for i in 1..size {
            if let Some(s) = hall.at(anchor.y, anchor.x + i) {
                set.insert(s.id);
            }
        }
    } else {
        for _ in 1..size {
            set.insert(pool[rng.gen_range(0..pool.len())].id);
        }
    }
    set
}

const KINDS: [(char, &str); 4] = [
    ('s', "standard"),
    ('v', "vip"),
    ('w', "wheelchair"),
    ('c', "companion"),
];

#[tokio::test]
async fn holds_and_best_available_match_the_brute_force_oracle() {
    let seed: u64 = std::env::var("BOX_OFFICE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let cases: usize = std::env::var("BOX_OFFICE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    eprintln!("box office oracle: {cases} cases, BOX_OFFICE_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let db = TestDb::new().await;
    let c = connect(&db).await;
    let f = fixture(&c).await;
    let (mut accepted, mut orphan, mut companion, mut unavailable, mut best_held) = (0, 0, 0, 0, 0);
    let mut limit = 0;

    for case in 0..cases {
        c.batch_execute("BEGIN").await.expect("begin");
        let (scr, hall) = build(&c, &f, case, &mut rng).await;
        let (what, expected, got) = if rng.gen_bool(0.6) {
            let set = random_request(&mut rng, &hall);
            let ids: Vec<i64> = set.iter().copied().collect();
            let got = match c
                .query_one(
                    "SELECT h.expires_at FROM api.hold_seats($1, $2, $3) AS h",
                    &[&f.me, &scr, &ids],
                )
                .await
            {
                Ok(_) => Verdict::Held(ids.clone()),
                Err(e) => verdict_of(&e),
            };
            (format!("hold_seats {ids:?}"), hall.hold(&set), got)
        } else {
            let n = rng.gen_range(1..=4usize);
            let mut kinds: Vec<(char, &str)> = KINDS
                .iter()
                .copied()
                .filter(|_| rng.gen_bool(0.5))
                .collect();
            if kinds.is_empty() || rng.gen_bool(0.3) {
                kinds = vec![KINDS[0], KINDS[1]];
            }
            let names: Vec<&str> = kinds.iter().map(|k| k.1).collect();
            let chars: Vec<char> = kinds.iter().map(|k| k.0).collect();
            let got = match c
                .query_one(
                    "SELECT h.seat_ids FROM api.hold_best_available($1, $2, $3, $4) AS h",
                    &[&f.me, &scr, &(n as i32), &names],
                )
                .await
            {
                Ok(r) => Verdict::Held(r.get(0)),
                Err(e) => verdict_of(&e),
            };
            (
                format!("hold_best_available {n} {names:?}"),
                hall.best(n, &chars),
                got,
            )
        };
        c.batch_execute("ROLLBACK").await.expect("rollback");
        assert_eq!(
            got, expected,
            "case {case} (BOX_OFFICE_SEED={seed}): {what}, orphan rule {}, seat limit {}, hall {:?}",
            hall.orphan_rule, hall.seat_limit, hall.seats
        );
        match &got {
            Verdict::Held(_) if what.starts_with("hold_best") => best_held += 1,
            Verdict::Held(_) => accepted += 1,
            Verdict::Rule("orphan", _) => orphan += 1,
            Verdict::Rule(_, _) => companion += 1,
            Verdict::HoldLimit => limit += 1,
            _ => unavailable += 1,
        }
    }
    eprintln!(
        "accepted holds {accepted}, best-available holds {best_held}, orphan refusals {orphan}, \
         companion refusals {companion}, hold limit {limit}, other refusals {unavailable}"
    );
    // The generator must reach every verdict, or the comparison proves little.
    assert!(
        accepted > 0
            && best_held > 0
            && orphan > 0
            && companion > 0
            && limit > 0
            && unavailable > 0,
        "a verdict was never reached"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Concurrency (committed transactions, one connection per user)
// ---------------------------------------------------------------------------------------------------------------

async fn users(c: &PgClient, tag: &str, n: usize) -> Vec<i64> {
    c.query(
        "INSERT INTO users (username, totp_secret, last_step)
         SELECT $1 || '_' || i, '\\x00'::bytea, 0 FROM generate_series(1, $2) AS i RETURNING id",
        &[&tag, &(n as i32)],
    )
    .await
    .expect("users")
    .iter()
    .map(|r| r.get(0))
    .collect()
}

async fn layout_hall(c: &PgClient, layout: &[&str]) -> (i64, i64) {
    let r = c
        .query_one(
            "WITH ci AS (SELECT admin.create_cinema('Race cinema', 'Testville', '1 Street', 'UTC') AS id)
             SELECT admin.create_hall_layout((SELECT id FROM ci), 'Race hall', $1),
                    admin.create_film('Race film', 90, '0')",
            &[&layout],
        )
        .await
        .expect("hall");
    (r.get(0), r.get(1))
}

/// `n` users, each on a connection of its own, ask for the best two seats
/// of one screening in a hall of `layout` at the same instant (orphan rule
/// on); returns the screening and their verdicts.
async fn best_available_race(
    db: &TestDb,
    tag: &str,
    n: usize,
    layout: &[&str],
) -> (i64, Vec<Verdict>) {
    let admin = connect(db).await;
    admin
        .batch_execute("SELECT admin.set_orphan_rule(true)")
        .await
        .expect("rule on");
    let ids = users(&admin, tag, n).await;
    let (hall, film) = layout_hall(&admin, layout).await;
    let scr: i64 = admin
        .query_one(
            "SELECT admin.create_screening($1, $2, now() + interval '1 day', 1000, 'EUR')",
            &[&hall, &film],
        )
        .await
        .expect("screening")
        .get(0);
    let mut conns = Vec::new();
    for _ in &ids {
        conns.push(connect(db).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(ids.len()));
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(ids.iter().copied())
        .map(|(c, user)| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                match c
                    .query_one(
                        "SELECT seat_ids FROM api.hold_best_available($1, $2, 2, NULL)",
                        &[&user, &scr],
                    )
                    .await
                {
                    Ok(r) => Verdict::Held(r.get(0)),
                    Err(e) => verdict_of(&e),
                }
            })
        })
        .collect();
    let mut verdicts = Vec::new();
    for t in tasks {
        verdicts.push(t.await.expect("task"));
    }
    (scr, verdicts)
}

#[tokio::test]
async fn twenty_concurrent_best_available_requests_get_disjoint_seats() {
    let db = TestDb::new().await;
    let layout = [
        "sss.ssssss.sss",
        "sss.ssssss.sss",
        "sss.ssssss.sss",
        "vvv.vvvvvv.vvv",
    ];
    let (scr, verdicts) = best_available_race(&db, "best", 20, &layout).await;
    let mut all = BTreeSet::new();
    for v in verdicts {
        let Verdict::Held(seats) = v else {
            panic!("every request succeeds: {v:?}");
        };
        assert_eq!(seats.len(), 2);
        for s in seats {
            assert!(all.insert(s), "seat {s} given twice");
        }
    }
    let held: i64 = connect(&db)
        .await
        .query_one(
            "SELECT count(*) FROM seat_states WHERE screening_id = $1 AND status = 'held'",
            &[&scr],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(held, 40, "20 requests held 40 distinct seats");
}

#[tokio::test]
async fn concurrent_best_available_fails_only_when_no_block_is_left() {
    let db = TestDb::new().await;
    // Exactly five pairs, each between aisles: five of eight requests for 2 can be served, whatever the order.
    let (_, verdicts) = best_available_race(&db, "last", 8, &["ss.ss.ss.ss.ss"]).await;
    let mut held = BTreeSet::new();
    let mut refused = 0;
    for v in verdicts {
        match v {
            Verdict::Held(seats) => {
                assert_eq!(seats.len(), 2);
                for s in seats {
                    assert!(held.insert(s), "seat {s} given twice");
                }
            }
            Verdict::Unavailable(seats) => {
                assert!(seats.is_empty(), "no candidate answers seat_ids []");
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(
        (held.len(), refused),
        (10, 3),
        "every pair is taken, and only the requests that found none left fail"
    );
}

#[tokio::test]
async fn racing_holds_never_together_isolate_a_seat() {
    let db = TestDb::new().await;
    let admin = connect(&db).await;
    admin
        // Each user keeps a hold in every round's screening: more than the abuse limit allows one person.
        .batch_execute("SELECT admin.set_orphan_rule(true); SELECT admin.set_user_hold_limit(1000)")
        .await
        .expect("rule on");
    let u = users(&admin, "race", 2).await;
    // Row A: A1 A2 | A3 | A4 A5. Either pair alone leaves three together; both leave A3 alone, and row B (4 seats)
    // could seat two without an orphan, so the second of them must be refused.
    let (hall, film) = layout_hall(&admin, &["sssss", "ssss"]).await;
    let (c1, c2) = (connect(&db).await, connect(&db).await);
    let rounds = 40;
    let (mut first, mut second) = (0, 0);
    for round in 0..rounds {
        let scr: i64 = admin
            .query_one(
                "SELECT admin.create_screening($1, $2, now() + make_interval(days => 1 + $3), 1000, 'EUR')",
                &[&hall, &film, &round],
            )
            .await
            .expect("screening")
            .get(0);
        let seats: Vec<i64> = column(
            &admin,
            "SELECT s.id FROM seats AS s WHERE s.hall_id = $1 AND s.row_label = 'A' ORDER BY s.x",
            &[&hall],
        )
        .await;
        let (left, right) = (vec![seats[0], seats[1]], vec![seats[3], seats[4]]);
        let hold = "SELECT 1 FROM api.hold_seats($1, $2, $3)";
        let p1: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&u[0], &scr, &left];
        let p2: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&u[1], &scr, &right];
        let (a, b) = tokio::join!(c1.query_one(hold, &p1), c2.query_one(hold, &p2));
        match (&a, &b) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => {
                assert_eq!(
                    verdict_of(e),
                    Verdict::Rule("orphan", vec![seats[2]]),
                    "round {round}: the loser is told which seat would be left alone"
                );
                if a.is_ok() {
                    first += 1;
                } else {
                    second += 1;
                }
            }
            _ => panic!("round {round}: exactly one of the racing holds must win: {a:?} {b:?}"),
        }
    }
    eprintln!("left pair won {first}, right pair won {second} of {rounds}");
}

// ---------------------------------------------------------------------------------------------------------------
// Over WebSockets, two replicas
// ---------------------------------------------------------------------------------------------------------------

/// Two replicas on one screening of a box-office hall (companion seats in
/// row A, vip in row C at 15.50, the rest at 11.50, the orphan rule on),
/// alice logged in on the second replica, `dba` connected to the database.
struct BoxOffice {
    app: TestApp,
    other: marquee::app::Server,
    dba: PgClient,
    hall: i64,
    s: String,
    alice: Client,
}

impl BoxOffice {
    async fn new() -> BoxOffice {
        let app = TestApp::spawn().await;
        let other = app.replica().await;
        let dba = app.db.psql().await;
        dba.batch_execute("SELECT admin.set_orphan_rule(true)")
            .await
            .expect("rule on");
        let (hall, film) = layout_hall(&dba, &["wc.ssss.cw", "ssssssssss", "vvvv..vvvv"]).await;
        let scr: i64 = dba
            .query_one(
                "SELECT admin.create_screening($1, $2, now() + interval '1 day', 1150, 'EUR')",
                &[&hall, &film],
            )
            .await
            .expect("screening")
            .get(0);
        dba.batch_execute(&format!("SELECT admin.set_price({scr}, 'vip', 1550)"))
            .await
            .expect("vip price");
        let (alice, _, _) = logged_in(&other, "alice").await;
        BoxOffice {
            app,
            other,
            dba,
            hall,
            s: scr.to_string(),
            alice,
        }
    }

    /// A seat's id by its label (`B2`).
    async fn seat(&self, label: &str) -> String {
        self.dba
            .query_one(
                "SELECT s.id::text FROM seats AS s WHERE s.hall_id = $1 AND s.row_label || s.number = $2",
                &[&self.hall, &label],
            )
            .await
            .expect("seat")
            .get(0)
    }

    /// A DBA switches the no-orphan rule.
    async fn orphan_rule(&self, on: bool) {
        self.dba
            .execute("SELECT admin.set_orphan_rule($1)", &[&on])
            .await
            .expect("orphan rule");
    }

    /// With the orphan rule off, alice holds B2 and the best two vip seats
    /// (the latter watched from the first replica); returns the answer of
    /// the best-available hold and the watcher's push.
    async fn hold_b2_and_best_vip_pair(&mut self) -> (Value, Value) {
        self.orphan_rule(false).await;
        let b2 = self.seat("B2").await;
        self.alice.hold(&self.s, &[&b2]).await.data();
        let mut watcher = self.app.client().await;
        let snap = watcher.subscribe(&self.s).await.data();
        assert_eq!(
            snap["prices"],
            json!({"standard": 1150, "vip": 1550, "wheelchair": 1150, "companion": 1150})
        );
        let held = self
            .alice
            .ok(
                "hold_best_available",
                json!({"screening_id": self.s, "count": 2, "kinds": ["vip"]}),
            )
            .await;
        let push = watcher.push("hall_update").await;
        (held, push)
    }
}

#[tokio::test]
async fn the_orphan_rule_is_answered_on_the_other_replica_and_a_dba_switch_reaches_it() {
    let mut b = BoxOffice::new().await;
    assert_eq!(b.alice.session["data"]["features"], json!(["box_office"]));
    // The orphan rule, answered on replica B.
    let (b1, b2) = (b.seat("B1").await, b.seat("B2").await);
    let r = b.alice.hold(&b.s, &[&b2]).await.0;
    assert_eq!(r["error"], "SEAT_RULE", "{r}");
    assert_eq!(r["data"]["rule"], "orphan");
    assert_eq!(r["data"]["seat_ids"], json!([b1]));
    assert!(r["data"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    // A DBA switches it off through replica A's database; the next request on B obeys.
    b.orphan_rule(false).await;
    b.alice.hold(&b.s, &[&b2]).await.data();
}

#[tokio::test]
async fn a_companion_seat_alone_is_a_seat_rule_over_the_wire() {
    let mut b = BoxOffice::new().await;
    b.orphan_rule(false).await;
    let a2 = b.seat("A2").await;
    let r = b.alice.hold(&b.s, &[&a2]).await.0;
    assert_eq!(r["error"], "SEAT_RULE", "{r}");
    assert_eq!(r["data"]["rule"], "companion");
    assert_eq!(r["data"]["seat_ids"], json!([a2]));
}

#[tokio::test]
async fn best_available_on_one_replica_is_pushed_to_a_subscriber_on_the_other() {
    let mut b = BoxOffice::new().await;
    // Best available on B is pushed to a subscriber on A like any hold.
    let (held, push) = b.hold_b2_and_best_vip_pair().await;
    let seats = held["seat_ids"].as_array().expect("seat_ids").clone();
    assert_eq!(seats.len(), 2, "{held}");
    assert!(held["expires_at"].is_string() && held["version"].is_i64());
    assert_eq!(push["data"]["version"], held["version"], "{push}");
    let pushed: Vec<Value> = push["data"]["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .map(|x| x["id"].clone())
        .collect();
    assert_eq!(pushed, seats);
    assert!(push["data"]["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .all(|x| x["status"] == "held"));
}

/// Alice books B2 and the best vip pair; returns the booking answer.
async fn book_b2_and_best_vip_pair(b: &mut BoxOffice) -> Value {
    let (held, _) = b.hold_b2_and_best_vip_pair().await;
    let mut all = held["seat_ids"].as_array().expect("seat_ids").clone();
    all.push(json!(b.seat("B2").await));
    b.alice
        .ok("book_seats", json!({"screening_id": b.s, "seat_ids": all}))
        .await
}

#[tokio::test]
async fn a_booking_prices_each_seat_by_its_kind() {
    let mut b = BoxOffice::new().await;
    // Two vip and the standard B2.
    let booking = book_b2_and_best_vip_pair(&mut b).await;
    assert_eq!(booking["booking"]["total"], 1550 * 2 + 1150, "{booking}");
}

#[tokio::test]
async fn the_cancel_cutoff_set_by_a_dba_holds_on_the_other_replica_at_once() {
    let mut b = BoxOffice::new().await;
    let booking = book_b2_and_best_vip_pair(&mut b).await;
    let cancel = json!({"booking_id": booking["booking"]["id"]});
    b.dba
        .batch_execute("SELECT admin.set_cancel_cutoff(1500)")
        .await
        .expect("cut-off 25 hours");
    assert_eq!(
        b.alice.err("cancel_booking", cancel.clone()).await,
        "SCREENING_CLOSED",
        "a screening a day ahead is inside a 25-hour cut-off"
    );
    b.dba
        .batch_execute("SELECT admin.set_cancel_cutoff(0)")
        .await
        .expect("no cut-off");
    let cancelled = b.alice.ok("cancel_booking", cancel).await;
    assert_eq!(cancelled["booking"]["status"], "cancelled");
}

#[tokio::test]
async fn hold_best_available_bad_parameters_are_bad_request_before_anything_else() {
    let b = BoxOffice::new().await;
    let (s, mut alice) = (b.s.clone(), b.alice);
    // Bad parameters are BAD_REQUEST before anything else, anonymous or not.
    let mut anon = Client::connect(&b.other).await;
    for data in [
        json!({"screening_id": s, "count": 0}),
        json!({"screening_id": s, "count": 2.5}),
        json!({"screening_id": s, "count": "2"}),
        json!({"screening_id": s}),
        json!({"screening_id": s, "count": 101}),
        json!({"screening_id": s, "count": 2, "kinds": []}),
        json!({"screening_id": s, "count": 2, "kinds": ["balcony"]}),
        json!({"screening_id": s, "count": 2, "kinds": "vip"}),
        json!({"screening_id": 5, "count": 2}),
    ] {
        assert_eq!(
            anon.err("hold_best_available", data.clone()).await,
            "BAD_REQUEST",
            "{data}"
        );
    }
    assert_eq!(
        anon.err(
            "hold_best_available",
            json!({"screening_id": s, "count": 2})
        )
        .await,
        "UNAUTHORIZED"
    );
    assert_eq!(
        anon.err(
            "hold_best_available",
            json!({"screening_id": s, "count": 11})
        )
        .await,
        "BAD_REQUEST",
        "a count above the seat limit is BAD_REQUEST before UNAUTHORIZED, logged out too"
    );
    assert_eq!(
        anon.err(
            "hold_best_available",
            json!({"screening_id": "999999", "count": 11})
        )
        .await,
        "BAD_REQUEST"
    );
    assert_eq!(
        anon.err(
            "hold_best_available",
            json!({"screening_id": "999999", "count": 10})
        )
        .await,
        "UNAUTHORIZED"
    );
    assert_eq!(
        alice
            .err(
                "hold_best_available",
                json!({"screening_id": s, "count": 11})
            )
            .await,
        "BAD_REQUEST",
        "a count above the seat limit (a setting) is refused in SQL"
    );
    assert_eq!(
        alice
            .err(
                "hold_best_available",
                json!({"screening_id": "999999", "count": 2})
            )
            .await,
        "NOT_FOUND"
    );
}
