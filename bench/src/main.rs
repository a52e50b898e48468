//! `bench`: Marquee's load generator. It speaks only the wire contract
//! (docs/protocol.md: WebSocket JSON, `Authorization: Bearer`) plus
//! SQL for setup (the contract's `admin.*` functions and `seat_states`), so
//! it can drive any implementation of the contract.
//!
//! Parts:
//!   client    WebSocket requests, the TOTP registration flow, HTTP GET
//!   fixtures  cinema / halls / screenings through `admin.*`, DB checks
//!   subs      hall subscribers that timestamp every push
//!   procfs    CPU and RSS of the server, PostgreSQL and ourselves
//!   stats     percentiles, the JSON line and the human table
//!   fanout, rush, book, idle   the scenarios
//!   stalls    the machine's own late wake-ups (steal), beside fanout or alone
//!   floor     PostgreSQL's own rate for the design's seat change, the
//!             yardstick the rush and book figures are divided by
//!   pgbench   runs bench/pgbench.sh for the same SQL, same run
//!   report    JSON lines → Markdown tables and the SVG chart
//!
//! Every scenario prints one JSON summary line on stdout (also appended to
//! `--out`) and a table on stderr. See bench/README.md.

mod best;
mod book;
mod client;
mod fanout;
mod fixtures;
mod floor;
mod idle;
mod pgbench;
mod procfs;
mod report;
mod rush;
mod stalls;
mod stats;
mod subs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};

/// Load generator for servers implementing the Marquee wire contract.
#[derive(Parser)]
#[command(name = "bench")]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// H halls × S subscribers, seat changes at set rates: change → subscriber latency, pushes/s, CPU per push.
    Fanout(fanout::Args),
    /// U users racing seat changes: committed changes/s against pgbench, errors by code, consistency check.
    Rush(rush::Args),
    /// Durable bookings/s (hold then book) against pgbench.
    Book(book::Args),
    /// hold_best_available round trips below saturation (then release), with the halls changing.
    Best(best::Args),
    /// The floor: the design's seat change in plain PostgreSQL (no server), hold and book modes.
    Floor(floor::Args),
    /// N idle logged-in sockets: RSS per socket, logged-in connects/s.
    Idle(idle::Args),
    /// The machine alone: late wake-ups of a pinned 1 ms sleeper per CPU, and the host's steal time.
    Stalls(stalls::Args),
    /// Markdown tables and the latency chart from the JSON lines of earlier runs.
    Report(report::Args),
}

/// Where the target is, and options every scenario shares.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The target's WebSocket URL.
    #[arg(
        long,
        env = "BENCH_WS_URL",
        default_value = "ws://127.0.0.1:3001/",
        global = true
    )]
    pub ws_url: String,
    /// The target's HTTP URL (`/ready` before a run, `/metrics` counters).
    #[arg(
        long,
        env = "BENCH_HTTP_URL",
        default_value = "http://127.0.0.1:3000",
        global = true
    )]
    pub http_url: String,
    /// The target's database, for setup (`admin.*`) and checks.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// The server's pid, for its CPU and RSS (default: whoever listens on the WebSocket port).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Append each JSON summary line to this file.
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
    /// A free-form label stored in the summary (e.g. "quiet machine").
    #[arg(long, global = true, default_value = "")]
    pub label: String,
    /// Requests per second per connection (the contract allows 50).
    #[arg(long, global = true, default_value_t = 40.0)]
    pub conn_rate: f64,
    /// The pgbench comparison script.
    #[arg(long, global = true, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/pgbench.sh"))]
    pub pgbench_script: PathBuf,
}

impl Target {
    pub fn db(&self) -> Result<&str> {
        self.database_url
            .as_deref()
            .ok_or_else(|| anyhow!("DATABASE_URL (or --database-url) is required"))
    }

    /// Which processes to account: the server (flag, or the WebSocket
    /// port's listener) and the database's postmaster.
    pub async fn probe(&self, db: &tokio_postgres::Client) -> procfs::Probe {
        let server = self.server_pid.or_else(|| {
            let port = self
                .ws_url
                .split("://")
                .nth(1)?
                .split('/')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            procfs::pid_listening_on(port)
        });
        if server.is_none() {
            eprintln!("bench: server pid unknown (pass --server-pid): no server CPU/RSS figures");
        }
        procfs::Probe {
            server,
            postmaster: fixtures::postmaster_pid(db).await,
        }
    }

    /// The server's `/metrics` text, if it answers.
    pub async fn metrics(&self) -> Option<String> {
        match client::http_get(&self.http_url, "/metrics").await {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let t = &cli.target;
    if !matches!(
        cli.scenario,
        Scenario::Report(_) | Scenario::Floor(_) | Scenario::Stalls(_)
    ) {
        procfs::raise_nofile();
        client::wait_ready(&t.http_url, Duration::from_secs(30)).await?;
    }
    match &cli.scenario {
        Scenario::Fanout(a) => fanout::run(t, a).await,
        Scenario::Rush(a) => rush::run(t, a).await,
        Scenario::Book(a) => book::run(t, a).await,
        Scenario::Best(a) => best::run(t, a).await,
        Scenario::Idle(a) => idle::run(t, a).await,
        Scenario::Floor(a) => floor::run(t, a).await,
        Scenario::Stalls(a) => stalls::run(t, a).await,
        Scenario::Report(a) => report::run(a),
    }
}
