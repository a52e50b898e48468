//! The edge: the WebSocket controller (upgrade, envelope, rate limit,
//! dispatch) and the HTTP controller (health, readiness, metrics, the auth
//! cookie, the demo web client). Methods and subscriptions meet here, and
//! every internal error becomes a contract error code in `errors`.

pub mod answers;
pub mod dispatch;
pub mod errors;
pub mod http;
pub mod http_conn;
pub mod sessions;
pub mod upgrade;
pub mod web;
pub mod ws;

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::db::Db;
use crate::core::hub::Hub;
use crate::core::listener::Listener;
use crate::core::metrics::Metrics;
use crate::methods::auth::AuthKeys;
use crate::models::writer::SeatWriter;
use crate::shared::config::Config;
use crate::subscriptions::HallRouter;

/// Everything a connection or HTTP request needs; shared by all of them.
pub struct State {
    pub config: Config,
    /// Unique to this running server (two replicas in one process differ).
    pub replica_id: String,
    pub db: Db,
    /// Runs the seat changes (batched, see models::writer).
    pub seats: SeatWriter,
    pub auth: AuthKeys,
    pub hub: Hub,
    pub router: Arc<HallRouter>,
    pub listener: Listener,
    pub metrics: Arc<Metrics>,
    pub sessions: sessions::Sessions,
    /// Origins allowed at the upgrade and on the HTTP port's cookie routes.
    pub origins: Origins,
    /// Flips to true when the server starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Per-connection send queue, bytes.
    pub send_queue_bytes: usize,
    /// How long one write to a socket may take (then 1013).
    pub drain_timeout: std::time::Duration,
}

/// The `Origin` policy: which pages may open a socket or set the cookie
/// with the user's credentials (cross-site WebSocket hijacking, CSRF).
#[derive(Debug, Clone, Default)]
pub struct Origins(Vec<String>);

impl Origins {
    /// From `scheme://host[:port]` entries (compared without a trailing
    /// slash and case-insensitively, as browsers send them).
    pub fn new(list: Vec<String>) -> Self {
        Self(
            list.into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        )
    }

    /// True when a request with this `Origin` header (if any) is allowed:
    /// clients that send none (command-line tools, apps) are not browsers
    /// carrying someone's cookie.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(o) => {
                let o = o.trim().trim_end_matches('/').to_ascii_lowercase();
                self.0.contains(&o)
            }
        }
    }
}

impl State {
    /// The Origin policy of this server (see [`Origins`]).
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        self.origins.allows(origin)
    }
}
