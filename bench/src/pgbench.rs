//! Runs `bench/pgbench.sh` (PostgreSQL's own limit for the same SQL calls)
//! against the run's database, at one or more client counts, and keeps the
//! best rate as "the pgbench limit" a Marquee figure is divided by.

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::Target;

pub struct PgResult {
    /// The script's JSON line of each client count.
    pub runs: Vec<Value>,
    /// The best `rate` (changes/s, bookings/s or lookups/s).
    pub best: Option<f64>,
}

pub async fn best(
    t: &Target,
    workload: &str,
    clients: &[usize],
    screenings: usize,
    seats_per_hall: usize,
    duration: u64,
) -> Result<PgResult> {
    let mut runs = Vec::new();
    for &c in clients {
        eprintln!("  pgbench {workload}: {c} clients, {screenings} screening(s), {duration} s …");
        let out = tokio::process::Command::new("bash")
            .arg(&t.pgbench_script)
            .args(["--db", t.db()?])
            .args(["--workload", workload])
            .args(["--clients", &c.to_string()])
            .args(["--screenings", &screenings.to_string()])
            .args(["--duration", &duration.to_string()])
            .args(["--seats-per-hall", &seats_per_hall.to_string()])
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("run {}", t.pgbench_script.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().rev().find(|l| l.starts_with('{')) else {
            bail!(
                "pgbench.sh printed no result (exit {:?})",
                out.status.code()
            );
        };
        let v: Value = serde_json::from_str(line).context("pgbench.sh result")?;
        if !out.status.success() {
            bail!("pgbench.sh failed: {line}");
        }
        runs.push(v);
    }
    let best = runs
        .iter()
        .filter_map(|r| r["rate"].as_f64())
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    Ok(PgResult { runs, best })
}
