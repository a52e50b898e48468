//! Exact percentiles (the samples are kept and sorted: a run holds at most
//! a few million) and the two outputs of every scenario: one JSON summary
//! line on stdout (appended to `--out` too) and a human table on stderr.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

/// Percentiles of a latency sample, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From nanoseconds (sorted in place).
    pub fn of(ns: &mut [u64]) -> Latency {
        if ns.is_empty() {
            return Latency::default();
        }
        ns.sort_unstable();
        let n = ns.len();
        let at = |q: f64| {
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            ms(ns[i])
        };
        Latency {
            n,
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            p999: at(0.999),
            max: ms(ns[n - 1]),
            mean: round3(ns.iter().map(|&x| x as f64).sum::<f64>() / n as f64 / 1e6),
        }
    }

    /// "p50 / p95 / p99 / max ms".
    pub fn line(&self) -> String {
        if self.n == 0 {
            return "no samples".into();
        }
        format!(
            "{} / {} / {} / {} ms  (n={})",
            fmt_ms(self.p50),
            fmt_ms(self.p95),
            fmt_ms(self.p99),
            fmt_ms(self.max),
            self.n
        )
    }
}

fn ms(ns: u64) -> f64 {
    round3(ns as f64 / 1e6)
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn fmt_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Thousands separators for people.
pub fn big(x: f64) -> String {
    let neg = x < 0.0;
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg {
        format!("-{out}")
    } else {
        out
    }
}

/// Prints the table (stderr) and the JSON line (stdout, and `out` if set).
pub fn emit(
    title: &str,
    rows: &[(String, String)],
    summary: &Value,
    out: Option<&Path>,
) -> Result<()> {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut err = std::io::stderr().lock();
    writeln!(err, "\n== {title}")?;
    for (k, v) in rows {
        writeln!(err, "  {k:<w$}  {v}")?;
    }
    writeln!(err)?;
    let line = serde_json::to_string(summary)?;
    println!("{line}");
    if let Some(p) = out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        writeln!(f, "{line}")?;
    }
    Ok(())
}

/// A row for [`emit`].
pub fn row(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}
