//! What `cargo test` needs from the machine besides Rust, found in one
//! place, and the one line a test fails with when something is missing: it
//! names the package to install (Debian/Ubuntu first, then Fedora and
//! Homebrew), so a new contributor never has to read a test to learn what
//! it wanted. Tests never skip for a missing tool: a green run means
//! everything ran. The same list, with install lines, is in README.md
//! ("Prerequisites").

use std::path::{Path, PathBuf};

/// A program or PostgreSQL extension the tests use.
#[derive(Clone, Copy, Debug)]
pub enum Tool {
    /// `postgres` and `initdb`: every test cluster.
    PostgresServer,
    /// `pg_prove`: runs the pgTAP files of `tests/sql/`.
    PgProve,
    /// The `pgtap` extension for this PostgreSQL major version.
    PgTap(u32),
    /// The `plpgsql_check` extension for this PostgreSQL major version.
    PlpgsqlCheck(u32),
    /// nginx: the shipped `docs/nginx.conf` is run for real.
    Nginx,
    /// Chromium: the web client's browser tests.
    Chromium,
    /// chromedriver: drives Chromium over WebDriver.
    Chromedriver,
}

impl Tool {
    /// What is missing, as a person would name it.
    fn what(self) -> String {
        match self {
            Tool::PostgresServer => "the PostgreSQL server binaries (postgres, initdb)".into(),
            Tool::PgProve => "pg_prove".into(),
            Tool::PgTap(m) => format!("the PostgreSQL {m} extension pgtap"),
            Tool::PlpgsqlCheck(m) => format!("the PostgreSQL {m} extension plpgsql_check"),
            Tool::Nginx => "nginx".into(),
            Tool::Chromium => "chromium".into(),
            Tool::Chromedriver => "chromedriver".into(),
        }
    }

    /// The package on Debian/Ubuntu, Fedora and Homebrew.
    fn packages(self) -> (String, String, String) {
        let s = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
        match self {
            Tool::PostgresServer => s("postgresql", "postgresql-server", "postgresql@17"),
            Tool::PgProve => s(
                "libtap-parser-sourcehandler-pgtap-perl",
                "perl-TAP-Parser-SourceHandler-pgTAP",
                "pgtap",
            ),
            Tool::PgTap(m) => (
                format!("postgresql-{m}-pgtap"),
                "pgtap".into(),
                "pgtap".into(),
            ),
            Tool::PlpgsqlCheck(m) => (
                format!("postgresql-{m}-plpgsql-check"),
                format!("plpgsql_check_{m} (PGDG repository)"),
                "none: build github.com/okbob/plpgsql_check".into(),
            ),
            Tool::Nginx => s("nginx", "nginx", "nginx"),
            Tool::Chromium => s("chromium", "chromium", "--cask chromium"),
            Tool::Chromedriver => s("chromium-driver", "chromedriver", "--cask chromedriver"),
        }
    }
}

/// The single line a test fails with when `tool` is missing.
pub fn missing(tool: Tool) -> String {
    let (debian, fedora, brew) = tool.packages();
    format!(
        "{} is missing: install the package {debian} (apt-get install {debian}; \
         Fedora: dnf install {fedora}; macOS: brew install {brew}); README.md, \
         \"Prerequisites\", lists everything the tests need",
        tool.what()
    )
}

/// The PostgreSQL server binaries, found the way the embedded mode finds
/// them; fails the test with [`missing`] when there are none.
pub fn postgres_server() {
    require(
        Tool::PostgresServer,
        marquee::core::embedded::find_bin_dir().is_ok(),
    );
}

/// Fails the test with [`missing`] unless `found`.
pub fn require(tool: Tool, found: bool) {
    assert!(found, "{}", missing(tool));
}

/// A program: the path in `override_var` when set, else the first of
/// `names` in PATH or in `extra_dirs` (sbin directories are often not in a user's
/// PATH); fails the test with [`missing`] when there is none.
pub fn program(
    tool: Tool,
    names: &[&str],
    override_var: Option<&str>,
    extra_dirs: &[&str],
) -> PathBuf {
    if let Some(p) = override_var
        .and_then(std::env::var_os)
        .filter(|v| !v.is_empty())
    {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{} (from {}) does not exist; {}",
            p.display(),
            override_var.unwrap_or_default(),
            missing(tool)
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .collect();
    let found = names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| is_executable(p));
    match found {
        Some(p) => p,
        None => panic!("{}", missing(tool)),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
