//! Least privilege, end to end (docs/sql.md, "Roles"): the server's role
//! `marquee_app` can call the api functions the server uses and nothing
//! else (no table access at all); a DBA (`marquee_admin`) blocks seats with
//! a plain `UPDATE` or `admin.block_seats` and both notify; test servers and
//! the embedded mode really connect as `marquee_app`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::*;
use futures_util::future::poll_fn;
use tokio::sync::mpsc;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client, NoTls};

const HOUR: Duration = Duration::from_secs(3600);

fn external_cluster() -> bool {
    std::env::var("TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty())
}

/// A connection acting as `role`: logged in as `marquee_app` where the
/// harness runs the cluster, else the superuser with `SET ROLE`.
async fn connect_as(db: &TestDb, role: &str) -> Client {
    let login = role == "marquee_app" && db.app_url() != db.url;
    let url = if login { db.app_url() } else { db.url.clone() };
    let (c, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e:?}"));
    tokio::spawn(conn);
    if !login {
        c.batch_execute(&format!("SET ROLE {role}"))
            .await
            .expect("SET ROLE");
    }
    let who: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("current_user")
        .get(0);
    assert_eq!(who, role);
    c
}

/// The SQLSTATE of a statement, or `None` when it succeeded.
async fn sqlstate(c: &Client, sql: &str) -> Option<SqlState> {
    match c.batch_execute(sql).await {
        Ok(()) => None,
        Err(e) => Some(
            e.code()
                .cloned()
                .unwrap_or_else(|| panic!("{sql}: not a server error: {e:?}")),
        ),
    }
}

#[track_caller]
fn denied(state: Option<SqlState>, what: &str) {
    assert_eq!(
        state,
        Some(SqlState::INSUFFICIENT_PRIVILEGE),
        "{what} must be refused with 42501"
    );
}

/// The `api.*` functions the server's code calls (`api.name(` outside
/// comments, anywhere in `src/`).
fn api_calls_in_source() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).expect("read src").flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read source");
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("api.") {
                    if line[..i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        continue;
                    }
                    let rest = &line[i + 4..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.is_empty() && rest[name.len()..].starts_with('(') {
                        found.insert(name);
                    }
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn the_app_role_may_execute_exactly_the_api_functions_the_server_calls() {
    let db = TestDb::new().await;
    let from_source = api_calls_in_source();
    assert!(
        from_source.len() >= 15,
        "the scan of src/ found too few api calls: {from_source:?}"
    );
    let granted: BTreeSet<String> = db
        .psql()
        .await
        .query(
            "SELECT p.proname::text FROM pg_proc AS p
              WHERE p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace, 'internal'::regnamespace)
                AND has_function_privilege('marquee_app', p.oid, 'EXECUTE')",
            &[],
        )
        .await
        .expect("grants")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        granted, from_source,
        "sql/90_grants.sql must grant marquee_app EXECUTE on exactly the api functions src/ calls"
    );
}

#[tokio::test]
async fn the_app_role_cannot_touch_tables_but_can_call_the_api() {
    let db = TestDb::new().await;
    let (s, seats) = screening(&db, 1, 4, HOUR).await;
    let admin = db.psql().await;
    let user: i64 = admin
        .query_one(
            "INSERT INTO users (username, totp_secret, last_step) VALUES ('roles_app', '\\x00', 0) RETURNING id",
            &[],
        )
        .await
        .expect("user")
        .get(0);
    let session: uuid::Uuid = admin
        .query_one(
            "INSERT INTO sessions (user_id, expires_at) VALUES ($1, now() + interval '1 hour') RETURNING id",
            &[&user],
        )
        .await
        .expect("session")
        .get(0);
    // Every table of the database, and a column of each to UPDATE.
    let tables: Vec<(String, String)> = admin
        .query(
            "SELECT c.oid::regclass::text, quote_ident(a.attname)
               FROM pg_class AS c
               JOIN LATERAL (SELECT a.attname FROM pg_attribute AS a  -- a column an UPDATE may name
                              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                                AND a.attidentity = '' AND a.attgenerated = ''
                              ORDER BY a.attnum LIMIT 1) AS a ON true
              WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                AND NOT EXISTS (SELECT FROM pg_depend AS d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
              ORDER BY 1",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for t in [
        "seat_states",
        "users",
        "sessions",
        "bookings",
        "screenings",
        "settings",
    ] {
        assert!(tables.iter().any(|(n, _)| n == t), "{t} in {tables:?}");
    }

    let app = connect_as(&db, "marquee_app").await;
    for (table, col) in &tables {
        denied(
            sqlstate(&app, &format!("SELECT * FROM {table} LIMIT 1")).await,
            &format!("SELECT from {table}"),
        );
        denied(
            sqlstate(&app, &format!("INSERT INTO {table} DEFAULT VALUES")).await,
            &format!("INSERT into {table}"),
        );
        denied(
            sqlstate(&app, &format!("UPDATE {table} SET {col} = {col}")).await,
            &format!("UPDATE of {table}"),
        );
        denied(
            sqlstate(&app, &format!("DELETE FROM {table}")).await,
            &format!("DELETE from {table}"),
        );
        denied(
            sqlstate(&app, &format!("TRUNCATE {table}")).await,
            &format!("TRUNCATE of {table}"),
        );
    }
    denied(
        sqlstate(&app, "SELECT internal.setting('seat_limit')").await,
        "an internal helper",
    );
    denied(
        sqlstate(
            &app,
            &format!("SELECT admin.block_seats({s}, ARRAY[{}])", seats[0]),
        )
        .await,
        "admin.block_seats",
    );
    denied(
        sqlstate(&app, "SELECT admin.set_seat_limit(1000)").await,
        "admin.set_seat_limit",
    );

    // Every api function the server calls works as marquee_app.
    let (a, b) = (&seats[0], &seats[1]);
    let calls = [
        "SELECT * FROM api.get_cinemas()".to_string(),
        "SELECT * FROM api.get_screenings(NULL, NULL, NULL)".into(),
        format!("SELECT api.screening_hall({s})"),
        format!("SELECT * FROM api.hall_snapshot({s})"),
        format!("SELECT * FROM api.hold_seats({user}, {s}, ARRAY[{a}, {b}])"),
        format!("SELECT * FROM api.release_seats({user}, {s}, ARRAY[{b}])"),
        format!("SELECT * FROM api.book_seats({user}, {s}, ARRAY[{a}])"),
        format!("SELECT * FROM api.get_bookings({user})"),
        "SELECT api.sweep_expired_holds()".into(),
        "SELECT * FROM api.auth_user('roles_app')".into(),
        "SELECT * FROM api.auth_login('roles_app', NULL, 60)".into(),
        "SELECT * FROM api.auth_register('roles_new', NULL, NULL, 60)".into(),
        format!("SELECT * FROM api.session_user('{session}')"),
        format!("SELECT * FROM api.dead_sessions(ARRAY['{session}']::uuid[])"),
        format!("SELECT api.revoke_session('{session}')"),
        "SELECT api.prune_auth()".into(),
    ];
    for call in &calls {
        if let Err(e) = app.batch_execute(call).await {
            panic!("as marquee_app: {call}: {e:?}");
        }
    }
    let booking: i64 = app
        .query_one("SELECT booking_id FROM api.get_bookings($1)", &[&user])
        .await
        .expect("the booking made as marquee_app")
        .get(0);
    app.batch_execute(&format!(
        "SELECT * FROM api.cancel_booking({user}, {booking})"
    ))
    .await
    .expect("cancel as marquee_app");

    // The effects are real (read back as the superuser).
    assert_eq!(
        db.scalar(&format!(
            "SELECT string_agg(seat_id || ' ' || status, ',' ORDER BY seat_id) FROM seat_states
              WHERE screening_id = {s} AND seat_id IN ({a}, {b})"
        ))
        .await
        .as_deref(),
        Some(format!("{a} free,{b} free").as_str()),
        "a: booked, then cancelled; b: held, then released"
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT version FROM screening_versions WHERE screening_id = {s}"
        ))
        .await
        .as_deref(),
        Some("4"),
        "hold, release, book, cancel: four versions, bumped by the SECURITY DEFINER api functions"
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT revoked_at IS NOT NULL FROM sessions WHERE id = '{session}'"
        ))
        .await
        .as_deref(),
        Some("t")
    );
    assert_eq!(
        db.scalar(
            "SELECT count(*) FROM auth_failures WHERE username IN ('roles_app', 'roles_new')"
        )
        .await
        .as_deref(),
        Some("2"),
        "both refused attempts were recorded"
    );
}

/// LISTENs on `channel` as `role`; notifications arrive as (channel, payload).
async fn listen(
    db: &TestDb,
    role: &str,
    channel: &str,
) -> mpsc::UnboundedReceiver<(String, String)> {
    let login = role == "marquee_app" && db.app_url() != db.url;
    let url = if login { db.app_url() } else { db.url.clone() };
    let (client, mut conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connect the listener");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = poll_fn(|cx| conn.poll_message(cx)).await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel().to_owned(), n.payload().to_owned()));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    if !login {
        client
            .batch_execute(&format!("SET ROLE {role}"))
            .await
            .expect("SET ROLE");
    }
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .expect("LISTEN");
    // Keep the client alive as long as the receiver is used.
    std::mem::forget(client);
    rx
}

async fn next_notification(rx: &mut mpsc::UnboundedReceiver<(String, String)>) -> (String, String) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a notification in time")
        .expect("listener alive")
}

#[tokio::test]
async fn a_dba_blocks_seats_by_update_and_by_admin_block_seats_and_both_notify() {
    let db = TestDb::new().await;
    let (s, seats) = screening(&db, 1, 4, HOUR).await;
    let hall = db
        .scalar(&format!("SELECT hall_id FROM screenings WHERE id = {s}"))
        .await
        .expect("hall");
    let channel = format!("hall_{hall}");
    // The server's listener role receives what a DBA does.
    let mut rx = listen(&db, "marquee_app", &channel).await;

    let dba = connect_as(&db, "marquee_admin").await;
    let n = dba
        .execute(
            &format!(
                "UPDATE seat_states SET status = 'blocked', user_id = NULL, hold_expires_at = NULL
                  WHERE screening_id = {s} AND seat_id = {} AND status IN ('free', 'held')",
                seats[0]
            ),
            &[],
        )
        .await
        .expect("a DBA's plain UPDATE of seat_states");
    assert_eq!(n, 1);
    assert_eq!(
        next_notification(&mut rx).await,
        (
            channel.clone(),
            format!(r#"{{"s":{s},"v":1,"c":[[{},"blocked",null]]}}"#, seats[0])
        )
    );

    let changed: i32 = dba
        .query_one(
            &format!(
                "SELECT admin.block_seats({s}, ARRAY[{}, {}])",
                seats[1], seats[2]
            ),
            &[],
        )
        .await
        .expect("admin.block_seats as marquee_admin")
        .get(0);
    assert_eq!(changed, 2);
    assert_eq!(
        next_notification(&mut rx).await,
        (
            channel.clone(),
            format!(
                r#"{{"s":{s},"v":2,"c":[[{},"blocked",null],[{},"blocked",null]]}}"#,
                seats[1], seats[2]
            )
        )
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT string_agg(status, ',' ORDER BY seat_id) FROM seat_states WHERE screening_id = {s}"
        ))
        .await
        .as_deref(),
        Some("blocked,blocked,blocked,free")
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT version FROM screening_versions WHERE screening_id = {s}"
        ))
        .await
        .as_deref(),
        Some("2")
    );

    // DBAs read everything, unblock through admin, and change nothing else by hand.
    assert_eq!(
        sqlstate(&dba, "SELECT * FROM users, sessions, bookings LIMIT 1").await,
        None
    );
    let freed: i32 = dba
        .query_one(
            &format!("SELECT admin.unblock_seats({s}, ARRAY[{}])", seats[0]),
            &[],
        )
        .await
        .expect("unblock")
        .get(0);
    assert_eq!(freed, 1);
    denied(
        sqlstate(
            &dba,
            &format!("UPDATE screening_versions SET version = 0 WHERE screening_id = {s}"),
        )
        .await,
        "a DBA's UPDATE of screening_versions",
    );
    denied(
        sqlstate(
            &dba,
            "INSERT INTO cinemas (name, city, address, timezone) VALUES ('x', 'y', 'z', 'UTC')",
        )
        .await,
        "a DBA's INSERT into cinemas",
    );
    denied(
        sqlstate(&dba, "SELECT internal.setting('seat_limit')").await,
        "a DBA's call of an internal helper",
    );
}

#[tokio::test]
async fn test_servers_connect_as_marquee_app() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    c.ok("get_cinemas", serde_json::json!({})).await;
    let expected = if external_cluster() {
        None
    } else {
        Some("marquee_app")
    };
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = app
            .db
            .psql()
            .await
            .query(
                "SELECT application_name, usename::text FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name IN ('marquee', 'marquee-listener')
                  ORDER BY 1",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        let seen: BTreeSet<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let names: BTreeSet<&str> = seen.iter().map(|(a, _)| a.as_str()).collect();
        if names.len() == 2 {
            if let Some(user) = expected {
                assert!(
                    seen.iter().all(|(_, u)| u == user),
                    "the pool and the listener connect as {user}: {seen:?}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pool and listener connections: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.close().await;
}

/// The real binary in embedded mode: migrations as `postgres`, the pool and
/// the LISTEN connection as `marquee_app`, with its SCRAM password.
#[test]
fn the_embedded_mode_serves_as_marquee_app() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};

    let dir = std::path::PathBuf::from(format!("/tmp/marquee-roles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port()
    };
    let (http, ws) = (port(), port());
    crate::harness::prereq::postgres_server();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marquee"));
    cmd.arg("serve")
        .current_dir(&dir)
        .env("MARQUEE_DATA_DIR", &dir)
        .env("PORT", http.to_string())
        .env("WS_PORT", ws.to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in [
        "DATABASE_URL",
        "MIGRATION_DATABASE_URL",
        "JWT_SECRET",
        "BIND_ADDR",
        "ALLOWED_ORIGINS",
        "TOTP_KEY",
        "DB_POOL_SIZE",
    ] {
        cmd.env_remove(v);
    }
    let mut child = cmd.spawn().expect("spawn marquee");
    let stderr = child.stderr.take().expect("stderr");
    let err_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let e2 = err_text.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut r = BufReader::new(stderr);
        let mut buf = [0u8; 4096];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.push_str(&String::from_utf8_lossy(&buf[..n]));
            *e2.lock().unwrap() = s.clone();
        }
    });
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match lines.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.contains("listening") => break,
                _ => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("marquee exited ({status}):\n{}", err_text.lock().unwrap());
            }
            assert!(
                Instant::now() < deadline,
                "not listening in time:\n{}",
                err_text.lock().unwrap()
            );
        }
        let err = err_text.lock().unwrap().clone();
        let start = err.find("psql \"").expect("the DBA line") + 6;
        let dba = err[start..start + err[start..].find('"').expect("quote")].to_owned();
        assert!(dba.contains("user=postgres"), "{dba}");
        // libpq reads `passfile=`; this driver takes the password itself.
        let (head, passfile) = dba.rsplit_once(" passfile=").expect("passfile");
        let pgpass = std::fs::read_to_string(passfile).expect("pgpass");
        let pw = pgpass
            .lines()
            .find_map(|l| l.strip_prefix("*:*:*:postgres:"))
            .expect("superuser password");
        let dba = format!("{head} password={pw}");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let (c, conn) = tokio_postgres::connect(&dba, NoTls).await.expect("connect as the DBA");
                tokio::spawn(conn);
                let deadline = Instant::now() + WAIT;
                loop {
                    let seen: BTreeSet<(String, String)> = c
                        .query(
                            "SELECT application_name, usename::text FROM pg_stat_activity
                              WHERE datname = 'marquee' AND application_name IN ('marquee', 'marquee-listener')",
                            &[],
                        )
                        .await
                        .expect("pg_stat_activity")
                        .iter()
                        .map(|r| (r.get(0), r.get(1)))
                        .collect();
                    if seen.iter().map(|(a, _)| a).collect::<BTreeSet<_>>().len() == 2 {
                        assert!(
                            seen.iter().all(|(_, u)| u == "marquee_app"),
                            "the embedded server's pool and listener connect as marquee_app: {seen:?}"
                        );
                        break;
                    }
                    assert!(Instant::now() < deadline, "connections: {seen:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let row = c
                    .query_one(
                        "SELECT rolcanlogin, rolpassword LIKE 'SCRAM-SHA-256$%', rolsuper FROM pg_authid WHERE rolname = 'marquee_app'",
                        &[],
                    )
                    .await
                    .expect("marquee_app");
                assert_eq!(
                    (row.get::<_, bool>(0), row.get::<_, bool>(1), row.get::<_, bool>(2)),
                    (true, true, false),
                    "marquee_app: LOGIN, a SCRAM password, not a superuser"
                );
                let owner: String = c
                    .query_one(
                        "SELECT proowner::regrole::text FROM pg_proc WHERE oid = 'api.hold_seats(bigint, bigint, bigint[])'::regprocedure",
                        &[],
                    )
                    .await
                    .expect("owner")
                    .get(0);
                assert_eq!(owner, "marquee_owner");
            });
    }));

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    // The embedded PostgreSQL stops with the server; wait for its pid file to go.
    let pid_file = dir.join("pg/postmaster.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
