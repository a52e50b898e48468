//! `book`: durable bookings per second. U users, one socket each, each
//! booking one seat at a time: `hold_seats` then `book_seats` (a booking
//! commits synchronously: it must survive a crash). A user books at most
//! the seat limit (10) per screening and then moves to the next screening,
//! so the run needs no change of settings. `--screenings N` spreads the
//! users over N halls at any moment (user u books in hall u mod N), so the
//! bookings contend for N screening rows, like the floor with N screenings. Compared with
//! `bench/pgbench.sh --workload book` (the same two calls) right after.
//! At the end the database must hold exactly the bookings answered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::json;

use crate::client::{connect_many, register_users, run_id, Conn};
use crate::fanout::{cpu_line, cpu_pct, metric_deltas};
use crate::fixtures::{self, Plan};
use crate::procfs::CpuUse;
use crate::stats::{big, emit, round1, round3, row, Latency};
use crate::Target;

/// Seats a user books per screening (the default seat limit).
const PER_SCREENING: usize = 10;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Booking users (one socket each).
    #[arg(long, default_value_t = 64)]
    pub users: usize,
    /// Screenings booked at the same time (one hall each).
    #[arg(long, default_value_t = 1)]
    pub screenings: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// pgbench client counts to compare with (best one is the limit);
    /// default: the users, capped at 16 (Marquee's default pool size).
    #[arg(long, value_delimiter = ',')]
    pub pgbench_clients: Vec<usize>,
    #[arg(long)]
    pub no_pgbench: bool,
}

#[derive(Default)]
struct UserOut {
    booked: u64,
    booked_in_window: u64,
    hold_rtts: Vec<u64>,
    book_rtts: Vec<u64>,
    /// hold sent → booking answered.
    booking_times: Vec<u64>,
    errors: HashMap<String, u64>,
}

pub async fn run(t: &Target, a: &Args) -> Result<()> {
    if a.users == 0 || a.screenings == 0 {
        bail!("need users and screenings");
    }
    let run = run_id();
    let db = fixtures::connect(t.db()?).await?;
    let probe = t.probe(&db).await;
    // Each booking is two requests; a user never books more than this.
    let per_user = ((a.warmup + a.duration + 2) as f64 * t.conn_rate / 2.0).ceil() as usize;
    let screenings_needed = per_user.div_ceil(PER_SCREENING) + 1;
    let lanes = a.screenings;
    // Every seat a user books two seats apart from the next (see
    // fixtures::seat_apart), so no hold is refused by the no-orphan rule.
    let rows = fixtures::rows_apart(a.users.div_ceil(lanes) * PER_SCREENING);
    eprintln!(
        "book {run}: {} users over {lanes} hall(s), {} screenings a hall, {} seats each",
        a.users,
        screenings_needed,
        rows * 25
    );
    let screenings = fixtures::create(
        &db,
        &t.ws_url,
        &run,
        Plan {
            halls: lanes,
            screenings_per_hall: screenings_needed,
            rows,
            seats_per_row: 25,
        },
    )
    .await?;
    let ids: Vec<String> = screenings.iter().map(|s| s.id.clone()).collect();
    let seats: Vec<Vec<String>> = screenings.iter().map(|s| s.seats.clone()).collect();
    let users = register_users(&t.ws_url, &format!("b{run}"), a.users, 8).await?;
    let conns = connect_many(
        &t.ws_url,
        users.iter().map(|u| Some(u.token.clone())).collect(),
        32,
    )
    .await?;
    let metrics_before = t.metrics().await;

    let interval = Duration::from_secs_f64(1.0 / t.conn_rate);
    let start = Instant::now() + Duration::from_millis(200);
    let win_start = start + Duration::from_secs(a.warmup);
    let end = win_start + Duration::from_secs(a.duration);
    let n = conns.len();
    let mut tasks = Vec::new();
    for (u, conn) in conns.into_iter().enumerate() {
        let first = start + interval.mul_f64(u as f64 / n as f64);
        // The hall's screenings (`create` returns them hall by hall).
        let lane = (u % lanes) * screenings_needed..(u % lanes + 1) * screenings_needed;
        let (ids, seats) = (ids[lane.clone()].to_vec(), seats[lane].to_vec());
        tasks.push(tokio::spawn(book_loop(
            conn,
            u / lanes,
            ids,
            seats,
            first,
            interval,
            win_start,
            end,
        )));
    }
    tokio::time::sleep_until(win_start.into()).await;
    let s0 = probe.sample();
    tokio::time::sleep_until(end.into()).await;
    let s1 = probe.sample();
    let cpu = CpuUse::between(&s0, &s1);
    let mut all = UserOut::default();
    for task in tasks {
        let (conn, o) = task.await?;
        conn.close().await;
        all.booked += o.booked;
        all.booked_in_window += o.booked_in_window;
        all.hold_rtts.extend(o.hold_rtts);
        all.book_rtts.extend(o.book_rtts);
        all.booking_times.extend(o.booking_times);
        for (k, v) in o.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    let metrics_after = t.metrics().await;
    let states = fixtures::seat_states(&db, &ids).await?;
    let booked_in_db = states.values().filter(|s| *s == "booked").count() as u64;
    let duplicates = fixtures::duplicate_seats(&db, &ids).await?;
    let ok = booked_in_db == all.booked && duplicates == 0;

    let secs = a.duration as f64;
    let per_s = all.booked_in_window as f64 / secs;
    let per = |x: Option<f64>| x.map(|x| round3(x * 1e6 / all.booked_in_window.max(1) as f64));
    let pg = if a.no_pgbench {
        None
    } else {
        let clients = if a.pgbench_clients.is_empty() {
            vec![a.users.min(16)]
        } else {
            a.pgbench_clients.clone()
        };
        Some(
            crate::pgbench::best(
                t,
                "book",
                &clients,
                // pgbench.sh's book workload books in one hall.
                1,
                rows as usize * 25,
                a.duration,
            )
            .await?,
        )
    };
    let pg_best = pg.as_ref().and_then(|p| p.best);
    let ratio = pg_best.map(|b| round3(per_s / b));
    let hold = Latency::of(&mut all.hold_rtts);
    let book = Latency::of(&mut all.book_rtts);
    let booking = Latency::of(&mut all.booking_times);
    let summary = json!({
        "scenario": "book",
        "run": run,
        "label": t.label,
        "users": a.users,
        "screenings": lanes,
        "bookings_per_s": round1(per_s),
        // Two requests per booking, at most `conn_rate` a second per socket.
        "request_ceiling_bookings_per_s": round1(a.users as f64 * t.conn_rate / 2.0),
        "conn_rate": t.conn_rate,
        "errors": all.errors,
        "hold_rtt_ms": hold,
        "book_rtt_ms": book,
        "booking_ms": booking,
        "server_cpu_us_per_booking": per(cpu.server_s),
        "postgres_cpu_us_per_booking": per(cpu.postgres_s),
        "cpu_pct_of_core": cpu_pct(&cpu),
        "cpu": cpu,
        "duration_s": secs,
        "warmup_s": a.warmup,
        "checks": {"ok": ok, "answered_bookings": all.booked, "booked_seats_in_db": booked_in_db,
                   "duplicate_seat_rows": duplicates},
        "pgbench": pg.as_ref().map(|p| &p.runs),
        "pgbench_best_bookings_per_s": pg_best,
        "ratio_to_pgbench": ratio,
        "server_metrics": metric_deltas(&metrics_before, &metrics_after),
    });
    let mut rows = vec![
        row("durable bookings/s", big(per_s)),
        row("errors by code", format!("{:?}", all.errors)),
        row("hold round trip", hold.line()),
        row("book round trip", book.line()),
        row("hold sent → booked", booking.line()),
        row("server CPU", cpu_line(cpu.server_s, &cpu, per(cpu.server_s), "booking")),
        row("PostgreSQL CPU", cpu_line(cpu.postgres_s, &cpu, per(cpu.postgres_s), "booking")),
        row("load generator CPU", format!("{:.0}% of a core", cpu.pct(cpu.bench_s))),
        row("other load on the machine", cpu.other_line()),
        row(
            "check",
            format!(
                "{} ({} answered, {booked_in_db} booked in the database, duplicate rows {duplicates})",
                if ok { "OK" } else { "FAILED" },
                all.booked
            ),
        ),
    ];
    if let Some(p) = &pg {
        rows.push(row(
            "pgbench, same calls",
            p.runs
                .iter()
                .map(|r| {
                    format!(
                        "{} clients: {} bookings/s",
                        r["clients"],
                        big(r["tps"].as_f64().unwrap_or(0.0))
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        ));
        rows.push(row(
            "Marquee / pgbench best",
            ratio.map_or("n/a".into(), |r| format!("{:.0}%", r * 100.0)),
        ));
    }
    emit(
        &format!("book {} users, {lanes} hall(s)", a.users),
        &rows,
        &summary,
        t.out.as_deref(),
    )?;
    if !ok {
        bail!("booking check failed");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn book_loop(
    mut conn: Conn,
    u: usize,
    ids: Vec<String>,
    seats: Vec<Vec<String>>,
    first: Instant,
    interval: Duration,
    win_start: Instant,
    end: Instant,
) -> (Conn, UserOut) {
    let mut out = UserOut::default();
    let mut next = first;
    let mut k = 0usize;
    'outer: while next < end && k / PER_SCREENING < ids.len() {
        let s = k / PER_SCREENING;
        let seat = &seats[s][fixtures::seat_apart(u * PER_SCREENING + k % PER_SCREENING)];
        k += 1;
        let data = json!({"screening_id": ids[s], "seat_ids": [seat]});
        // One booking (two requests, back to back) per two request slots.
        tokio::time::sleep_until(next.into()).await;
        let started = Instant::now();
        next += interval * 2;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        for kind in ["hold_seats", "book_seats"] {
            let sent = Instant::now();
            let eid = conn.eid();
            let reply = match conn.send(kind, &eid, &data).await {
                Ok(()) => conn.answer(&eid).await,
                Err(e) => Err(e),
            };
            let rtt = sent.elapsed().as_nanos() as u64;
            match reply {
                Ok(r) => match r.error {
                    None => {
                        if started >= win_start {
                            if kind == "hold_seats" {
                                out.hold_rtts.push(rtt);
                            } else {
                                out.book_rtts.push(rtt);
                            }
                        }
                        if kind == "book_seats" {
                            out.booked += 1;
                            if started >= win_start && started < end {
                                out.booked_in_window += 1;
                                out.booking_times.push(started.elapsed().as_nanos() as u64);
                            }
                        }
                    }
                    Some(code) => {
                        *out.errors.entry(code).or_default() += 1;
                        continue 'outer;
                    }
                },
                Err(e) => {
                    *out.errors.entry(format!("transport: {e}")).or_default() += 1;
                    break 'outer;
                }
            }
        }
    }
    (conn, out)
}
