//! `rush`: U logged-in users, one socket each, sending seat changes as fast
//! as the per-connection rate limit allows (one request in flight each), on
//! one screening or spread over many. Two patterns:
//!
//! * `own`: each user changes a seat of its own, so every request is a
//!   committed change. It cycles hold, release, …, hold, book, cancel, with
//!   as many hold/release pairs as make book + cancel (the synchronous
//!   commits) `--sync-share` of the changes (0: hold and release only), the
//!   mix a pre-sale's rush makes; the JSON line reports the shares of
//!   asynchronous and synchronous commits actually made, which
//!   `bench report` blends the floor (`bench floor`) with. Unless
//!   `--no-pgbench`, `bench/pgbench.sh --workload hold` runs the same hold
//!   and release calls right after and the ratio is printed;
//! * `race`: users grab random seats from a shared pool (half of it held
//!   at any time) and release their oldest when they hold `--hold-max`:
//!   many holds lose the race (`SEAT_UNAVAILABLE`).
//!
//! After the run, with subscribers watching every screening, it checks
//! that no seat was ever held by two users (replaying the answers in
//! version order), that the versions of the answers are gapless, that the
//! database (`seat_states`) matches the replay, and that every subscriber's
//! view equals the database and got every change.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::Rng;
use serde_json::json;

use crate::client::{connect_many, register_users, run_id, Conn};
use crate::fanout::{changed, cpu_line, cpu_pct, metric_deltas};
use crate::fixtures::{self, Plan, Screening};
use crate::procfs::CpuUse;
use crate::stats::{big, emit, round1, round3, row, Latency};
use crate::subs::Subscribers;
use crate::Target;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Own,
    Race,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Racing users (one socket each).
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// Screenings the users spread over (one hall each).
    #[arg(long, default_value_t = 1)]
    pub screenings: usize,
    #[arg(long, value_enum, default_value_t = Pattern::Own)]
    pub pattern: Pattern,
    /// race: seats a user holds before releasing its oldest.
    #[arg(long, default_value_t = 2)]
    pub hold_max: usize,
    /// Subscribers per screening (they check every change arrives).
    #[arg(long, default_value_t = 2)]
    pub subs: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Rows per hall (25 seats a row); default: enough for the users.
    #[arg(long)]
    pub rows: Option<u32>,
    /// pgbench client counts to compare with (best one is the limit);
    /// default: the users, capped at 16 (Marquee's default pool size).
    #[arg(long, value_delimiter = ',')]
    pub pgbench_clients: Vec<usize>,
    /// Skip the pgbench comparison.
    #[arg(long)]
    pub no_pgbench: bool,
    /// own: the share of changes that are synchronous commits (book and
    /// cancel); the rest are holds and releases.
    #[arg(long, default_value_t = 0.22)]
    pub sync_share: f64,
}

/// own: the cycle of one user's seat changes for a synchronous share:
/// k hold/release pairs, then hold, book, cancel (two synchronous commits
/// in 2k + 3 changes). Share 0: hold and release only.
fn own_cycle(sync_share: f64) -> Vec<Op> {
    if sync_share <= 0.0 {
        return vec![Op::Hold, Op::Release];
    }
    let k = ((2.0 / sync_share.min(2.0 / 3.0) - 3.0) / 2.0)
        .round()
        .max(0.0) as usize;
    let mut cycle = Vec::with_capacity(2 * k + 3);
    for _ in 0..k {
        cycle.extend([Op::Hold, Op::Release]);
    }
    cycle.extend([Op::Hold, Op::Book, Op::Cancel]);
    cycle
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Hold,
    Release,
    /// Synchronous commit: the held seat becomes booked.
    Book,
    /// Synchronous commit: the booking is cancelled, the seat free.
    Cancel,
}

impl Op {
    fn request(self) -> &'static str {
        match self {
            Op::Hold => "hold_seats",
            Op::Release => "release_seats",
            Op::Book => "book_seats",
            Op::Cancel => "cancel_booking",
        }
    }
}

/// One committed change seen in an answer.
#[derive(Clone, Copy, Debug)]
struct Change {
    screening: u32,
    version: i64,
    user: u32,
    seat: u32,
    op: Op,
    sent: u64,
}

#[derive(Default)]
struct UserOut {
    changes: Vec<Change>,
    rtts: Vec<u64>,
    attempts_in_window: u64,
    committed_in_window: u64,
    /// Committed changes in the window by kind: hold, release, book, cancel.
    mix_in_window: [u64; 4],
    errors: HashMap<String, u64>,
}

struct UserCtx {
    idx: u32,
    screening: u32,
    screening_id: String,
    seats: Vec<String>,
    /// race: the seat pool (indices into `seats`); own: this user's seat.
    pool: Vec<u32>,
}

pub async fn run(t: &Target, a: &Args) -> Result<()> {
    if a.users == 0 || a.screenings == 0 {
        bail!("need users and screenings");
    }
    let run = run_id();
    let db = fixtures::connect(t.db()?).await?;
    let probe = t.probe(&db).await;
    let base = Instant::now();
    let per_screening = a.users.div_ceil(a.screenings);
    let pool_size = match a.pattern {
        Pattern::Own => per_screening,
        Pattern::Race => per_screening * a.hold_max * 2,
    };
    // own: each user's seat two seats apart from the next (see
    // fixtures::seat_apart); race: a contiguous pool, refusals are its point.
    let rows_needed = match a.pattern {
        Pattern::Own => fixtures::rows_apart(pool_size),
        Pattern::Race => pool_size.div_ceil(25) as u32,
    };
    let rows = a.rows.unwrap_or(rows_needed.max(4));
    if rows < rows_needed {
        bail!("{rows_needed} rows needed per screening: raise --rows");
    }
    eprintln!(
        "rush {run}: {} users, {} screening(s), pattern {:?}, {} subscribers per screening",
        a.users, a.screenings, a.pattern, a.subs
    );
    let screenings: Vec<Screening> = fixtures::create(
        &db,
        &t.ws_url,
        &run,
        Plan {
            halls: a.screenings,
            screenings_per_hall: 1,
            rows,
            seats_per_row: 25,
        },
    )
    .await?;
    let ids: Vec<String> = screenings.iter().map(|s| s.id.clone()).collect();
    let users = register_users(&t.ws_url, &format!("b{run}"), a.users, 8).await?;
    let conns = connect_many(
        &t.ws_url,
        users.iter().map(|u| Some(u.token.clone())).collect(),
        32,
    )
    .await?;
    let subs = Subscribers::open(&t.ws_url, &ids, a.subs, 64, true, base).await?;
    let metrics_before = t.metrics().await;

    let interval = Duration::from_secs_f64(1.0 / t.conn_rate);
    let start = Instant::now() + Duration::from_millis(200);
    let win_start = start + Duration::from_secs(a.warmup);
    let end = win_start + Duration::from_secs(a.duration);
    let mut tasks = Vec::new();
    let n = conns.len();
    for (u, conn) in conns.into_iter().enumerate() {
        let s = u % a.screenings;
        let slot = (u / a.screenings) as u32;
        let ctx = UserCtx {
            idx: u as u32,
            screening: s as u32,
            screening_id: screenings[s].id.clone(),
            seats: screenings[s].seats.clone(),
            pool: match a.pattern {
                Pattern::Own => vec![fixtures::seat_apart(slot as usize) as u32],
                Pattern::Race => (0..pool_size as u32).collect(),
            },
        };
        let first = start + interval.mul_f64(u as f64 / n as f64);
        let cycle = own_cycle(a.sync_share);
        // Users start at different holds of the cycle, so the synchronous
        // commits spread over time.
        let holds = cycle.iter().filter(|o| **o == Op::Hold).count();
        let pos = 2 * (u % holds);
        tasks.push(tokio::spawn(user_loop(
            conn,
            ctx,
            Script {
                pattern: a.pattern,
                hold_max: a.hold_max,
                cycle,
                pos,
            },
            first,
            interval,
            win_start,
            end,
            base,
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
        all.changes.extend(o.changes);
        all.rtts.extend(o.rtts);
        all.attempts_in_window += o.attempts_in_window;
        all.committed_in_window += o.committed_in_window;
        for (m, x) in all.mix_in_window.iter_mut().zip(o.mix_in_window) {
            *m += x;
        }
        for (k, v) in o.errors {
            *all.errors.entry(k).or_default() += v;
        }
    }

    // Every change is ours: the last version each screening must reach.
    let mut final_version: Vec<i64> = screenings.iter().map(|s| s.version).collect();
    for c in &all.changes {
        let f = &mut final_version[c.screening as usize];
        *f = (*f).max(c.version);
    }
    let behind = subs.wait_for(&final_version, Duration::from_secs(15)).await;
    let metrics_after = t.metrics().await;
    let results = subs.finish().await;

    // Replay the answers in version order.
    let mut by_screening: Vec<Vec<Change>> = vec![Vec::new(); screenings.len()];
    for c in &all.changes {
        by_screening[c.screening as usize].push(*c);
    }
    let (mut double_holds, mut bad_releases, mut version_gaps, mut version_dups) =
        (0u64, 0u64, 0u64, 0u64);
    let mut bad_bookings = 0u64;
    // seat → (user, booked)
    let mut replay: Vec<HashMap<u32, (u32, bool)>> = vec![HashMap::new(); screenings.len()];
    for (s, list) in by_screening.iter_mut().enumerate() {
        list.sort_by_key(|c| c.version);
        let mut expect = screenings[s].version + 1;
        for c in list.iter() {
            match c.version.cmp(&expect) {
                std::cmp::Ordering::Less => version_dups += 1,
                std::cmp::Ordering::Greater => version_gaps += (c.version - expect) as u64,
                std::cmp::Ordering::Equal => {}
            }
            expect = c.version + 1;
            let holders = &mut replay[s];
            match c.op {
                Op::Hold => {
                    if let Some(&h) = holders.get(&c.seat) {
                        if h != (c.user, false) {
                            double_holds += 1;
                        }
                    }
                    holders.insert(c.seat, (c.user, false));
                }
                Op::Release => {
                    if holders.remove(&c.seat) != Some((c.user, false)) {
                        bad_releases += 1;
                    }
                }
                Op::Book => {
                    if holders.insert(c.seat, (c.user, true)) != Some((c.user, false)) {
                        bad_bookings += 1;
                    }
                }
                Op::Cancel => {
                    if holders.remove(&c.seat) != Some((c.user, true)) {
                        bad_bookings += 1;
                    }
                }
            }
        }
    }
    // The database, against the replay and against every subscriber.
    let db_states = fixtures::seat_states(&db, &ids).await?;
    let duplicates = fixtures::duplicate_seats(&db, &ids).await?;
    let mut replay_mismatch = 0u64;
    for (s, scr) in screenings.iter().enumerate() {
        for (i, seat) in scr.seats.iter().enumerate() {
            let want = match replay[s].get(&(i as u32)) {
                Some((_, true)) => "booked",
                Some((_, false)) => "held",
                None => "free",
            };
            if db_states
                .get(&(scr.id.clone(), seat.clone()))
                .map(String::as_str)
                != Some(want)
            {
                replay_mismatch += 1;
            }
        }
    }
    let mut view_mismatch = 0u64;
    let mut views_wrong = 0u64;
    let mut missing_pushes = 0u64;
    let mut lat = Vec::new();
    let sent: HashMap<(u32, i64), u64> = all
        .changes
        .iter()
        .map(|c| ((c.screening, c.version), c.sent))
        .collect();
    let (w0, w1) = (ns(base, win_start), ns(base, end));
    let mut sub_gaps = 0;
    let mut sub_closed = 0;
    for r in &results {
        let scr = &screenings[r.screening as usize];
        let wrong = scr
            .seats
            .iter()
            .filter(|seat| r.view.get(*seat) != db_states.get(&(scr.id.clone(), (*seat).clone())))
            .count() as u64;
        view_mismatch += wrong;
        views_wrong += (wrong > 0 || r.version != final_version[r.screening as usize]) as u64;
        let expected = (final_version[r.screening as usize] - r.start_version).max(0) as u64;
        missing_pushes += expected.saturating_sub(r.updates);
        sub_gaps += r.gaps;
        sub_closed += r.closed.is_some() as u64;
        for &(v, at) in &r.recs {
            if let Some(&s) = sent.get(&(r.screening, v)) {
                if s >= w0 && s < w1 {
                    lat.push(at.saturating_sub(s));
                }
            }
        }
    }
    let secs = (w1 - w0) as f64 / 1e9;
    let committed_per_s = all.committed_in_window as f64 / secs;
    let attempts_per_s = all.attempts_in_window as f64 / secs;
    let latency = Latency::of(&mut lat);
    let rtt = Latency::of(&mut all.rtts);
    let ok = duplicates == 0
        && double_holds == 0
        && bad_releases == 0
        && bad_bookings == 0
        && version_gaps == 0
        && version_dups == 0
        && replay_mismatch == 0
        && view_mismatch == 0
        && views_wrong == 0
        && missing_pushes == 0
        && behind == 0;
    let per = |x: Option<f64>| x.map(|x| round3(x * 1e6 / all.committed_in_window.max(1) as f64));
    let [holds, releases, books, cancels] = all.mix_in_window;
    let sync_share = (books + cancels) as f64 / all.committed_in_window.max(1) as f64;

    // PostgreSQL's own rate for the same calls, measured now.
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
                "hold",
                &clients,
                a.screenings,
                rows as usize * 25,
                a.duration,
            )
            .await?,
        )
    };
    let pg_best = pg.as_ref().and_then(|p| p.best);
    let ratio = pg_best.map(|b| round3(committed_per_s / b));
    let summary = json!({
        "scenario": "rush",
        "run": run,
        "label": t.label,
        "pattern": format!("{:?}", a.pattern).to_lowercase(),
        "users": a.users,
        "screenings": a.screenings,
        "subs_per_screening": a.subs,
        "committed_changes_per_s": round1(committed_per_s),
        // One request in flight per socket, at most `conn_rate` a second:
        // the most this scenario can ask of any server.
        "request_ceiling_per_s": round1(a.users as f64 * t.conn_rate),
        "conn_rate": t.conn_rate,
        "mix": {"hold": holds, "release": releases, "book": books, "cancel": cancels},
        "async_share": round3(1.0 - sync_share),
        "sync_share": round3(sync_share),
        "sync_share_asked": if a.pattern == Pattern::Own { a.sync_share } else { 0.0 },
        "attempts_per_s": round1(attempts_per_s),
        "errors": all.errors,
        "request_rtt_ms": rtt,
        "latency_ms": latency,
        "server_cpu_us_per_change": per(cpu.server_s),
        "postgres_cpu_us_per_change": per(cpu.postgres_s),
        "cpu_pct_of_core": cpu_pct(&cpu),
        "cpu": cpu,
        "duration_s": secs,
        "warmup_s": a.warmup,
        "checks": {
            "ok": ok, "duplicate_seat_rows": duplicates, "double_holds": double_holds,
            "bad_releases": bad_releases, "bad_bookings": bad_bookings, "answer_version_gaps": version_gaps,
            "answer_version_duplicates": version_dups, "db_vs_replay_mismatches": replay_mismatch,
            "subscriber_seat_mismatches": view_mismatch, "subscribers_wrong": views_wrong,
            "subscribers_behind": behind, "missing_pushes": missing_pushes,
            "subscriber_version_gaps": sub_gaps, "subscribers_closed": sub_closed,
            "subscribers": results.len(),
        },
        "pgbench": pg.as_ref().map(|p| &p.runs),
        "pgbench_best_changes_per_s": pg_best,
        "ratio_to_pgbench": ratio,
        "server_metrics": metric_deltas(&metrics_before, &metrics_after),
    });
    let mut rows = vec![
        row("committed changes/s", big(committed_per_s)),
        row(
            "changes by kind",
            format!(
                "{holds} holds, {releases} releases, {books} bookings, {cancels} cancellations \
                 (synchronous {:.1} %)",
                sync_share * 100.0
            ),
        ),
        row("attempts/s", big(attempts_per_s)),
        row("errors by code", format!("{:?}", all.errors)),
        row("request round trip", rtt.line()),
        row("change → subscriber", latency.line()),
        row("server CPU", cpu_line(cpu.server_s, &cpu, per(cpu.server_s), "change")),
        row("PostgreSQL CPU", cpu_line(cpu.postgres_s, &cpu, per(cpu.postgres_s), "change")),
        row("load generator CPU", format!("{:.0}% of a core", cpu.pct(cpu.bench_s))),
        row("other load on the machine", cpu.other_line()),
        row(
            "check",
            format!(
                "{} (dup rows {duplicates}, double holds {double_holds}, bad releases {bad_releases}, \
                 bad bookings {bad_bookings}, \
                 version gaps {version_gaps}, db≠replay {replay_mismatch}, views≠db {view_mismatch} seats \
                 in {views_wrong} of {} subscribers, missing pushes {missing_pushes}, behind {behind})",
                if ok { "OK" } else { "FAILED" },
                results.len()
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
                        "{} clients: {} changes/s",
                        r["clients"],
                        big(r["changes_per_s"].as_f64().unwrap_or(0.0))
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
        &format!(
            "rush {} users, {} screening(s), {:?}",
            a.users, a.screenings, a.pattern
        ),
        &rows,
        &summary,
        t.out.as_deref(),
    )?;
    if !ok {
        bail!("consistency check failed");
    }
    Ok(())
}

fn ns(base: Instant, t: Instant) -> u64 {
    t.duration_since(base).as_nanos() as u64
}

/// What a user sends: the pattern and, for `own`, its cycle of changes.
struct Script {
    pattern: Pattern,
    hold_max: usize,
    cycle: Vec<Op>,
    /// Where in the cycle the user starts (a hold).
    pos: usize,
}

#[allow(clippy::too_many_arguments)]
async fn user_loop(
    mut conn: Conn,
    ctx: UserCtx,
    mut script: Script,
    first: Instant,
    interval: Duration,
    win_start: Instant,
    end: Instant,
    base: Instant,
) -> (Conn, UserOut) {
    let mut out = UserOut::default();
    let mut held: VecDeque<u32> = VecDeque::new();
    // own: the booking a `cancel_booking` will cancel.
    let mut booking: Option<serde_json::Value> = None;
    let mut next = first;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let (op, seat) = match script.pattern {
            Pattern::Own => (script.cycle[script.pos], ctx.pool[0]),
            Pattern::Race => {
                if held.len() >= script.hold_max {
                    (Op::Release, held[0])
                } else {
                    let mut rng = rand::thread_rng();
                    let mut s = ctx.pool[rng.gen_range(0..ctx.pool.len())];
                    while held.contains(&s) {
                        s = ctx.pool[rng.gen_range(0..ctx.pool.len())];
                    }
                    (Op::Hold, s)
                }
            }
        };
        let kind = op.request();
        let data = match op {
            Op::Cancel => json!({"booking_id": booking.clone().unwrap_or_default()}),
            _ => json!({"screening_id": ctx.screening_id, "seat_ids": [ctx.seats[seat as usize]]}),
        };
        let sent = Instant::now();
        let eid = conn.eid();
        let reply = match conn.send(kind, &eid, &data).await {
            Ok(()) => conn.answer(&eid).await,
            Err(e) => Err(e),
        };
        let in_window = sent >= win_start;
        if in_window {
            out.attempts_in_window += 1;
            out.rtts.push(sent.elapsed().as_nanos() as u64);
        }
        match reply {
            Ok(r) => match r.error {
                None => {
                    match op {
                        Op::Hold => held.push_back(seat),
                        Op::Release => held.retain(|s| *s != seat),
                        Op::Book => {
                            held.retain(|s| *s != seat);
                            booking = Some(r.data["booking"]["id"].clone());
                        }
                        Op::Cancel => booking = None,
                    }
                    script.pos = (script.pos + 1) % script.cycle.len();
                    if changed(kind, &r.data) {
                        if let Some(v) = r.data["version"].as_i64() {
                            out.changes.push(Change {
                                screening: ctx.screening,
                                version: v,
                                user: ctx.idx,
                                seat,
                                op,
                                sent: ns(base, sent),
                            });
                            if in_window {
                                out.committed_in_window += 1;
                                out.mix_in_window[op as usize] += 1;
                            }
                        }
                    }
                }
                Some(code) => {
                    *out.errors.entry(code).or_default() += 1;
                    // own: carry on from the seat's real state.
                    script.pos = if booking.is_some() {
                        script.cycle.len() - 1
                    } else if held.is_empty() {
                        0
                    } else {
                        1
                    };
                }
            },
            Err(e) => {
                *out.errors.entry(format!("transport: {e}")).or_default() += 1;
                break;
            }
        }
        next += interval;
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
    (conn, out)
}
