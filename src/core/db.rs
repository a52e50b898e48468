//! The database: the connection pool every request uses, and connections
//! outside it (the LISTEN connection, the schema runner of [`super::schema`]).
//! It holds no SQL of its own beyond a liveness probe.
//!
//! Pooled connections carry `application_name=marquee`; the LISTEN
//! connection (see [`super::listener`]) is separate and never pooled.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::schema;
pub use super::schema::{MigrateReport, RELEASE};
use super::CoreError;

/// How long a request waits for a pooled connection before `UNAVAILABLE`.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// The shared pool, cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    config: tokio_postgres::Config,
}

/// A pooled connection; derefs to a `tokio_postgres::Client` with a
/// prepared-statement cache (`prepare_cached`).
pub type Conn = deadpool_postgres::Object;

impl Db {
    /// Builds the pool (connections are made lazily).
    pub fn new(url: &str, size: usize) -> Result<Self, CoreError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| CoreError::Unavailable(format!("bad database URL: {e}")))?;
        config.application_name("marquee");
        config.connect_timeout(Duration::from_secs(5));
        let mgr = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // Fast: keep prepared statements across checkouts; a broken
                // connection is noticed by `is_closed`.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| CoreError::Unavailable(e.to_string()))?;
        Ok(Self { pool, config })
    }

    /// A pooled connection, or `Unavailable` when the database cannot be reached.
    pub async fn conn(&self) -> Result<Conn, CoreError> {
        Ok(self.pool.get().await?)
    }

    /// The connection settings, for connections that must not be pooled
    /// (the LISTEN connection, the migration runner).
    pub fn pg_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Pool occupancy, for `/metrics`.
    pub fn status(&self) -> deadpool_postgres::Status {
        self.pool.status()
    }

    /// True when a pooled connection answers a trivial query.
    pub async fn ping(&self) -> bool {
        let probe = tokio::time::timeout(Duration::from_secs(2), async {
            let c = self.conn().await?;
            c.simple_query("SELECT 1").await.map_err(CoreError::from)
        });
        matches!(probe.await, Ok(Ok(_)))
    }

    /// Opens a connection that is not part of the pool.
    pub async fn connect_direct(
        &self,
        application_name: &str,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        CoreError,
    > {
        let mut cfg = self.config.clone();
        cfg.application_name(application_name);
        cfg.connect(NoTls).await.map_err(super::error::classify)
    }

    /// Applies migrations and `sql/` (see [`super::schema`]) on a connection
    /// of its own, outside the pool.
    pub async fn migrate(&self, force: bool) -> Result<MigrateReport, CoreError> {
        let (mut client, conn) = self.connect_direct("marquee-migrate").await?;
        let driver = tokio::spawn(conn);
        let result = schema::migrate(&mut client, force).await;
        drop(client);
        let _ = driver.await;
        result
    }
}

/// The server's message of a failed statement (for operators, never clients).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}
