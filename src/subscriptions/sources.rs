//! What the hall router needs from the outside world, as two small traits:
//! hall snapshots (PostgreSQL in production) and the LISTEN side (the
//! replica's listener). The router is generic over them so its gapless
//! delivery can be tested deterministically, with scripted snapshots and
//! notifications fed by hand (see the tests in `router.rs`).

use std::future::Future;

use crate::core::db::Db;
use crate::core::listener::Listener;
use crate::models::catalogue::{self, HallSnapshot};
use crate::models::ModelError;
use crate::shared::ids::{HallId, ScreeningId};

/// Reads halls: which hall a screening is in, and its seat map at one version.
pub trait Snapshots: Send + Sync + 'static {
    fn screening_hall(
        &self,
        screening: ScreeningId,
    ) -> impl Future<Output = Result<HallId, ModelError>> + Send;

    fn hall_snapshot(
        &self,
        screening: ScreeningId,
    ) -> impl Future<Output = Result<HallSnapshot, ModelError>> + Send;
}

/// LISTENs on hall channels, reference-counted: every `listen` that
/// succeeded is matched by one `unlisten`.
pub trait Channels: Send + Sync + 'static {
    /// Resolves once the LISTEN is confirmed; an error when it cannot be.
    fn listen(&self, channel: &str) -> impl Future<Output = Result<(), String>> + Send;

    /// Drops a reference; called from synchronous code (under the router's
    /// lock and in `Drop`), so it must not wait.
    fn unlisten(&self, channel: &str);
}

impl Snapshots for Db {
    fn screening_hall(
        &self,
        screening: ScreeningId,
    ) -> impl Future<Output = Result<HallId, ModelError>> + Send {
        catalogue::screening_hall(self, screening)
    }

    fn hall_snapshot(
        &self,
        screening: ScreeningId,
    ) -> impl Future<Output = Result<HallSnapshot, ModelError>> + Send {
        catalogue::hall_snapshot(self, screening)
    }
}

impl Channels for Listener {
    async fn listen(&self, channel: &str) -> Result<(), String> {
        Listener::listen(self, channel)
            .await
            .map_err(|e| e.to_string())
    }

    fn unlisten(&self, channel: &str) {
        Listener::unlisten(self, channel)
    }
}
