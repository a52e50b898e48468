//! The embedded PostgreSQL: with no `DATABASE_URL`, Marquee runs its own
//! cluster from the installed server binaries, in a data directory it keeps
//! across restarts. The test harness uses the same code for its throw-away
//! clusters.
//!
//! It listens only on a unix socket inside the data dir (no TCP port), runs
//! as the `postgres` system user when we are root (PostgreSQL refuses root),
//! and dies with us: the child gets SIGINT (fast shutdown) if we die first.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::CoreError;

/// How to run a cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The cluster's data directory (created by `initdb` when missing).
    pub data_dir: PathBuf,
    /// Where the unix socket lives.
    pub socket_dir: PathBuf,
    /// Durability off: for throw-away test clusters only.
    pub fsync_off: bool,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

/// A running cluster; stopped (fast shutdown) on [`EmbeddedPostgres::stop`] or drop.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    child: Option<Child>,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
}

const PORT: u16 = 5432;

impl EmbeddedPostgres {
    /// Initialises the data dir on first use, starts `postgres` and waits
    /// until it accepts connections.
    ///
    /// Call it from a thread that outlives the cluster (the main thread, or
    /// a parked one in tests): the parent-death signal is tied to the thread
    /// that spawned the child.
    pub fn start(opts: &EmbeddedOptions) -> Result<Self, CoreError> {
        let bin_dir = find_bin_dir()?;
        let owner = run_as();
        std::fs::create_dir_all(&opts.socket_dir)?;
        if let Some((uid, gid)) = owner {
            chown(&opts.socket_dir, uid, gid)?;
        }
        if !opts.data_dir.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&opts.data_dir)?;
            if let Some((uid, gid)) = owner {
                chown(&opts.data_dir, uid, gid)?;
            }
            let mut initdb = Command::new(bin_dir.join("initdb"));
            initdb
                .arg("-D")
                .arg(&opts.data_dir)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if opts.fsync_off {
                initdb.arg("-N");
            }
            as_owner(&mut initdb, owner);
            let out = initdb
                .output()
                .map_err(|e| CoreError::Embedded(format!("cannot run initdb: {e}")))?;
            if !out.status.success() {
                return Err(CoreError::Embedded(format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        let log_path = opts.data_dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&opts.data_dir)
            .arg("-c")
            .arg("listen_addresses=")
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                opts.socket_dir.display()
            ))
            .arg("-c")
            .arg(format!("port={PORT}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if opts.fsync_off {
            cmd.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        for (k, v) in &opts.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        as_owner(&mut cmd, owner);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| CoreError::Embedded(format!("cannot start postgres: {e}")))?;
        let mut pg = Self {
            child: Some(child),
            socket_dir: opts.socket_dir.clone(),
            bin_dir,
        };
        pg.wait_ready(&opts.data_dir, &log_path)?;
        Ok(pg)
    }

    /// The directory holding the server binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A libpq-style connection string for `dbname` as the superuser.
    pub fn conn_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname={dbname}",
            self.socket_dir.display()
        )
    }

    /// The same as a URL (`DATABASE_URL` form), for printing to DBAs.
    pub fn url(&self, dbname: &str) -> String {
        self.url_as("postgres", dbname)
    }

    /// A URL for `dbname` as `user` (the socket trusts every role: no password).
    pub fn url_as(&self, user: &str, dbname: &str) -> String {
        let host: String =
            url::form_urlencoded::byte_serialize(self.socket_dir.display().to_string().as_bytes())
                .collect();
        format!("postgresql://{user}@{host}:{PORT}/{dbname}")
    }

    fn wait_ready(&mut self, opts_data_dir: &Path, log_path: &Path) -> Result<(), CoreError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let socket = self.socket_dir.join(format!(".s.PGSQL.{PORT}"));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    let log = std::fs::read_to_string(log_path).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    return Err(CoreError::Embedded(format!(
                        "postgres exited ({status}); last log lines: {}",
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    )));
                }
            }
            if socket.exists() && self.accepts(opts_data_dir) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CoreError::Embedded(
                    "postgres did not accept connections within 60 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The postmaster writes its status as the 8th line of
    /// `postmaster.pid`; "ready" means it accepts connections.
    fn accepts(&self, data_dir: &Path) -> bool {
        std::fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().nth(7).map(|l| l.trim() == "ready"))
            .unwrap_or(false)
    }

    /// Fast shutdown (SIGINT), waiting for the process to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// The postmaster's pid, for tests that stop and restart it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds the server binaries: PATH, `pg_config --bindir`, then the highest
/// `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> Result<PathBuf, CoreError> {
    let has_server = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_server(&dir) {
                // PATH often holds symlinks (/usr/local/bin/postgres); the
                // real directory has the cluster's other tools beside it.
                let real = std::fs::canonicalize(dir.join("postgres"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .filter(|d| has_server(d))
                    .unwrap_or(dir);
                return Ok(real);
            }
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let dir = e.path().join("bin");
            has_server(&dir).then_some((v, dir))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d).ok_or_else(|| {
        CoreError::Embedded(
            "PostgreSQL server binaries (postgres, initdb) not found in PATH, `pg_config --bindir` \
             or /usr/lib/postgresql/*/bin: install the `postgresql` package \
             (Debian/Ubuntu: apt-get install postgresql), or set DATABASE_URL"
                .into(),
        )
    })
}

/// The uid/gid to run PostgreSQL as: the `postgres` user when we are root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy
    // the two integers out immediately and keep no reference.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
}

fn die_with_parent(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (prctl, getppid, kill) run in the
    // child between fork and exec. They run after the uid switch, which
    // would otherwise clear the parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT);
            if libc::getppid() == 1 {
                // Our parent died before prctl took effect.
                libc::kill(libc::getpid(), libc::SIGINT);
            }
            Ok(())
        });
    }
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), CoreError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
        CoreError::Embedded(format!("cannot hand {} to postgres: {e}", path.display()))
    })
}
