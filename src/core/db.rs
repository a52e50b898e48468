//! The database: the connection pool every request uses, and the schema
//! runner (refinery migrations, then `sql/` re-applied in one transaction).
//!
//! Pooled connections carry `application_name=marquee`; the LISTEN
//! connection (see [`super::listener`]) is separate and never pooled.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use sha2::{Digest, Sha256};
use tokio_postgres::NoTls;

use super::CoreError;

mod embedded_files {
    include!(concat!(env!("OUT_DIR"), "/sql_files.rs"));
}
pub use embedded_files::SQL_FILES;

refinery::embed_migrations!("migrations");

/// Any advisory-lock key works as long as every replica uses the same one.
const MIGRATION_LOCK: i64 = 0x4d51_5545_4531; // "MQUEE1"

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

    /// Applies migrations and `sql/` under an advisory lock, so replicas
    /// starting together take turns. With `force` false, `sql/` is skipped
    /// when the same text was applied before and no migration ran now (a
    /// fast restart; after a migration, `sql/90_grants.sql` must see the new
    /// tables, and a dropped function must be re-created).
    ///
    /// Connect as the owner role or a superuser (`MIGRATION_DATABASE_URL`).
    /// Any other role (the server's `marquee_app`) changes nothing: on a
    /// migrated database the report says so (`not_migrated_as`), on a
    /// database never migrated it is an error.
    pub async fn migrate(&self, force: bool) -> Result<MigrateReport, CoreError> {
        let (mut client, conn) = self.connect_direct("marquee-migrate").await?;
        let driver = tokio::spawn(conn);
        let result = async {
            if let Some(role) = may_not_migrate(&client).await? {
                return Ok(MigrateReport {
                    not_migrated_as: Some(role),
                    ..MigrateReport::default()
                });
            }
            client
                .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            let res = apply(&mut client, force).await;
            let _ = client
                .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
                .await;
            res
        }
        .await;
        drop(client);
        let _ = driver.await;
        result
    }
}

/// What a migration run did.
#[derive(Debug, Clone, Default)]
pub struct MigrateReport {
    pub migrations_applied: Vec<String>,
    pub sql_applied: bool,
    /// Set when nothing was tried because the connected role (named here)
    /// may not migrate, on a database that was migrated before.
    pub not_migrated_as: Option<String>,
    /// Set (to the one line that says why) when `sql/` was not applied
    /// because a newer release applied its own: in a rolling deploy an old
    /// replica that restarts must not put the old functions back.
    pub sql_refused: Option<String>,
}

/// The release whose `sql/` this binary carries, recorded with its digest.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// Whether release `a` is newer than `b` (dotted numbers compared as
/// numbers; a part that is not a number counts as 0).
pub fn release_newer(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a) > parts(b)
}

/// The connected role when it may not migrate: neither a superuser nor a
/// member of `marquee_owner` (once migration V7 created that role). An error
/// when such a role finds a database that was never migrated.
async fn may_not_migrate(client: &tokio_postgres::Client) -> Result<Option<String>, CoreError> {
    let row = client
        .query_one(
            "SELECT current_user::text,
                    CASE WHEN (SELECT r.rolsuper FROM pg_roles AS r WHERE r.rolname = current_user) THEN true
                         WHEN NOT EXISTS (SELECT FROM pg_roles AS r WHERE r.rolname = 'marquee_owner') THEN true
                         ELSE pg_has_role(current_user, 'marquee_owner', 'MEMBER')
                    END,
                    EXISTS (SELECT FROM pg_proc AS p WHERE p.pronamespace = to_regnamespace('api'))",
            &[],
        )
        .await?;
    let (role, may, migrated): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if may {
        return Ok(None);
    }
    if !migrated {
        return Err(CoreError::Migration(format!(
            "the database has no schema yet and role {role} may not create it (only marquee_owner or a \
             superuser may): set MIGRATION_DATABASE_URL"
        )));
    }
    Ok(Some(role))
}

/// The SHA-256 of all `sql/` files, names included: what was applied.
pub fn sql_digest() -> String {
    let mut h = Sha256::new();
    for (name, text) in SQL_FILES {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

async fn apply(
    client: &mut tokio_postgres::Client,
    force: bool,
) -> Result<MigrateReport, CoreError> {
    let report = migrations::runner()
        .set_abort_divergent(true)
        .run_async(client)
        .await
        .map_err(|e| CoreError::Migration(e.to_string()))?;
    let migrations_applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect();
    let digest = sql_digest();
    let current = client
        .query_opt("SELECT digest, release FROM marquee_sql_state", &[])
        .await?
        .map(|r| (r.get::<_, String>(0), r.get::<_, Option<String>>(1)));
    if let Some((_, Some(applied))) = &current {
        if release_newer(applied, RELEASE) {
            return Ok(MigrateReport {
                migrations_applied,
                sql_applied: false,
                not_migrated_as: None,
                sql_refused: Some(format!(
                    "sql/ not applied: the database has the functions of release {applied}, newer than this \
                     release {RELEASE}"
                )),
            });
        }
    }
    let same = current.as_ref().map(|(d, _)| d.as_str()) == Some(digest.as_str());
    if !force && migrations_applied.is_empty() && same {
        return Ok(MigrateReport {
            migrations_applied,
            ..MigrateReport::default()
        });
    }
    let tx = client.transaction().await?;
    for (name, text) in SQL_FILES {
        tx.batch_execute(text)
            .await
            .map_err(|e| CoreError::Migration(format!("sql/{name}: {}", describe(&e))))?;
    }
    tx.execute(
        "INSERT INTO marquee_sql_state (digest, release) VALUES ($1, $2)
         ON CONFLICT (id) DO UPDATE SET digest = excluded.digest, release = excluded.release,
                                        applied_at = now()",
        &[&digest, &RELEASE],
    )
    .await?;
    tx.commit().await?;
    Ok(MigrateReport {
        migrations_applied,
        sql_applied: true,
        ..MigrateReport::default()
    })
}

/// The server's message of a failed statement (for operators, never clients).
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::release_newer;

    #[test]
    fn releases_compare_as_numbers() {
        assert!(release_newer("0.10.0", "0.9.3"));
        assert!(release_newer("1.0.0", "0.99.99"));
        assert!(!release_newer("0.2.0", "0.2.0"));
        assert!(!release_newer("0.2.0", "0.3.0"));
        assert!(!release_newer("0.2.0-rc1", "0.2.0"));
    }
}
