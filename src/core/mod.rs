//! Infrastructure: the database pool and migrations, the embedded
//! PostgreSQL, the dedicated LISTEN connection, the socket hub and the
//! metrics registry. It knows nothing of cinemas or seats: channels are
//! strings and payloads are bytes to it.

pub mod db;
pub mod embedded;
pub mod error;
pub mod hub;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod schema;

pub use error::CoreError;
