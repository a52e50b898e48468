//! `floor`: what PostgreSQL itself allows one seat change made the way
//! Marquee's design makes it, with none of Marquee's code. Marquee's rush
//! and booking figures are read as a share of this floor measured in the
//! same run on the same machine: absolute rates drift between runs on a
//! shared machine, ratios measured together hold.
//!
//! One transaction is the least the design asks for a change: a PL/pgSQL
//! call that toggles one seat row free ↔ held (the client's own seat),
//! bumps the screening's version (the per-hall order) and sends one
//! ~60-byte `pg_notify` on `hall_<hall>`. One connection per client, one
//! client per user with a seat of its own, clients spread over the
//! screenings, the call prepared once; one more connection LISTENs on every
//! hall channel and counts what arrives. `hold` commits asynchronously
//! (`synchronous_commit` off inside the function, as an ephemeral hold),
//! `book` synchronously (a durable booking).
//!
//! It works in a database of its own on the target's cluster (`--database`,
//! default `bench_floor`, created when missing), in a schema of its own
//! (`bench_floor`, dropped and created afresh every run), and touches
//! nothing else. A database of its own because NOTIFY channels are per
//! database: in Marquee's database the server's listener, which LISTENs on
//! `hall_<id>` for the halls it serves, would receive the floor's
//! notifications too (costing PostgreSQL a second delivery per change, and
//! feeding the server changes of halls that are not Marquee's).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures_util::future::poll_fn;
use serde_json::json;
use tokio_postgres::{AsyncMessage, Config, NoTls};

use crate::fanout::cpu_pct;
use crate::fixtures;
use crate::procfs::{CpuUse, Probe};
use crate::stats::{big, emit, round1, row};
use crate::Target;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Asynchronous commit (a hold or release).
    Hold,
    /// Synchronous commit (a booking or cancellation).
    Book,
    /// `hold`, then `book`.
    Both,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Clients: one connection and one seat each.
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Screenings the clients spread over (one hall, one channel each).
    #[arg(long, default_value_t = 10)]
    pub screenings: usize,
    #[arg(long, value_enum, default_value_t = Mode::Both)]
    pub mode: Mode,
    /// Measured seconds per mode.
    #[arg(long, default_value_t = 15)]
    pub duration: u64,
    /// Seconds run before the measured window (connections are all open
    /// before it starts).
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// The database the floor works in (on DATABASE_URL's cluster; created
    /// when missing, which needs the CREATEDB privilege).
    #[arg(long, default_value = "bench_floor")]
    pub database: String,
    /// The scenario this floor is measured beside (stored in the JSON line;
    /// `bench report` pairs a scenario with the floor lines that follow it).
    #[arg(long, default_value = "")]
    pub beside: String,
}

/// The schema, rebuilt every run. The function is floor.sh's transaction:
/// the notification payload has the shape of a one-seat `hall_update`.
fn setup_sql(screenings: usize, seats: usize) -> String {
    format!(
        "SET client_min_messages = warning;
DROP SCHEMA IF EXISTS bench_floor CASCADE;
CREATE SCHEMA bench_floor;
CREATE TABLE bench_floor.screening (id bigint PRIMARY KEY, hall bigint NOT NULL,
                                    version bigint NOT NULL DEFAULT 0);
CREATE TABLE bench_floor.seat (screening bigint NOT NULL REFERENCES bench_floor.screening,
                               seat bigint NOT NULL, status text NOT NULL DEFAULT 'free',
                               user_id bigint, PRIMARY KEY (screening, seat));
INSERT INTO bench_floor.screening SELECT s, s FROM generate_series(1, {screenings}) s;
INSERT INTO bench_floor.seat (screening, seat)
  SELECT s, n FROM generate_series(1, {screenings}) s, generate_series(1, {seats}) n;
CREATE FUNCTION bench_floor.change(p_screening bigint, p_seat bigint, p_user bigint, p_durable bool)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_status text; v_version bigint; v_hall bigint;
BEGIN
  IF NOT p_durable THEN PERFORM set_config('synchronous_commit', 'off', true); END IF;
  UPDATE bench_floor.seat SET status = CASE status WHEN 'free' THEN 'held' ELSE 'free' END,
                              user_id = CASE status WHEN 'free' THEN p_user END
   WHERE screening = p_screening AND seat = p_seat RETURNING status INTO v_status;
  UPDATE bench_floor.screening SET version = version + 1 WHERE id = p_screening
   RETURNING version, hall INTO v_version, v_hall;
  PERFORM pg_notify('hall_' || v_hall, '{{\"s\":' || p_screening || ',\"v\":' || v_version
                    || ',\"c\":[[' || p_seat || ',\"' || v_status || '\",' || p_user || ']]}}');
  RETURN v_version;
END $$;"
    )
}

pub async fn run(t: &Target, a: &Args) -> Result<()> {
    if a.clients == 0 || a.screenings == 0 || a.duration == 0 {
        bail!("need clients, screenings and a duration");
    }
    let mut cfg: Config = t.db()?.parse().context("DATABASE_URL")?;
    let target = fixtures::connect(t.db()?).await?;
    let exists = fixtures::column(
        &target,
        &format!(
            "SELECT 1 FROM pg_database WHERE datname = {}",
            fixtures::lit(&a.database)
        ),
    )
    .await?;
    if exists.is_empty() {
        let name = a.database.replace('"', "\"\"");
        target
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("create the database {}", a.database))?;
    }
    drop(target);
    cfg.dbname(&a.database);
    let db = connect(&cfg, "the floor's database").await?;
    // floor.sh's 400 seats per screening, more when the clients need them.
    let seats = a.clients.div_ceil(a.screenings).max(400);
    db.batch_execute(&setup_sql(a.screenings, seats))
        .await
        .context("create the bench_floor schema")?;
    // VACUUM refuses the implicit transaction of a multi-statement batch.
    for table in ["seat", "screening"] {
        db.batch_execute(&format!("VACUUM ANALYZE bench_floor.{table}"))
            .await?;
    }
    let probe = Probe {
        server: None,
        postmaster: fixtures::postmaster_pid(&db).await,
    };
    if probe.postmaster.is_none() {
        eprintln!("bench floor: the database's postmaster is not on this machine: no CPU figures");
    }
    let modes: &[bool] = match a.mode {
        Mode::Hold => &[false],
        Mode::Book => &[true],
        Mode::Both => &[false, true],
    };
    for &durable in modes {
        measure(t, a, &cfg, &probe, durable).await?;
    }
    Ok(())
}

/// A connection whose messages are handled in the background.
async fn connect(cfg: &Config, what: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .with_context(|| format!("connect {what}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("bench floor: connection: {e}");
        }
    });
    Ok(client)
}

/// One mode: clients and the listener for warmup + duration seconds.
async fn measure(t: &Target, a: &Args, cfg: &Config, probe: &Probe, durable: bool) -> Result<()> {
    let mode = if durable { "book" } else { "hold" };
    eprintln!(
        "floor {mode}: {} clients, {} screenings, {} s …",
        a.clients, a.screenings, a.duration
    );
    let received = Arc::new(AtomicU64::new(0));
    let (listener, mut lconn) = cfg.connect(NoTls).await.context("connect the listener")?;
    let count = received.clone();
    // The connection is driven here, not by `conn.await`: only
    // poll_message hands out the notifications.
    let drain = tokio::spawn(async move {
        while let Some(m) = poll_fn(|cx| lconn.poll_message(cx)).await {
            match m {
                Ok(AsyncMessage::Notification(_)) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let listen: String = (1..=a.screenings)
        .map(|h| format!("LISTEN hall_{h};"))
        .collect();
    listener.batch_execute(&listen).await.context("LISTEN")?;

    let mut clients = Vec::with_capacity(a.clients);
    for c in 0..a.clients {
        let client = connect(cfg, &format!("client {c}")).await?;
        let stmt = client
            .prepare("SELECT bench_floor.change($1, $2, $3, $4)")
            .await
            .context("prepare the change")?;
        clients.push((client, stmt));
    }
    let start = Instant::now() + Duration::from_millis(100);
    let win_start = start + Duration::from_secs(a.warmup);
    let end = win_start + Duration::from_secs(a.duration);
    let s = a.screenings as i64;
    let mut tasks = Vec::with_capacity(a.clients);
    for (c, (client, stmt)) in clients.into_iter().enumerate() {
        let c = c as i64;
        // pgbench's `client_id` arithmetic in floor.sh.
        let (screening, seat, user) = (c % s + 1, c / s + 1, c + 1);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let (mut total, mut in_window) = (0u64, 0u64);
            while Instant::now() < end {
                client
                    .query_one(&stmt, &[&screening, &seat, &user, &durable])
                    .await?;
                total += 1;
                let now = Instant::now();
                if now >= win_start && now < end {
                    in_window += 1;
                }
            }
            // The connection stays open until the window's CPU is read: a
            // backend that exits takes its CPU time out of the cluster's sum.
            Ok::<_, tokio_postgres::Error>((client, total, in_window))
        }));
    }
    tokio::time::sleep_until(win_start.into()).await;
    let s0 = probe.sample();
    let (mut total, mut in_window) = (0u64, 0u64);
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (client, t, w) = task.await?.context("a floor client failed")?;
        total += t;
        in_window += w;
        done.push(client);
    }
    let s1 = probe.sample();
    drop(done);
    let cpu = CpuUse::between(&s0, &s1);
    // Notifications are delivered after commit; give the last ones a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let notifications = received.load(Ordering::Relaxed);
    drop(listener);
    match drain.await? {
        Ok(()) => {}
        Err(e) => eprintln!("bench floor: listener connection: {e}"),
    }
    // Changes are counted by completion time inside the window; the CPU
    // window closes after the last calls in flight (a few per client more).
    let tps = in_window as f64 / a.duration as f64;
    let pg_us = cpu
        .postgres_s
        .filter(|_| in_window > 0)
        .map(|x| round1(x * 1e6 / in_window as f64));
    let summary = json!({
        "scenario": "floor",
        "label": t.label,
        "database": a.database,
        "beside": a.beside,
        "mode": mode,
        "clients": a.clients,
        "screenings": a.screenings,
        "secs": a.duration,
        "tps": round1(tps),
        "pg_cpu_us_per_tx": pg_us,
        "changes": total,
        "changes_in_window": in_window,
        "notifications": notifications,
        "cpu_pct_of_core": cpu_pct(&cpu),
        "cpu": cpu,
    });
    let rows = vec![
        row("changes/s", big(tps)),
        row(
            "PostgreSQL CPU per change",
            pg_us.map_or("n/a".into(), |u| format!("{u} µs")),
        ),
        row(
            "notifications",
            format!("{notifications} received of {total} changes"),
        ),
        row(
            "load generator CPU",
            format!("{:.0}% of a core", cpu.pct(cpu.bench_s)),
        ),
        row("other load on the machine", cpu.other_line()),
    ];
    emit(
        &format!(
            "floor {mode}, {} clients, {} screenings",
            a.clients, a.screenings
        ),
        &rows,
        &summary,
        t.out.as_deref(),
    )?;
    if notifications < total {
        bail!("the listener got {notifications} of {total} notifications");
    }
    Ok(())
}
