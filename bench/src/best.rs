//! `best`: the round trip of `hold_best_available` below saturation. U
//! users over N screenings (one hall each, user u in hall u mod N), one
//! socket each; every user asks for the best `count` seats, then releases
//! them, at `--pairs-per-s` pairs a second. Every request runs the box
//! office's search (and its orphan check) on the hall as the others left it
//! a moment before, so the halls keep changing under the requests. At the
//! end no seat may be held any more (every answered hold was released), and
//! no request may have failed but for `SEAT_UNAVAILABLE` (a full hall).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::client::{connect_many, id_string, register_users, run_id, Conn};
use crate::fanout::{cpu_line, cpu_pct};
use crate::fixtures::{self, Plan};
use crate::procfs::CpuUse;
use crate::stats::{big, emit, round1, round3, row, Latency};
use crate::Target;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Users (one socket each).
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Screenings (one hall each).
    #[arg(long, default_value_t = 10)]
    pub screenings: usize,
    /// Seats per request.
    #[arg(long, default_value_t = 2)]
    pub count: usize,
    /// Hold-and-release pairs per second per user (below saturation).
    #[arg(long, default_value_t = 2.0)]
    pub pairs_per_s: f64,
    /// Rows of 25 seats per hall.
    #[arg(long, default_value_t = 12)]
    pub rows: u32,
    /// Measured seconds.
    #[arg(long, default_value_t = 15)]
    pub duration: u64,
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
}

#[derive(Default)]
struct UserOut {
    holds_in_window: u64,
    best_rtts: Vec<u64>,
    release_rtts: Vec<u64>,
    errors: HashMap<String, u64>,
}

pub async fn run(t: &Target, a: &Args) -> Result<()> {
    if a.users == 0 || a.screenings == 0 || a.count == 0 || a.pairs_per_s <= 0.0 {
        bail!("need users, screenings, a count and a rate");
    }
    let run = run_id();
    let db = fixtures::connect(t.db()?).await?;
    let probe = t.probe(&db).await;
    let screenings = fixtures::create(
        &db,
        &t.ws_url,
        &run,
        Plan {
            halls: a.screenings,
            screenings_per_hall: 1,
            rows: a.rows,
            seats_per_row: 25,
        },
    )
    .await?;
    let ids: Vec<String> = screenings.iter().map(|s| s.id.clone()).collect();
    eprintln!(
        "best {run}: {} users over {} hall(s) of {} seats, count {}, {} pairs/s each",
        a.users,
        a.screenings,
        a.rows * 25,
        a.count,
        a.pairs_per_s
    );
    let users = register_users(&t.ws_url, &format!("x{run}"), a.users, 8).await?;
    let conns = connect_many(
        &t.ws_url,
        users.iter().map(|u| Some(u.token.clone())).collect(),
        32,
    )
    .await?;

    let interval = Duration::from_secs_f64(1.0 / a.pairs_per_s);
    let start = Instant::now() + Duration::from_millis(200);
    let win_start = start + Duration::from_secs(a.warmup);
    let end = win_start + Duration::from_secs(a.duration);
    let n = conns.len();
    let mut tasks = Vec::new();
    for (u, conn) in conns.into_iter().enumerate() {
        let first = start + interval.mul_f64(u as f64 / n as f64);
        let screening = ids[u % ids.len()].clone();
        tasks.push(tokio::spawn(best_loop(
            conn, screening, a.count, first, interval, win_start, end,
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
        all.holds_in_window += o.holds_in_window;
        all.best_rtts.extend(o.best_rtts);
        all.release_rtts.extend(o.release_rtts);
        for (k, v) in o.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }
    let states = fixtures::seat_states(&db, &ids).await?;
    let still_held = states.values().filter(|s| *s == "held").count();
    let unexpected: u64 = all
        .errors
        .iter()
        .filter(|(k, _)| k.as_str() != "SEAT_UNAVAILABLE")
        .map(|(_, v)| *v)
        .sum();
    let ok = still_held == 0 && unexpected == 0;

    let secs = a.duration as f64;
    let per_s = all.holds_in_window as f64 / secs;
    let per = |x: Option<f64>| x.map(|x| round3(x * 1e6 / all.holds_in_window.max(1) as f64));
    let best = Latency::of(&mut all.best_rtts);
    let release = Latency::of(&mut all.release_rtts);
    let summary = json!({
        "scenario": "best",
        "run": run,
        "label": t.label,
        "users": a.users,
        "screenings": a.screenings,
        "count": a.count,
        "pairs_per_s_per_user": a.pairs_per_s,
        "best_holds_per_s": round1(per_s),
        "errors": all.errors,
        "best_rtt_ms": best,
        "release_rtt_ms": release,
        "server_cpu_us_per_pair": per(cpu.server_s),
        "postgres_cpu_us_per_pair": per(cpu.postgres_s),
        "cpu_pct_of_core": cpu_pct(&cpu),
        "cpu": cpu,
        "duration_s": secs,
        "warmup_s": a.warmup,
        "checks": {"ok": ok, "seats_still_held": still_held, "unexpected_errors": unexpected},
    });
    let rows = vec![
        row("best-available holds/s", big(per_s)),
        row("errors by code", format!("{:?}", all.errors)),
        row("hold_best_available round trip", best.line()),
        row("release round trip", release.line()),
        row(
            "server CPU",
            cpu_line(cpu.server_s, &cpu, per(cpu.server_s), "pair"),
        ),
        row(
            "PostgreSQL CPU",
            cpu_line(cpu.postgres_s, &cpu, per(cpu.postgres_s), "pair"),
        ),
        row("other load on the machine", cpu.other_line()),
        row(
            "check",
            format!(
                "{} ({still_held} seats still held, {unexpected} unexpected errors)",
                if ok { "OK" } else { "FAILED" }
            ),
        ),
    ];
    emit(
        &format!(
            "best {} users, {} hall(s), count {}",
            a.users, a.screenings, a.count
        ),
        &rows,
        &summary,
        t.out.as_deref(),
    )?;
    if !ok {
        bail!("best-available check failed");
    }
    Ok(())
}

async fn best_loop(
    mut conn: Conn,
    screening: String,
    count: usize,
    first: Instant,
    interval: Duration,
    win_start: Instant,
    end: Instant,
) -> (Conn, UserOut) {
    let mut out = UserOut::default();
    let mut next = first;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        next += interval;
        let sent = Instant::now();
        let eid = conn.eid();
        let data = json!({"screening_id": screening, "count": count});
        let reply = match conn.send("hold_best_available", &eid, &data).await {
            Ok(()) => conn.answer(&eid).await,
            Err(e) => Err(e),
        };
        let rtt = sent.elapsed().as_nanos() as u64;
        let in_window = sent >= win_start && sent < end;
        let seats: Vec<Value> = match reply {
            Ok(r) => match r.error {
                None => {
                    if in_window {
                        out.best_rtts.push(rtt);
                        out.holds_in_window += 1;
                    }
                    r.data["seat_ids"].as_array().cloned().unwrap_or_default()
                }
                Some(code) => {
                    *out.errors.entry(code).or_default() += 1;
                    continue;
                }
            },
            Err(e) => {
                *out.errors.entry(format!("transport: {e}")).or_default() += 1;
                break;
            }
        };
        let ids: Vec<String> = seats.iter().map(id_string).collect();
        let sent = Instant::now();
        let eid = conn.eid();
        let data = json!({"screening_id": screening, "seat_ids": ids});
        match conn.send("release_seats", &eid, &data).await {
            Ok(()) => match conn.answer(&eid).await {
                Ok(r) => {
                    if let Some(code) = r.error {
                        *out.errors.entry(code).or_default() += 1;
                    } else if in_window {
                        out.release_rtts.push(sent.elapsed().as_nanos() as u64);
                    }
                }
                Err(e) => {
                    *out.errors.entry(format!("transport: {e}")).or_default() += 1;
                    break;
                }
            },
            Err(e) => {
                *out.errors.entry(format!("transport: {e}")).or_default() += 1;
                break;
            }
        }
    }
    (conn, out)
}
