//! Wiring: builds the layers into a running server on two bound listeners
//! and stops it gracefully. `main`, the tests and the benchmark all start
//! servers through [`Server::start`]; several can run in one process (as
//! replicas sharing one database).
//!
//! Background work of each replica: the notification dispatcher (hall
//! channels to the router, `marquee_sessions` to the session registry), the
//! hold-expiry sweep (every second), and the session check (every 30 s, a
//! backstop for revocations missed while the LISTEN connection was down).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::controllers::{self, sessions::Sessions, Origins, State};
use crate::core::db::Db;
use crate::core::hub::{Hub, SEND_QUEUE_BYTES};
use crate::core::listener::{Listener, ListenerEvent};
use crate::core::metrics::Metrics;
use crate::core::CoreError;
use crate::methods::auth::{self, AuthKeys};
use crate::models::seats;
use crate::models::writer::{SeatWriter, SEAT_STALL};
use crate::shared::config::Config;
use crate::subscriptions::HallRouter;

/// The channel every replica listens on for session revocations.
pub const SESSIONS_CHANNEL: &str = "marquee_sessions";

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// Options that tests tune; production uses the defaults.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Per-socket send queue, bytes.
    pub send_queue_bytes: usize,
    /// Run the hold-expiry sweep.
    pub sweep_every: Option<Duration>,
    /// Apply migrations and `sql/` at start (as `MIGRATION_DATABASE_URL` when set).
    pub migrate: bool,
    /// How long the seat writer's batch may run before the next starts beside it.
    pub seat_stall: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            send_queue_bytes: SEND_QUEUE_BYTES,
            sweep_every: Some(Duration::from_secs(1)),
            migrate: true,
            seat_stall: SEAT_STALL,
        }
    }
}

/// A running server.
pub struct Server {
    pub http_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    pub replica_id: String,
    state: Arc<State>,
    shutdown_tx: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
}

fn replica_id() -> String {
    format!(
        "marquee-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

impl Server {
    /// Starts a replica serving HTTP on `http` and WebSocket on `ws`.
    pub async fn start(
        config: Config,
        http: TcpListener,
        ws: TcpListener,
        tuning: Tuning,
    ) -> Result<Self, AppError> {
        let url = config
            .database_url
            .clone()
            .ok_or_else(|| AppError::Config("DATABASE_URL: not set".into()))?;
        let auth = AuthKeys::from_config(&config)
            .ok_or_else(|| AppError::Config("JWT_SECRET: not set".into()))?;
        let db = Db::new(&url, config.pool_size)?;
        if tuning.migrate {
            // As the owner (or a superuser): the server's own role may only call api functions.
            let owner = config.migration_url().unwrap_or(&url);
            let report = Db::new(owner, 1)?.migrate(false).await?;
            if let Some(role) = report.not_migrated_as {
                tracing::warn!(%role, "not migrating: set MIGRATION_DATABASE_URL to let replicas migrate");
            }
            if let Some(line) = report.sql_refused {
                tracing::warn!("{line}");
            }
        }
        let metrics = Arc::new(Metrics::default());
        // Bounded: a slow dispatcher makes the listener read the socket more
        // slowly; PostgreSQL queues notifications meanwhile.
        let (events_tx, events_rx) = mpsc::channel(16 * 1024);
        let listener = Listener::spawn(db.clone(), events_tx, metrics.clone());
        listener.listen(SESSIONS_CHANNEL).await?;
        let router = HallRouter::new(db.clone(), listener.clone(), metrics.clone());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let http_addr = http.local_addr().map_err(CoreError::Io)?;
        let ws_addr = ws.local_addr().map_err(CoreError::Io)?;
        let replica_id = replica_id();
        let drain_timeout = config.ws_drain_timeout;
        let seats = SeatWriter::spawn(
            db.clone(),
            config.seat_batch_max,
            tuning.seat_stall,
            metrics.clone(),
        );
        let state = Arc::new(State {
            origins: Origins::new(config.origins_for(http_addr.port())),
            config,
            replica_id: replica_id.clone(),
            db: db.clone(),
            seats,
            auth,
            hub: Hub::default(),
            router: router.clone(),
            listener: listener.clone(),
            metrics: metrics.clone(),
            sessions: Sessions::default(),
            shutdown: shutdown_rx.clone(),
            send_queue_bytes: tuning.send_queue_bytes,
            drain_timeout,
        });

        let mut background = vec![tokio::spawn(dispatch_events(events_rx, state.clone()))];
        if let Some(every) = tuning.sweep_every {
            background.push(tokio::spawn(sweep(db.clone(), metrics.clone(), every)));
        }
        background.push(tokio::spawn(check_sessions(state.clone())));

        let http_server = tokio::spawn(controllers::http_conn::serve_listener(
            http,
            state.clone(),
            ws_addr.port(),
        ));
        let ws_server = tokio::spawn(controllers::ws::serve_listener(ws, state.clone()));
        Ok(Self {
            http_addr,
            ws_addr,
            replica_id,
            state,
            shutdown_tx,
            servers: vec![http_server, ws_server],
            background,
        })
    }

    /// Graceful stop: no new connections, every socket finishes its
    /// current request and is closed with 1001, then background tasks stop.
    pub async fn shutdown(self) {
        let _ = self.shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.state.hub.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for s in self.servers {
            let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
        }
        for b in self.background {
            b.abort();
        }
    }
}

/// Routes LISTEN events: hall channels to the router, session revocations
/// to the registry; after a reconnect, everything is resynchronised.
async fn dispatch_events(mut events: mpsc::Receiver<ListenerEvent>, state: Arc<State>) {
    while let Some(ev) = events.recv().await {
        match ev {
            ListenerEvent::Notification {
                channel,
                payload,
                received,
            } => {
                if channel == SESSIONS_CHANNEL {
                    if let Ok(id) = payload.parse() {
                        state.sessions.end(id);
                    }
                } else if channel.starts_with("hall_") {
                    state.router.on_notification(&payload, received);
                }
            }
            ListenerEvent::Reconnected => {
                state.router.resync_all();
                let s = state.clone();
                tokio::spawn(async move { end_dead_sessions(&s).await });
            }
        }
    }
}

async fn end_dead_sessions(state: &State) {
    let ids = state.sessions.ids();
    if ids.is_empty() {
        return;
    }
    match auth::dead_sessions(&state.db, &ids).await {
        Ok(dead) => dead.into_iter().for_each(|id| state.sessions.end(id)),
        Err(e) => tracing::debug!(error = %e, "session check skipped"),
    }
}

async fn check_sessions(state: Arc<State>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        end_dead_sessions(&state).await;
        n += 1;
        if n.is_multiple_of(20) {
            if let Err(e) = auth::prune(&state.db).await {
                tracing::debug!(error = %e, "auth housekeeping skipped");
            }
        }
    }
}

async fn sweep(db: Db, metrics: Arc<Metrics>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match seats::sweep_expired(&db).await {
            Ok(n) if n > 0 => {
                metrics
                    .expired_holds_swept
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "hold sweep skipped"),
        }
    }
}
