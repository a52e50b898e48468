//! Servers under test: [`TestApp`] (a replica in this process, on port 0),
//! [`ChildReplica`] (the real `marquee` binary in a child process, so a
//! test can SIGKILL or SIGTERM it), and their HTTP port: [`http`],
//! `/metrics` and `/ready` readers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use marquee::app::{Server, Tuning};
use marquee::shared::config::Config;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

use super::client::Client;
use super::db::TestDb;
use super::WAIT;

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

static CHILDREN: AtomicU64 = AtomicU64::new(0);

/// The base configuration of a test server on `db`.
pub fn config(db: &TestDb) -> Config {
    let mut vars = HashMap::new();
    vars.insert("DATABASE_URL".to_string(), db.app_url());
    vars.insert("MIGRATION_DATABASE_URL".to_string(), db.url.clone());
    vars.insert("JWT_SECRET".to_string(), JWT_SECRET.to_string());
    vars.insert("DB_POOL_SIZE".to_string(), "8".to_string());
    Config::from_vars(&vars).expect("test config")
}

/// A running server (one replica) on a test database.
pub struct TestApp {
    pub server: Server,
    pub db: TestDb,
}

impl TestApp {
    /// A fresh database and one server on it.
    pub async fn spawn() -> TestApp {
        let db = TestDb::new().await;
        let server = start(&db, config(&db), Tuning::default()).await;
        TestApp { server, db }
    }

    /// A fresh database and one server on it, tuned.
    pub async fn tuned(tuning: Tuning) -> TestApp {
        let db = TestDb::new().await;
        let server = start(&db, config(&db), tuning).await;
        TestApp { server, db }
    }

    /// A fresh database and one server on it, its configuration changed by
    /// `configure`.
    pub async fn configured(configure: impl FnOnce(&mut Config)) -> TestApp {
        let db = TestDb::new().await;
        let mut cfg = config(&db);
        configure(&mut cfg);
        let server = start(&db, cfg, Tuning::default()).await;
        TestApp { server, db }
    }

    /// Another replica on the same database.
    pub async fn replica(&self) -> Server {
        start(&self.db, config(&self.db), Tuning::default()).await
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.server.ws_addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.http_addr, path)
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.server).await
    }
}

/// Starts a server on port 0 for both listeners.
pub async fn start(_db: &TestDb, config: Config, tuning: Tuning) -> Server {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind http");
    let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind ws");
    Server::start(config, http, ws, tuning)
        .await
        .expect("server starts")
}

// ---------------------------------------------------------------------------
// A replica in a child process.

/// The real `marquee serve` binary in a child process, on ports it chose
/// itself (`PORT=0`, `WS_PORT=0`, read back from its "listening" line).
/// Killed (SIGKILL) when dropped.
pub struct ChildReplica {
    child: tokio::process::Child,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub replica_id: String,
    /// Its stderr (logs).
    pub log: PathBuf,
}

impl ChildReplica {
    /// Starts a replica on `db` (serving as `marquee_app`, migrating as the
    /// superuser, like the harness's servers); `env` adds or overrides
    /// variables.
    pub async fn start(db: &TestDb, env: &[(&str, &str)]) -> ChildReplica {
        let n = CHILDREN.fetch_add(1, Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("marquee-child-{}-{n}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("child log file");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_marquee"));
        cmd.arg("serve")
            // No `.env` of the work tree is read.
            .current_dir(std::env::temp_dir())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", db.app_url())
            .env("MIGRATION_DATABASE_URL", &db.url)
            .env("JWT_SECRET", JWT_SECRET)
            .env("PORT", "0")
            .env("WS_PORT", "0")
            .env("BIND_ADDR", "127.0.0.1")
            .env("RUST_LOG", "warn,marquee=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
        // between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn the marquee binary");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.contains("listening") {
                    return Some(l);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "the child replica did not start; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // "Marquee <id> listening: HTTP http://<addr>  WebSocket ws://<addr>/  …"
        let addr = |scheme: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(scheme))
                .map(|a| a.trim_end_matches('/'))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no {scheme} address in: {line}"))
        };
        let replica_id = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        ChildReplica {
            http: addr("http://"),
            ws: addr("ws://"),
            replica_id,
            child,
            log,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/", self.ws)
    }

    pub fn pid(&self) -> i32 {
        self.child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .expect("child still running")
    }

    /// Sends a signal (SIGKILL, SIGTERM).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let r = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(r, 0, "kill({sig}) failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for the child"))
    }

    /// Its log so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ChildReplica {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL; the log is kept only while it runs.
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A minimal HTTP/1.1 request over a raw socket: (status, headers, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("http timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, headers, body)
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// One sample of `/metrics` (without labels), or `None` when absent.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The sum of a labelled counter's samples whose labels contain `filter`.
pub fn metric_sum(body: &str, name: &str, filter: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(filter))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// `GET /metrics` of a replica.
pub async fn metrics(addr: SocketAddr) -> String {
    let (status, _, body) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "/metrics: {body}");
    body
}

/// `GET /ready`: (status, body).
pub async fn ready(addr: SocketAddr) -> (u16, Value) {
    let (status, _, body) = http(addr, "GET", "/ready", &[], "").await;
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, v)
}
