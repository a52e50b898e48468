//! The command line: `marquee [serve|migrate|seed-demo]`.
//!
//! Reads `.env`, then the environment (see `shared::config`). With no
//! `DATABASE_URL`, starts the embedded PostgreSQL under `MARQUEE_DATA_DIR`
//! (from this, the main thread, so it lives exactly as long as we do),
//! generates and keeps the secrets it needs there, and loads the demo data.
//!
//! Migrations, `sql/` and `seed-demo` connect with `MIGRATION_DATABASE_URL`
//! (else `DATABASE_URL`); the server's pool and LISTEN connection with
//! `DATABASE_URL`. The embedded mode migrates as the superuser `postgres` and
//! serves as `marquee_app` (docs/sql.md, "Roles"), so it is least-privilege
//! by itself.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rand::RngCore;

use crate::app::{Server, Tuning};
use crate::core::db::Db;
use crate::core::embedded::{EmbeddedOptions, EmbeddedPostgres};
use crate::core::schema;
use crate::models::demo;
use crate::shared::config::{Config, Secret};

/// Marquee: real-time cinema seat booking over WebSocket, rules in PostgreSQL.
#[derive(Parser)]
#[command(name = "marquee", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// Serve HTTP and WebSocket (the default).
    Serve,
    /// Apply migrations and `sql/`, then exit.
    Migrate,
    /// Load (or top up) the demo cinemas, films and screenings, then exit.
    SeedDemo,
}

/// The database the commands use (as its owner or a superuser), and the
/// embedded cluster if we run one.
struct Database {
    url: String,
    /// The variable `url` came from, for error messages.
    var: &'static str,
    embedded: Option<EmbeddedPostgres>,
}

pub fn main() -> ExitCode {
    let _ = dotenvy::dotenv();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The driver and the migration library narrate every NOTICE at info.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn,refinery_core=warn")
        });
    if let Err(msg) = init_logs(filter) {
        eprintln!("marquee: configuration: {msg}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("marquee: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Set once `LOG_FORMAT=json` is in force: the start banner is then a log
/// event rather than a plain line.
static JSON_LOGS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Logs go to stdout. Colour codes only reach a terminal: in a file or a
/// pipe they are noise for whoever reads or greps it. `LOG_FORMAT=json`
/// writes one JSON object per line, for log shippers.
fn init_logs(filter: tracing_subscriber::EnvFilter) -> Result<(), String> {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match std::env::var("LOG_FORMAT").unwrap_or_default().as_str() {
        "" | "text" => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        "json" => {
            builder.json().with_ansi(false).init();
            let _ = JSON_LOGS.set(true);
        }
        other => return Err(format!("LOG_FORMAT={other:?}: expected text or json")),
    }
    Ok(())
}

fn run(command: Command) -> Result<(), String> {
    let mut config = Config::from_env().map_err(|e| format!("configuration: {e}"))?;
    let mut database = open_database(&mut config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let embedded = database.embedded.is_some();
    let result = runtime.block_on(async {
        let db = Db::new(&database.url, 2).map_err(|e| format!("{}: {e}", database.var))?;
        let report = db
            .migrate(command == Command::Migrate)
            .await
            .map_err(|e| format!("migration failed: {e}"))?;
        if let Some(pg) = &database.embedded {
            app_role_logs_in(&db, pg).await?;
        }
        for m in &report.migrations_applied {
            tracing::info!(migration = %m, "applied");
        }
        if let Some(role) = &report.not_migrated_as {
            if command == Command::Migrate {
                return Err(format!(
                    "{}: role {role} may not migrate (only marquee_owner or a superuser may)",
                    database.var
                ));
            }
            tracing::warn!(
                %role,
                "not migrating: this role may only call the API; set MIGRATION_DATABASE_URL \
                 (or run `marquee migrate` with it) after an upgrade"
            );
        }
        if let Some(line) = &report.sql_refused {
            if command == Command::Migrate {
                return Err(format!("{}: {line}", database.var));
            }
            tracing::warn!("{line}");
        }
        match command {
            Command::Migrate => {
                println!(
                    "migrations applied: {}; sql/ re-applied: {}",
                    report.migrations_applied.len(),
                    report.sql_applied
                );
                Ok(())
            }
            Command::SeedDemo => {
                seed(&db).await?;
                println!("demo data loaded");
                Ok(())
            }
            Command::Serve => {
                if embedded {
                    seed(&db).await?;
                }
                // The owner's connections close: the server uses its own role's.
                drop(db);
                serve(config).await
            }
        }
    });
    drop(runtime);
    if let Some(pg) = database.embedded.as_mut() {
        pg.stop();
    }
    result
}

/// The embedded server connects as `marquee_app` (created by migration V7)
/// with the password kept in the data dir; set at every start, so a data
/// dir of the old trust setup (`PASSWORD NULL`) is upgraded too.
async fn app_role_logs_in(db: &Db, pg: &EmbeddedPostgres) -> Result<(), String> {
    let verifier = pg
        .password_verifier("marquee_app")
        .map_err(|e| e.to_string())?;
    let c = db.conn().await.map_err(|e| e.to_string())?;
    schema::set_login_password(&c, "marquee_app", verifier.as_deref())
        .await
        .map_err(|e| format!("embedded PostgreSQL: {e}"))
}

async fn seed(db: &Db) -> Result<(), String> {
    demo::seed(db)
        .await
        .map_err(|e| format!("seed-demo failed: {e}"))
}

fn bind(addr: SocketAddr, var: &str) -> Result<tokio::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("{var}: cannot listen on {addr}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| format!("{var}: {e}"))?;
    tokio::net::TcpListener::from_std(l).map_err(|e| format!("{var}: {e}"))
}

async fn serve(config: Config) -> Result<(), String> {
    let http = bind(SocketAddr::new(config.bind_addr, config.port), "PORT")?;
    let ws = bind(SocketAddr::new(config.bind_addr, config.ws_port), "WS_PORT")?;
    // The caller migrated already.
    let tuning = Tuning {
        migrate: false,
        ..Tuning::default()
    };
    let server = Server::start(config, http, ws, tuning)
        .await
        .map_err(|e| e.to_string())?;
    if JSON_LOGS.get().copied().unwrap_or(false) {
        // A log shipper reads stdout: every line there stays JSON.
        tracing::info!(
            replica = %server.replica_id,
            http = %server.http_addr,
            ws = %server.ws_addr,
            "Marquee listening"
        );
    } else {
        println!(
            "Marquee {} listening: HTTP http://{}  WebSocket ws://{}/  (Ctrl-C stops)",
            server.replica_id, server.http_addr, server.ws_addr
        );
    }
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn open_database(config: &mut Config) -> Result<Database, String> {
    if let Some(url) = config.migration_url() {
        if config.jwt_secret.is_none() {
            return Err("JWT_SECRET: required when DATABASE_URL is set (replicas must share it; at least 32 bytes)".into());
        }
        let var = if config.migration_database_url.is_some() {
            "MIGRATION_DATABASE_URL"
        } else {
            "DATABASE_URL"
        };
        return Ok(Database {
            url: url.to_owned(),
            var,
            embedded: None,
        });
    }
    let data_dir = absolute(&config.data_dir)?;
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        format!(
            "MARQUEE_DATA_DIR: cannot create {}: {e}",
            data_dir.display()
        )
    })?;
    if config.jwt_secret.is_none() {
        let s = kept_secret(&data_dir.join("jwt_secret"))?;
        config.jwt_secret = Some(Secret::new(s.into_bytes()));
    }
    if config.totp_key.is_none() {
        let k = kept_secret(&data_dir.join("totp_key"))?;
        let bytes =
            hex::decode(k.trim()).map_err(|_| "totp_key in the data dir is not hex".to_string())?;
        config.totp_key = Some(Secret::new(bytes));
    }
    let opts = EmbeddedOptions {
        data_dir: data_dir.join("pg"),
        socket_dir: socket_dir(&data_dir),
        fsync_off: false,
        settings: vec![("max_connections".into(), "200".into())],
        trust_local: false,
    };
    eprintln!(
        "marquee: starting the embedded PostgreSQL in {}",
        opts.data_dir.display()
    );
    let pg = EmbeddedPostgres::start(&opts).map_err(|e| e.to_string())?;
    ensure_database(&pg, "marquee")?;
    let url = pg.url("marquee").map_err(|e| e.to_string())?;
    eprintln!(
        "marquee: embedded PostgreSQL ready; DBAs: {}",
        pg.psql_command("marquee")
    );
    // Migrations as the superuser; the server as the least-privileged role.
    config.database_url = Some(
        pg.url_as("marquee_app", "marquee")
            .map_err(|e| e.to_string())?,
    );
    config.migration_database_url = Some(url.clone());
    Ok(Database {
        url,
        var: "DATABASE_URL",
        embedded: Some(pg),
    })
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .map_err(|e| format!("MARQUEE_DATA_DIR: {e}"))?
    };
    // Drop `.` components so printed paths (and the socket path) stay short.
    Ok(joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect())
}

/// Unix socket paths are limited to ~107 bytes; fall back to /tmp.
fn socket_dir(data_dir: &Path) -> PathBuf {
    let dir = data_dir.join("run");
    if dir.as_os_str().len() + 20 < 100 {
        return dir;
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(data_dir.as_os_str().as_encoded_bytes());
    std::env::temp_dir().join(format!("marquee-{}", hex::encode(&h[..6])))
}

/// Reads a secret kept in the data dir, creating it (0600) the first time.
fn kept_secret(path: &Path) -> Result<String, String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        return Ok(s.trim().to_owned());
    }
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let s = hex::encode(bytes);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(s.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(s)
}

fn ensure_database(pg: &EmbeddedPostgres, name: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&pg.conn_string("postgres"), tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("embedded PostgreSQL: {e}"))?;
        let driver = tokio::spawn(conn);
        let made = schema::ensure_database(&client, name)
            .await
            .map_err(|e| format!("embedded PostgreSQL: {e}"));
        drop(client);
        let _ = driver.await;
        made
    })
}
