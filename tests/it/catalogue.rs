//! docs/protocol.md "Catalogue": `get_cinemas`, `get_screenings` (every field,
//! filters, default window, order, free-seat counts) and `get_hall`; and the
//! DBA's `admin.*` functions as the wire sees them (hall layout, blocked
//! seats, hold TTL and seat limit taking effect without a restart).

use std::collections::HashSet;
use std::time::Duration;

use crate::harness::*;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// DBA-side fixtures through the `admin.*` functions.
struct Dba(tokio_postgres::Client);

impl Dba {
    async fn new(db: &TestDb) -> Dba {
        Dba(db.psql().await)
    }

    async fn cinema(&self, name: &str, city: &str, tz: &str) -> i64 {
        self.0
            .query_one(
                "SELECT admin.create_cinema($1, $2, $3, $4)",
                &[&name, &city, &format!("{name} street 1"), &tz],
            )
            .await
            .expect("create_cinema")
            .get(0)
    }

    async fn hall(&self, cinema: i64, name: &str, rows: i32, per_row: i32) -> i64 {
        self.0
            .query_one(
                "SELECT admin.create_hall($1, $2, $3, $4)",
                &[&cinema, &name, &rows, &per_row],
            )
            .await
            .expect("create_hall")
            .get(0)
    }

    async fn film(&self, title: &str, minutes: i32, rating: &str) -> i64 {
        self.0
            .query_one(
                "SELECT admin.create_film($1, $2, $3)",
                &[&title, &minutes, &rating],
            )
            .await
            .expect("create_film")
            .get(0)
    }

    /// A screening at `date_trunc('minute', now()) + offset` (an SQL interval).
    async fn screening(&self, hall: i64, film: i64, offset: &str, price: i32, cur: &str) -> i64 {
        self.0
            .query_one(
                "SELECT admin.create_screening($1, $2, date_trunc('minute', now()) + $3::text::interval, $4, $5)",
                &[&hall, &film, &offset, &price, &cur],
            )
            .await
            .expect("create_screening")
            .get(0)
    }

    async fn starts_at_ms(&self, screening: i64) -> i64 {
        self.0
            .query_one(
                "SELECT (extract(epoch FROM starts_at) * 1000)::bigint FROM screenings WHERE id = $1",
                &[&screening],
            )
            .await
            .expect("starts_at")
            .get(0)
    }

    async fn exec(&self, sql: &str) {
        self.0.batch_execute(sql).await.expect(sql);
    }
}

fn keys(v: &Value) -> HashSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|s| s["id"].as_str().expect("string id").to_owned())
        .collect()
}

async fn screenings(c: &mut Client, data: Value) -> Value {
    c.ok("get_screenings", data).await["screenings"].clone()
}

/// A cinema with one hall (rows x per_row) and a film; returns (cinema, hall, film).
async fn venue(dba: &Dba, name: &str, rows: i32, per_row: i32) -> (i64, i64, i64) {
    let cinema = dba.cinema(name, "Testville", "Europe/Berlin").await;
    let hall = dba.hall(cinema, "Saal 1", rows, per_row).await;
    let film = dba.film(&format!("{name} film"), 100, "12").await;
    (cinema, hall, film)
}

#[tokio::test]
async fn get_cinemas_lists_every_cinema_by_name() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    assert_eq!(c.ok("get_cinemas", json!({})).await, json!({"cinemas": []}));
    let dba = Dba::new(&app.db).await;
    let z = dba.cinema("Zoetrope", "Lisbon", "Europe/Lisbon").await;
    let a = dba.cinema("Apollo", "Berlin", "Europe/Berlin").await;
    let m = dba
        .cinema("Metropolis", "New York", "America/New_York")
        .await;
    let data = c.ok("get_cinemas", json!({})).await;
    assert_eq!(keys(&data), HashSet::from(["cinemas"]));
    let list = data["cinemas"].as_array().unwrap();
    assert_eq!(ids(&data["cinemas"]), [a, m, z].map(|i| i.to_string()));
    for cinema in list {
        assert_eq!(
            keys(cinema),
            HashSet::from(["id", "name", "city", "address", "timezone"]),
            "{cinema}"
        );
    }
    assert_eq!(
        list[1],
        json!({"id": m.to_string(), "name": "Metropolis", "city": "New York",
               "address": "Metropolis street 1", "timezone": "America/New_York"})
    );
}

#[tokio::test]
async fn get_screenings_answers_every_field_as_the_contract_says() {
    let app = TestApp::spawn().await;
    let dba = Dba::new(&app.db).await;
    let cinema = dba.cinema("Kino", "Berlin", "Europe/Berlin").await;
    let hall = dba.hall(cinema, "Saal 7", 3, 4).await;
    let film = dba.film("The Test", 123, "16").await;
    let id = dba.screening(hall, film, "3 hours", 990, "usd").await;
    let starts_ms = dba.starts_at_ms(id).await;

    let mut c = app.client().await;
    let list = screenings(&mut c, json!({})).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let s = &list[0];
    assert_eq!(
        keys(s),
        HashSet::from([
            "id",
            "cinema_id",
            "hall",
            "film",
            "starts_at",
            "price",
            "currency",
            "seats_total",
            "seats_free",
            "prices"
        ]),
        "{s}"
    );
    assert_eq!(s["id"], id.to_string());
    assert_eq!(s["cinema_id"], cinema.to_string());
    assert_eq!(s["hall"], json!({"id": hall.to_string(), "name": "Saal 7"}));
    assert_eq!(
        s["film"],
        json!({"id": film.to_string(), "title": "The Test", "duration_min": 123, "age_rating": "16"})
    );
    let starts_at = s["starts_at"].as_str().expect("a string");
    assert!(starts_at.ends_with('Z'), "UTC with Z: {starts_at}");
    let parsed = DateTime::parse_from_rfc3339(starts_at).expect("RFC 3339");
    assert_eq!(parsed.timestamp_millis(), starts_ms);
    assert!(s["price"].is_i64(), "integer minor units");
    assert_eq!(s["price"], 990);
    assert_eq!(
        s["prices"],
        json!({"standard": 990, "vip": 990, "wheelchair": 990, "companion": 990}),
        "version 1.1: a new screening prices every kind at its price"
    );
    assert_eq!(s["currency"], "USD");
    assert_eq!(s["seats_total"], 12);
    assert_eq!(s["seats_free"], 12);
}

#[tokio::test]
async fn get_screenings_default_window_is_now_to_seven_days_ordered_by_start() {
    let app = TestApp::spawn().await;
    let dba = Dba::new(&app.db).await;
    let (cinema, hall, film) = venue(&dba, "Window", 2, 2).await;
    let hall2 = dba.hall(cinema, "Saal 2", 2, 2).await;
    // Created out of order.
    let d2 = dba.screening(hall, film, "2 days", 800, "EUR").await;
    let past = dba.screening(hall, film, "-1 hour", 800, "EUR").await;
    let d8 = dba.screening(hall, film, "8 days", 800, "EUR").await;
    let h1 = dba.screening(hall, film, "1 hour", 800, "EUR").await;
    let d7 = dba.screening(hall, film, "7 days 1 hour", 800, "EUR").await;
    let d6 = dba
        .screening(hall, film, "6 days 23 hours", 800, "EUR")
        .await;
    let h1b = dba
        .screening(hall2, film, "1 hour 30 minutes", 800, "EUR")
        .await;

    let mut c = app.client().await;
    let got = ids(&screenings(&mut c, json!({})).await);
    assert_eq!(got, [h1, h1b, d2, d6].map(|i| i.to_string()));
    // null filters count as absent.
    let got = ids(&screenings(&mut c, json!({"cinema_id": null, "from": null, "to": null})).await);
    assert_eq!(got, [h1, h1b, d2, d6].map(|i| i.to_string()));
    // The others exist, they are just outside the window (a window of at
    // most 31 days, the abuse limit).
    let from = Utc::now() - chrono::Duration::days(1);
    let all = ids(&screenings(
        &mut c,
        json!({"from": from.to_rfc3339(), "to": (from + chrono::Duration::days(31)).to_rfc3339()}),
    )
    .await);
    assert_eq!(all, [past, h1, h1b, d2, d6, d7, d8].map(|i| i.to_string()));
}

#[tokio::test]
async fn get_screenings_from_and_to_filter_from_inclusive_to_exclusive() {
    let app = TestApp::spawn().await;
    let dba = Dba::new(&app.db).await;
    let (_, hall, film) = venue(&dba, "Filters", 2, 2).await;
    let a = dba.screening(hall, film, "1 day", 800, "EUR").await;
    let b = dba.screening(hall, film, "2 days", 800, "EUR").await;
    let cc = dba.screening(hall, film, "3 days", 800, "EUR").await;
    let d = dba.screening(hall, film, "9 days", 800, "EUR").await;
    let e = dba.screening(hall, film, "12 days", 800, "EUR").await;
    let past = dba.screening(hall, film, "-2 hours", 800, "EUR").await;
    let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
    let (ta, tb, tc) = (
        at(dba.starts_at_ms(a).await),
        at(dba.starts_at_ms(b).await),
        at(dba.starts_at_ms(cc).await),
    );
    let z = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    let mut c = app.client().await;
    let mut get = async |data: Value| ids(&screenings(&mut c, data).await);
    let s = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>();

    // from <= starts_at < to, at the exact boundaries.
    assert_eq!(get(json!({"from": z(ta), "to": z(tc)})).await, s(&[a, b]));
    assert_eq!(
        get(json!({"from": z(ta + chrono::Duration::milliseconds(1)), "to": z(tc + chrono::Duration::milliseconds(1))})).await,
        s(&[b, cc])
    );
    // The same instant with another offset.
    let berlin = tb
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();
    assert!(berlin.ends_with("+02:00"));
    assert_eq!(get(json!({"from": berlin, "to": z(tc)})).await, s(&[b]));
    // `to` defaults to from + 7 days.
    assert_eq!(get(json!({"from": z(tc)})).await, s(&[cc, d]));
    // `from` defaults to now.
    assert_eq!(get(json!({"to": z(tc)})).await, s(&[a, b]));
    // A window in the past shows past screenings.
    let three_h_ago = Utc::now() - chrono::Duration::hours(3);
    assert_eq!(
        get(json!({"from": z(three_h_ago), "to": z(ta)})).await,
        s(&[past])
    );
    // An empty or inverted window is an empty list.
    assert_eq!(get(json!({"from": z(ta), "to": z(ta)})).await, s(&[]));
    assert_eq!(get(json!({"from": z(tc), "to": z(ta)})).await, s(&[]));
    assert_eq!(
        get(json!({"from": z(tc), "to": z(tc + chrono::Duration::days(31))})).await,
        s(&[cc, d, e])
    );
}

#[tokio::test]
async fn get_screenings_filters_by_cinema_and_an_unknown_cinema_has_none() {
    let app = TestApp::spawn().await;
    let dba = Dba::new(&app.db).await;
    let (c1, h1, f1) = venue(&dba, "First", 2, 2).await;
    let (c2, h2, f2) = venue(&dba, "Second", 2, 2).await;
    let s1 = dba.screening(h1, f1, "5 hours", 800, "EUR").await;
    let s2 = dba.screening(h2, f2, "4 hours", 800, "EUR").await;
    let mut c = app.client().await;
    assert_eq!(
        ids(&screenings(&mut c, json!({"cinema_id": c1.to_string()})).await),
        [s1.to_string()]
    );
    assert_eq!(
        ids(&screenings(&mut c, json!({"cinema_id": c2.to_string()})).await),
        [s2.to_string()]
    );
    assert_eq!(
        ids(&screenings(&mut c, json!({})).await),
        [s2.to_string(), s1.to_string()]
    );
    // A cinema that does not exist: an empty list, not an error.
    for unknown in ["999999", "zzz", "", "01"] {
        assert_eq!(
            c.ok("get_screenings", json!({"cinema_id": unknown})).await,
            json!({"screenings": []}),
            "{unknown}"
        );
    }
}

/// Each request of `data` answers BAD_REQUEST with a message.
async fn bad_screenings_requests(c: &mut Client, data: &[Value]) {
    for data in data {
        let f = c.request("get_screenings", data.clone()).await;
        assert_eq!(f["error"], "BAD_REQUEST", "{data}: {f}");
        assert!(f["data"]["message"].is_string());
    }
}

#[tokio::test]
async fn get_screenings_refuses_wrong_types_and_unparsable_times() {
    let app = TestApp::spawn().await;
    let dba = Dba::new(&app.db).await;
    let (c1, _, _) = venue(&dba, "First", 2, 2).await;
    let mut c = app.client().await;
    bad_screenings_requests(
        &mut c,
        &[
            json!({"cinema_id": 5}),
            json!({"cinema_id": c1}),
            json!({"cinema_id": [c1.to_string()]}),
            json!({"from": "yesterday"}),
            json!({"from": "2030-01-01"}),
            json!({"from": "2030-13-01T00:00:00Z"}),
            json!({"from": 1_732_400_000_000_i64}),
            json!({"to": "soon"}),
            json!({"to": true}),
        ],
    )
    .await;
}

#[tokio::test]
async fn get_screenings_answers_at_most_31_days() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    // Exactly 31 days is allowed.
    c.ok(
        "get_screenings",
        json!({"from": "2030-01-01T00:00:00Z", "to": "2030-02-01T00:00:00Z"}),
    )
    .await;
    // Abuse limits: at most 31 days per request, so one answer stays small.
    bad_screenings_requests(
        &mut c,
        &[
            json!({"from": "2030-01-01T00:00:00Z", "to": "2030-02-01T00:00:01Z"}),
            json!({"from": "2030-01-01T00:00:00Z", "to": "2031-01-01T00:00:00Z"}),
        ],
    )
    .await;
}

#[tokio::test]
async fn seats_free_drops_when_seats_are_blocked_or_held() {
    let app = TestApp::spawn().await;
    let (screening, seats) = screening(&app.db, 3, 4, Duration::from_secs(3600)).await;
    let mut anon = app.client().await;
    let free = async |c: &mut Client| {
        let list = screenings(c, json!({})).await;
        let s = list
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == screening.as_str())
            .expect("the screening")
            .clone();
        assert_eq!(s["seats_total"], 12);
        s["seats_free"].as_i64().expect("integer")
    };
    assert_eq!(free(&mut anon).await, 12);

    let dba = Dba::new(&app.db).await;
    dba.exec(&format!(
        "SELECT admin.block_seats({screening}, ARRAY[{}]::bigint[])",
        seats[0]
    ))
    .await;
    assert_eq!(free(&mut anon).await, 11);

    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    alice.hold(&screening, &[&seats[5], &seats[6]]).await.data();
    assert_eq!(free(&mut anon).await, 9);
    alice.release(&screening, &[&seats[6]]).await.data();
    assert_eq!(free(&mut anon).await, 10);
    dba.exec(&format!(
        "SELECT admin.unblock_seats({screening}, ARRAY[{}]::bigint[])",
        seats[0]
    ))
    .await;
    assert_eq!(free(&mut anon).await, 11);
}

#[tokio::test]
async fn get_hall_snapshot_shape_layout_and_statuses() {
    let app = TestApp::spawn().await;
    let dba = Dba::new(&app.db).await;
    let (_, hall, film) = venue(&dba, "Layout", 3, 4).await;
    let screening = dba.screening(hall, film, "2 hours", 800, "EUR").await;
    let sid = screening.to_string();
    let seat_ids: Vec<String> = column(
        &dba.0,
        "SELECT id::text FROM seats WHERE hall_id = $1 ORDER BY row_label, number",
        &[&hall],
    )
    .await;
    assert_eq!(seat_ids.len(), 12);
    dba.exec(&format!(
        "SELECT admin.block_seats({screening}, ARRAY[{}]::bigint[])",
        seat_ids[11]
    ))
    .await;
    let (mut alice, _, _) = logged_in(&app.server, "alice").await;
    let held = alice.hold(&sid, &[&seat_ids[0], &seat_ids[1]]).await.data();

    let mut anon = app.client().await;
    let snap = anon.get_hall(&sid).await.data();
    assert_eq!(
        keys(&snap),
        HashSet::from(["screening_id", "hall", "version", "prices", "seats"])
    );
    assert_eq!(snap["screening_id"], sid);
    assert_eq!(
        snap["hall"],
        json!({"id": hall.to_string(), "name": "Saal 1"})
    );
    assert!(snap["version"].is_i64(), "{snap}");
    assert!(snap["version"].as_i64().unwrap() >= 0);
    assert_eq!(
        snap["version"], held["version"],
        "the hold's answer names the version it produced"
    );
    let seats = snap["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 12);
    let mut labels = Vec::new();
    for seat in seats {
        assert_eq!(
            keys(seat),
            HashSet::from(["id", "row", "number", "x", "y", "kind", "status"]),
            "anonymous: no `mine`: {seat}"
        );
        assert!(seat["id"].is_string() && seat["row"].is_string());
        assert!(seat["number"].is_i64() && seat["x"].is_i64() && seat["y"].is_i64());
        assert_eq!(seat["kind"], "standard");
        labels.push(format!(
            "{}{}",
            seat["row"].as_str().unwrap(),
            seat["number"]
        ));
    }
    // create_hall: rows A, B, C, seats numbered from 1.
    let mut sorted = labels.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["A1", "A2", "A3", "A4", "B1", "B2", "B3", "B4", "C1", "C2", "C3", "C4"]
    );
    let by_id = |id: &str| {
        seats
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("seat {id}"))
    };
    assert_eq!(by_id(&seat_ids[0])["row"], "A");
    assert_eq!(by_id(&seat_ids[0])["number"], 1);
    assert_eq!(by_id(&seat_ids[11])["row"], "C");
    assert_eq!(by_id(&seat_ids[11])["number"], 4);
    // The layout is consistent: x grows with the number, y with the row.
    assert!(by_id(&seat_ids[1])["x"].as_i64() > by_id(&seat_ids[0])["x"].as_i64());
    assert!(by_id(&seat_ids[4])["y"].as_i64() > by_id(&seat_ids[0])["y"].as_i64());
    assert_eq!(by_id(&seat_ids[0])["y"], by_id(&seat_ids[3])["y"]);
    // Statuses.
    for (i, id) in seat_ids.iter().enumerate() {
        let want = match i {
            0 | 1 => "held",
            11 => "blocked",
            _ => "free",
        };
        assert_eq!(by_id(id)["status"], want, "seat {i}");
    }

    // The holder sees `mine` on its own seats, and only there.
    let mine = alice.get_hall(&sid).await.data();
    for seat in mine["seats"].as_array().unwrap() {
        let own = seat["id"] == seat_ids[0].as_str() || seat["id"] == seat_ids[1].as_str();
        assert_eq!(seat.get("mine"), own.then_some(&json!(true)), "{seat}");
    }
    // get_hall does not subscribe: no pushes follow a change.
    dba.exec(&format!(
        "SELECT admin.block_seats({screening}, ARRAY[{}]::bigint[])",
        seat_ids[5]
    ))
    .await;
    anon.no_push("hall_update", Duration::from_millis(300))
        .await;
    let after = anon.get_hall(&sid).await.data();
    assert!(after["version"].as_i64() > snap["version"].as_i64());
    assert_eq!(by_id_in(&after, &seat_ids[5])["status"], "blocked");

    // Unknown screenings.
    for id in ["123456789", "nope"] {
        assert_eq!(anon.get_hall(id).await.error(), "NOT_FOUND");
    }
}

fn by_id_in<'a>(snap: &'a Value, id: &str) -> &'a Value {
    snap["seats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("seat {id}"))
}

/// Seconds until a hold answer's `expires_at`.
fn expires_in(f: &Value) -> f64 {
    let t = DateTime::parse_from_rfc3339(f["data"]["expires_at"].as_str().expect("expires_at"))
        .expect("RFC 3339");
    (t.with_timezone(&Utc) - Utc::now()).num_milliseconds() as f64 / 1000.0
}

/// A 2×6 hall and alice logged in; (app, screening, seats, DBA, alice).
async fn settings_setup() -> (TestApp, String, Vec<String>, Dba, Client) {
    let app = TestApp::spawn().await;
    let (screening, seats) = screening(&app.db, 2, 6, Duration::from_secs(3600)).await;
    let dba = Dba::new(&app.db).await;
    let (alice, _, _) = logged_in(&app.server, "alice").await;
    (app, screening, seats, dba, alice)
}

#[tokio::test]
async fn the_seat_limit_takes_effect_on_the_next_request() {
    let (_app, screening, seats, dba, mut alice) = settings_setup().await;
    alice.hold(&screening, &seats[..1]).await.data();
    // The seat limit, changed while the server runs.
    dba.exec("SELECT admin.set_seat_limit(2)").await;
    let f = alice.hold(&screening, &seats[1..3]).await.0;
    assert_eq!(f["error"], "HOLD_LIMIT", "3 seats over a limit of 2: {f}");
    assert!(f["data"]["message"].is_string());
    let f = alice.hold(&screening, &seats[1..2]).await.0;
    assert!(f.get("error").is_none(), "2 seats fit: {f}");
    let f = alice.hold(&screening, &seats[2..3]).await.0;
    assert_eq!(f["error"], "HOLD_LIMIT");
    dba.exec("SELECT admin.set_seat_limit(4)").await;
    let f = alice.hold(&screening, &seats[2..4]).await.0;
    assert!(f.get("error").is_none(), "the raised limit applies: {f}");
}

#[tokio::test]
async fn the_hold_ttl_takes_effect_on_the_next_request() {
    let (_app, screening, seats, dba, mut alice) = settings_setup().await;
    let mut hold = async || alice.hold(&screening, &seats[..1]).await.0;
    // Defaults: a 10-minute hold.
    let f = hold().await;
    assert!(f.get("error").is_none(), "{f}");
    let left = expires_in(&f);
    assert!((595.0..=605.0).contains(&left), "default TTL 600 s: {left}");

    // The hold TTL, changed while the server runs: the next hold (or renewal) uses it.
    dba.exec("SELECT admin.set_hold_ttl(30)").await;
    let f = hold().await;
    assert!(f.get("error").is_none(), "{f}");
    let left = expires_in(&f);
    assert!((25.0..=35.0).contains(&left), "TTL 30 s: {left}");
    dba.exec("SELECT admin.set_hold_ttl(7200)").await;
    let left = expires_in(&hold().await);
    assert!(
        (1795.0..=1805.0).contains(&left),
        "TTL 2 h, capped by max_hold_seconds (1800 by default): {left}"
    );
    dba.exec("SELECT admin.set_max_hold_seconds(86400)").await;
    let left = expires_in(&hold().await);
    assert!((7195.0..=7205.0).contains(&left), "TTL 2 h: {left}");
}
