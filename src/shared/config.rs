//! Configuration: one struct read from the environment (and `.env`, loaded by
//! the CLI before this runs). Every variable, with its default:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | unset: embedded PostgreSQL | the database to use (production: as role `marquee_app`) |
//! | `MIGRATION_DATABASE_URL` | `DATABASE_URL` | the same database as its owner (`marquee_owner`) or a superuser, for migrations and `seed-demo` |
//! | `JWT_SECRET` | embedded: generated into the data dir | HS256 key, at least 32 bytes; replicas share it |
//! | `PORT` | 3000 | HTTP port |
//! | `WS_PORT` | 3001 | WebSocket port |
//! | `BIND_ADDR` | 127.0.0.1 | address both ports bind to |
//! | `ALLOWED_ORIGINS` | `http://localhost:PORT,http://127.0.0.1:PORT` | Origins allowed at the upgrade |
//! | `COOKIE_SECURE` | false | add `Secure` to the auth cookie |
//! | `MARQUEE_DATA_DIR` | `./.marquee` | embedded PostgreSQL and generated secrets |
//! | `TOKEN_TTL` | 604800 (7 days) | token lifetime, seconds |
//! | `TOTP_KEY` | derived from `JWT_SECRET` | 64 hex chars, encrypts TOTP secrets at rest |
//! | `TOTP_ISSUER` | Marquee | issuer in the otpauth URL |
//! | `DB_POOL_SIZE` | 16 | pooled connections per replica |
//! | `SEAT_BATCH_MAX` | 32 | seat changes (of different screenings) that arrived together and run in one transaction; 1: each change in its own, concurrently |
//! | `HTTP_HEADER_TIMEOUT` | 10 | seconds an HTTP connection has to send a complete request head, from connect or from the previous answer (so also how long an idle keep-alive connection stays open) |
//! | `HTTP_IDLE_TIMEOUT` | 60 | seconds one HTTP request may take, its body included, and an HTTP connection may move no byte |
//! | `HTTP_MAX_CONNECTIONS` | 1024 | open connections on `PORT`; past it, idle ones are closed to make room |
//! | `METRICS_TOKEN` | unset: `/metrics` open | bearer token `/metrics` requires (`Authorization: Bearer <token>`) |
//! | `WS_DRAIN_TIMEOUT` | 30 | seconds one write to a WebSocket may take before the client is closed with 1013 |
//! | `TRUSTED_PROXIES` | empty | comma-separated proxy addresses whose `X-Forwarded-For` names the client |
//! | `RUST_LOG` | info | log filter (read by the CLI) |
//! | `LOG_FORMAT` | text | `text` (coloured only on a terminal) or `json` (one object per line; read by the CLI) |
//!
//! A bad value fails at start with one line naming the variable. Secrets are
//! wrapped in [`Secret`] so they never reach a log line.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A secret value: its `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A configuration variable with a bad value.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

fn bad(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

/// The whole configuration of one replica.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: start the embedded PostgreSQL under `data_dir`.
    pub database_url: Option<String>,
    /// Migrations, `sql/` and `seed-demo` connect with this (the owner role
    /// or a superuser); `None`: `database_url`.
    pub migration_database_url: Option<String>,
    /// `None` only before the embedded mode filled it in from the data dir.
    pub jwt_secret: Option<Secret>,
    pub port: u16,
    pub ws_port: u16,
    pub bind_addr: IpAddr,
    /// `None`: the server's own HTTP origins on localhost and 127.0.0.1.
    pub allowed_origins: Option<Vec<String>>,
    pub cookie_secure: bool,
    pub data_dir: PathBuf,
    pub token_ttl: Duration,
    /// `None`: derived from the JWT secret.
    pub totp_key: Option<Secret>,
    pub totp_issuer: String,
    pub pool_size: usize,
    /// The most seat changes one transaction carries (the seat writer's batch).
    pub seat_batch_max: usize,
    /// How long an HTTP connection may take to send a complete request
    /// head, from connect or from the previous answer.
    pub http_header_timeout: Duration,
    /// The most one HTTP request (its body included) may take, and how long
    /// a connection may move no byte.
    pub http_idle_timeout: Duration,
    /// Open connections on the HTTP port.
    pub http_max_connections: usize,
    /// `None`: `/metrics` needs no token.
    pub metrics_token: Option<Secret>,
    /// Peers whose `X-Forwarded-For` is believed (per-address limits).
    pub trusted_proxies: Vec<IpAddr>,
    /// How long one write to a WebSocket may take (a slow reader's deadline).
    pub ws_drain_timeout: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads a given set of variables (the tests' entry point).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let database_url = match get("DATABASE_URL") {
            None => None,
            Some(url) => {
                tokio_postgres::Config::from_str(url)
                    .map_err(|e| bad("DATABASE_URL", format!("not a PostgreSQL URL ({e})")))?;
                Some(url.to_owned())
            }
        };
        let migration_database_url = match get("MIGRATION_DATABASE_URL") {
            None => None,
            Some(_) if database_url.is_none() => return Err(bad(
                "MIGRATION_DATABASE_URL",
                "needs DATABASE_URL too (the embedded PostgreSQL migrates as its own superuser)",
            )),
            Some(url) => {
                tokio_postgres::Config::from_str(url).map_err(|e| {
                    bad(
                        "MIGRATION_DATABASE_URL",
                        format!("not a PostgreSQL URL ({e})"),
                    )
                })?;
                Some(url.to_owned())
            }
        };
        let jwt_secret = match get("JWT_SECRET") {
            None => None,
            Some(s) if s.len() < 32 => {
                return Err(bad("JWT_SECRET", "must be at least 32 bytes long"))
            }
            Some(s) => Some(Secret::new(s.as_bytes().to_vec())),
        };
        let port = parse_port(get("PORT"), "PORT", 3000)?;
        let ws_port = parse_port(get("WS_PORT"), "WS_PORT", 3001)?;
        let bind_addr = match get("BIND_ADDR") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(s) => s
                .parse()
                .map_err(|_| bad("BIND_ADDR", "not an IP address"))?,
        };
        let allowed_origins = match get("ALLOWED_ORIGINS") {
            None => None,
            Some(s) => Some(parse_origins(s)?),
        };
        let cookie_secure = parse_bool(get("COOKIE_SECURE"), "COOKIE_SECURE", false)?;
        let data_dir = PathBuf::from(get("MARQUEE_DATA_DIR").unwrap_or("./.marquee"));
        let token_ttl = match get("TOKEN_TTL") {
            None => Duration::from_secs(7 * 24 * 3600),
            Some(s) => match s.parse::<u64>() {
                Ok(n) if (1..=366 * 24 * 3600).contains(&n) => Duration::from_secs(n),
                _ => {
                    return Err(bad(
                        "TOKEN_TTL",
                        "must be a number of seconds, 1 to one year",
                    ))
                }
            },
        };
        let totp_key = match get("TOTP_KEY") {
            None => None,
            Some(s) => match hex::decode(s) {
                Ok(k) if k.len() == 32 => Some(Secret::new(k)),
                _ => return Err(bad("TOTP_KEY", "must be 64 hex characters (32 bytes)")),
            },
        };
        let totp_issuer = get("TOTP_ISSUER").unwrap_or("Marquee").to_owned();
        if totp_issuer.contains(':') {
            return Err(bad("TOTP_ISSUER", "must not contain ':'"));
        }
        let pool_size = match get("DB_POOL_SIZE") {
            None => 16,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => return Err(bad("DB_POOL_SIZE", "must be a number from 1 to 1000")),
            },
        };
        let seat_batch_max = match get("SEAT_BATCH_MAX") {
            None => 32,
            Some(s) => match s.parse::<usize>() {
                // 64: sql/47_seat_batch.sql (a transaction's cached subtransaction ids).
                Ok(n) if (1..=64).contains(&n) => n,
                _ => return Err(bad("SEAT_BATCH_MAX", "must be a number from 1 to 64")),
            },
        };
        let seconds = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            match get(var) {
                None => Ok(Duration::from_secs(default)),
                Some(s) => match s.parse::<u64>() {
                    Ok(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
                    _ => Err(bad(var, "must be a number of seconds from 1 to 3600")),
                },
            }
        };
        let http_header_timeout = seconds("HTTP_HEADER_TIMEOUT", 10)?;
        let http_idle_timeout = seconds("HTTP_IDLE_TIMEOUT", 60)?;
        let http_max_connections = match get("HTTP_MAX_CONNECTIONS") {
            None => 1024,
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => n,
                _ => {
                    return Err(bad(
                        "HTTP_MAX_CONNECTIONS",
                        "must be a number from 1 to 1000000",
                    ))
                }
            },
        };
        let trusted_proxies = match get("TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(s) => {
                crate::shared::address::parse_list(s).map_err(|e| bad("TRUSTED_PROXIES", e))?
            }
        };
        let ws_drain_timeout = seconds("WS_DRAIN_TIMEOUT", 30)?;
        let metrics_token = match get("METRICS_TOKEN") {
            None => None,
            Some(s) if s.len() < 16 || !s.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(bad(
                    "METRICS_TOKEN",
                    "must be at least 16 printable characters without spaces",
                ))
            }
            Some(s) => Some(Secret::new(s.as_bytes().to_vec())),
        };
        Ok(Self {
            database_url,
            migration_database_url,
            jwt_secret,
            port,
            ws_port,
            bind_addr,
            allowed_origins,
            cookie_secure,
            data_dir,
            token_ttl,
            totp_key,
            totp_issuer,
            pool_size,
            seat_batch_max,
            http_header_timeout,
            http_idle_timeout,
            http_max_connections,
            metrics_token,
            trusted_proxies,
            ws_drain_timeout,
        })
    }

    /// The URL migrations, `sql/` and `seed-demo` use: `MIGRATION_DATABASE_URL`,
    /// else `DATABASE_URL`.
    pub fn migration_url(&self) -> Option<&str> {
        self.migration_database_url
            .as_deref()
            .or(self.database_url.as_deref())
    }

    /// The Origins allowed at the WebSocket upgrade, given the HTTP port the
    /// server really listens on (tests bind port 0).
    pub fn origins_for(&self, http_port: u16) -> Vec<String> {
        match &self.allowed_origins {
            Some(list) => list.clone(),
            None => vec![
                format!("http://localhost:{http_port}"),
                format!("http://127.0.0.1:{http_port}"),
            ],
        }
    }
}

fn parse_port(v: Option<&str>, var: &'static str, default: u16) -> Result<u16, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse::<u16>()
            .map_err(|_| bad(var, format!("`{s}` is not a port number (0-65535)"))),
    }
}

fn parse_bool(v: Option<&str>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match v.map(|s| s.to_ascii_lowercase()) {
        None => Ok(default),
        Some(s) if ["1", "true", "yes", "on"].contains(&s.as_str()) => Ok(true),
        Some(s) if ["0", "false", "no", "off"].contains(&s.as_str()) => Ok(false),
        Some(s) => Err(bad(var, format!("`{s}` is not true or false"))),
    }
}

fn parse_origins(s: &str) -> Result<Vec<String>, ConfigError> {
    s.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let url = url::Url::parse(o)
                .map_err(|_| bad("ALLOWED_ORIGINS", format!("`{o}` is not an origin URL")))?;
            // Browsers send the serialized origin: scheme://host[:port], no slash.
            Ok(url.origin().ascii_serialization())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = Config::from_vars(&vars(&[])).unwrap();
        assert_eq!((c.port, c.ws_port), (3000, 3001));
        assert!(c.database_url.is_none() && c.jwt_secret.is_none());
        assert_eq!(c.origins_for(3000)[0], "http://localhost:3000");
        assert!(c.trusted_proxies.is_empty());
        assert_eq!(c.ws_drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("PORT", "abc"),
            ("WS_PORT", "70000"),
            ("JWT_SECRET", "short"),
            ("DATABASE_URL", "postgres://a:b@h:notaport/db"),
            ("COOKIE_SECURE", "maybe"),
            ("TOTP_KEY", "abcd"),
            ("ALLOWED_ORIGINS", "not a url"),
            ("HTTP_HEADER_TIMEOUT", "0"),
            ("HTTP_IDLE_TIMEOUT", "ten"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("METRICS_TOKEN", "short"),
            ("TRUSTED_PROXIES", "10.0.0.1,nginx"),
            ("WS_DRAIN_TIMEOUT", "0"),
            ("SEAT_BATCH_MAX", "0"),
            ("SEAT_BATCH_MAX", "65"),
        ] {
            let e = Config::from_vars(&vars(&[(k, v)])).unwrap_err();
            assert_eq!(e.var, k, "{k}={v}");
            assert!(e.to_string().starts_with(k));
        }
    }

    #[test]
    fn migration_url_defaults_to_database_url() {
        let app = "postgresql://marquee_app@db/marquee";
        let owner = "postgresql://marquee_owner@db/marquee";
        let c = Config::from_vars(&vars(&[("DATABASE_URL", app)])).unwrap();
        assert_eq!(c.migration_database_url, None);
        assert_eq!(c.migration_url(), Some(app));
        let c = Config::from_vars(&vars(&[
            ("DATABASE_URL", app),
            ("MIGRATION_DATABASE_URL", owner),
        ]))
        .unwrap();
        assert_eq!(c.database_url.as_deref(), Some(app));
        assert_eq!(c.migration_url(), Some(owner));
        assert_eq!(Config::from_vars(&vars(&[])).unwrap().migration_url(), None);
        for bad in [
            vec![("MIGRATION_DATABASE_URL", owner)],
            vec![
                ("DATABASE_URL", app),
                ("MIGRATION_DATABASE_URL", "postgres://a:b@h:notaport/db"),
            ],
        ] {
            let e = Config::from_vars(&vars(&bad)).unwrap_err();
            assert_eq!(e.var, "MIGRATION_DATABASE_URL", "{bad:?}");
        }
    }

    #[test]
    fn origins_are_normalised() {
        let c = Config::from_vars(&vars(&[(
            "ALLOWED_ORIGINS",
            "https://cinema.example/, http://localhost:8080",
        )]))
        .unwrap();
        assert_eq!(
            c.allowed_origins.unwrap(),
            vec!["https://cinema.example", "http://localhost:8080"]
        );
    }

    #[test]
    fn seat_batch_max_defaults_to_32() {
        assert_eq!(Config::from_vars(&vars(&[])).unwrap().seat_batch_max, 32);
        let c = Config::from_vars(&vars(&[("SEAT_BATCH_MAX", "1")])).unwrap();
        assert_eq!(c.seat_batch_max, 1);
    }

    #[test]
    fn secrets_do_not_print() {
        let c = Config::from_vars(&vars(&[("JWT_SECRET", &"s".repeat(40))])).unwrap();
        assert!(!format!("{c:?}").contains("sss"));
    }
}
