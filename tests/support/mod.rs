//! Helpers of the fault, replica and proxy tests (`tests/faults.rs`,
//! `tests/replicas.rs`, `tests/nginx.rs`), beside the shared harness in
//! `tests/common`:
//!
//! * [`PrivateCluster`]: a PostgreSQL cluster a test owns, so it can stop
//!   and restart it (the harness's cluster is shared by every test of the
//!   binary and must stay up);
//! * [`ChildReplica`]: the real `marquee` binary in a child process, so a
//!   test can SIGKILL or SIGTERM a replica;
//! * [`RawClient`]: a WebSocket client that pipelines requests and reports
//!   how the connection ended (close code), for killed replicas;
//! * polling with deadlines, `/metrics` and `/ready` readers.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use marquee::core::embedded::{EmbeddedOptions, EmbeddedPostgres};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Connect};

static CHILDREN: AtomicU64 = AtomicU64::new(0);

/// Polls `check` every 50 ms until it is true; panics after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
pub async fn metrics(http: SocketAddr) -> String {
    let (status, _, body) = common::http(http, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "/metrics: {body}");
    body
}

/// `GET /ready`: (status, body).
pub async fn ready(http: SocketAddr) -> (u16, Value) {
    let (status, _, body) = common::http(http, "GET", "/ready", &[], "").await;
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, v)
}

// ---------------------------------------------------------------------------
// A cluster of the test's own.

enum ClusterCmd {
    Start(oneshot::Sender<Result<String, String>>),
    Stop(oneshot::Sender<()>),
}

/// A throw-away PostgreSQL cluster the test can stop and start again on
/// the same data directory. The postmaster is started and stopped by one
/// dedicated thread that lives as long as this value, because the
/// parent-death signal that keeps it from outliving the test process is
/// tied to the thread that spawned it.
pub struct PrivateCluster {
    cmds: Option<std::sync::mpsc::Sender<ClusterCmd>>,
    thread: Option<std::thread::JoinHandle<()>>,
    root: PathBuf,
    /// libpq connection string of the `postgres` database.
    admin: String,
}

impl PrivateCluster {
    /// initdb + start; `tag` names the data directory.
    pub async fn start(tag: &str) -> PrivateCluster {
        crate::common::prereq::postgres_server();
        clean_stale_private();
        let root =
            std::env::temp_dir().join(format!("marquee-private-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("private cluster dir");
        let opts = EmbeddedOptions {
            data_dir: root.join("pg"),
            socket_dir: root.join("run"),
            fsync_off: true,
            trust_local: true,
            // Prepared transactions: a lock that outlives its session (tests/faults.rs).
            settings: vec![
                ("max_connections".into(), "100".into()),
                ("max_prepared_transactions".into(), "4".into()),
            ],
        };
        let (tx, rx) = std::sync::mpsc::channel::<ClusterCmd>();
        let thread = std::thread::spawn(move || {
            let mut pg: Option<EmbeddedPostgres> = None;
            while let Ok(cmd) = rx.recv() {
                match cmd {
                    ClusterCmd::Start(reply) => {
                        let r = EmbeddedPostgres::start(&opts).map(|p| {
                            let admin = p.conn_string("postgres");
                            pg = Some(p);
                            admin
                        });
                        let _ = reply.send(r.map_err(|e| e.to_string()));
                    }
                    ClusterCmd::Stop(reply) => {
                        if let Some(mut p) = pg.take() {
                            p.stop();
                        }
                        let _ = reply.send(());
                    }
                }
            }
            // Dropping stops it (fast shutdown).
            drop(pg);
        });
        let mut c = PrivateCluster {
            cmds: Some(tx),
            thread: Some(thread),
            root,
            admin: String::new(),
        };
        c.admin = c.start_postgres().await;
        c
    }

    fn send(&self, cmd: ClusterCmd) {
        self.cmds
            .as_ref()
            .expect("cluster thread")
            .send(cmd)
            .expect("cluster thread alive");
    }

    /// Starts the postmaster (again) and waits until it accepts
    /// connections; returns the connection string of `postgres`.
    pub async fn start_postgres(&self) -> String {
        let (tx, rx) = oneshot::channel();
        self.send(ClusterCmd::Start(tx));
        rx.await
            .expect("cluster thread answers")
            .unwrap_or_else(|e| panic!("private cluster does not start: {e}"))
    }

    /// Fast shutdown (SIGINT to the postmaster), waiting until it exited.
    pub async fn stop_postgres(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(ClusterCmd::Stop(tx));
        rx.await.expect("cluster thread answers");
    }

    /// The connection string of a database of this cluster.
    pub fn conn_string(&self, db: &str) -> String {
        self.admin
            .replace("dbname=postgres", &format!("dbname={db}"))
    }

    /// Creates a database (empty: the server migrates it).
    pub async fn create_database(&self, name: &str) -> common::TestDb {
        let (c, conn) = tokio_postgres::connect(&self.admin, tokio_postgres::NoTls)
            .await
            .expect("connect to the private cluster");
        let h = tokio::spawn(conn);
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        drop(c);
        let _ = h.await;
        common::TestDb {
            name: name.to_owned(),
            url: self.conn_string(name),
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Closing the channel makes the thread stop PostgreSQL and return.
        self.cmds.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Removes private clusters of test processes that are gone.
fn clean_stale_private() {
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("marquee-private-") else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
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
    pub async fn start(db: &common::TestDb, env: &[(&str, &str)]) -> ChildReplica {
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
            .env("JWT_SECRET", common::JWT_SECRET)
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

// ---------------------------------------------------------------------------
// A WebSocket client that survives the server dying.

/// What a [`RawClient`] read.
#[derive(Debug)]
pub enum Frame {
    Text(Value),
    /// The connection ended: the close code, or `None` when it was cut
    /// without a close frame.
    Closed(Option<u16>),
}

/// A WebSocket client for replicas that die: requests may be pipelined, and
/// the end of the connection is a value, not a panic.
pub struct RawClient {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub session: Value,
    next: u64,
}

impl RawClient {
    /// Connects (with a bearer token when given) and reads the session frame.
    pub async fn connect(url: &str, token: Option<&str>) -> RawClient {
        let ws = common::raw_connect_url(
            url,
            Connect {
                bearer: token.map(str::to_owned),
                ..Default::default()
            },
        )
        .await
        .expect("connect");
        let mut c = RawClient {
            ws,
            session: Value::Null,
            next: 0,
        };
        match c.next().await {
            Frame::Text(f) if f["type"] == "session" => c.session = f,
            other => panic!("expected the session frame, got {other:?}"),
        }
        c
    }

    /// Sends a request; returns its eid.
    pub async fn send(&mut self, kind: &str, data: Value) -> Result<String, String> {
        self.next += 1;
        let eid = format!("r-{}", self.next);
        let frame = json!({"type": kind, "data": data, "eid": eid});
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        Ok(eid)
    }

    /// The next text frame or the end of the connection (10 s at most).
    pub async fn next(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(common::WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Frame::Text(serde_json::from_str(&t).expect("JSON frame"))
                }
                Some(Ok(Message::Close(f))) => return Frame::Closed(f.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Closed(None),
            }
        }
    }

    /// Sends a request and waits for its answer; `None` when the connection
    /// ended first. Pushes are skipped.
    pub async fn request(&mut self, kind: &str, data: Value) -> Option<Value> {
        let eid = self.send(kind, data).await.ok()?;
        loop {
            match self.next().await {
                Frame::Text(f) if f["eid"] == eid.as_str() && f["type"] == kind => return Some(f),
                Frame::Text(_) => continue,
                Frame::Closed(_) => return None,
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A TCP proxy in front of PostgreSQL that can go silent.

/// Where the proxy forwards to.
enum Upstream {
    Unix(PathBuf),
    Tcp(String),
}

struct ProxyState {
    accepted: AtomicU64,
    /// Listener connections accepted before this number are frozen.
    freeze_below: AtomicU64,
}

/// A TCP proxy in front of the test cluster. [`PgProxy::freeze_listener`]
/// makes the LISTEN connections made so far go silent the way a network
/// partition does: nothing is forwarded any more, nothing is closed, no
/// error reaches either side. Connections made later work normally.
pub struct PgProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
    user: String,
}

impl PgProxy {
    /// A proxy to the server of `conn_string` (libpq key/value or URL).
    pub async fn start(conn_string: &str) -> PgProxy {
        let cfg: tokio_postgres::Config = conn_string.parse().expect("connection string");
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let upstream = match cfg.get_hosts().first().expect("a host") {
            tokio_postgres::config::Host::Unix(dir) => {
                Upstream::Unix(dir.join(format!(".s.PGSQL.{port}")))
            }
            tokio_postgres::config::Host::Tcp(h) => Upstream::Tcp(format!("{h}:{port}")),
        };
        let upstream = Arc::new(upstream);
        let state = Arc::new(ProxyState {
            accepted: AtomicU64::new(0),
            freeze_below: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = st.accepted.fetch_add(1, Ordering::SeqCst);
                let (st, upstream) = (st.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let listener_conn = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    match &*upstream {
                        Upstream::Unix(p) => {
                            let Ok(up) = tokio::net::UnixStream::connect(p).await else {
                                return;
                            };
                            let (ur, uw) = up.into_split();
                            tokio::spawn(pump(cr, uw, true, id, listener_conn.clone(), st.clone()));
                            pump(ur, cw, false, id, listener_conn, st).await;
                        }
                        Upstream::Tcp(a) => {
                            let Ok(up) = tokio::net::TcpStream::connect(a).await else {
                                return;
                            };
                            let (ur, uw) = up.into_split();
                            tokio::spawn(pump(cr, uw, true, id, listener_conn.clone(), st.clone()));
                            pump(ur, cw, false, id, listener_conn, st).await;
                        }
                    }
                });
            }
        });
        PgProxy {
            addr,
            state,
            task,
            user: cfg.get_user().unwrap_or("postgres").to_owned(),
        }
    }

    /// The connection string of `db` through the proxy.
    pub fn conn_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={db}",
            self.addr.ip(),
            self.addr.port(),
            self.user
        )
    }

    /// The LISTEN connections made so far go silent.
    pub fn freeze_listener(&self) {
        let n = self.state.accepted.load(Ordering::SeqCst);
        self.state.freeze_below.store(n, Ordering::SeqCst);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction. The client's startup message names the
/// connection (`application_name`), which tells the listener's apart.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    sniff: bool,
    id: u64,
    listener_conn: Arc<std::sync::atomic::AtomicBool>,
    st: Arc<ProxyState>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = 0usize;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if sniff && seen < 4096 {
            seen += n;
            if buf[..n].windows(16).any(|w| w == b"marquee-listener") {
                listener_conn.store(true, Ordering::SeqCst);
            }
        }
        if listener_conn.load(Ordering::SeqCst) && id < st.freeze_below.load(Ordering::SeqCst) {
            // Silent: both sockets stay open (owned by this future, which
            // never finishes), nothing is forwarded, ever.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
