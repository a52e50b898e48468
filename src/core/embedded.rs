//! The embedded PostgreSQL: with no `DATABASE_URL`, Marquee runs its own
//! cluster from the installed server binaries, in a data directory it keeps
//! across restarts. The test harness uses the same code for its throw-away
//! clusters.
//!
//! It admits only Marquee (issue 12): it listens only on a unix socket (no
//! TCP listener unless `settings` asks for one) in a directory of mode 0700
//! owned by the cluster's OS user, the socket itself is 0700, and every role
//! logs in with a SCRAM password. The passwords are generated on first use
//! and kept, mode 0600, in a pgpass file beside the data directory
//! ([`EmbeddedPostgres::passfile`]), so the operator's `psql` finds them
//! through `passfile=`. A data directory of the old trust setup is upgraded
//! at start: the superuser gets a password, `pg_hba.conf` is rewritten, the
//! data stays. It runs as the `postgres` system user when we are root
//! (PostgreSQL refuses root), refuses a data directory that a live
//! PostgreSQL already uses, and dies with us: the child gets SIGINT (fast
//! shutdown) if we die first.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
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
    /// Extra `-c name=value` settings (`listen_addresses` here opens TCP,
    /// still with SCRAM passwords).
    pub settings: Vec<(String, String)>,
    /// Throw-away test clusters only: every role logs in over the (still
    /// 0700) socket without a password, so a harness can act as any role.
    pub trust_local: bool,
}

/// A running cluster; stopped (fast shutdown) on [`EmbeddedPostgres::stop`] or drop.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    child: Option<Child>,
    socket_dir: PathBuf,
    bin_dir: PathBuf,
    /// The pgpass file with every role's password; `None` for trust clusters.
    passfile: Option<PathBuf>,
}

const PORT: u16 = 5432;

/// The superuser `initdb` creates.
const SUPERUSER: &str = "postgres";

/// `pg_hba.conf` of a password cluster: SCRAM on the socket, and on loopback
/// TCP should an operator open a TCP listener.
const HBA_SCRAM: &str =
    "# Written by Marquee (src/core/embedded.rs) at every start: every role logs in with a\n\
# SCRAM password; the passwords are in the pgpass file beside this data directory.\n\
local all all scram-sha-256\n\
host all all 127.0.0.1/32 scram-sha-256\n\
host all all ::1/128 scram-sha-256\n";

/// `pg_hba.conf` of a throw-away test cluster.
const HBA_TRUST: &str = "# Written by Marquee (src/core/embedded.rs): a throw-away test cluster.\n\
local all all trust\n";

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
        refuse_if_in_use(&opts.data_dir)?;
        private_dir(&opts.socket_dir, owner)?;
        let passfile = (!opts.trust_local).then(|| passfile_for(&opts.data_dir));
        let hba = if opts.trust_local {
            HBA_TRUST
        } else {
            HBA_SCRAM
        };
        if !opts.data_dir.join("PG_VERSION").exists() {
            std::fs::create_dir_all(&opts.data_dir)?;
            if let Some((uid, gid)) = owner {
                chown(&opts.data_dir, uid, gid)?;
            }
            let mut initdb = Command::new(bin_dir.join("initdb"));
            initdb
                .arg("-D")
                .arg(&opts.data_dir)
                .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if opts.fsync_off {
                initdb.arg("-N");
            }
            // initdb reads the superuser's password from a file the cluster's
            // OS user can open; it lives only while initdb runs.
            let pwfile = match &passfile {
                None => {
                    initdb.arg("--auth=trust");
                    None
                }
                Some(pf) => {
                    let pw = password(pf, SUPERUSER)?;
                    let path = opts.data_dir.with_extension("pwfile");
                    let _ = std::fs::remove_file(&path);
                    write_private(&path, &pw, owner)?;
                    initdb
                        .arg("--auth=scram-sha-256")
                        .arg(format!("--pwfile={}", path.display()));
                    Some(path)
                }
            };
            as_owner(&mut initdb, owner);
            let out = initdb.output();
            if let Some(path) = pwfile {
                let _ = std::fs::remove_file(path);
            }
            let out = out.map_err(|e| CoreError::Embedded(format!("cannot run initdb: {e}")))?;
            if !out.status.success() {
                return Err(CoreError::Embedded(format!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            write_hba(&opts.data_dir, hba, owner)?;
        }
        // A cluster of the old trust setup (or a hand-edited one) keeps its
        // pg_hba.conf for this one start, until the superuser has a password.
        let upgrade = std::fs::read_to_string(opts.data_dir.join("pg_hba.conf"))
            .map_or(true, |current| current != hba);
        if upgrade && opts.trust_local {
            write_hba(&opts.data_dir, hba, owner)?;
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
            .arg("unix_socket_permissions=0700")
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
            passfile,
        };
        pg.wait_ready(&opts.data_dir, &log_path)?;
        if upgrade && !opts.trust_local {
            pg.upgrade_to_passwords(&opts.data_dir, owner)?;
        }
        Ok(pg)
    }

    /// Gives the superuser its password (logging in the way the old
    /// `pg_hba.conf` allows, which was trust), then writes the SCRAM
    /// `pg_hba.conf` and reloads it. Nothing else changes: roles, databases
    /// and data stay as they were. Only our own OS user reaches the socket
    /// meanwhile (0700).
    fn upgrade_to_passwords(
        &self,
        data_dir: &Path,
        owner: Option<(u32, u32)>,
    ) -> Result<(), CoreError> {
        let pf = self
            .passfile
            .as_deref()
            .ok_or_else(|| CoreError::Embedded("a trust cluster has no passwords to set".into()))?;
        let verifier = scram_verifier(&password(pf, SUPERUSER)?);
        // Trust ignores the password offered; a cluster already on SCRAM
        // (a hand-edited pg_hba.conf) takes the kept one.
        run_sql(
            &self.conn_string("postgres"),
            &format!("ALTER ROLE {SUPERUSER} WITH PASSWORD '{verifier}'"),
        )
        .map_err(|e| {
            CoreError::Embedded(format!(
                "cannot log in as {SUPERUSER} to give it a password ({e}): {} must allow it \
                 (trust), or {} must hold its password as a line `*:*:*:{SUPERUSER}:<password>`",
                data_dir.join("pg_hba.conf").display(),
                pf.display()
            ))
        })?;
        write_hba(data_dir, HBA_SCRAM, owner)?;
        run_sql(&self.conn_string("postgres"), "SELECT pg_reload_conf()")
            .map_err(|e| CoreError::Embedded(format!("reloading pg_hba.conf: {e}")))?;
        tracing::info!(
            passfile = %pf.display(),
            "embedded PostgreSQL upgraded to password authentication"
        );
        Ok(())
    }

    /// The directory holding the server binaries in use.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// A libpq-style connection string for `dbname` as the superuser, with
    /// its password (never print it: [`EmbeddedPostgres::psql_command`] is
    /// the printable form).
    pub fn conn_string(&self, dbname: &str) -> String {
        let pw = self
            .passfile
            .as_deref()
            .and_then(|pf| password(pf, SUPERUSER).ok());
        self.conn_string_with(dbname, pw.as_deref())
    }

    fn conn_string_with(&self, dbname: &str, password: Option<&str>) -> String {
        let mut s = format!(
            "host={} port={PORT} user={SUPERUSER} dbname={dbname}",
            self.socket_dir.display()
        );
        if let Some(pw) = password {
            s.push_str(&format!(" password={pw}"));
        }
        s
    }

    /// The command an operator runs to reach `dbname` as the superuser:
    /// libpq reads the password from the pgpass file (readable only by the
    /// user who started Marquee, and root).
    pub fn psql_command(&self, dbname: &str) -> String {
        let mut s = self.conn_string_with(dbname, None);
        if let Some(pf) = &self.passfile {
            s.push_str(&format!(" passfile={}", pf.display()));
        }
        format!("psql \"{s}\"")
    }

    /// A URL (`DATABASE_URL` form) for `dbname` as the superuser, with its password.
    pub fn url(&self, dbname: &str) -> Result<String, CoreError> {
        self.url_as(SUPERUSER, dbname)
    }

    /// A URL for `dbname` as `user`, with `user`'s password (generated and
    /// kept on first use; the role itself gets it through
    /// [`EmbeddedPostgres::password_verifier`]).
    pub fn url_as(&self, user: &str, dbname: &str) -> Result<String, CoreError> {
        let enc =
            |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
        let host = enc(&self.socket_dir.display().to_string());
        let login = match &self.passfile {
            Some(pf) => format!("{}:{}", enc(user), enc(&password(pf, user)?)),
            None => enc(user),
        };
        Ok(format!("postgresql://{login}@{host}:{PORT}/{dbname}"))
    }

    /// The pgpass file holding the roles' passwords (`None`: a trust cluster).
    pub fn passfile(&self) -> Option<&Path> {
        self.passfile.as_deref()
    }

    /// The SCRAM verifier of `role`'s kept password, for `ALTER ROLE ...
    /// PASSWORD '<verifier>'` (the password itself never reaches the
    /// server). `None` for a trust cluster.
    pub fn password_verifier(&self, role: &str) -> Result<Option<String>, CoreError> {
        match &self.passfile {
            Some(pf) => Ok(Some(scram_verifier(&password(pf, role)?))),
            None => Ok(None),
        }
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

    /// The postmaster writes its pid as the first line of `postmaster.pid`
    /// and its status as the 8th; "ready" from our own child means it
    /// accepts connections (a file of another postmaster does not count).
    fn accepts(&self, data_dir: &Path) -> bool {
        let Some(ours) = self.child.as_ref().map(Child::id) else {
            return false;
        };
        std::fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .is_some_and(|s| {
                let mut lines = s.lines();
                lines.next().and_then(|l| l.trim().parse::<u32>().ok()) == Some(ours)
                    && lines.nth(6).is_some_and(|l| l.trim() == "ready")
            })
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
    lookup_user("postgres")
}

/// uid and gid of a user, by the reentrant `getpwnam_r` (tests start
/// clusters from several threads at once).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    loop {
        // SAFETY: passwd is plain old data; zeroed is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call, and buf.len() is the
        // size of buf; the strings it fills in point into buf, which we do
        // not read.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        return Some((pwd.pw_uid, pwd.pw_gid));
    }
}

/// Refuses a data directory whose `postmaster.pid` names a live PostgreSQL
/// (another `marquee serve`, or a cluster started by hand), saying which
/// process uses it. A stale file (a crash) is left to PostgreSQL.
fn refuse_if_in_use(data_dir: &Path) -> Result<(), CoreError> {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return Ok(());
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
    else {
        return Ok(());
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(proc_dir.join("comm")).unwrap_or_default();
    // A recycled pid of an unrelated program is not a PostgreSQL.
    if !(comm.trim() == "postgres" || comm.trim() == "postmaster") {
        return Ok(());
    }
    let parent = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|stat| {
            // The fields after the command name, which may itself hold ") ".
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().nth(1)?.parse::<u32>().ok()
        })
        .filter(|ppid| *ppid > 1)
        .map(|ppid| {
            let name = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
            format!(", started by {} process {ppid}", name.trim())
        })
        .unwrap_or_default();
    Err(CoreError::Embedded(format!(
        "{} is already in use by PostgreSQL process {pid}{parent}; stop that one first, \
         or give this one another MARQUEE_DATA_DIR",
        data_dir.display()
    )))
}

/// Creates (or takes over) a directory only the cluster's OS user may
/// enter: mode 0700, owned by it. A symlink or a directory someone else
/// planted (the socket dir may live in /tmp) is refused.
fn private_dir(dir: &Path, owner: Option<(u32, u32)>) -> Result<(), CoreError> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => std::fs::create_dir_all(dir)?,
    }
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let expected = owner.map_or(me, |(uid, _)| uid);
    if !meta.is_dir() || (meta.uid() != expected && meta.uid() != me) {
        return Err(CoreError::Embedded(format!(
            "{} is not a directory of ours (a symlink, or owned by uid {}): remove it",
            dir.display(),
            meta.uid()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = owner {
        chown(dir, uid, gid)?;
    }
    Ok(())
}

/// Where the passwords of the cluster in `data_dir` are kept: `pgpass`
/// beside it (in Marquee's data dir, next to `jwt_secret`).
fn passfile_for(data_dir: &Path) -> PathBuf {
    data_dir.with_file_name("pgpass")
}

/// `role`'s password from the pgpass file, generated and appended (the file
/// created 0600) when missing. Lines are `*:*:*:<role>:<password>`.
fn password(passfile: &Path, role: &str) -> Result<String, CoreError> {
    let text = match std::fs::read_to_string(passfile) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(CoreError::Embedded(format!(
                "cannot read {}: {e}",
                passfile.display()
            )))
        }
    };
    let prefix = format!("*:*:*:{role}:");
    if let Some(pw) = text.lines().find_map(|l| l.strip_prefix(&prefix)) {
        return Ok(pw.trim().to_owned());
    }
    let mut bytes = [0u8; 24];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    let pw = hex::encode(bytes);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(passfile)
        .map_err(|e| CoreError::Embedded(format!("cannot create {}: {e}", passfile.display())))?;
    // libpq ignores a pgpass file that others may read.
    std::fs::set_permissions(passfile, std::fs::Permissions::from_mode(0o600))?;
    f.write_all(format!("{prefix}{pw}\n").as_bytes())?;
    drop(f);
    // Should two callers have raced, the first line written wins for both.
    let text = std::fs::read_to_string(passfile)?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(pw, |p| p.trim().to_owned()))
}

/// A SCRAM-SHA-256 verifier, the form `ALTER ROLE ... PASSWORD` stores.
fn scram_verifier(password: &str) -> String {
    postgres_protocol::password::scram_sha_256(password.as_bytes())
}

/// Writes a file only `owner` (or we) may read.
fn write_private(path: &Path, content: &str, owner: Option<(u32, u32)>) -> Result<(), CoreError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    if let Some((uid, gid)) = owner {
        chown(path, uid, gid)?;
    }
    Ok(())
}

fn write_hba(data_dir: &Path, content: &str, owner: Option<(u32, u32)>) -> Result<(), CoreError> {
    let tmp = data_dir.join("pg_hba.conf.marquee");
    let _ = std::fs::remove_file(&tmp);
    write_private(&tmp, content, owner)?;
    std::fs::rename(&tmp, data_dir.join("pg_hba.conf"))?;
    Ok(())
}

/// Runs one statement on a connection of its own, from a thread of its own
/// (the caller may be inside a runtime or not).
fn run_sql(conn: &str, sql: &str) -> Result<(), String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                let driver = tokio::spawn(connection);
                let r = client.batch_execute(sql).await.map_err(|e| e.to_string());
                drop(client);
                let _ = driver.await;
                r
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the SQL thread panicked".into()))
    })
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
