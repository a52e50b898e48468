//! The log output of the real binary when it is not a terminal (issue 13.5):
//! written to a file, text logs carry no colour codes, and with
//! `LOG_FORMAT=json` every line of stdout is one JSON object a log shipper
//! can parse.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::TestDb;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn out_file(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("marquee-logs-{}-{tag}.log", std::process::id()))
}

/// `marquee serve` on `db` with stdout and stderr appended to `log`.
fn serve(db: &TestDb, log: &Path, format: Option<&str>) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_marquee"));
    cmd.arg("serve")
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", db.app_url())
        .env("MIGRATION_DATABASE_URL", &db.url)
        .env("JWT_SECRET", crate::harness::JWT_SECRET)
        .env("PORT", free_port().to_string())
        .env("WS_PORT", free_port().to_string())
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("LOG_FORMAT")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log file"))
        .stderr(file);
    if let Some(f) = format {
        cmd.env("LOG_FORMAT", f);
    }
    cmd.spawn().expect("spawn marquee")
}

/// Waits for the start banner, stops the server with SIGTERM (which logs
/// "shutting down") and returns everything it wrote.
fn run_and_stop(mut child: Child, log: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains("listening") {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("marquee serve exited ({status}) before listening:\n{text}");
        }
        assert!(Instant::now() < deadline, "no `listening` line:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "marquee did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(log).expect("read log");
    let _ = std::fs::remove_file(log);
    text
}

#[tokio::test]
async fn text_logs_in_a_file_carry_no_colour_codes() {
    let db = TestDb::new().await;
    let log = out_file("text");
    let text = run_and_stop(serve(&db, &log, None), &log);
    assert!(
        text.contains("INFO") && text.contains("shutting down"),
        "the file holds the info log lines:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in a log file:\n{text:?}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let db = TestDb::new().await;
    let log = out_file("json");
    let text = run_and_stop(serve(&db, &log, Some("json")), &log);
    assert!(!text.contains('\u{1b}'), "escape codes:\n{text:?}");
    let mut messages = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\nin:\n{text}"));
        assert!(v["level"].is_string(), "a level: {line}");
        assert!(v["timestamp"].is_string(), "a timestamp: {line}");
        messages.push(v["fields"]["message"].as_str().unwrap_or("").to_owned());
    }
    for expected in ["Marquee listening", "shutting down"] {
        assert!(
            messages.iter().any(|m| m == expected),
            "a `{expected}` event among {messages:?}"
        );
    }
}

#[test]
fn an_unknown_log_format_stops_the_start_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_marquee"))
        .arg("migrate")
        .current_dir(std::env::temp_dir())
        .env("LOG_FORMAT", "xml")
        .stdin(Stdio::null())
        .output()
        .expect("run marquee");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("LOG_FORMAT"), "{err}");
}
