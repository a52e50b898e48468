//! The one test harness, shared by every module of `tests/it` and, through
//! `#[path = "it/harness/mod.rs"]`, by the few test binaries that need a
//! process of their own:
//!
//! * [`db`]: the shared throw-away cluster (or `TEST_DATABASE_URL`), the
//!   migrated template, [`TestDb`] clones that drop themselves, fixtures;
//! * [`cluster`]: [`PrivateCluster`], a cluster one test owns and may stop;
//! * [`replica`]: servers in this process ([`TestApp`]) or in a child
//!   process ([`ChildReplica`]), and their HTTP port;
//! * [`client`]: the one WebSocket [`Client`], with typed request helpers;
//! * [`proxy`]: [`PgProxy`], a TCP proxy in front of PostgreSQL;
//! * [`prereq`]: the line a test fails with when a tool is missing.

#![allow(dead_code, unused_imports)]

pub mod client;
pub mod cluster;
pub mod db;
pub mod prereq;
pub mod proxy;
pub mod replica;

use std::future::Future;
use std::time::Duration;

pub use client::*;
pub use cluster::*;
pub use db::*;
pub use proxy::*;
pub use replica::*;

/// How long a test waits for an expected frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` every 50 ms until it is true; panics after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
