//! `idle`: N logged-in sockets that do nothing. Measures logged-in connects
//! per second (TCP connect, upgrade with `Authorization: Bearer`, the
//! server checking the token and its revocation, up to the `session` frame
//! naming the user), the server's CPU per connect, and its resident memory
//! per idle socket (`VmRSS` before and after, settled).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use serde_json::json;

use crate::client::{connect_many, register_users, run_id};
use crate::fanout::cpu_pct;
use crate::procfs::{raise_nofile, rss_kib, CpuUse};
use crate::stats::{big, emit, round1, round3, row};
use crate::Target;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Idle sockets to open.
    #[arg(long, default_value_t = 10_000)]
    pub sockets: usize,
    /// Users whose tokens the sockets share (round robin).
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 64)]
    pub parallel: usize,
    /// Seconds to keep the sockets open after the last connect (RSS is read
    /// at the end of this).
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// Connect anonymously instead (no token).
    #[arg(long)]
    pub anonymous: bool,
}

pub async fn run(t: &Target, a: &Args) -> Result<()> {
    let limit = raise_nofile();
    if (limit as usize) < a.sockets + 100 {
        bail!(
            "open-file limit {limit} is below {} sockets: raise `ulimit -n`",
            a.sockets
        );
    }
    let run = run_id();
    let db = crate::fixtures::connect(t.db()?).await?;
    let probe = t.probe(&db).await;
    let pid = probe.server.ok_or_else(|| {
        anyhow!("idle needs the server's pid (--server-pid, or run on the same machine)")
    })?;
    let tokens: Vec<Option<String>> = if a.anonymous {
        vec![None; a.sockets]
    } else {
        let users = register_users(&t.ws_url, &format!("b{run}"), a.users, 8).await?;
        (0..a.sockets)
            .map(|i| Some(users[i % users.len()].token.clone()))
            .collect()
    };
    eprintln!(
        "idle {run}: {} sockets, {} at a time",
        a.sockets, a.parallel
    );
    // A few connects first, so one-off allocations are not counted per socket.
    drop(
        connect_many(
            &t.ws_url,
            tokens.iter().take(a.parallel).cloned().collect(),
            a.parallel,
        )
        .await?,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kib(pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/status"))?;
    let s0 = probe.sample();
    let t0 = Instant::now();
    let conns = connect_many(&t.ws_url, tokens, a.parallel).await?;
    let elapsed = t0.elapsed().as_secs_f64();
    let s1 = probe.sample();
    let cpu = CpuUse::between(&s0, &s1);
    // Keep reading (answers the server's pings) while idle.
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut c| tokio::spawn(async move { while let Some(Ok(_)) = c.ws.next().await {} }))
        .collect();
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let rss_after = rss_kib(pid).ok_or_else(|| anyhow!("cannot read /proc/{pid}/status"))?;
    let server_conns = t
        .metrics()
        .await
        .and_then(|m| crate::client::metric(&m, "marquee_connections"));
    for r in &readers {
        r.abort();
    }
    drop(readers);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_closed = rss_kib(pid).unwrap_or(0);

    let per_socket = (rss_after as f64 - rss_before as f64) / a.sockets as f64;
    if per_socket < 1.0 {
        eprintln!(
            "bench: warning: the server's RSS barely grew; its allocator probably reused memory freed by \
             earlier sockets. Measure `idle` first against a freshly started server."
        );
    }
    let connects_per_s = a.sockets as f64 / elapsed;
    let us_per_connect = cpu.server_s.map(|s| round3(s * 1e6 / a.sockets as f64));
    let pg_us_per_connect = cpu.postgres_s.map(|s| round3(s * 1e6 / a.sockets as f64));
    let summary = json!({
        "scenario": "idle",
        "run": run,
        "label": t.label,
        "sockets": a.sockets,
        "logged_in": !a.anonymous,
        "parallel": a.parallel,
        "connects_per_s": round1(connects_per_s),
        "server_rss_kib": {"before": rss_before, "after": rss_after, "after_close": rss_closed},
        "rss_kib_per_socket": round3(per_socket),
        "server_cpu_us_per_connect": us_per_connect,
        "postgres_cpu_us_per_connect": pg_us_per_connect,
        "cpu_pct_of_core": cpu_pct(&cpu),
        "cpu": cpu,
        "server_reported_connections": server_conns,
    });
    let rows = vec![
        row(
            if a.anonymous {
                "anonymous connects/s"
            } else {
                "logged-in connects/s"
            },
            format!(
                "{}  ({} sockets in {:.2} s, {} in flight)",
                big(connects_per_s),
                a.sockets,
                elapsed,
                a.parallel
            ),
        ),
        row(
            "server RSS",
            format!(
                "{} KiB → {} KiB with the sockets open → {} KiB after closing",
                big(rss_before as f64),
                big(rss_after as f64),
                big(rss_closed as f64)
            ),
        ),
        row("RSS per idle socket", format!("{:.2} KiB", per_socket)),
        row(
            "server CPU per connect",
            crate::fanout::opt_us(us_per_connect),
        ),
        row(
            "PostgreSQL CPU per connect",
            crate::fanout::opt_us(pg_us_per_connect),
        ),
        row(
            "load generator CPU",
            format!("{:.0}% of a core", cpu.pct(cpu.bench_s)),
        ),
        row("other load on the machine", cpu.other_line()),
        row("server says connections", format!("{server_conns:?}")),
    ];
    emit(
        &format!("idle {} sockets", a.sockets),
        &rows,
        &summary,
        t.out.as_deref(),
    )
}
