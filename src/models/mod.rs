//! Typed calls of the SQL API (`api.*` functions in `sql/`). This is the one
//! place that knows SQL: statement text, column types, and the SQLSTATEs
//! business errors are raised with. Upper layers see domain types and
//! [`ModelError`].

pub mod auth;
pub mod catalogue;
pub mod changes;
pub mod demo;
pub mod error;
pub mod seats;
pub mod writer;

pub use error::ModelError;
