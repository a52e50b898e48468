//! Which open connections use which session, so a revoked session (NOTIFY
//! on `marquee_sessions` from any replica, or the periodic check) turns
//! every connection using it anonymous at once.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::core::hub::ConnId;
use crate::shared::ids::SessionId;

/// A message to a connection's own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The connection's session was revoked or expired.
    SessionEnded,
}

/// The registry of logged-in connections by session.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<SessionId, HashMap<ConnId, mpsc::Sender<Control>>>>,
}

impl Sessions {
    pub fn register(&self, session: SessionId, conn: ConnId, tx: mpsc::Sender<Control>) {
        if let Ok(mut m) = self.map.lock() {
            m.entry(session).or_default().insert(conn, tx);
        }
    }

    pub fn unregister(&self, session: SessionId, conn: ConnId) {
        if let Ok(mut m) = self.map.lock() {
            if let Some(conns) = m.get_mut(&session) {
                conns.remove(&conn);
                if conns.is_empty() {
                    m.remove(&session);
                }
            }
        }
    }

    /// Tells every connection of the session that it ended.
    pub fn end(&self, session: SessionId) {
        let conns = match self.map.lock() {
            Ok(mut m) => m.remove(&session),
            Err(_) => None,
        };
        for tx in conns.into_iter().flat_map(|c| c.into_values()) {
            // A full queue already holds an unhandled SessionEnded.
            let _ = tx.try_send(Control::SessionEnded);
        }
    }

    /// Every session with an open connection here.
    pub fn ids(&self) -> Vec<SessionId> {
        self.map
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }
}
