//! The shared test harness: one throw-away PostgreSQL cluster per test
//! binary (or the server of `TEST_DATABASE_URL`), a template database
//! migrated once, and a fresh clone of it for every test (~30 ms). Tests
//! start real servers on port 0 and talk to them over real WebSockets.
//!
//! Helpers read like the protocol: `client.request("hold_seats", json!(…))`.

#![allow(dead_code)]

pub mod prereq;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use marquee::app::{Server, Tuning};
use marquee::core::db::Db;
use marquee::core::embedded::{EmbeddedOptions, EmbeddedPostgres};
use marquee::shared::config::Config;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// How long a test waits for an expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

struct Cluster {
    /// libpq connection string of the maintenance database (`postgres`).
    admin: String,
    /// Builds a connection string for a database name.
    base: String,
    template: String,
    bin_dir: Option<std::path::PathBuf>,
    /// Only for embedded clusters: the parked thread that owns the server.
    _keep: Option<std::thread::JoinHandle<()>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn conn_string(base: &str, db: &str) -> String {
    format!("{base} dbname={db}")
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let pid = std::process::id();
        let (base, bin_dir, keep) = match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => {
                // Take host/port/user of the URL; databases are ours.
                let cfg: tokio_postgres::Config = url.parse().expect("TEST_DATABASE_URL parses");
                let mut parts = Vec::new();
                for h in cfg.get_hosts() {
                    match h {
                        tokio_postgres::config::Host::Tcp(s) => parts.push(format!("host={s}")),
                        tokio_postgres::config::Host::Unix(p) => {
                            parts.push(format!("host={}", p.display()))
                        }
                    }
                }
                if let Some(p) = cfg.get_ports().first() {
                    parts.push(format!("port={p}"));
                }
                if let Some(u) = cfg.get_user() {
                    parts.push(format!("user={u}"));
                }
                if let Some(pw) = cfg.get_password() {
                    parts.push(format!("password={}", String::from_utf8_lossy(pw)));
                }
                (parts.join(" "), None, None)
            }
            _ => {
                prereq::postgres_server();
                let root = std::env::temp_dir().join(format!("marquee-test-{pid}"));
                clean_stale(&std::env::temp_dir());
                let _ = std::fs::remove_dir_all(&root);
                std::fs::create_dir_all(&root).expect("temp dir");
                let opts = EmbeddedOptions {
                    data_dir: root.join("pg"),
                    socket_dir: root.join("run"),
                    fsync_off: true,
                    trust_local: true,
                    settings: vec![
                        ("max_connections".into(), "300".into()),
                        ("synchronous_commit".into(), "off".into()),
                        ("shared_buffers".into(), "64MB".into()),
                    ],
                };
                // The cluster dies with the thread that started it, so it is
                // started by a thread that lives as long as the process.
                let (tx, rx) = std::sync::mpsc::channel();
                let keep = std::thread::spawn(move || {
                    match EmbeddedPostgres::start(&opts) {
                        Ok(pg) => {
                            let _ = tx
                                .send(Ok((pg.conn_string("postgres"), pg.bin_dir().to_path_buf())));
                            // Keep `pg` alive (never dropped: the process exit and
                            // the parent-death signal stop it).
                            let _pg = pg;
                            loop {
                                std::thread::park();
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
                let (admin, bin) = rx
                    .recv()
                    .expect("cluster thread")
                    .unwrap_or_else(|e| panic!("cannot start the test cluster: {e}"));
                let base = admin.trim_end_matches(" dbname=postgres").to_owned();
                (base, Some(bin), Some(keep))
            }
        };
        let template = format!("marquee_tpl_{pid}");
        let admin = conn_string(&base, "postgres");
        // Tests run inside a runtime; the setup gets its own thread and runtime.
        let (admin2, base2, template2) = (admin.clone(), base.clone(), template.clone());
        std::thread::spawn(move || {
            let (admin, base, template) = (admin2, base2, template2);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let (c, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test cluster");
                let h = tokio::spawn(conn);
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {template}"))
                    .await
                    .expect("drop old template");
                c.batch_execute(&format!("CREATE DATABASE {template}"))
                    .await
                    .expect("create template");
                drop(c);
                let _ = h.await;
                let url = conn_string(&base, &template);
                let db = Db::new(&url, 1).expect("pool");
                db.migrate(true)
                    .await
                    .expect("migrations apply to the template");
                // The version 1 tests hold seats anywhere in small halls; the
                // no-orphan rule (version 1.1, on by default) would refuse many
                // of those holds. Tests of the rule switch it on themselves
                // (tests/box_office.rs).
                let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the template");
                let h = tokio::spawn(conn);
                c.batch_execute("SELECT admin.set_orphan_rule(false)")
                    .await
                    .expect("orphan rule off in the template");
                drop(c);
                let _ = h.await;
            });
        })
        .join()
        .expect("template setup");
        Cluster {
            admin,
            base,
            template,
            bin_dir,
            _keep: keep,
        }
    })
}

/// Removes data dirs of earlier test processes that are gone.
fn clean_stale(tmp: &std::path::Path) {
    for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("marquee-test-")
            .and_then(|p| p.parse::<u32>().ok())
        {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// A fresh database cloned from the migrated template.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let c = cluster();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{}_{n}", std::process::id());
        let (client, conn) = tokio_postgres::connect(&c.admin, tokio_postgres::NoTls)
            .await
            .expect("connect admin");
        let h = tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {} STRATEGY FILE_COPY",
                c.template
            ))
            .await
            .expect("clone template");
        drop(client);
        let _ = h.await;
        TestDb {
            url: conn_string(&c.base, &name),
            name,
        }
    }

    /// The URL a test server's pool and LISTEN connection use: this database
    /// as `marquee_app`, the role production servers log in as (the
    /// harness's clusters trust every role on their socket). With
    /// `TEST_DATABASE_URL`, `url` itself (`marquee_app` has no password
    /// there). Migrations keep using `url` (the superuser).
    pub fn app_url(&self) -> String {
        let external = std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty());
        if external {
            return self.url.clone();
        }
        self.url
            .replacen(" user=postgres ", " user=marquee_app ", 1)
    }

    /// A direct connection as the superuser, like a DBA's psql.
    pub async fn psql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect test db");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Runs SQL and returns the first column of the first row as text.
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        let c = self.psql().await;
        let rows = c.simple_query(sql).await.expect("query");
        rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
    }
}

/// The libpq connection string of the cluster's maintenance database.
pub fn admin_conn() -> String {
    cluster().admin.clone()
}

/// The directory of the PostgreSQL binaries, when the harness started them.
pub fn bin_dir() -> Option<std::path::PathBuf> {
    cluster().bin_dir.clone()
}

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

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking the envelope.
pub struct Client {
    ws: Ws,
    next: u64,
    /// Frames received but not yet asked for.
    inbox: Vec<Value>,
    /// The session frame received on connect.
    pub session: Value,
}

/// Options of a connect.
#[derive(Default, Clone)]
pub struct Connect {
    pub token_cookie: Option<String>,
    pub bearer: Option<String>,
    pub origin: Option<String>,
    pub path: Option<String>,
    /// An `X-Forwarded-For` header (believed when the server trusts 127.0.0.1).
    pub forwarded_for: Option<String>,
    /// The local address to connect from (e.g. 127.0.0.2, to look like
    /// another client to a proxy on 127.0.0.1).
    pub source: Option<std::net::IpAddr>,
}

impl Client {
    pub async fn connect(server: &Server) -> Client {
        Self::connect_with(server, Connect::default())
            .await
            .expect("connect")
    }

    /// Connects and reads the session frame.
    pub async fn connect_with(
        server: &Server,
        opts: Connect,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let path = opts.path.clone().unwrap_or_else(|| "/".into());
        Self::connect_url(&format!("ws://{}{}", server.ws_addr, path), opts).await
    }

    /// Connects to any WebSocket URL (a replica in another process, a
    /// proxy) and reads the session frame.
    pub async fn connect_url(
        url: &str,
        opts: Connect,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let ws = raw_connect_url(url, opts).await?;
        let mut c = Client {
            ws,
            next: 0,
            inbox: Vec::new(),
            session: Value::Null,
        };
        let first = c.next_frame().await.expect("a session frame");
        assert_eq!(
            first["type"], "session",
            "first frame is the session: {first}"
        );
        c.session = first;
        Ok(c)
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// The next frame from the socket (inbox first), `None` on close.
    pub async fn next_frame(&mut self) -> Option<Value> {
        if !self.inbox.is_empty() {
            return Some(self.inbox.remove(0));
        }
        self.read().await
    }

    async fn read(&mut self) -> Option<Value> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")?;
            match msg {
                Ok(Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).expect("server frames are JSON"))
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Waits for the close frame and returns its code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for close");
            match msg {
                Some(Ok(Message::Close(Some(f)))) => return Some(f.code.into()),
                Some(Ok(Message::Close(None))) | None => return None,
                Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Sends a request with a fresh eid and returns its response (error or not).
    pub async fn request(&mut self, kind: &str, data: Value) -> Value {
        self.next += 1;
        let eid = format!("c-{}", self.next);
        let frame = json!({"type": kind, "data": data, "eid": eid});
        self.send_text(frame.to_string()).await;
        self.response(&eid).await
    }

    /// The response with this eid (pushes seen meanwhile stay in the inbox).
    pub async fn response(&mut self, eid: &str) -> Value {
        if let Some(i) = self.inbox.iter().position(|f| {
            f["eid"] == eid && f["type"] != "hall_update" && f["type"] != "hall_snapshot"
        }) {
            return self.inbox.remove(i);
        }
        loop {
            let f = self
                .read()
                .await
                .expect("connection closed before the response");
            if f["eid"] == eid && f["type"] != "hall_update" && f["type"] != "hall_snapshot" {
                return f;
            }
            self.inbox.push(f);
        }
    }

    /// A request that must succeed; returns its `data`.
    pub async fn ok(&mut self, kind: &str, data: Value) -> Value {
        let r = self.request(kind, data).await;
        assert!(r.get("error").is_none(), "{kind} failed: {r}");
        r["data"].clone()
    }

    /// A request that must fail; returns the error code.
    pub async fn err(&mut self, kind: &str, data: Value) -> String {
        let r = self.request(kind, data).await;
        r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} should fail: {r}"))
            .to_owned()
    }

    /// The next push of this type (other frames stay in the inbox).
    pub async fn push(&mut self, kind: &str) -> Value {
        if let Some(i) = self.inbox.iter().position(|f| f["type"] == kind) {
            return self.inbox.remove(i);
        }
        loop {
            let f = self
                .read()
                .await
                .expect("connection closed while waiting for a push");
            if f["type"] == kind {
                return f;
            }
            self.inbox.push(f);
        }
    }

    /// Asserts no frame of this type arrives within `d`.
    pub async fn no_push(&mut self, kind: &str, d: Duration) {
        assert!(
            !self.inbox.iter().any(|f| f["type"] == kind),
            "unexpected {kind} in inbox"
        );
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let f: Value = serde_json::from_str(&t).expect("json");
                    assert_ne!(f["type"], kind, "unexpected push: {f}");
                    self.inbox.push(f);
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A raw upgrade, for tests of the handshake itself.
pub async fn raw_connect(
    server: &Server,
    opts: Connect,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let path = opts.path.clone().unwrap_or_else(|| "/".into());
    raw_connect_url(&format!("ws://{}{}", server.ws_addr, path), opts).await
}

/// A raw upgrade to any URL (a replica in another process, a proxy);
/// `opts.path` is ignored: the URL has the path.
pub async fn raw_connect_url(
    url: &str,
    opts: Connect,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().expect("request");
    let h = req.headers_mut();
    if let Some(t) = &opts.token_cookie {
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("token={t}")).expect("cookie"),
        );
    }
    if let Some(t) = &opts.bearer {
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).expect("bearer"),
        );
    }
    if let Some(o) = &opts.origin {
        h.insert("origin", HeaderValue::from_str(o).expect("origin"));
    }
    if let Some(f) = &opts.forwarded_for {
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(f).expect("x-forwarded-for"),
        );
    }
    let Some(source) = opts.source else {
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        return Ok(ws);
    };
    let host = req.uri().host().expect("host").to_owned();
    let port = req.uri().port_u16().expect("port");
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().expect("an IP URL");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(source, 0))
        .expect("bind the source address");
    let tcp = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await?;
    Ok(ws)
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

/// The current TOTP code for a base32 secret, as an authenticator app
/// computes it (`offset_steps` shifts the clock by 30 s steps).
pub fn totp_code(secret_b32: &str, offset_steps: i64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).expect("base32 secret");
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .build()
        .expect("totp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    totp.generate((now + offset_steps * 30) as u64).to_string()
}

/// Seconds left in the current 30 s TOTP step.
pub fn secs_left_in_step() -> u64 {
    30 - std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        % 30
}

/// Registers a user through the real TOTP flow; returns (token, user id).
pub async fn register(client: &mut Client, username: &str) -> (String, String) {
    let start = client.ok("auth_start", json!({"username": username})).await;
    assert_eq!(start["status"], "candidate", "{start}");
    let secret = start["secret"].as_str().expect("secret").to_owned();
    let v = client
        .ok(
            "auth_verify",
            json!({"username": username, "code": totp_code(&secret, 0)}),
        )
        .await;
    (
        v["token"].as_str().expect("token").to_owned(),
        v["user"]["id"].as_str().expect("user id").to_owned(),
    )
}

/// A logged-in client: registers `username` and reconnects with the token.
pub async fn logged_in(server: &Server, username: &str) -> (Client, String, String) {
    let mut anon = Client::connect(server).await;
    let (token, id) = register(&mut anon, username).await;
    anon.close().await;
    let c = Client::connect_with(
        server,
        Connect {
            bearer: Some(token.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("connect with token");
    assert_eq!(
        c.session["data"]["user"]["username"], username,
        "{}",
        c.session
    );
    (c, token, id)
}

/// A cinema, hall (rows × seats) and film, and a screening `starts_in`
/// from now, created through the `admin.*` functions. Returns
/// (screening id, seat ids in row-major order).
pub async fn screening(
    db: &TestDb,
    rows: i32,
    per_row: i32,
    starts_in: Duration,
) -> (String, Vec<String>) {
    let c = db.psql().await;
    let row = c
        .query_one(
            "WITH ci AS (SELECT admin.create_cinema('Test Cinema', 'Testville', '1 Test Street', 'Europe/Berlin') AS id),
                  h AS (SELECT admin.create_hall((SELECT id FROM ci), 'Hall ' || (random() * 1e6)::int, $1, $2) AS id),
                  f AS (SELECT admin.create_film('Test Film', 120, '12') AS id)
             SELECT admin.create_screening((SELECT id FROM h), (SELECT id FROM f),
                                           now() + make_interval(secs => $3), 1250, 'EUR')::text",
            &[&rows, &per_row, &(starts_in.as_secs_f64())],
        )
        .await
        .expect("create screening");
    let id: String = row.get(0);
    let seats = c
        .query(
            "SELECT s.id::text FROM seats s JOIN screenings sc ON sc.hall_id = s.hall_id
              WHERE sc.id = $1::bigint ORDER BY s.y, s.x, s.id",
            &[&id.parse::<i64>().expect("id")],
        )
        .await
        .expect("seats")
        .iter()
        .map(|r| r.get(0))
        .collect();
    (id, seats)
}
