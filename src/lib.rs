//! Marquee: a real-time cinema seat-booking backend.
//!
//! The business rules live in PostgreSQL (`sql/`, `migrations/`); this crate
//! authenticates, validates, routes and fans out. The source is layered, and a
//! module only imports from layers below its own (checked by
//! `tests/layers.rs`):
//!
//! ```text
//! controllers   WebSocket + HTTP edge: envelope, auth at the upgrade, error mapping
//!   methods | subscriptions   request handlers | hall subscriptions and fan-out
//!     models    typed calls of the SQL API, SQLSTATE -> domain errors
//!       core    DB pool, migrations, embedded PostgreSQL, LISTEN connection, socket hub
//!         shared    config, ids, wire protocol types, clocks
//! ```
//!
//! `methods` and `subscriptions` never import each other; they meet in
//! `controllers`. [`app`] wires the layers into a running server and is what
//! `main.rs`, the tests and the benchmark start.

pub mod app;
pub mod cli;
pub mod controllers;
pub mod core;
pub mod methods;
pub mod models;
pub mod shared;
pub mod subscriptions;
