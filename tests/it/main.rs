//! The integration tests: one binary, one harness ([`harness`]), one shared
//! PostgreSQL cluster and migrated template for all of them, and a module
//! per area. Tests that need a process of their own are the other files of
//! `tests/` (each says why in its first line).

mod harness;

mod auth;
mod auth_http;
mod batches;
mod box_office;
mod catalogue;
mod embedded;
mod envelope;
mod faults;
mod http;
mod links;
mod live;
mod logs;
mod nginx;
mod properties;
mod readme;
mod replicas;
mod roles;
mod seats;
mod security;
mod smoke;
mod teardown;
