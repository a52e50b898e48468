//! The LISTEN connection: one per replica, dedicated (a pooled connection is
//! reset on recycle, which would drop its LISTENs), named
//! `marquee-listener` in `pg_stat_activity`.
//!
//! Channels are reference-counted: the first [`Listener::listen`] of a
//! channel runs `LISTEN` and returns only once PostgreSQL confirmed it (so a
//! caller can then read a snapshot without a gap); the last
//! [`Listener::unlisten`] runs `UNLISTEN`. When the connection is lost (or
//! stops answering the `SELECT 1` probe sent every 10 s), the task
//! reconnects with backoff, re-LISTENs every channel and then emits
//! [`ListenerEvent::Reconnected`], because notifications sent meanwhile are
//! gone and consumers must resynchronise.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::poll_fn;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;

use super::db::Db;
use super::metrics::Metrics;
use super::CoreError;

/// How often the idle LISTEN connection is asked `SELECT 1`. A connection
/// that a network partition or a stalled proxy silenced reports no error
/// and receives no notification; only a question shows it is dead. The
/// probe also keeps idle-timeouts of middleboxes from cutting it.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// An unanswered probe after this long means the connection is lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the listener reports.
#[derive(Debug)]
pub enum ListenerEvent {
    Notification {
        channel: String,
        payload: String,
        /// When it came off the socket, to measure forwarding lag.
        received: Instant,
    },
    /// The connection was re-established after a loss; anything may have
    /// been missed.
    Reconnected,
}

enum Command {
    Listen(String, oneshot::Sender<Result<(), CoreError>>),
    Unlisten(String),
}

/// A handle on the listener task; cheap to clone.
#[derive(Clone)]
pub struct Listener {
    commands: mpsc::UnboundedSender<Command>,
    up: Arc<AtomicBool>,
}

impl Listener {
    /// Starts the listener task. Events go to `events` (bounded: if the
    /// consumer falls behind, the socket is simply read more slowly and
    /// PostgreSQL queues the notifications).
    pub fn spawn(db: Db, events: mpsc::Sender<ListenerEvent>, metrics: Arc<Metrics>) -> Self {
        // Commands are tiny and issued at most once per subscribe/unsubscribe,
        // which are themselves rate-limited per connection.
        let (tx, rx) = mpsc::unbounded_channel();
        let up = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(db, rx, events, up.clone(), metrics));
        Self { commands: tx, up }
    }

    /// LISTENs on `channel` (or adds a reference) and waits for the
    /// confirmation. Fails with `Unavailable` while the connection is down.
    pub async fn listen(&self, channel: &str) -> Result<(), CoreError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Listen(channel.to_owned(), tx))
            .map_err(|_| CoreError::Unavailable("listener stopped".into()))?;
        rx.await
            .map_err(|_| CoreError::Unavailable("listener stopped".into()))?
    }

    /// Drops a reference; the last one UNLISTENs.
    pub fn unlisten(&self, channel: &str) {
        let _ = self.commands.send(Command::Unlisten(channel.to_owned()));
    }

    /// A listener without a task, so without a database: every `listen`
    /// fails with `Unavailable` (unit tests of the layers above).
    #[cfg(test)]
    pub fn stopped() -> Self {
        let (commands, _) = mpsc::unbounded_channel();
        Self {
            commands,
            up: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True while the connection is up and every channel is listened.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

fn quote(channel: &str) -> String {
    format!("\"{}\"", channel.replace('"', "\"\""))
}

async fn run(
    db: Db,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<ListenerEvent>,
    up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    // channel -> number of holders
    let mut channels: HashMap<String, usize> = HashMap::new();
    let mut first = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = db.connect_direct("marquee-listener").await;
        let (client, mut connection) = match connected {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN connection failed; retrying in {backoff:?}");
                if !wait_or_serve(&mut commands, &mut channels, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (closed_tx, mut closed_rx) = oneshot::channel::<()>();
        let ev = events.clone();
        let driver = tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        let event = ListenerEvent::Notification {
                            channel: n.channel().to_owned(),
                            payload: n.payload().to_owned(),
                            received: Instant::now(),
                        };
                        if ev.send(event).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "LISTEN connection lost");
                        break;
                    }
                    None => break,
                }
            }
            let _ = closed_tx.send(());
        });
        let relisten: String = channels
            .keys()
            .map(|c| format!("LISTEN {};", quote(c)))
            .collect();
        if !relisten.is_empty() {
            if let Err(e) = client.batch_execute(&relisten).await {
                tracing::warn!(error = %e, "re-LISTEN failed");
                driver.abort();
                continue;
            }
        }
        up.store(true, Ordering::Relaxed);
        backoff = Duration::from_millis(100);
        if !first {
            metrics.listener_reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(channels = channels.len(), "LISTEN connection restored");
            if events.send(ListenerEvent::Reconnected).await.is_err() {
                return;
            }
        }
        first = false;
        let mut probe =
            tokio::time::interval_at(tokio::time::Instant::now() + PROBE_EVERY, PROBE_EVERY);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut closed_rx => break,
                _ = probe.tick() => {
                    let answer = tokio::time::timeout(PROBE_TIMEOUT, client.simple_query("SELECT 1")).await;
                    if !matches!(answer, Ok(Ok(_))) {
                        tracing::warn!("LISTEN connection does not answer; reconnecting");
                        break;
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { driver.abort(); return; };
                    let ok = match cmd {
                        Command::Listen(ch, reply) => {
                            let n = channels.entry(ch.clone()).or_insert(0);
                            *n += 1;
                            if *n == 1 {
                                match client.batch_execute(&format!("LISTEN {}", quote(&ch))).await {
                                    Ok(()) => { let _ = reply.send(Ok(())); true }
                                    Err(e) => {
                                        release(&mut channels, &ch);
                                        let _ = reply.send(Err(CoreError::Unavailable(e.to_string())));
                                        false
                                    }
                                }
                            } else {
                                // Already confirmed: commands run one at a
                                // time, so an earlier LISTEN has completed.
                                let _ = reply.send(Ok(()));
                                true
                            }
                        }
                        Command::Unlisten(ch) => {
                            if release(&mut channels, &ch) {
                                client.batch_execute(&format!("UNLISTEN {}", quote(&ch))).await.is_ok()
                            } else {
                                true
                            }
                        }
                    };
                    if !ok {
                        break;
                    }
                }
            }
        }
        up.store(false, Ordering::Relaxed);
        driver.abort();
        drop(client);
    }
}

/// Drops one reference; true when it was the last.
fn release(channels: &mut HashMap<String, usize>, ch: &str) -> bool {
    match channels.get_mut(ch) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            channels.remove(ch);
            true
        }
        None => false,
    }
}

/// While disconnected: keep the reference counts right and refuse new
/// LISTENs (the caller answers `UNAVAILABLE`) until `wait` has passed.
/// Returns false when every handle is gone.
async fn wait_or_serve(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    channels: &mut HashMap<String, usize>,
    wait: Duration,
) -> bool {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return true,
            cmd = commands.recv() => match cmd {
                None => return false,
                Some(Command::Listen(_, reply)) => {
                    let _ = reply.send(Err(CoreError::Unavailable("LISTEN connection is down".into())));
                }
                Some(Command::Unlisten(ch)) => { release(channels, &ch); }
            }
        }
    }
}
