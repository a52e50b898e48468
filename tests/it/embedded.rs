//! The real `marquee` binary in embedded mode (no `DATABASE_URL`): it
//! initialises and starts its own PostgreSQL in `MARQUEE_DATA_DIR`, loads the
//! demo data, serves, stops cleanly on SIGTERM (taking PostgreSQL with it),
//! and keeps users and its generated JWT secret across restarts; `migrate`
//! and `seed-demo` work on the same data dir; bad configuration fails at
//! start with one line naming the variable.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// First start: initdb, migrations and demo data.
const FIRST_START: Duration = Duration::from_secs(90);
const START: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(20);

/// Variables of the developer's shell that would change what is tested.
const CLEARED: &[&str] = &[
    "DATABASE_URL",
    "MIGRATION_DATABASE_URL",
    "JWT_SECRET",
    "PORT",
    "WS_PORT",
    "BIND_ADDR",
    "ALLOWED_ORIGINS",
    "TOKEN_TTL",
    "TOTP_KEY",
    "TOTP_ISSUER",
    "DB_POOL_SIZE",
    "COOKIE_SECURE",
    "MARQUEE_DATA_DIR",
];

/// A fresh data dir under /tmp (the `postgres` user must reach it), removed
/// on drop once no PostgreSQL runs in it.
struct DataDir(PathBuf);

impl DataDir {
    fn new(tag: &str) -> DataDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = PathBuf::from(format!(
            "/tmp/marquee-emb-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("data dir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        DataDir(p)
    }

    fn pg(&self) -> PathBuf {
        self.0.join("pg")
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while postgres_running(&self.pg()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True while a process runs with this PostgreSQL data dir on its command line.
fn postgres_running(pg_dir: &Path) -> bool {
    let needle = pg_dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|arg| arg == needle.as_bytes()))
                .unwrap_or(false)
        })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn marquee(dir: &Path, args: &[&str]) -> Command {
    crate::harness::prereq::postgres_server();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marquee"));
    cmd.args(args)
        // No `.env` of the repository is found from here.
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in CLEARED {
        cmd.env_remove(v);
    }
    cmd.env("MARQUEE_DATA_DIR", dir);
    cmd
}

/// A running `marquee serve`; killed on drop if still running.
struct Running {
    child: Child,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    http_port: u16,
    ws_port: u16,
}

fn drain(r: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let out = Arc::new(Mutex::new(String::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            o.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    out
}

fn serve(dir: &DataDir, wait: Duration) -> Running {
    let (http_port, ws_port) = (free_port(), free_port());
    let mut child = marquee(&dir.0, &["serve"])
        .env("PORT", http_port.to_string())
        .env("WS_PORT", ws_port.to_string())
        .spawn()
        .expect("spawn marquee");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Keep draining so the server never blocks on a full pipe.
                continue;
            }
        }
    });
    let stderr = drain(child.stderr.take().unwrap());
    let mut running = Running {
        child,
        stdout: rx,
        stderr,
        http_port,
        ws_port,
    };
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match running
            .stdout
            .recv_timeout(left.min(Duration::from_millis(200)))
        {
            Ok(line) if line.contains("listening") => {
                assert!(line.contains(&ws_port.to_string()), "{line}");
                return running;
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = running.child.wait().expect("wait");
                panic!(
                    "marquee serve exited ({status}) before listening:\n{}",
                    running.stderr.lock().unwrap()
                );
            }
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!(
                "marquee serve exited ({status}) before listening:\n{}",
                running.stderr.lock().unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no `listening` line within {wait:?}:\n{}",
            running.stderr.lock().unwrap()
        );
    }
}

impl Running {
    /// SIGTERM, then the exit status within [`STOP`].
    fn stop(mut self) -> (ExitStatus, Duration) {
        let t = Instant::now();
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, t.elapsed());
            }
            assert!(
                t.elapsed() < STOP,
                "marquee did not exit within {STOP:?} of SIGTERM:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The libpq connection string the server printed for DBAs, as printed
    /// (with `passfile=`, which libpq reads and this test's driver does not).
    fn dba_line(&self) -> String {
        let err = self.stderr.lock().unwrap();
        let start = err.find("psql \"").expect("the DBA line") + 6;
        let end = start + err[start..].find('"').expect("closing quote");
        err[start..end].to_owned()
    }

    /// The DBA's connection string with the password from the pgpass file.
    fn dba_conn(&self) -> String {
        with_password(&self.dba_line())
    }

    fn http_addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.http_port).into()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `passfile=<path>` replaced by the superuser's password read from it.
fn with_password(conninfo: &str) -> String {
    let (head, passfile) = conninfo
        .rsplit_once(" passfile=")
        .unwrap_or_else(|| panic!("the DBA line names the password file: {conninfo}"));
    let text = std::fs::read_to_string(passfile).expect("the password file");
    let pw = text
        .lines()
        .find_map(|l| l.strip_prefix("*:*:*:postgres:"))
        .expect("the superuser's password");
    format!("{head} password={pw}")
}

/// Runs a command to its end (at most `limit`): (status, stdout, stderr).
fn run(mut cmd: Command, limit: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd.spawn().expect("spawn marquee");
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {limit:?}:\n{}",
                err.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes close with the process; give the readers a moment to finish.
    let deadline = Instant::now() + Duration::from_secs(2);
    while Arc::strong_count(&out) + Arc::strong_count(&err) > 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = out.lock().unwrap().clone();
    let err = err.lock().unwrap().clone();
    (status, out, err)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal envelope client for a server in another process.
struct Ws {
    ws: Socket,
    n: u64,
    session: Value,
}

impl Ws {
    async fn connect(port: u16, bearer: Option<&str>) -> Ws {
        let mut req = format!("ws://127.0.0.1:{port}/")
            .into_client_request()
            .expect("request");
        if let Some(t) = bearer {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("connect");
        let mut c = Ws {
            ws,
            n: 0,
            session: Value::Null,
        };
        c.session = c.next().await;
        assert_eq!(c.session["type"], "session", "{}", c.session);
        c
    }

    async fn next(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(crate::harness::WAIT, self.ws.next())
                .await
                .expect("timed out")
                .expect("open")
                .expect("frame");
            if let Message::Text(t) = m {
                return serde_json::from_str(&t).expect("json");
            }
        }
    }

    async fn ok(&mut self, kind: &str, data: Value) -> Value {
        self.n += 1;
        let eid = format!("e{}", self.n);
        self.ws
            .send(Message::text(
                json!({"type": kind, "data": data, "eid": eid}).to_string(),
            ))
            .await
            .expect("send");
        loop {
            let f = self.next().await;
            if f["eid"] == eid.as_str() {
                assert!(f.get("error").is_none(), "{kind}: {f}");
                return f["data"].clone();
            }
        }
    }
}

/// Registers through TOTP like an authenticator app; returns the token.
async fn register(c: &mut Ws, username: &str) -> String {
    let start = c.ok("auth_start", json!({"username": username})).await;
    assert_eq!(start["status"], "candidate", "{start}");
    let code = crate::harness::totp_code(start["secret"].as_str().unwrap(), 0);
    let v = c
        .ok("auth_verify", json!({"username": username, "code": code}))
        .await;
    v["token"].as_str().expect("token").to_owned()
}

fn cinema_ids(v: &Value) -> Vec<String> {
    v["cinemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn embedded_start_stop_restart_keeps_the_data() {
    let dir = DataDir::new("main");

    // First start: a new cluster with the demo data.
    let server = serve(&dir, FIRST_START);
    assert!(
        dir.pg().join("PG_VERSION").exists(),
        "initdb ran in the data dir"
    );
    let (status, _, body) = block_on(crate::harness::http(
        server.http_addr(),
        "GET",
        "/ready",
        &[],
        "",
    ));
    assert_eq!(status, 200, "{body}");
    let (cinemas, token) = block_on(async {
        let mut c = Ws::connect(server.ws_port, None).await;
        assert_eq!(c.session["data"]["user"], Value::Null);
        assert_eq!(c.session["data"]["protocol"], 1);
        assert!(!c.session["data"]["server"].as_str().unwrap().is_empty());

        let cinemas = c.ok("get_cinemas", json!({})).await;
        let list = cinemas["cinemas"].as_array().unwrap();
        assert!(list.len() >= 2, "demo cinemas: {cinemas}");
        let cities: std::collections::HashSet<&str> =
            list.iter().map(|c| c["city"].as_str().unwrap()).collect();
        let zones: std::collections::HashSet<&str> = list
            .iter()
            .map(|c| c["timezone"].as_str().unwrap())
            .collect();
        assert!(cities.len() >= 2 && zones.len() >= 2, "{cinemas}");

        let screenings = c.ok("get_screenings", json!({})).await;
        let list = screenings["screenings"].as_array().unwrap();
        assert!(!list.is_empty(), "demo screenings in the next 7 days");
        // Two or more halls per cinema, six or more films.
        for cinema in cinema_ids(&cinemas) {
            let halls: std::collections::HashSet<&str> = list
                .iter()
                .filter(|s| s["cinema_id"] == cinema.as_str())
                .map(|s| s["hall"]["id"].as_str().unwrap())
                .collect();
            assert!(halls.len() >= 2, "cinema {cinema} has halls {halls:?}");
        }
        let films: std::collections::HashSet<&str> = list
            .iter()
            .map(|s| s["film"]["id"].as_str().unwrap())
            .collect();
        assert!(films.len() >= 6, "{films:?}");
        // A demo hall: 100 to 300 seats, vip and wheelchair seats, one blocked.
        let hall = c
            .ok("get_hall", json!({"screening_id": list[0]["id"]}))
            .await;
        let seats = hall["seats"].as_array().unwrap();
        assert!((100..=300).contains(&seats.len()), "{} seats", seats.len());
        let count = |k: &str, v: &str| seats.iter().filter(|s| s[k] == v).count();
        assert!(count("kind", "vip") > 0 && count("kind", "wheelchair") > 0);
        assert_eq!(count("status", "blocked"), 1);

        // A marker that must survive the restart.
        let token = register(&mut c, "embedded_user").await;
        (cinemas, token)
    });
    let secret = std::fs::read_to_string(dir.0.join("jwt_secret")).expect("generated jwt_secret");
    assert!(secret.trim().len() >= 32);

    // SIGTERM: exit 0, PostgreSQL stopped with it.
    let (status, took) = server.stop();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < STOP);
    assert!(
        !postgres_running(&dir.pg()),
        "the embedded PostgreSQL is gone"
    );
    assert!(
        !dir.pg().join("postmaster.pid").exists(),
        "PostgreSQL shut down cleanly"
    );

    // migrate and seed-demo against the same data dir; seeding twice adds nothing.
    let (status, out, err) = run(marquee(&dir.0, &["migrate"]), START);
    assert!(status.success(), "migrate: {status}\n{out}\n{err}");
    for _ in 0..2 {
        let (status, out, err) = run(marquee(&dir.0, &["seed-demo"]), START);
        assert!(status.success(), "seed-demo: {status}\n{out}\n{err}");
    }
    assert!(!postgres_running(&dir.pg()));

    // Second start: the same data, the same secret.
    let server = serve(&dir, START);
    block_on(async {
        let mut c = Ws::connect(server.ws_port, None).await;
        let again = c.ok("get_cinemas", json!({})).await;
        assert_eq!(
            cinema_ids(&again),
            cinema_ids(&cinemas),
            "seed-demo added no cinema"
        );
        let start = c
            .ok("auth_start", json!({"username": "embedded_user"}))
            .await;
        assert_eq!(start, json!({"status": "user"}), "the user survived");
        // The token of the first run is still valid: same secret, same session.
        let c = Ws::connect(server.ws_port, Some(&token)).await;
        assert_eq!(
            c.session["data"]["user"]["username"], "embedded_user",
            "{}",
            c.session
        );
    });
    assert_eq!(
        std::fs::read_to_string(dir.0.join("jwt_secret")).unwrap(),
        secret,
        "jwt_secret reused"
    );

    // A port in use fails at start with one line naming its variable. The
    // running server's database is used so no second cluster starts.
    let db = server.dba_conn();
    for (var, port_env, ws_env) in [
        ("PORT", server.http_port, free_port()),
        ("WS_PORT", free_port(), server.ws_port),
    ] {
        let mut cmd = marquee(&dir.0, &["serve"]);
        cmd.env("DATABASE_URL", &db)
            .env("JWT_SECRET", crate::harness::JWT_SECRET)
            .env("PORT", port_env.to_string())
            .env("WS_PORT", ws_env.to_string());
        let (status, out, err) = run(cmd, START);
        assert!(!status.success(), "{var} in use must fail: {out}");
        assert_one_line_naming(&err, var);
    }

    let (status, _) = server.stop();
    assert!(status.success(), "second stop: {status}");
    assert!(!postgres_running(&dir.pg()));
}

/// stderr is one line, and it names `var` (and no other port variable).
#[track_caller]
fn assert_one_line_naming(stderr: &str, var: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let words: Vec<&str> = lines[0]
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    assert!(words.contains(&var), "names {var}: {stderr}");
}

fn bad_config(var: &str, value: &str) {
    let dir = DataDir::new("bad");
    let mut cmd = marquee(&dir.0, &["serve"]);
    cmd.env(var, value);
    let (status, out, err) = run(cmd, Duration::from_secs(20));
    assert!(!status.success(), "{var}={value} must fail: {out}");
    assert_one_line_naming(&err, var);
    assert!(
        !dir.pg().exists(),
        "a configuration error stops before any database work"
    );
}

#[test]
fn bad_port_names_port() {
    bad_config("PORT", "abc");
    bad_config("WS_PORT", "70000");
}

#[test]
fn short_jwt_secret_names_jwt_secret() {
    bad_config("JWT_SECRET", "short");
}

#[test]
fn bad_database_url_names_database_url() {
    bad_config("DATABASE_URL", "postgres://a:b@h:notaport/db");
}

/// Runs `psql` from the server's binaries as the OS user `nobody`.
fn psql_as_nobody(conninfo: &str) -> (ExitStatus, String) {
    let bin = marquee::core::embedded::find_bin_dir().expect("PostgreSQL binaries");
    let psql = Some(bin.join("psql"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("psql"));
    let mut cmd = Command::new(psql);
    cmd.arg(conninfo)
        .args(["-X", "-w", "-c", "SELECT 1"])
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    let out = cmd.output().expect("run psql as nobody");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// Issue 12.1: the embedded cluster admits only Marquee (another OS user
/// fails by socket and by TCP; no role logs in without its password), a
/// data dir of the old trust setup is upgraded without losing data; and
/// (issue 13.6) a second `serve` on the same data dir says which process
/// uses it and exits non-zero.
#[test]
fn embedded_cluster_admits_only_marquee() {
    // Switching to `nobody` needs root (as CI runs); elsewhere the modes
    // checked below are what keeps other users out.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("not root: the connection attempts as `nobody` are left out");
    }
    let dir = DataDir::new("sec");
    let server = serve(&dir, FIRST_START);
    let line = server.dba_line();
    let socket_dir = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("host="))
        .map(PathBuf::from)
        .expect("host= in the DBA line");
    assert_eq!(mode(&socket_dir), 0o700, "socket dir {socket_dir:?}");
    assert_eq!(mode(&socket_dir.join(".s.PGSQL.5432")), 0o700, "the socket");
    let pgpass = dir.0.join("pgpass");
    assert_eq!(mode(&pgpass), 0o600, "the password file");

    // Another OS user: no way in by the socket...
    if root {
        let (status, err) = psql_as_nobody(&format!(
            "host={} port=5432 user=postgres dbname=marquee",
            socket_dir.display()
        ));
        assert!(!status.success(), "nobody connected by the socket: {err}");
        assert!(err.contains("Permission denied"), "{err}");
        // ... nor by TCP: nothing listens.
        let (status, err) = psql_as_nobody(
            "host=127.0.0.1 port=5432 user=postgres dbname=marquee connect_timeout=5",
        );
        assert!(!status.success(), "nobody connected by TCP: {err}");
    }

    // The printed line works as printed: libpq reads the password file.
    let bin = marquee::core::embedded::find_bin_dir().expect("PostgreSQL binaries");
    let out = Command::new(bin.join("psql"))
        .arg(&line)
        .args(["-X", "-w", "-At", "-c", "SELECT current_user"])
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .output()
        .expect("run psql");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "postgres",
        "psql \"{line}\": {}",
        String::from_utf8_lossy(&out.stderr)
    );

    block_on(async {
        // Even where the socket is reachable, no role logs in without its password.
        let head = line.rsplit_once(" passfile=").expect("passfile").0;
        for user in ["postgres", "marquee_app"] {
            let conn = head.replace("user=postgres", &format!("user={user}"));
            let r = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await;
            assert!(r.is_err(), "{user} logged in without a password");
        }
        let (c, conn) = tokio_postgres::connect(&server.dba_conn(), tokio_postgres::NoTls)
            .await
            .expect("the DBA line with the kept password works");
        tokio::spawn(conn);
        let listen: String = c
            .query_one("SHOW listen_addresses", &[])
            .await
            .expect("show")
            .get(0);
        assert_eq!(listen, "", "no TCP listener");
        let mut ws = Ws::connect(server.ws_port, None).await;
        register(&mut ws, "kept_user").await;
    });

    // A second serve on the same data dir: refused, naming the process.
    let postmaster: u32 = std::fs::read_to_string(dir.pg().join("postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .expect("pid");
    let mut second = marquee(&dir.0, &["serve"]);
    second
        .env("PORT", free_port().to_string())
        .env("WS_PORT", free_port().to_string());
    let (status, out, err) = run(second, START);
    assert!(!status.success(), "a second serve must fail: {out}\n{err}");
    assert!(!err.contains("PostgreSQL ready"), "{err}");
    assert!(
        err.contains(&postmaster.to_string()) && err.contains(&server.child.id().to_string()),
        "names PostgreSQL {postmaster} and marquee {}: {err}",
        server.child.id()
    );
    let (status, _) = server.stop();
    assert!(status.success());

    // A data dir of the old setup: trust on the socket, no password file.
    std::fs::write(dir.pg().join("pg_hba.conf"), "local all all trust\n").expect("old pg_hba");
    std::fs::remove_file(&pgpass).expect("rm pgpass");
    let server = serve(&dir, START);
    let hba = std::fs::read_to_string(dir.pg().join("pg_hba.conf")).expect("pg_hba");
    assert!(
        hba.contains("local all all scram-sha-256") && !hba.contains("trust"),
        "{hba}"
    );
    assert_eq!(mode(&pgpass), 0o600, "a new password file");
    let head = server
        .dba_line()
        .rsplit_once(" passfile=")
        .expect("passfile")
        .0
        .to_owned();
    block_on(async {
        assert!(
            tokio_postgres::connect(&head, tokio_postgres::NoTls)
                .await
                .is_err(),
            "the superuser needs its password after the upgrade"
        );
        let mut ws = Ws::connect(server.ws_port, None).await;
        let start = ws.ok("auth_start", json!({"username": "kept_user"})).await;
        assert_eq!(
            start,
            json!({"status": "user"}),
            "the user survived the upgrade"
        );
    });
    assert_eq!(mode(&socket_dir), 0o700, "socket dir after the upgrade");
    if root {
        let (status, err) = psql_as_nobody(&format!(
            "host={} port=5432 user=postgres dbname=marquee",
            socket_dir.display()
        ));
        assert!(!status.success(), "{err}");
    }
    let (status, _) = server.stop();
    assert!(status.success());
}
