//! The machine's own stalls, measured beside a latency scenario: one thread
//! per CPU, pinned to it, sleeps 1 ms at a time and notes every wake-up that
//! came late (a stand-in for `cyclictest`). On a virtual machine whose host
//! gives our CPUs to other tenants (steal time), whatever runs on a CPU
//! stops for that long, ours included; a latency tail that lines up with
//! these stalls is the machine's, not the server's (docs/benchmarks.md,
//! session 7).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::fanout::cpu_pct;
use crate::procfs::{CpuUse, Probe};
use crate::stats::{emit, row};
use crate::Target;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Seconds to watch.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
}

/// `bench stalls`: the probe alone, with nothing else of ours running: what
/// the machine does to a thread that only sleeps.
pub async fn run(t: &Target, a: &Args) -> Result<()> {
    let base = Instant::now();
    let machine = Probe {
        server: None,
        postmaster: None,
    };
    let s0 = machine.sample();
    let probe = StallProbe::start(base);
    tokio::time::sleep(Duration::from_secs(a.duration)).await;
    let stalls = probe.finish();
    let cpu = CpuUse::between(&s0, &machine.sample());
    let summary_ = stalls.summary(0, base.elapsed().as_nanos() as u64);
    let summary = json!({
        "scenario": "stalls",
        "label": t.label,
        "duration_s": a.duration,
        "cpus": stalls.cpus,
        "machine_stalls": summary_,
        "cpu_pct_of_core": cpu_pct(&cpu),
    });
    let rows = vec![
        row(
            "late wake-ups ≥ 5 / ≥ 10 ms (all CPUs)",
            format!("{} / {}", summary_["over_5ms"], summary_["over_10ms"]),
        ),
        row("longest", format!("{} ms", summary_["max_ms"])),
        row(
            "summed (≥ 2 ms each)",
            format!("{} ms", summary_["stalled_ms"]),
        ),
        row("other load on the machine", cpu.other_line()),
    ];
    emit(
        &format!("stalls over {} s, {} CPUs", a.duration, stalls.cpus),
        &rows,
        &summary,
        t.out.as_deref(),
    )
}

/// A wake-up later than this is noted.
const NOTED: Duration = Duration::from_millis(2);
const TICK: Duration = Duration::from_millis(1);

/// One late wake-up: from when it was due until it came (ns since `base`).
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    pub from: u64,
    pub to: u64,
}

impl Stall {
    fn len(&self) -> u64 {
        self.to - self.from
    }
}

pub struct StallProbe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Stall>>>,
    cpus: usize,
}

impl StallProbe {
    /// Starts one probe thread per CPU; times are ns since `base`.
    pub fn start(base: Instant) -> Self {
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = (0..cpus)
            .map(|cpu| {
                let stop = stop.clone();
                thread::spawn(move || probe(cpu, base, &stop))
            })
            .collect();
        Self {
            stop,
            threads,
            cpus,
        }
    }

    pub fn finish(self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        let cpus = self.cpus;
        let mut list: Vec<Stall> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect();
        list.sort_by_key(|s| s.from);
        Stalls { list, cpus }
    }
}

fn probe(cpu: usize, base: Instant, stop: &AtomicBool) -> Vec<Stall> {
    pin(cpu);
    let mut out = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        thread::sleep(TICK);
        let late = t.elapsed().saturating_sub(TICK);
        if late >= NOTED {
            let due = (t + TICK).duration_since(base).as_nanos() as u64;
            out.push(Stall {
                from: due,
                to: due + late.as_nanos() as u64,
            });
        }
    }
    out
}

/// Keeps the calling thread on one CPU, so that its stalls are that CPU's.
fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The stalls every probe saw, by start.
pub struct Stalls {
    list: Vec<Stall>,
    cpus: usize,
}

impl Stalls {
    /// Stalls of at least `min` ns that began in [w0, w1): how many, the
    /// longest, and their summed length.
    pub fn summary(&self, w0: u64, w1: u64) -> Value {
        let in_window = |min: u64| {
            self.list
                .iter()
                .filter(move |s| s.from >= w0 && s.from < w1 && s.len() >= min)
        };
        let ms = |ns: u64| (ns as f64 / 1e4).round() / 100.0;
        json!({
            "over_5ms": in_window(5_000_000).count(),
            "over_10ms": in_window(10_000_000).count(),
            "max_ms": ms(in_window(0).map(Stall::len).max().unwrap_or(0)),
            "stalled_ms": ms(in_window(0).map(Stall::len).sum()),
        })
    }

    /// Whether a stall of at least `min` ns overlaps [from, to].
    pub fn overlaps(&self, from: u64, to: u64, min: u64) -> bool {
        // Stalls are short next to the list's span: start a little before `from`.
        let start = self.list.partition_point(|s| s.from + 1_000_000_000 < from);
        self.list[start..]
            .iter()
            .take_while(|s| s.from <= to)
            .any(|s| s.to >= from && s.len() >= min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stalls(list: &[(u64, u64)]) -> Stalls {
        Stalls {
            list: list.iter().map(|&(from, to)| Stall { from, to }).collect(),
            cpus: 1,
        }
    }

    #[test]
    fn a_push_overlaps_a_stall_long_enough_that_touches_its_way() {
        let ms = 1_000_000;
        let s = stalls(&[(10 * ms, 13 * ms), (2_000 * ms, 2_012 * ms)]);
        assert!(s.overlaps(12 * ms, 20 * ms, 2 * ms));
        assert!(!s.overlaps(12 * ms, 20 * ms, 5 * ms), "too short");
        assert!(
            !s.overlaps(14 * ms, 20 * ms, 2 * ms),
            "over before the push"
        );
        assert!(s.overlaps(1_990 * ms, 2_001 * ms, 5 * ms));
        assert!(
            !s.overlaps(1_990 * ms, 1_999 * ms, 5 * ms),
            "after the push"
        );
        assert_eq!(s.summary(0, 100 * ms)["over_5ms"], 0);
        assert_eq!(s.summary(0, 3_000 * ms)["over_10ms"], 1);
        assert_eq!(s.summary(0, 3_000 * ms)["max_ms"], 12.0);
        assert_eq!(s.summary(0, 3_000 * ms)["stalled_ms"], 15.0);
    }
}
