//! `fanout`: H halls × S subscribers; drivers change seats at a set rate
//! (hold, release, hold, … of one seat each, one request in flight per
//! driver connection, each driver below the per-connection rate limit), and
//! every subscriber notes when each `hall_update` arrives. Latency is from
//! the driver's send of the request to a subscriber's receipt of the update
//! with that request's (screening, version): the answer carries `version`.
//!
//! Several rates can run in one invocation (`--rates 100,200,500`), on the
//! same subscribers, each with its own warm-up and measured window; each
//! prints its own summary, and `--chart` draws latency against load.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::client::{connect_many, register_users, run_id, Conn};
use crate::fixtures::{self, Plan};
use crate::procfs::CpuUse;
use crate::stalls::StallProbe;
use crate::stats::{big, emit, round1, round3, row, Latency};
use crate::subs::Subscribers;
use crate::Target;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Halls, one screening each.
    #[arg(long, default_value_t = 10)]
    pub halls: usize,
    /// Subscribers per hall (one socket each).
    #[arg(long, default_value_t = 100)]
    pub subs: usize,
    /// Seat changes per second over all halls; a list runs one step each.
    #[arg(long, value_delimiter = ',', default_value = "200")]
    pub rates: Vec<f64>,
    /// Measured seconds per step.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Unmeasured seconds before each step's window.
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Rows per hall (25 seats a row).
    #[arg(long, default_value_t = 20)]
    pub rows: u32,
    /// Requests per second of one driver connection: below `--conn-rate`
    /// so a driver keeps its rate while round trips take up to 1/rate.
    #[arg(long, default_value_t = 20.0)]
    pub driver_rate: f64,
    /// Sockets opened at once while connecting subscribers.
    #[arg(long, default_value_t = 128)]
    pub connect_parallel: usize,
    /// Write an SVG chart of latency percentiles against load here.
    #[arg(long)]
    pub chart: Option<std::path::PathBuf>,
}

/// One driver's state across steps.
struct Driver {
    conn: Conn,
    screening: u32,
    screening_id: String,
    seat: String,
    holding: bool,
}

/// What a driver did in one step.
#[derive(Default)]
struct DriverStep {
    /// (screening, version, send ns) of every committed change.
    changes: Vec<(u32, i64, u64)>,
    /// Answer round trips (ns) of requests sent in the window.
    rtts: Vec<u64>,
    errors: HashMap<String, u64>,
    sent_in_window: u64,
}

pub async fn run(t: &Target, a: &Args) -> Result<()> {
    if a.rates.is_empty() || a.halls == 0 {
        bail!("need at least one rate and one hall");
    }
    let run = run_id();
    let db = fixtures::connect(t.db()?).await?;
    let probe = t.probe(&db).await;
    let base = Instant::now();
    let per_conn = a.driver_rate.min(t.conn_rate);
    let max_drivers = a
        .rates
        .iter()
        .map(|r| drivers_for(*r, a.halls, per_conn))
        .max()
        .unwrap_or(a.halls);
    // Drivers' seats two apart (fixtures::seat_apart): no orphan refusals.
    if fixtures::rows_apart(max_drivers.div_ceil(a.halls)) > a.rows {
        bail!(
            "{max_drivers} drivers need more rows per hall than {}: raise --rows",
            a.rows
        );
    }
    eprintln!(
        "fanout {run}: {} halls × {} subscribers, {} drivers, rates {:?}",
        a.halls, a.subs, max_drivers, a.rates
    );
    let screenings = fixtures::create(
        &db,
        &t.ws_url,
        &run,
        Plan {
            halls: a.halls,
            screenings_per_hall: 1,
            rows: a.rows,
            seats_per_row: 25,
        },
    )
    .await?;
    let users = register_users(&t.ws_url, &format!("b{run}"), max_drivers, 8).await?;
    let tokens: Vec<Option<String>> = users.iter().map(|u| Some(u.token.clone())).collect();
    let t0 = Instant::now();
    let ids: Vec<String> = screenings.iter().map(|s| s.id.clone()).collect();
    let subs = Subscribers::open(&t.ws_url, &ids, a.subs, a.connect_parallel, false, base).await?;
    eprintln!(
        "  {} subscribers connected in {:.1} s",
        subs.tasks.len(),
        t0.elapsed().as_secs_f64()
    );
    struct Step {
        rate: f64,
        drivers: usize,
        window: (u64, u64),
        cpu: CpuUse,
        out: DriverStep,
        metrics: Value,
    }
    let mut steps = Vec::new();
    let probe_stalls = StallProbe::start(base);
    for &rate in &a.rates {
        let n = drivers_for(rate, a.halls, per_conn);
        // Driver sockets are opened per step: an idle socket nobody reads
        // does not answer the server's pings and is dropped after 60 s.
        let conns = connect_many(&t.ws_url, tokens[..n].to_vec(), 32).await?;
        let drivers: Vec<Driver> = conns
            .into_iter()
            .enumerate()
            .map(|(d, conn)| {
                let h = d % a.halls;
                Driver {
                    conn,
                    screening: h as u32,
                    screening_id: screenings[h].id.clone(),
                    seat: screenings[h].seats[fixtures::seat_apart(d / a.halls)].clone(),
                    holding: false,
                }
            })
            .collect();
        let interval = Duration::from_secs_f64(n as f64 / rate);
        let start = Instant::now() + Duration::from_millis(200);
        let win_start = start + Duration::from_secs(a.warmup);
        let end = win_start + Duration::from_secs(a.duration);
        let mut tasks = Vec::new();
        for (d, drv) in drivers.into_iter().enumerate() {
            // Spread the drivers' phases evenly over one interval.
            let first = start + interval.mul_f64(d as f64 / n as f64);
            tasks.push(tokio::spawn(drive(
                drv, first, interval, win_start, end, base,
            )));
        }
        tokio::time::sleep_until(win_start.into()).await;
        let s0 = probe.sample();
        let m0 = t.metrics().await;
        tokio::time::sleep_until(end.into()).await;
        let s1 = probe.sample();
        let m1 = t.metrics().await;
        let mut out = DriverStep::default();
        for task in tasks {
            let (drv, o) = task.await?;
            drv.conn.close().await;
            out.changes.extend(o.changes);
            out.rtts.extend(o.rtts);
            out.sent_in_window += o.sent_in_window;
            for (k, v) in o.errors {
                *out.errors.entry(k).or_default() += v;
            }
        }
        steps.push(Step {
            rate,
            drivers: n,
            window: (ns(base, win_start), ns(base, end)),
            cpu: CpuUse::between(&s0, &s1),
            out,
            metrics: metric_deltas(&m0, &m1),
        });
        // Let the step's last pushes land before the next one starts.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let results = subs.finish().await;
    let stalls = probe_stalls.finish();

    // Match every receipt to the change that caused it.
    let mut sent: HashMap<(u32, i64), (u64, usize)> = HashMap::new();
    for (i, s) in steps.iter().enumerate() {
        for &(scr, v, at) in &s.out.changes {
            sent.insert((scr, v), (at, i));
        }
    }
    let mut lat: Vec<Vec<u64>> = vec![Vec::new(); steps.len()];
    // Pushes whose way saw no late wake-up of the machine of 5 ms or more, and the slow ones that did.
    let mut clear: Vec<Vec<u64>> = vec![Vec::new(); steps.len()];
    let mut slow = vec![(0u64, 0u64); steps.len()];
    let mut delivered = vec![0u64; steps.len()];
    let mut unmatched = 0u64;
    let (mut gaps, mut snapshots, mut closed) = (0, 0, 0);
    for r in &results {
        gaps += r.gaps;
        snapshots += r.snapshots;
        closed += r.closed.is_some() as u64;
        for &(v, at) in &r.recs {
            match sent.get(&(r.screening, v)) {
                Some(&(sent_at, i)) => {
                    let (w0, w1) = steps[i].window;
                    if sent_at >= w0 && sent_at < w1 {
                        let took = at.saturating_sub(sent_at);
                        lat[i].push(took);
                        let stalled = stalls.overlaps(sent_at, at, STALL);
                        if !stalled {
                            clear[i].push(took);
                        }
                        if took > SLOW {
                            slow[i].0 += 1;
                            slow[i].1 += u64::from(stalled);
                        }
                    }
                    if at >= w0 && at < w1 {
                        delivered[i] += 1;
                    }
                }
                None => unmatched += 1,
            }
        }
    }
    let closed_reasons: Vec<String> = results
        .iter()
        .filter_map(|r| r.closed.clone())
        .take(3)
        .collect();
    let mut summaries = Vec::new();
    for (i, s) in steps.iter_mut().enumerate() {
        let (w0, w1) = s.window;
        let secs = (w1 - w0) as f64 / 1e9;
        let changes_in_window = s
            .out
            .changes
            .iter()
            .filter(|c| c.2 >= w0 && c.2 < w1)
            .count() as u64;
        let expected = changes_in_window * a.subs as u64;
        let latency = Latency::of(&mut lat[i]);
        let missing = expected.saturating_sub(latency.n as u64);
        let rtt = Latency::of(&mut s.out.rtts);
        let outside = Latency::of(&mut clear[i]);
        let machine = stalls.summary(w0, w1);
        let pushes_per_s = delivered[i] as f64 / secs;
        let changes_per_s = changes_in_window as f64 / secs;
        let per = |x: Option<f64>, n: f64| x.filter(|_| n > 0.0).map(|x| round3(x * 1e6 / n));
        let server_us_per_push = per(s.cpu.server_s, delivered[i] as f64);
        let server_us_per_change = per(s.cpu.server_s, changes_in_window as f64);
        let pg_us_per_change = per(s.cpu.postgres_s, changes_in_window as f64);
        let bench_us_per_push = per(Some(s.cpu.bench_s), delivered[i] as f64);
        let summary = json!({
            "scenario": "fanout",
            "run": run,
            "label": t.label,
            "halls": a.halls,
            "subs_per_hall": a.subs,
            "subscribers": a.halls * a.subs,
            "drivers": s.drivers,
            "target_changes_per_s": s.rate,
            "changes_per_s": round1(changes_per_s),
            "pushes_per_s": round1(pushes_per_s),
            "latency_ms": latency,
            "request_rtt_ms": rtt,
            "latency_ms_outside_stalls": outside,
            "pushes_over_10ms": slow[i].0,
            "pushes_over_10ms_during_a_stall": slow[i].1,
            "machine_stalls": machine,
            "missing_pushes": missing,
            "errors": s.out.errors,
            "server_cpu_us_per_push": server_us_per_push,
            "server_cpu_us_per_change": server_us_per_change,
            "postgres_cpu_us_per_change": pg_us_per_change,
            "bench_cpu_us_per_push": bench_us_per_push,
            "cpu_pct_of_core": cpu_pct(&s.cpu),
            "cpu": s.cpu,
            "duration_s": secs,
            "warmup_s": a.warmup,
            "run_totals": {"version_gaps": gaps, "snapshots": snapshots, "unmatched_pushes": unmatched,
                           "subscribers_closed": closed, "closed_reasons": closed_reasons},
            "server_metrics": s.metrics,
        });
        let rows = vec![
            row(
                "target / achieved changes/s",
                format!("{} / {:.1}  ({} drivers)", s.rate, changes_per_s, s.drivers),
            ),
            row("pushes delivered/s", big(pushes_per_s)),
            row("change → subscriber p50/p95/p99/max", latency.line()),
            row("request round trip", rtt.line()),
            row(
                "pushes over 10 ms (of them during a stall)",
                format!("{} ({})", slow[i].0, slow[i].1),
            ),
            row("… pushes that saw no stall", outside.line()),
            row(
                "machine stalls ≥ 5 / ≥ 10 ms, longest, summed",
                format!(
                    "{} / {}, {} ms, {} ms",
                    machine["over_5ms"],
                    machine["over_10ms"],
                    machine["max_ms"],
                    machine["stalled_ms"]
                ),
            ),
            row("missing pushes", missing.to_string()),
            row("errors", format!("{:?}", s.out.errors)),
            row(
                "server CPU",
                cpu_line(s.cpu.server_s, &s.cpu, server_us_per_push, "push"),
            ),
            row("server CPU per change", opt_us(server_us_per_change)),
            row("server CPU in the kernel", sys_share(&s.cpu)),
            row(
                "PostgreSQL CPU",
                cpu_line(s.cpu.postgres_s, &s.cpu, pg_us_per_change, "change"),
            ),
            row(
                "load generator CPU",
                cpu_line(Some(s.cpu.bench_s), &s.cpu, bench_us_per_push, "push"),
            ),
            row("other load on the machine", s.cpu.other_line()),
        ];
        emit(
            &format!(
                "fanout {} halls × {} subscribers @ {} changes/s",
                a.halls, a.subs, s.rate
            ),
            &rows,
            &summary,
            t.out.as_deref(),
        )?;
        summaries.push(summary);
    }
    if gaps + snapshots + unmatched + closed > 0 {
        eprintln!(
            "  note: version gaps {gaps}, snapshots {snapshots}, unmatched pushes {unmatched}, subscribers closed {closed} {:?}",
            results.iter().filter_map(|r| r.closed.as_ref()).take(3).collect::<Vec<_>>()
        );
    }
    if let Some(path) = &a.chart {
        crate::report::chart(&summaries, path)?;
        eprintln!("chart written to {}", path.display());
    }
    Ok(())
}

/// A late wake-up of the machine this long or more counts as a stall.
const STALL: u64 = 5_000_000;
/// A push slower than this misses the latency target.
const SLOW: u64 = 10_000_000;

/// Drivers for a rate: at least one per hall, each under the per-connection rate.
fn drivers_for(rate: f64, halls: usize, per_conn: f64) -> usize {
    ((rate / per_conn).ceil() as usize).max(halls)
}

fn ns(base: Instant, t: Instant) -> u64 {
    t.duration_since(base).as_nanos() as u64
}

async fn drive(
    mut d: Driver,
    first: Instant,
    interval: Duration,
    win_start: Instant,
    end: Instant,
    base: Instant,
) -> (Driver, DriverStep) {
    let mut out = DriverStep::default();
    let mut next = first;
    // After `end`, one more request if the seat is still held: the next
    // step's drivers start from free seats (that change is matched but
    // outside every window).
    let mut tail = false;
    while next < end || (d.holding && !tail) {
        tail = next >= end;
        tokio::time::sleep_until(next.into()).await;
        let kind = if d.holding {
            "release_seats"
        } else {
            "hold_seats"
        };
        let data = json!({"screening_id": d.screening_id, "seat_ids": [d.seat]});
        let sent = Instant::now();
        let eid = d.conn.eid();
        let reply = match d.conn.send(kind, &eid, &data).await {
            Ok(()) => d.conn.answer(&eid).await,
            Err(e) => Err(e),
        };
        let done = Instant::now();
        let in_window = sent >= win_start && sent < end;
        if in_window {
            out.sent_in_window += 1;
            out.rtts.push(done.duration_since(sent).as_nanos() as u64);
        }
        match reply {
            Ok(r) => match r.error {
                None => {
                    if changed(kind, &r.data) {
                        if let Some(v) = r.data["version"].as_i64() {
                            out.changes.push((d.screening, v, ns(base, sent)));
                        }
                    }
                    d.holding = !d.holding;
                }
                Some(code) => {
                    *out.errors.entry(code.clone()).or_default() += 1;
                    if code == "SEAT_UNAVAILABLE" && !d.holding {
                        // Possibly ours from an interrupted step: release next.
                        d.holding = true;
                    }
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
    (d, out)
}

/// A release that released nothing changed nothing (its version is the
/// current one, somebody else's change).
pub fn changed(kind: &str, data: &Value) -> bool {
    kind != "release_seats" || data["seat_ids"].as_array().is_some_and(|a| !a.is_empty())
}

pub fn cpu_pct(c: &CpuUse) -> Value {
    json!({
        "server": c.server_s.map(|s| round1(c.pct(s))),
        "postgres": c.postgres_s.map(|s| round1(c.pct(s))),
        "bench": round1(c.pct(c.bench_s)),
        "other": round1(c.pct(c.other_s)),
        "steal": round1(c.pct(c.steal_s)),
        "machine": round1(c.pct(c.machine_busy_s)),
    })
}

pub fn cpu_line(s: Option<f64>, c: &CpuUse, per: Option<f64>, unit: &str) -> String {
    match s {
        None => "unknown (no pid)".into(),
        Some(s) => format!("{:.0}% of a core, {} per {unit}", c.pct(s), opt_us(per)),
    }
}

/// The kernel's share of the server's CPU time.
pub fn sys_share(c: &CpuUse) -> String {
    match (c.server_s, c.server_sys_s) {
        (Some(t), Some(s)) if t > 0.0 => format!("{:.0}% of the server's CPU time", 100.0 * s / t),
        _ => "n/a".into(),
    }
}

pub fn opt_us(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |x| format!("{x:.2} µs"))
}

/// Differences of the server's own counters, when it exposes them.
pub fn metric_deltas(before: &Option<String>, after: &Option<String>) -> Value {
    let (Some(b), Some(a)) = (before, after) else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for name in [
        "marquee_notifications_received_total",
        "marquee_pushes_forwarded_total",
        "marquee_slow_consumers_closed_total",
        "marquee_resyncs_total",
        "marquee_listener_reconnects_total",
        // Seat changes and the transactions they ran in (a server that batches them).
        "marquee_seat_changes_total",
        "marquee_seat_transactions_total",
    ] {
        if let (Some(x), Some(y)) = (
            crate::client::metric(b, name),
            crate::client::metric(a, name),
        ) {
            out.insert(name.into(), json!(y - x));
        }
    }
    Value::Object(out)
}
