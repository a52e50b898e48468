//! The socket hub: every open connection's outbound queue and close signal.
//!
//! Each socket has a bounded queue drained by its own writer task. Pushes
//! are queued with `try_send` and never wait: a subscriber whose queue is
//! full cannot keep up and is closed with 1013 instead of growing memory.
//! Pushes carry their `data` JSON in an `Arc`, serialized once for all
//! subscribers; only the `eid` differs per socket and is spliced in by the
//! writer. No lock here is held across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};

/// Identifies one connection within this replica.
pub type ConnId = u64;

/// Frames waiting in a socket's queue before the writer task sends them.
pub const SEND_QUEUE: usize = 256;

/// Close codes used by the server.
pub mod close {
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

/// A push's shared part: serialized once, sent to many sockets.
#[derive(Debug)]
pub struct SharedPush {
    /// `hall_update` or `hall_snapshot`.
    pub kind: &'static str,
    /// The `data` object, already JSON.
    pub data: String,
    /// The server clock when the push was made.
    pub ts: i64,
}

/// One queued frame.
#[derive(Debug)]
pub enum Outbound {
    /// A complete frame (responses, errors, session frames).
    Text(String),
    /// A push, finished by the writer with this subscription's `eid`.
    Push {
        push: Arc<SharedPush>,
        eid: Arc<str>,
    },
    /// Send a close frame after everything queued before it (a graceful
    /// close: shutdown, oversized frame).
    Close(u16),
}

/// Asks a connection to close with a code; the first code wins.
#[derive(Debug, Default)]
pub struct Closer {
    code: AtomicU16,
    notify: Notify,
}

impl Closer {
    /// True when this call was the first (its code wins).
    pub fn close(&self, code: u16) -> bool {
        let first = self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if first {
            self.notify.notify_one();
        }
        first
    }

    /// Resolves with the close code once [`Closer::close`] was called.
    pub async fn closed(&self) -> u16 {
        loop {
            let code = self.code.load(Ordering::Acquire);
            if code != 0 {
                return code;
            }
            self.notify.notified().await;
        }
    }
}

/// The sending side of one connection; cheap to clone.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: ConnId,
    tx: mpsc::Sender<Outbound>,
    closer: Arc<Closer>,
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
    /// Queues without waiting; a full queue closes the connection (1013).
    pub fn push(&self, msg: Outbound) -> Result<(), PushError> {
        match self.tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Only the push that overflowed reports the slow consumer
                // (it is counted once); later ones find it already closing.
                if self.closer.close(close::TRY_AGAIN_LATER) {
                    Err(PushError::SlowConsumer)
                } else {
                    Err(PushError::Closed)
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::Closed),
        }
    }

    /// Queues a response, waiting for room: the connection's own reader
    /// is what waits, so a client that floods requests slows itself only.
    pub async fn send(&self, msg: Outbound) -> Result<(), PushError> {
        self.tx.send(msg).await.map_err(|_| PushError::Closed)
    }

    pub fn close(&self, code: u16) {
        let _ = self.closer.close(code);
    }
}

/// The receiving side, owned by the connection's writer.
pub struct PeerQueue {
    pub rx: mpsc::Receiver<Outbound>,
    pub closer: Arc<Closer>,
}

/// Every open connection of this replica.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    conns: Mutex<HashMap<ConnId, Peer>>,
}

impl Hub {
    /// Registers a new connection with a queue of `capacity` frames.
    pub fn register(&self, capacity: usize) -> (Peer, PeerQueue) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let closer = Arc::new(Closer::default());
        let peer = Peer {
            id,
            tx,
            closer: closer.clone(),
        };
        if let Ok(mut m) = self.conns.lock() {
            m.insert(id, peer.clone());
        }
        (peer, PeerQueue { rx, closer })
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

    #[tokio::test]
    async fn full_queue_closes_with_1013() {
        let hub = Hub::default();
        let (peer, q) = hub.register(2);
        assert!(peer.push(Outbound::Text("a".into())).is_ok());
        assert!(peer.push(Outbound::Text("b".into())).is_ok());
        assert_eq!(
            peer.push(Outbound::Text("c".into())),
            Err(PushError::SlowConsumer)
        );
        // Reported once: the connection is already closing.
        assert_eq!(
            peer.push(Outbound::Text("d".into())),
            Err(PushError::Closed)
        );
        assert_eq!(q.closer.closed().await, close::TRY_AGAIN_LATER);
    }

    #[tokio::test]
    async fn close_all_reaches_every_peer() {
        let hub = Hub::default();
        let (_p1, q1) = hub.register(4);
        let (_p2, q2) = hub.register(4);
        hub.close_all(close::GOING_AWAY);
        assert_eq!(q1.closer.closed().await, 1001);
        assert_eq!(q2.closer.closed().await, 1001);
    }
}
