//! The shared database side of the tests: one throw-away PostgreSQL cluster
//! per test process (or the server of `TEST_DATABASE_URL`), a template
//! database migrated once, and a fresh clone of it for every test (~30 ms)
//! that is dropped again when the test's [`TestDb`] goes away. What earlier
//! test processes left behind (data directories, logs, databases) is
//! removed by [`clean_stale`] when the next one starts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use marquee::core::db::Db;
use marquee::core::embedded::{EmbeddedOptions, EmbeddedPostgres};

use super::prereq;

struct Cluster {
    /// libpq connection string of the maintenance database (`postgres`).
    admin: String,
    /// Builds a connection string for a database name.
    base: String,
    template: String,
    bin_dir: Option<PathBuf>,
    /// Only for embedded clusters: the parked thread that owns the server.
    _keep: Option<std::thread::JoinHandle<()>>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn conn_string(base: &str, db: &str) -> String {
    format!("{base} dbname={db}")
}

/// `TEST_DATABASE_URL` when set and not empty.
fn external_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// host/port/user/password of a URL as libpq key/value pairs: the
/// databases are ours.
fn base_of(url: &str) -> String {
    let cfg: tokio_postgres::Config = url.parse().expect("TEST_DATABASE_URL parses");
    let mut parts = Vec::new();
    for h in cfg.get_hosts() {
        match h {
            tokio_postgres::config::Host::Tcp(s) => parts.push(format!("host={s}")),
            tokio_postgres::config::Host::Unix(p) => parts.push(format!("host={}", p.display())),
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
    parts.join(" ")
}

/// Options of a throw-away cluster in `root` (no fsync, every local role
/// trusted) with `settings` on top.
pub fn throwaway_options(root: &Path, settings: &[(&str, &str)]) -> EmbeddedOptions {
    EmbeddedOptions {
        data_dir: root.join("pg"),
        socket_dir: root.join("run"),
        fsync_off: true,
        trust_local: true,
        settings: settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// A fresh directory `<tmp>/<name>` (an older one of that name removed).
pub fn fresh_dir(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("temp dir");
    root
}

/// Starts the shared embedded cluster on a thread that lives as long as the
/// process (the cluster dies with the thread that started it); returns its
/// base connection string and binary directory.
fn start_embedded(pid: u32) -> (String, PathBuf, std::thread::JoinHandle<()>) {
    prereq::postgres_server();
    let root = fresh_dir(&format!("marquee-test-{pid}"));
    let opts = throwaway_options(
        &root,
        &[
            ("max_connections", "300"),
            ("synchronous_commit", "off"),
            ("shared_buffers", "64MB"),
        ],
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let keep = std::thread::spawn(move || match EmbeddedPostgres::start(&opts) {
        Ok(pg) => {
            let _ = tx.send(Ok((pg.conn_string("postgres"), pg.bin_dir().to_path_buf())));
            // Never dropped: the process exit and the parent-death signal stop it.
            let _pg = pg;
            loop {
                std::thread::park();
            }
        }
        Err(e) => {
            let _ = tx.send(Err(e.to_string()));
        }
    });
    let (admin, bin) = rx
        .recv()
        .expect("cluster thread")
        .unwrap_or_else(|e| panic!("cannot start the test cluster: {e}"));
    let base = admin.trim_end_matches(" dbname=postgres").to_owned();
    (base, bin, keep)
}

/// Runs `f` to completion on a current-thread runtime of a thread of its
/// own: the callers run inside a test's runtime, or in `Drop`.
pub fn on_own_runtime<F, T>(f: F) -> T
where
    F: FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("helper thread")
}

/// A connection whose driver runs on the current runtime.
pub async fn connect(conn: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs SQL on the `postgres` database of a cluster.
pub async fn admin_execute(admin: &str, sql: &str) {
    connect(admin)
        .await
        .expect("connect to the maintenance database")
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn make_template(admin: String, base: String, template: String) {
    drop_stale_databases(&admin).await;
    admin_execute(&admin, &format!("DROP DATABASE IF EXISTS {template}")).await;
    admin_execute(&admin, &format!("CREATE DATABASE {template}")).await;
    let url = conn_string(&base, &template);
    let db = Db::new(&url, 1).expect("pool");
    db.migrate(true)
        .await
        .expect("migrations apply to the template");
    // The version 1 tests hold seats anywhere in small halls; the no-orphan
    // rule (version 1.1, on by default) would refuse many of those holds.
    // Tests of the rule switch it on themselves (box_office).
    connect(&url)
        .await
        .expect("connect to the template")
        .batch_execute("SELECT admin.set_orphan_rule(false)")
        .await
        .expect("orphan rule off in the template");
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let pid = std::process::id();
        clean_stale();
        let (base, bin_dir, keep) = match external_url() {
            Some(url) => (base_of(&url), None, None),
            None => {
                let (base, bin, keep) = start_embedded(pid);
                (base, Some(bin), Some(keep))
            }
        };
        let template = format!("marquee_tpl_{pid}");
        let admin = conn_string(&base, "postgres");
        let args = (admin.clone(), base.clone(), template.clone());
        on_own_runtime(move || Box::pin(make_template(args.0, args.1, args.2)));
        Cluster {
            admin,
            base,
            template,
            bin_dir,
            _keep: keep,
        }
    })
}

/// The pid in a name `<prefix><pid>[_-]…` when that process is gone.
fn dead_pid(name: &str, prefix: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let pid = rest.split(['-', '_', '.']).next().unwrap_or("");
    pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the data directories and logs of test processes that are gone
/// (a killed run leaves them; a finished run's cluster directory too, as
/// its postmaster outlives `Drop`).
pub fn clean_stale() {
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if [
            "marquee-test-",
            "marquee-private-",
            "marquee-child-",
            "marquee-roles-",
            "marquee-nginx-",
            "marquee-browser-",
            "marquee-logs-",
        ]
        .iter()
        .any(|p| dead_pid(&name, p))
        {
            let path = e.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

/// Drops the test databases and templates of processes that are gone (on
/// `TEST_DATABASE_URL`: a killed run skips `Drop`, and the template lives
/// until the process ends).
async fn drop_stale_databases(admin: &str) {
    let c = connect(admin).await.expect("connect to the test cluster");
    let rows = c
        .query(
            "SELECT datname::text FROM pg_database
              WHERE datname ~ '^(t|marquee_tpl)_[0-9]+'",
            &[],
        )
        .await
        .expect("list databases");
    for r in rows {
        let name: String = r.get(0);
        if dead_pid(&name, "t_") || dead_pid(&name, "marquee_tpl_") {
            let _ = c
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
}

/// A fresh database cloned from the migrated template (or an empty one of a
/// [`super::PrivateCluster`]). Dropping it drops the database, whatever is
/// still connected to it.
pub struct TestDb {
    pub name: String,
    /// As the superuser.
    pub url: String,
    /// The maintenance database of its cluster, for the `DROP`.
    admin: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let c = cluster();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{}_{n}", std::process::id());
        admin_execute(
            &c.admin,
            &format!(
                "CREATE DATABASE {name} TEMPLATE {} STRATEGY FILE_COPY",
                c.template
            ),
        )
        .await;
        TestDb {
            url: conn_string(&c.base, &name),
            name,
            admin: c.admin.clone(),
        }
    }

    /// An empty database `name` on the cluster of `admin` (its
    /// maintenance database's connection string).
    pub async fn create_empty(admin: &str, name: &str) -> TestDb {
        admin_execute(admin, &format!("CREATE DATABASE {name}")).await;
        TestDb {
            name: name.to_owned(),
            url: admin.replace("dbname=postgres", &format!("dbname={name}")),
            admin: admin.to_owned(),
        }
    }

    /// The URL a test server's pool and LISTEN connection use: this database
    /// as `marquee_app`, the role production servers log in as (the
    /// harness's clusters trust every role on their socket). With
    /// `TEST_DATABASE_URL`, `url` itself (`marquee_app` has no password
    /// there). Migrations keep using `url` (the superuser).
    pub fn app_url(&self) -> String {
        if external_url().is_some() {
            return self.url.clone();
        }
        self.url
            .replacen(" user=postgres ", " user=marquee_app ", 1)
    }

    /// A direct connection as the superuser, like a DBA's psql.
    pub async fn psql(&self) -> tokio_postgres::Client {
        connect(&self.url).await.expect("connect test db")
    }

    /// A DBA blocks seats of a screening (`admin.block_seats`).
    pub async fn block_seats<S: AsRef<str>>(&self, screening: &str, seats: &[S]) {
        let ids: Vec<i64> = seats
            .iter()
            .map(|s| s.as_ref().parse().expect("a seat id"))
            .collect();
        self.psql()
            .await
            .execute(
                "SELECT admin.block_seats($1::text::bigint, $2)",
                &[&screening, &ids],
            )
            .await
            .expect("block seats");
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

impl Drop for TestDb {
    fn drop(&mut self) {
        // A cluster that is already gone (a stopped private one) has nothing
        // left to drop: errors are ignored, and the connect is bounded.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = format!("{} connect_timeout=5", self.admin);
        on_own_runtime(move || {
            Box::pin(async move {
                if let Ok(c) = connect(&admin).await {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), c.batch_execute(&sql)).await;
                }
            })
        });
    }
}

/// The first column of every row `sql` returns (a fixture's ids).
pub async fn column<T>(
    c: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    c.query(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The libpq connection string of the shared cluster's maintenance database.
pub fn admin_conn() -> String {
    cluster().admin.clone()
}

/// The directory of the PostgreSQL binaries, when the harness started them.
pub fn bin_dir() -> Option<PathBuf> {
    cluster().bin_dir.clone()
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
