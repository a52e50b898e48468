//! A binary of its own: `cargo test --test sql` runs the SQL suite alone, the
//! command docs/sql.md gives to whoever changes `sql/`.
//!
//! The SQL layer tested as code, from `cargo test`: the pgTAP suite
//! (`tests/sql/*.sql` through `pg_prove`, then `tests/sql/live.sh`, both run
//! by `tests/sql/run.sh`), and `plpgsql_check` over every PL/pgSQL function
//! with zero findings allowed. Each runs on a fresh clone of the migrated
//! template. A missing tool fails the test with one line naming the package
//! for the test server's PostgreSQL version (`harness::prereq`): nothing is
//! skipped silently.

#[path = "it/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::prereq::{self, Tool};
use harness::TestDb;

fn sql_tests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql")
}

/// The test server's PostgreSQL major version: extension packages are per
/// major version.
async fn server_major(db: &TestDb) -> u32 {
    db.scalar("SELECT current_setting('server_version_num')::int / 10000")
        .await
        .and_then(|v| v.parse().ok())
        .expect("server_version_num")
}

/// `CREATE EXTENSION IF NOT EXISTS` in the test database, or a failure that
/// says which package to install.
async fn create_extension(db: &TestDb, name: &str, tool: fn(u32) -> Tool) {
    let available = db
        .scalar(&format!(
            "SELECT count(*) FROM pg_available_extensions WHERE name = '{name}'"
        ))
        .await;
    let tool = tool(server_major(db).await);
    prereq::require(tool, available.as_deref() == Some("1"));
    db.psql()
        .await
        .batch_execute(&format!("CREATE EXTENSION IF NOT EXISTS {name}"))
        .await
        .unwrap_or_else(|e| panic!("CREATE EXTENSION {name} ({tool:?}): {e:?}"));
}

#[tokio::test]
async fn pgtap_suite_and_live_checks_pass() {
    prereq::program(Tool::PgProve, &["pg_prove"], None, &[]);
    let db = TestDb::new().await;
    create_extension(&db, "pgtap", Tool::PgTap).await;
    // plpgsql_check.sql checks rather than skips when the extension is there.
    create_extension(&db, "plpgsql_check", Tool::PlpgsqlCheck).await;

    // run.sh calls psql: prefer the one of the server the harness started.
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(bin) = harness::bin_dir() {
        let mut dirs = vec![bin];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).expect("PATH");
    }
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new("bash")
        .arg(sql_tests().join("run.sh"))
        .arg(&db.url)
        .env("PATH", path)
        .env_remove("MARQUEE_SQL_SKIP_LIVE")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run tests/sql/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/sql/run.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // What ran: every file passed through pg_prove, and live.sh's plan.
    assert!(
        stdout.contains("All tests successful."),
        "{stdout}\n{stderr}"
    );
    for f in ["roles.sql", "plpgsql_check.sql", "holds.sql", "notify.sql"] {
        assert!(stdout.contains(f), "{f} ran:\n{stdout}");
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("1..")),
        "live.sh ran (its TAP plan):\n{stdout}"
    );
    eprintln!(
        "tests/sql/run.sh passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The query of `tests/sql/plpgsql_check.sql` (the text it `EXECUTE`s,
/// without its `INSERT INTO findings`), so both check the same thing.
fn plpgsql_check_query() -> String {
    let file = sql_tests().join("plpgsql_check.sql");
    let text = std::fs::read_to_string(&file).expect("read tests/sql/plpgsql_check.sql");
    let start = text
        .find("EXECUTE $q$")
        .expect("plpgsql_check.sql: EXECUTE $q$")
        + 11;
    let len = text[start..]
        .find("$q$")
        .expect("plpgsql_check.sql: closing $q$");
    text[start..start + len]
        .trim()
        .strip_prefix("INSERT INTO findings")
        .expect("plpgsql_check.sql: the query inserts into findings")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn plpgsql_check_finds_nothing() {
    let db = TestDb::new().await;
    create_extension(&db, "plpgsql_check", Tool::PlpgsqlCheck).await;
    let functions: i64 = db
        .scalar(
            "SELECT count(*) FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
              WHERE l.lanname = 'plpgsql'
                AND p.pronamespace IN ('api'::regnamespace, 'admin'::regnamespace, 'internal'::regnamespace)",
        )
        .await
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(functions >= 20, "only {functions} PL/pgSQL functions found");
    let rows = db
        .psql()
        .await
        .simple_query(&plpgsql_check_query())
        .await
        .unwrap_or_else(|e| panic!("the plpgsql_check query failed: {e:?}"));
    let findings: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
                    .join(" | "),
            ),
            _ => None,
        })
        .collect();
    assert!(
        findings.is_empty(),
        "plpgsql_check found {} problem(s) in {functions} functions (function | line | level | message | detail):\n{}",
        findings.len(),
        findings.join("\n")
    );
}
