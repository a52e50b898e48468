//! The schema's lifecycle: refinery migrations, then `sql/` re-applied in
//! one transaction and recorded with its digest and release
//! (`marquee_sql_state`, migration V14), under an advisory lock so replicas
//! starting together take turns; and the few statements that set up a
//! database before any `api.*` function exists (the embedded cluster's
//! database and its application role's password).
//!
//! Each statement is a named function here, so the rest of the crate holds
//! no SQL text outside `models/`. It must not know business rules: those are
//! the `sql/` files it applies.

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, GenericClient};

use super::db::describe;
use super::CoreError;

mod embedded_files {
    include!(concat!(env!("OUT_DIR"), "/sql_files.rs"));
}
pub use embedded_files::SQL_FILES;

refinery::embed_migrations!("migrations");

/// Any advisory-lock key works as long as every replica uses the same one.
const MIGRATION_LOCK: i64 = 0x4d51_5545_4531; // "MQUEE1"

/// The release whose `sql/` this binary carries, recorded with its digest.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

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

/// Applies migrations and `sql/` under an advisory lock, so replicas
/// starting together take turns. With `force` false, `sql/` is skipped when
/// the same text was applied before and no migration ran now (a fast
/// restart; after a migration, `sql/90_grants.sql` must see the new tables,
/// and a dropped function must be re-created).
///
/// Connect as the owner role or a superuser (`MIGRATION_DATABASE_URL`). Any
/// other role (the server's `marquee_app`) changes nothing: on a migrated
/// database the report says so (`not_migrated_as`), on a database never
/// migrated it is an error.
pub async fn migrate(client: &mut Client, force: bool) -> Result<MigrateReport, CoreError> {
    if let Some(role) = may_not_migrate(client).await? {
        return Ok(MigrateReport {
            not_migrated_as: Some(role),
            ..MigrateReport::default()
        });
    }
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let res = apply(client, force).await;
    // The lock is the session's: a failed unlock ends with the connection.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    res
}

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
async fn may_not_migrate(client: &Client) -> Result<Option<String>, CoreError> {
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

/// The digest and release of the `sql/` applied last, if any.
async fn applied_sql(client: &Client) -> Result<Option<(String, Option<String>)>, CoreError> {
    Ok(client
        .query_opt("SELECT digest, release FROM marquee_sql_state", &[])
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// Records the `sql/` just applied (one row: the table's key is fixed).
async fn record_sql(client: &impl GenericClient, digest: &str) -> Result<(), CoreError> {
    client
        .execute(
            "INSERT INTO marquee_sql_state (digest, release) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET digest = excluded.digest, release = excluded.release,
                                            applied_at = now()",
            &[&digest, &RELEASE],
        )
        .await?;
    Ok(())
}

async fn apply(client: &mut Client, force: bool) -> Result<MigrateReport, CoreError> {
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
    let current = applied_sql(client).await?;
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
    record_sql(&tx, &digest).await?;
    tx.commit().await?;
    Ok(MigrateReport {
        migrations_applied,
        sql_applied: true,
        ..MigrateReport::default()
    })
}

/// Lets `role` log in with a SCRAM verifier (base64 and `$:`, nothing to
/// escape; checked here all the same), or without a password (`None`: only
/// `trust` lets it in). `ALTER ROLE` takes no parameters, hence the text.
pub async fn set_login_password(
    client: &Client,
    role: &str,
    verifier: Option<&str>,
) -> Result<(), CoreError> {
    let plain = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"$:+/=_-".contains(&b))
    };
    if !plain(role) || !verifier.is_none_or(plain) {
        return Err(CoreError::Migration(format!(
            "refusing to set the password of role {role}: unexpected characters"
        )));
    }
    let password = verifier.map_or_else(|| "NULL".to_owned(), |v| format!("'{v}'"));
    client
        .batch_execute(&format!("ALTER ROLE {role} WITH LOGIN PASSWORD {password}"))
        .await
        .map_err(|e| CoreError::Migration(format!("role {role}: {}", describe(&e))))
}

/// Creates database `name` unless it exists (`CREATE DATABASE` has no
/// `IF NOT EXISTS`).
pub async fn ensure_database(client: &Client, name: &str) -> Result<(), CoreError> {
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let quoted = name.replace('"', "\"\"");
        client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await?;
    }
    Ok(())
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
