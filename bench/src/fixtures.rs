//! The run's own cinema, halls, film and screenings, created through the
//! contract's `admin.*` SQL functions only, and the seat lists read back
//! over the wire (`get_hall`), so nothing here depends on one
//! implementation's tables or id type.
//!
//! SQL goes through the simple (text) protocol with quoted literals: an id
//! returned as text is passed back as an untyped literal, which PostgreSQL
//! coerces to whatever id type the implementation uses.

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::client::{id_string, Conn};

/// A database connection for setup and checks. Every scenario registers
/// its users from this one address, so the per-address registration limit
/// (20 an hour by default) is turned off first, as an operator would for a
/// load test.
pub async fn connect(url: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| "connect to DATABASE_URL")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("bench: database connection: {e}");
        }
    });
    client
        .batch_execute("SELECT admin.set_registration_limit(0)")
        .await
        .with_context(|| "admin.set_registration_limit(0)")?;
    Ok(client)
}

/// A SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs one statement and returns the first column of every row as text.
pub async fn column(db: &Client, sql: &str) -> Result<Vec<Option<String>>> {
    let msgs = db
        .simple_query(sql)
        .await
        .with_context(|| format!("SQL failed: {sql}"))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect())
}

/// The first column of the first row.
pub async fn scalar(db: &Client, sql: &str) -> Result<String> {
    column(db, sql)
        .await?
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| anyhow!("no value from: {sql}"))
}

/// One screening of the run.
#[derive(Debug, Clone)]
pub struct Screening {
    /// Wire id.
    pub id: String,
    /// Seat wire ids in the hall's order (`get_hall`).
    pub seats: Vec<String>,
    /// Version of the snapshot the seats were read from.
    pub version: i64,
}

/// Seats a row of the bench's halls (every hall it creates has 25 a row).
pub const SEATS_PER_ROW: usize = 25;

/// The k-th seat of a hall to give a user a seat of its own: every third
/// seat of a row, from the row's first seat (0, 3, …, 24: 9 a row), so two
/// free seats lie between any two users' seats and none at a row's end.
/// With the box office's no-orphan rule on (the default), a hold beside
/// another user's seat could leave one free seat alone and be refused
/// (`SEAT_RULE`); placed like this no hold of one's own seat ever does, so
/// every request still commits while the rule's check runs on every hold.
pub fn seat_apart(k: usize) -> usize {
    (k / 9) * SEATS_PER_ROW + (k % 9) * 3
}

/// Rows a hall needs for `n` seats given out by [`seat_apart`].
pub fn rows_apart(n: usize) -> u32 {
    n.div_ceil(9) as u32
}

/// Layout of what to create.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub halls: usize,
    pub screenings_per_hall: usize,
    pub rows: u32,
    pub seats_per_row: u32,
}

/// Creates a cinema with `plan.halls` halls of `rows × seats_per_row`
/// seats and `screenings_per_hall` screenings in each, starting tomorrow
/// (3 h apart). Returns the screenings hall by hall.
pub async fn create(db: &Client, ws_url: &str, run: &str, plan: Plan) -> Result<Vec<Screening>> {
    let cinema = scalar(
        db,
        &format!(
            "SELECT admin.create_cinema({}, 'Benchtown', 'Load Street 1', 'UTC')::text",
            lit(&format!("bench {run}"))
        ),
    )
    .await?;
    let film = scalar(
        db,
        &format!(
            "SELECT admin.create_film({}, 120, 'PG')::text",
            lit(&format!("Bench {run}"))
        ),
    )
    .await?;
    let mut ids = Vec::new();
    for h in 0..plan.halls {
        let hall = scalar(
            db,
            &format!(
                "SELECT admin.create_hall({}, {}, {}, {})::text",
                lit(&cinema),
                lit(&format!("H{h}")),
                plan.rows,
                plan.seats_per_row
            ),
        )
        .await?;
        for k in 0..plan.screenings_per_hall {
            ids.push(
                scalar(
                    db,
                    &format!(
                        "SELECT admin.create_screening({}, {}, \
                         date_trunc('hour', now()) + interval '1 day' + interval '3 hours' * {k}, 1200, 'EUR')::text",
                        lit(&hall),
                        lit(&film)
                    ),
                )
                .await?,
            );
        }
    }
    // Seat ids through the wire: one anonymous connection, `get_hall` each.
    let mut conn = Conn::connect(ws_url, None).await?;
    let mut out = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        if i > 0 && i % 40 == 0 {
            // Stay inside the per-connection rate limit.
            conn.close().await;
            conn = Conn::connect(ws_url, None).await?;
        }
        let snap = conn
            .request("get_hall", json!({"screening_id": id}))
            .await?
            .ok("get_hall")?;
        let seats: Vec<String> = snap["seats"]
            .as_array()
            .ok_or_else(|| anyhow!("get_hall: no seats"))?
            .iter()
            .map(|s| id_string(&s["id"]))
            .collect();
        out.push(Screening {
            id,
            seats,
            version: snap["version"].as_i64().unwrap_or(0),
        });
    }
    conn.close().await;
    Ok(out)
}

/// Seat statuses of some screenings from the contract's `seat_states`
/// table: (screening, seat) → status.
pub async fn seat_states(
    db: &Client,
    screenings: &[String],
) -> Result<std::collections::HashMap<(String, String), String>> {
    let list = screenings
        .iter()
        .map(|s| lit(s))
        .collect::<Vec<_>>()
        .join(",");
    let msgs = db
        .simple_query(&format!(
            "SELECT screening_id::text, seat_id::text, status::text FROM seat_states \
             WHERE screening_id::text IN ({list})"
        ))
        .await?;
    let mut out = std::collections::HashMap::new();
    for m in msgs {
        if let SimpleQueryMessage::Row(r) = m {
            out.insert(
                (
                    r.get(0).unwrap_or("").to_owned(),
                    r.get(1).unwrap_or("").to_owned(),
                ),
                r.get(2).unwrap_or("").to_owned(),
            );
        }
    }
    Ok(out)
}

/// Rows of `seat_states` that share a (screening, seat) with another row.
pub async fn duplicate_seats(db: &Client, screenings: &[String]) -> Result<i64> {
    let list = screenings
        .iter()
        .map(|s| lit(s))
        .collect::<Vec<_>>()
        .join(",");
    Ok(scalar(
        db,
        &format!(
            "SELECT count(*) FROM (SELECT 1 FROM seat_states WHERE screening_id::text IN ({list}) \
             GROUP BY screening_id, seat_id HAVING count(*) > 1) AS d"
        ),
    )
    .await?
    .parse()?)
}

/// The postmaster of the database's cluster (parent of our backend), when
/// it runs on this machine.
pub async fn postmaster_pid(db: &Client) -> Option<u32> {
    let pid: u32 = scalar(db, "SELECT pg_backend_pid()")
        .await
        .ok()?
        .parse()
        .ok()?;
    crate::procfs::parent_of(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The no-orphan rule refuses a hold of seat s when a neighbour f of s
    /// would be left open with no open neighbour. Whatever the users hold
    /// at the moment, every neighbour f of a given seat is never given and
    /// has another neighbour that is never given (so always open).
    #[test]
    fn seats_apart_never_make_an_orphan() {
        let n = 40;
        let rows = rows_apart(n) as usize;
        let mut given = vec![false; rows * SEATS_PER_ROW];
        for k in 0..n {
            let i = seat_apart(k);
            assert!(!given[i], "seat {i} given twice");
            given[i] = true;
        }
        let neighbours = |i: usize| {
            let x = i % SEATS_PER_ROW;
            [
                (x > 0).then(|| i - 1),
                (x + 1 < SEATS_PER_ROW).then(|| i + 1),
            ]
            .into_iter()
            .flatten()
        };
        for s in (0..given.len()).filter(|&s| given[s]) {
            for f in neighbours(s) {
                assert!(!given[f], "seats {s} and {f} are both given");
                assert!(
                    neighbours(f).any(|g| g != s && !given[g]),
                    "seat {f} beside {s} has no neighbour that stays open"
                );
            }
        }
    }
}
