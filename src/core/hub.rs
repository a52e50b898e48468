//! The socket hub: every open connection's outbound queue and close signal.
//!
//! Each socket has a queue drained by its own writer task, bounded in bytes
//! (what a slow reader pins in memory is what matters, and one answer can
//! be a hundred times another). Nothing that queues ever waits:
//!
//! * a push that does not fit closes the subscriber with 1013: it cannot
//!   keep up, and dropping pushes silently would corrupt its hall view;
//! * a response is always queued (the reader sends at most one before it
//!   looks again), and the connection's reader reads no further request
//!   while the queue is full ([`Peer::is_full`], [`Peer::drained`]), so a
//!   client that floods requests without reading stops itself, while the
//!   reader keeps running its timers.
//!
//! Pushes carry their frame in an `Arc`, rendered once for all subscribers
//! around the one part that differs per socket: the `eid`, escaped once per
//! subscription and spliced in by the writer. No lock here is held across
//! an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

use crate::shared::protocol::{push_head, push_tail};

/// Identifies one connection within this replica.
pub type ConnId = u64;

/// Bytes of frames a socket's queue holds before the writer sends them
/// (PROTOCOL.md "Abuse limits": 1 MiB per socket).
pub const SEND_QUEUE_BYTES: usize = 1024 * 1024;

/// What a queued frame costs beyond its text: the queue entry, the `eid`
/// and the envelope the writer adds. Also bounds the number of tiny frames.
const FRAME_OVERHEAD: usize = 64;

/// Close codes used by the server.
pub mod close {
    /// Normal closure (the echo of a client's close frame without a code).
    pub const NORMAL: u16 = 1000;
    /// Going away: the server shuts down.
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error: the peer broke RFC 6455's framing rules.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// Invalid frame payload data: a text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later: the database is down, or the socket cannot keep up.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A push's shared part: its frame before and after the `eid`, rendered
/// once for every subscriber of a change.
#[derive(Debug)]
pub struct SharedPush {
    /// `{"type":…,"data":…,"eid":`
    head: String,
    /// `,"ts":…}`
    tail: String,
}

impl SharedPush {
    /// A push of `kind` (`hall_update`, `hall_snapshot`) with its `data`
    /// already JSON, made at `ts`.
    pub fn new(kind: &str, data_json: &str, ts: i64) -> Self {
        let mut head = String::with_capacity(data_json.len() + kind.len() + 28);
        push_head(&mut head, kind, data_json);
        let mut tail = String::with_capacity(24);
        push_tail(&mut tail, ts);
        Self { head, tail }
    }

    /// The frame for one subscription, its `eid` given as a JSON string
    /// literal.
    pub fn frame(&self, eid_json: &str) -> String {
        let mut out = String::with_capacity(self.len() + eid_json.len());
        for part in self.parts(eid_json) {
            out.push_str(part);
        }
        out
    }

    /// The frame's three parts around `eid_json`, for a writer that copies
    /// them straight into its output.
    pub fn parts<'a>(&'a self, eid_json: &'a str) -> [&'a str; 3] {
        [&self.head, eid_json, &self.tail]
    }

    /// Bytes of the frame without its eid.
    fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }
}

/// One queued frame.
#[derive(Debug)]
pub enum Outbound {
    /// A complete frame (responses, errors, session frames).
    Text(String),
    /// A push, finished by the writer with this subscription's `eid`.
    Push {
        push: Arc<SharedPush>,
        /// The eid as a JSON string literal
        /// ([`crate::shared::protocol::json_str`]).
        eid: Arc<str>,
    },
    /// A WebSocket ping (the connection's liveness timer).
    Ping,
    /// The answer to a client's ping, with its payload (a `Vec`: a `Bytes`
    /// would make every queue slot 8 bytes larger, and tokio's channel
    /// allocates 32 slots per socket).
    Pong(Vec<u8>),
    /// Send a close frame after everything queued before it (a graceful
    /// close: shutdown, oversized frame).
    Close(u16),
}

impl Outbound {
    /// Bytes this frame counts against its socket's queue.
    fn cost(&self) -> usize {
        FRAME_OVERHEAD
            + match self {
                Outbound::Text(s) => s.len(),
                Outbound::Pong(p) => p.len(),
                Outbound::Push { push, eid } => push.len() + eid.len(),
                Outbound::Ping | Outbound::Close(_) => 0,
            }
    }
}

/// The byte count of one socket's queue, shared by its senders and writer.
#[derive(Debug)]
struct Budget {
    queued: AtomicUsize,
    limit: usize,
    /// Woken when the queue drops below `limit` again.
    drained: Notify,
}

/// Asks a connection to close with a code; the first code wins. The writer
/// looks at it before each write, so the close goes before whatever is still
/// queued; [`Peer::close`] also queues the close frame, which wakes an idle
/// writer (one wake-up source: the writer waits on its queue alone).
#[derive(Debug, Default)]
pub struct Closer {
    code: AtomicU16,
}

impl Closer {
    /// True when this call was the first (its code wins).
    pub fn close(&self, code: u16) -> bool {
        self.code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The close code asked for, if any.
    pub fn code(&self) -> Option<u16> {
        Some(self.code.load(Ordering::Acquire)).filter(|c| *c != 0)
    }
}

/// The sending side of one connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: ConnId,
    tx: mpsc::UnboundedSender<Outbound>,
    closer: Arc<Closer>,
    budget: Arc<Budget>,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue was full; the connection is being closed with 1013.
    SlowConsumer,
    /// The connection is gone.
    Closed,
}

impl Peer {
    /// Queues a push without waiting; one that does not fit closes the
    /// connection (1013). Into an empty queue anything fits, so a snapshot
    /// of a big hall reaches a reader that keeps up.
    pub fn push(&self, msg: Outbound) -> Result<(), PushError> {
        if self.closer.code().is_some() {
            // Closing already: nothing more is worth its memory.
            return Err(PushError::Closed);
        }
        let cost = msg.cost();
        let before = self.budget.queued.fetch_add(cost, Ordering::AcqRel);
        if before > 0 && before + cost > self.budget.limit {
            self.budget.queued.fetch_sub(cost, Ordering::AcqRel);
            // Only the push that overflowed reports the slow consumer
            // (it is counted once); later ones find it already closing.
            return if self.close(close::TRY_AGAIN_LATER) {
                Err(PushError::SlowConsumer)
            } else {
                Err(PushError::Closed)
            };
        }
        self.enqueue(msg, cost)
    }

    /// Queues a response or a close frame, never waiting and never
    /// refused for size: the reader checks [`Peer::is_full`] before it
    /// reads the next request, so a queue overshoots by one answer at most.
    pub fn send(&self, msg: Outbound) -> Result<(), PushError> {
        let cost = msg.cost();
        self.budget.queued.fetch_add(cost, Ordering::AcqRel);
        self.enqueue(msg, cost)
    }

    fn enqueue(&self, msg: Outbound, cost: usize) -> Result<(), PushError> {
        self.tx.send(msg).map_err(|_| {
            self.budget.queued.fetch_sub(cost, Ordering::AcqRel);
            PushError::Closed
        })
    }

    /// True while the queue holds its limit or more: read no more requests.
    pub fn is_full(&self) -> bool {
        self.budget.queued.load(Ordering::Acquire) >= self.budget.limit
    }

    /// Resolves once the queue is below its limit.
    pub async fn drained(&self) {
        loop {
            let notified = self.budget.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain in between is not missed.
            notified.as_mut().enable();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }

    /// Closes the connection with `code` before what is queued; true when
    /// this call was the first (its code wins).
    pub fn close(&self, code: u16) -> bool {
        let first = self.closer.close(code);
        if first {
            // Wakes the writer, which then finds the code.
            let _ = self.send(Outbound::Close(code));
        }
        first
    }
}

/// The receiving side, owned by the connection's writer.
pub struct PeerQueue {
    rx: mpsc::UnboundedReceiver<Outbound>,
    pub closer: Arc<Closer>,
    budget: Arc<Budget>,
}

impl PeerQueue {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let msg = self.rx.recv().await?;
        self.taken(&msg);
        Some(msg)
    }

    /// The next frame if one is ready.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let msg = self.rx.try_recv().ok()?;
        self.taken(&msg);
        Some(msg)
    }

    fn taken(&self, msg: &Outbound) {
        let cost = msg.cost();
        let before = self.budget.queued.fetch_sub(cost, Ordering::AcqRel);
        if before >= self.budget.limit && before - cost < self.budget.limit {
            self.budget.drained.notify_waiters();
        }
    }
}

/// Every open connection of this replica.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    conns: Mutex<HashMap<ConnId, Peer>>,
}

impl Hub {
    /// Registers a new connection with a queue of `limit` bytes.
    pub fn register(&self, limit: usize) -> (Peer, PeerQueue) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        // Unbounded as a channel: the byte budget is the bound.
        let (tx, rx) = mpsc::unbounded_channel();
        let closer = Arc::new(Closer::default());
        let budget = Arc::new(Budget {
            queued: AtomicUsize::new(0),
            limit: limit.max(1),
            drained: Notify::new(),
        });
        let peer = Peer {
            id,
            tx,
            closer: closer.clone(),
            budget: budget.clone(),
        };
        if let Ok(mut m) = self.conns.lock() {
            m.insert(id, peer.clone());
        }
        (peer, PeerQueue { rx, closer, budget })
    }

    pub fn unregister(&self, id: ConnId) {
        if let Ok(mut m) = self.conns.lock() {
            m.remove(&id);
        }
    }

    /// Asks every connection to close (shutdown: 1001).
    pub fn close_all(&self, code: u16) {
        let peers: Vec<Peer> = match self.conns.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return,
        };
        for p in peers {
            p.close(code);
        }
    }

    pub fn len(&self) -> usize {
        self.conns.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: usize) -> Outbound {
        Outbound::Text("x".repeat(bytes))
    }

    #[tokio::test]
    async fn full_queue_closes_with_1013() {
        let hub = Hub::default();
        let (peer, mut q) = hub.register(1000);
        assert!(peer.push(text(400)).is_ok());
        assert!(peer.push(text(400)).is_ok());
        // Counted in bytes, not frames: a third one does not fit.
        assert_eq!(peer.push(text(400)), Err(PushError::SlowConsumer));
        // Reported once: the connection is already closing.
        assert_eq!(
            peer.push(Outbound::Text("d".into())),
            Err(PushError::Closed)
        );
        assert_eq!(q.closer.code(), Some(close::TRY_AGAIN_LATER));
        // The close frame is queued too: it wakes the writer.
        let queued: Vec<Outbound> = std::iter::from_fn(|| q.try_recv()).collect();
        assert!(matches!(
            queued.as_slice(),
            [
                Outbound::Text(_),
                Outbound::Text(_),
                Outbound::Close(close::TRY_AGAIN_LATER)
            ]
        ));
    }

    #[tokio::test]
    async fn an_empty_queue_takes_a_push_bigger_than_its_limit() {
        let hub = Hub::default();
        let (peer, _q) = hub.register(1000);
        assert!(peer.push(text(5000)).is_ok());
        assert_eq!(peer.push(text(1)), Err(PushError::SlowConsumer));
    }

    #[tokio::test]
    async fn responses_never_wait_and_the_reader_sees_when_to_pause() {
        let hub = Hub::default();
        let (peer, mut q) = hub.register(1000);
        for _ in 0..3 {
            assert!(peer.send(text(400)).is_ok());
        }
        assert!(peer.is_full());
        let waiter = {
            let peer = peer.clone();
            tokio::spawn(async move { peer.drained().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(q.recv().await.is_some());
        assert!(q.try_recv().is_some());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken when the queue drains")
            .expect("task");
        assert!(!peer.is_full());
    }

    #[tokio::test]
    async fn close_all_reaches_every_peer() {
        let hub = Hub::default();
        let (_p1, q1) = hub.register(4);
        let (_p2, q2) = hub.register(4);
        hub.close_all(close::GOING_AWAY);
        for mut q in [q1, q2] {
            assert_eq!(q.closer.code(), Some(close::GOING_AWAY));
            assert!(matches!(q.recv().await, Some(Outbound::Close(1001))));
        }
    }
}
