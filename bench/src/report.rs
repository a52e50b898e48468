//! `report`: turns the JSON lines of a set of runs (`--out results.jsonl`)
//! into the Markdown tables of docs/benchmarks.md and the SVG chart of
//! change → subscriber latency percentiles against load.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde_json::Value;

use crate::stats::big;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// JSON lines written by the scenarios' `--out`.
    pub input: PathBuf,
    /// Write the Markdown tables here (default: stdout).
    #[arg(long)]
    pub md: Option<PathBuf>,
    /// Write the latency chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

pub fn run(a: &Args) -> Result<()> {
    let text =
        std::fs::read_to_string(&a.input).with_context(|| format!("read {}", a.input.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let md = markdown(&lines);
    match &a.md {
        Some(p) => std::fs::write(p, md)?,
        None => print!("{md}"),
    }
    if let Some(p) = &a.svg {
        let fan: Vec<Value> = lines
            .iter()
            .filter(|l| l["scenario"] == "fanout")
            .cloned()
            .collect();
        chart(&fan, p)?;
    }
    Ok(())
}

fn f(v: &Value, digits: usize) -> String {
    match v.as_f64() {
        Some(x) if x.abs() >= 1000.0 => big(x),
        Some(x) => format!("{x:.digits$}"),
        None => "n/a".into(),
    }
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("n/a".into(), |x| format!("{:.0} %", x * 100.0))
}

fn cpu(l: &Value) -> String {
    let c = &l["cpu_pct_of_core"];
    format!(
        "{} / {} / {} / {}",
        f(&c["server"], 0),
        f(&c["postgres"], 0),
        f(&c["bench"], 0),
        f(&c["other"], 0)
    )
}

/// One table per scenario, one row per run.
pub fn markdown(lines: &[Value]) -> String {
    let mut out = String::new();
    let of = |s: &'static str| lines.iter().filter(move |l| l["scenario"] == s);
    if of("fanout").next().is_some() {
        out.push_str("### fanout\n\n| label | halls × subs | target changes/s | achieved | pushes/s | p50 ms | p95 ms | p99 ms | max ms | missing | server µs/push | server kernel share | server µs/change | bench µs/push | CPU % server / pg / bench / other |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for l in of("fanout") {
            let _ = writeln!(
                out,
                "| {} | {} × {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                l["label"].as_str().unwrap_or(""),
                l["halls"],
                l["subs_per_hall"],
                f(&l["target_changes_per_s"], 0),
                f(&l["changes_per_s"], 1),
                f(&l["pushes_per_s"], 0),
                f(&l["latency_ms"]["p50"], 2),
                f(&l["latency_ms"]["p95"], 2),
                f(&l["latency_ms"]["p99"], 2),
                f(&l["latency_ms"]["max"], 1),
                l["missing_pushes"],
                f(&l["server_cpu_us_per_push"], 2),
                kernel_share(&l["cpu"]),
                f(&l["server_cpu_us_per_change"], 1),
                f(&l["bench_cpu_us_per_push"], 2),
                cpu(l),
            );
        }
        out.push('\n');
    }
    if of("rush").next().is_some() {
        out.push_str("### rush\n\n| label | pattern | users | screenings | committed changes/s | attempts/s | errors | pgbench best changes/s (clients) | ratio | rtt p50 / p99 ms | change → sub p99 ms | server µs/change | CPU % server / pg / bench / other | check |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for l in of("rush") {
            let best_clients = best_clients(&l["pgbench"]);
            let _ =
                writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} / {} | {} | {} | {} | {} |",
                l["label"].as_str().unwrap_or(""),
                l["pattern"].as_str().unwrap_or(""),
                l["users"],
                l["screenings"],
                f(&l["committed_changes_per_s"], 0),
                f(&l["attempts_per_s"], 0),
                errors(&l["errors"]),
                f(&l["pgbench_best_changes_per_s"], 0),
                best_clients,
                pct(&l["ratio_to_pgbench"]),
                f(&l["request_rtt_ms"]["p50"], 2),
                f(&l["request_rtt_ms"]["p99"], 2),
                f(&l["latency_ms"]["p99"], 2),
                f(&l["server_cpu_us_per_change"], 1),
                cpu(l),
                if l["checks"]["ok"] == true { "OK" } else { "FAILED" },
            );
        }
        out.push('\n');
    }
    if of("book").next().is_some() {
        out.push_str("### book\n\n| label | users | durable bookings/s | pgbench best bookings/s (clients) | ratio | hold rtt p50 / p99 ms | book rtt p50 / p99 ms | errors | server µs/booking | CPU % server / pg / bench / other | check |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
        for l in of("book") {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} ({}) | {} | {} / {} | {} / {} | {} | {} | {} | {} |",
                l["label"].as_str().unwrap_or(""),
                l["users"],
                f(&l["bookings_per_s"], 0),
                f(&l["pgbench_best_bookings_per_s"], 0),
                best_clients(&l["pgbench"]),
                pct(&l["ratio_to_pgbench"]),
                f(&l["hold_rtt_ms"]["p50"], 2),
                f(&l["hold_rtt_ms"]["p99"], 2),
                f(&l["book_rtt_ms"]["p50"], 2),
                f(&l["book_rtt_ms"]["p99"], 2),
                errors(&l["errors"]),
                f(&l["server_cpu_us_per_booking"], 1),
                cpu(l),
                if l["checks"]["ok"] == true {
                    "OK"
                } else {
                    "FAILED"
                },
            );
        }
        out.push('\n');
    }
    if of("idle").next().is_some() {
        out.push_str("### idle\n\n| label | sockets | logged in | connects/s | in flight | RSS before → after (KiB) | KiB per socket | server µs/connect | pg µs/connect | CPU % server / pg / bench / other |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for l in of("idle") {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} → {} | {} | {} | {} | {} |",
                l["label"].as_str().unwrap_or(""),
                l["sockets"],
                if l["logged_in"] == true { "yes" } else { "no" },
                f(&l["connects_per_s"], 0),
                l["parallel"],
                f(&l["server_rss_kib"]["before"], 0),
                f(&l["server_rss_kib"]["after"], 0),
                f(&l["rss_kib_per_socket"], 2),
                f(&l["server_cpu_us_per_connect"], 1),
                f(&l["postgres_cpu_us_per_connect"], 1),
                cpu(l),
            );
        }
        out.push('\n');
    }
    out
}

fn kernel_share(cpu: &Value) -> String {
    match (cpu["server_s"].as_f64(), cpu["server_sys_s"].as_f64()) {
        (Some(t), Some(s)) if t > 0.0 => format!("{:.0} %", 100.0 * s / t),
        _ => "n/a".into(),
    }
}

fn errors(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k} {}", f(v, 0)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    }
}

fn best_clients(runs: &Value) -> String {
    runs.as_array()
        .and_then(|rs| {
            rs.iter().max_by(|a, b| {
                a["rate"]
                    .as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&b["rate"].as_f64().unwrap_or(0.0))
            })
        })
        .map_or("n/a".into(), |r| r["clients"].to_string())
}

/// Latency percentiles against pushes delivered per second (both log
/// scale), one colour per (halls, subscribers) configuration.
pub fn chart(fanout: &[Value], path: &Path) -> Result<()> {
    let mut groups: BTreeMap<(u64, u64), Vec<&Value>> = BTreeMap::new();
    for l in fanout {
        let k = (
            l["halls"].as_u64().unwrap_or(0),
            l["subs_per_hall"].as_u64().unwrap_or(0),
        );
        groups.entry(k).or_default().push(l);
    }
    let pts = |l: &Value, q: &str| -> Option<(f64, f64)> {
        let x = l["pushes_per_s"].as_f64()?;
        let y = l["latency_ms"][q].as_f64()?;
        (x > 0.0 && y > 0.0).then_some((x, y))
    };
    let all: Vec<(f64, f64)> = fanout
        .iter()
        .flat_map(|l| {
            ["p50", "p99", "max"]
                .into_iter()
                .filter_map(move |q| pts(l, q))
        })
        .collect();
    let xmin = all
        .iter()
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min)
        .min(1000.0)
        * 0.8;
    let xmax = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.25;
    let ymin = all
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .min(1.0)
        * 0.8;
    let ymax = all.iter().map(|p| p.1).fold(1.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption(
            "Marquee fan-out: seat change → subscriber latency against load",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..ymax).log_scale())?;
    c.configure_mesh()
        .x_desc("pushes delivered per second (log)")
        .y_desc("latency, ms (log)")
        .x_label_formatter(&|x| big(*x))
        .draw()?;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (gi, ((halls, subs), ls)) in groups.iter().enumerate() {
        let color = palette[gi % palette.len()];
        for (q, width, alpha) in [
            ("p50", 1u32, 1.0),
            ("p95", 2, 0.8),
            ("p99", 3, 1.0),
            ("max", 1, 0.35),
        ] {
            let mut series: Vec<(f64, f64)> = ls.iter().filter_map(|l| pts(l, q)).collect();
            series.sort_by(|a, b| a.0.total_cmp(&b.0));
            if series.is_empty() {
                continue;
            }
            let st = ShapeStyle {
                color: color.mix(alpha),
                filled: false,
                stroke_width: width,
            };
            c.draw_series(LineSeries::new(series, st))?
                .label(format!("{halls} halls × {subs} subs: {q}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], st));
        }
    }
    c.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
