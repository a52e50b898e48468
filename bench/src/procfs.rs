//! What the kernel says about CPU and memory (Linux `/proc`), so figures
//! are the server's own and not the load generator's.
//!
//! A [`Probe`] knows the server's pid, the PostgreSQL postmaster's pid (all
//! its children are summed: backends, walwriter, …) and this process. A
//! [`Sample`] taken before and after a window gives [`CpuUse`]: seconds of
//! CPU spent by each, and by the whole machine (so other load on a shared
//! machine shows up as `other`).

use std::collections::HashMap;
use std::fs;
use std::time::Instant;

use serde::Serialize;

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (utime + stime in ticks, ppid) of a process.
fn proc_stat(pid: &str) -> Option<(u64, u32)> {
    proc_stat_split(pid).map(|(u, s, p)| (u + s, p))
}

/// (utime, stime in ticks, ppid) of a process.
fn proc_stat_split(pid: &str) -> Option<(u64, u64, u32)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start
    // after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ut, st, ppid))
}

/// Resident memory of a process in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The parent of a process.
pub fn parent_of(pid: u32) -> Option<u32> {
    proc_stat(&pid.to_string()).map(|(_, p)| p)
}

/// The machine's (busy, total, steal) ticks from `/proc/stat`; steal is time the hypervisor
/// ran something else while one of our CPUs had work (other tenants of the
/// host), counted as busy.
fn machine() -> (u64, u64, u64) {
    let s = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let steal = v.get(7).copied().unwrap_or(0);
    (total.saturating_sub(idle), total, steal)
}

/// Every process's (ticks, ppid), read once.
fn all_procs() -> HashMap<u32, (u64, u32)> {
    let mut out = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(pid) = name.parse::<u32>() else {
                continue;
            };
            if let Some(st) = proc_stat(name) {
                out.insert(pid, st);
            }
        }
    }
    out
}

/// The pid listening on a TCP port of this machine, found through the
/// socket's inode (`/proc/net/tcp*` then every process's fds).
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(s) = fs::read_to_string(table) else {
            continue;
        };
        for l in s.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let p = f[1]
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if p == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(t) = fs::read_link(fd.path()) {
                if inodes.iter().any(|i| t.to_string_lossy() == *i) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Raises this process's open-file limit to the hard limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    r.rlim_cur
}

/// Which processes to account.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pub server: Option<u32>,
    pub postmaster: Option<u32>,
}

/// CPU ticks at one instant.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    server: Option<u64>,
    /// The server's kernel time alone (sockets, scheduling).
    server_sys: Option<u64>,
    pg: Option<u64>,
    bench: u64,
    busy: u64,
    total: u64,
    steal: u64,
}

impl Probe {
    pub fn sample(&self) -> Sample {
        let procs = all_procs();
        let ticks = |pid: u32| procs.get(&pid).map(|(t, _)| *t);
        let pg = self.postmaster.map(|pm| {
            procs
                .iter()
                .filter(|(pid, (_, ppid))| **pid == pm || *ppid == pm)
                .map(|(_, (t, _))| *t)
                .sum()
        });
        let (busy, total, steal) = machine();
        Sample {
            at: Instant::now(),
            server: self.server.and_then(ticks),
            server_sys: self
                .server
                .and_then(|p| proc_stat_split(&p.to_string()))
                .map(|(_, s, _)| s),
            pg,
            bench: ticks(std::process::id()).unwrap_or(0),
            busy,
            total,
            steal,
        }
    }
}

/// CPU seconds spent between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub wall_s: f64,
    pub server_s: Option<f64>,
    /// The part of `server_s` spent in the kernel (on loopback this
    /// includes delivering to the receiving socket).
    pub server_sys_s: Option<f64>,
    pub postgres_s: Option<f64>,
    pub bench_s: f64,
    pub machine_busy_s: f64,
    /// Busy time not accounted to the server, PostgreSQL or the load
    /// generator: other work on the machine (and kernel time in interrupts).
    pub other_s: f64,
    /// The part of `other_s` the hypervisor gave to other tenants of the
    /// host while our CPUs had work: a stall of whatever ran, ours included.
    pub steal_s: f64,
    /// Cores of the machine (busy time can reach wall_s × cores).
    pub cores: f64,
}

impl CpuUse {
    pub fn between(a: &Sample, b: &Sample) -> CpuUse {
        let tck = clk_tck();
        let d = |x: Option<u64>, y: Option<u64>| match (x, y) {
            (Some(x), Some(y)) => Some(y.saturating_sub(x) as f64 / tck),
            _ => None,
        };
        let server_s = d(a.server, b.server);
        let postgres_s = d(a.pg, b.pg);
        let server_sys_s = d(a.server_sys, b.server_sys);
        let bench_s = b.bench.saturating_sub(a.bench) as f64 / tck;
        let machine_busy_s = b.busy.saturating_sub(a.busy) as f64 / tck;
        let total_s = b.total.saturating_sub(a.total) as f64 / tck;
        let steal_s = b.steal.saturating_sub(a.steal) as f64 / tck;
        let wall_s = b.at.duration_since(a.at).as_secs_f64();
        let other_s =
            (machine_busy_s - server_s.unwrap_or(0.0) - postgres_s.unwrap_or(0.0) - bench_s)
                .max(0.0);
        CpuUse {
            wall_s,
            server_s,
            server_sys_s,
            postgres_s,
            bench_s,
            machine_busy_s,
            other_s,
            steal_s,
            cores: if wall_s > 0.0 {
                (total_s / wall_s).round()
            } else {
                0.0
            },
        }
    }

    /// The other load on the machine as the reports print it.
    pub fn other_line(&self) -> String {
        format!(
            "{:.0}% of a core ({:.0}% stolen by the hypervisor)",
            self.pct(self.other_s),
            self.pct(self.steal_s)
        )
    }

    /// A share of one core, in percent.
    pub fn pct(&self, s: f64) -> f64 {
        if self.wall_s > 0.0 {
            100.0 * s / self.wall_s
        } else {
            0.0
        }
    }
}
