//! The core layer's error type.

/// Failures of the infrastructure.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The database cannot be reached now (pool timeout, connection refused,
    /// connection lost). Callers answer `UNAVAILABLE`.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement failed; the SQLSTATE lets upper layers map business errors.
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("embedded PostgreSQL: {0}")]
    Embedded(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<deadpool_postgres::PoolError> for CoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => classify(e),
            other => CoreError::Unavailable(other.to_string()),
        }
    }
}

/// Splits a driver error into "the database is unreachable" (retryable) and
/// a statement's own failure.
pub fn classify(e: tokio_postgres::Error) -> CoreError {
    let unreachable = e.is_closed()
        || e.code().is_none()
            && std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
        || e.code().is_some_and(|c| {
            // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
            matches!(c.code(), "57P01" | "57P02" | "57P03" | "53300")
        });
    if unreachable {
        CoreError::Unavailable(e.to_string())
    } else {
        CoreError::Db(e)
    }
}
