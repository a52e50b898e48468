//! The hall router: subscribe without a gap, fan out each change once,
//! resynchronise with a `hall_snapshot` whenever delivery cannot be proven
//! complete.
//!
//! Gapless subscribe: the channel's LISTEN is confirmed first, then the
//! subscriber is registered as *pending* (changes arriving meanwhile are
//! buffered for it), then the snapshot (version V) is read; on activation the
//! response is queued, then the buffered changes with a version above V, and
//! from then on every change above the subscriber's last version. A change
//! committed right after the snapshot is therefore always pushed, and never
//! twice.
//!
//! Resync: a subscriber can be put in *buffering* mode (its changes are held
//! back), a fresh snapshot is read, sent as `hall_snapshot`, and the held
//! changes newer than it follow. That happens after the LISTEN connection
//! was restored, on a "too large" notice, on a version gap, and for one
//! connection when its user changed (logout, revocation). A snapshot (of a
//! subscribe or a resync) can be older than a change that arrived while it
//! was read; when such a change cannot follow it as an update (a "too
//! large" notice, or a gap), the subscriber stays held and another snapshot
//! is read.
//!
//! The state is behind one `std::sync::Mutex` that is never held across an
//! await; notifications are handled synchronously under it. Pushes are
//! handed to the sockets under it too ([`Fanout`], [`Peer::push_shared`]:
//! neither waits, each writes to an idle socket at once and queues
//! otherwise), so the order of a screening's frames on every socket is the
//! order decided here.
//!
//! The router reads snapshots and LISTENs through two traits
//! ([`Snapshots`], [`Channels`]), PostgreSQL and the replica's listener in
//! production, so the tests below drive it deterministically.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::core::db::Db;
use crate::core::hub::{prefetch, ConnId, Fanout, Outbound, Peer, PushError, SharedPush};
use crate::core::listener::Listener;
use crate::core::metrics::Metrics;
use crate::models::catalogue::HallSnapshot;
use crate::models::changes::ChangeSet;
use crate::models::ModelError;
use crate::shared::clock::now_ms;
use crate::shared::ids::{hall_channel, ScreeningId, UserId};
use crate::shared::protocol::{json_str, push_frame};

use super::render;
use super::sources::{Channels, Snapshots};

/// At most this many subscriptions per connection (`LIMIT` beyond).
pub const MAX_SUBSCRIPTIONS: usize = 16;

/// Why a subscribe failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("not found")]
    NotFound,
    #[error("too many subscriptions")]
    Limit,
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<ModelError> for SubscriptionError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::NotFound => SubscriptionError::NotFound,
            ModelError::Unavailable(m) => SubscriptionError::Unavailable(m),
            other => SubscriptionError::Internal(other.to_string()),
        }
    }
}

/// How many subscribers ahead a fan-out fetches their entries.
const PREFETCH_AHEAD: usize = 4;

/// Bytes of an eid's JSON literal kept inline in its [`Sub`].
const EID_INLINE: usize = 30;

/// A subscription's eid as a JSON string literal (escaped once, not in
/// every push), inside the subscription when it is short, as eids are
/// (`"c-2"`, a counter). A fan-out copies it into every push; behind a
/// pointer, its own allocation, it was a cache miss per push (`perf
/// annotate`: four fifths of the fan-out's copying was the wait for it).
enum EidJson {
    Inline { len: u8, bytes: [u8; EID_INLINE] },
    Heap(Box<str>),
}

impl EidJson {
    fn new(json: String) -> Self {
        match u8::try_from(json.len()) {
            Ok(len) if json.len() <= EID_INLINE => {
                let mut bytes = [0; EID_INLINE];
                bytes[..json.len()].copy_from_slice(json.as_bytes());
                EidJson::Inline { len, bytes }
            }
            _ => EidJson::Heap(json.into_boxed_str()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // A copy of a `String`'s bytes: always UTF-8.
            EidJson::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("null")
            }
            EidJson::Heap(s) => s,
        }
    }
}

struct Sub {
    peer: Peer,
    /// The subscribe request's eid, carried by every push.
    eid: EidJson,
    user: Option<UserId>,
    /// Changes at or below this version are already reflected client-side.
    min_version: i64,
    /// `Some` while a resync is in flight: changes wait here.
    held: Option<Vec<Arc<ChangeSet>>>,
}

struct Pending {
    buffer: Vec<Arc<ChangeSet>>,
    /// The LISTEN connection was restored meanwhile: notifications may be
    /// lost, so the subscriber gets a `hall_snapshot` right after the answer.
    resync: bool,
}

struct Screen {
    channel: String,
    /// The last version seen in a notification (or the first snapshot), for
    /// gap detection.
    version: Option<i64>,
    subs: HashMap<ConnId, Sub>,
    pending: HashMap<u64, Pending>,
}

#[derive(Default)]
struct State {
    screens: HashMap<ScreeningId, Screen>,
    by_conn: HashMap<ConnId, HashSet<ScreeningId>>,
    next_token: u64,
}

impl State {
    /// The screenings a connection is subscribed to, copied out so the
    /// caller can change the maps while it walks them.
    fn screenings_of(&self, conn: ConnId) -> Vec<ScreeningId> {
        self.by_conn
            .get(&conn)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// The subscriptions of one replica.
pub struct HallRouter<S: Snapshots = Db, L: Channels = Listener> {
    state: Mutex<State>,
    db: S,
    listener: L,
    metrics: Arc<Metrics>,
}

impl<S: Snapshots, L: Channels> HallRouter<S, L> {
    pub fn new(db: S, listener: L, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            db,
            listener,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug; keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `get_hall`: the snapshot as `user` sees it, without subscribing.
    pub async fn get_hall(
        &self,
        screening: ScreeningId,
        user: Option<UserId>,
    ) -> Result<String, SubscriptionError> {
        let snap = self.db.hall_snapshot(screening).await?;
        Ok(render::snapshot(&snap, user))
    }

    /// `subscribe_hall`: on success the response has been queued on `peer`
    /// (before any push), so the caller must not answer again.
    pub async fn subscribe(
        self: &Arc<Self>,
        peer: &Peer,
        user: Option<UserId>,
        eid: &str,
        screening: ScreeningId,
    ) -> Result<(), SubscriptionError> {
        let hall = self.db.screening_hall(screening).await?;
        {
            let st = self.lock();
            if let Some(set) = st.by_conn.get(&peer.id) {
                if set.len() >= MAX_SUBSCRIPTIONS && !set.contains(&screening) {
                    return Err(SubscriptionError::Limit);
                }
            }
        }
        let channel = hall_channel(hall);
        self.listener
            .listen(&channel)
            .await
            .map_err(SubscriptionError::Unavailable)?;
        let token = {
            let mut st = self.lock();
            st.next_token += 1;
            let token = st.next_token;
            st.screens
                .entry(screening)
                .or_insert_with(|| Screen {
                    channel: channel.clone(),
                    version: None,
                    subs: HashMap::new(),
                    pending: HashMap::new(),
                })
                .pending
                .insert(
                    token,
                    Pending {
                        buffer: Vec::new(),
                        resync: false,
                    },
                );
            token
        };
        // If this future is dropped (the connection went away) or fails, the
        // pending entry and its LISTEN reference are released.
        let guard = PendingGuard {
            router: self,
            screening,
            token,
            armed: true,
        };
        let snap = self.db.hall_snapshot(screening).await?;
        let mut guard = guard;
        guard.armed = false;
        if self.activate(peer, user, eid, screening, token, &snap) {
            self.spawn_resync(screening);
        }
        Ok(())
    }

    /// Makes a pending subscriber live; true when it needs a resync (the
    /// changes buffered meanwhile do not continue its snapshot).
    fn activate(
        &self,
        peer: &Peer,
        user: Option<UserId>,
        eid: &str,
        screening: ScreeningId,
        token: u64,
        snap: &HallSnapshot,
    ) -> bool {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(screen) = st.screens.get_mut(&screening) else {
            return false;
        };
        let Some(pending) = screen.pending.remove(&token) else {
            return false;
        };
        if screen.version.is_none() {
            screen.version = Some(snap.version);
        }
        let mut frame = String::new();
        push_frame(
            &mut frame,
            "subscribe_hall",
            eid,
            &render::snapshot(snap, user),
            now_ms(),
        );
        // A full queue closes the connection itself; nothing to do here.
        let _ = peer.push(Outbound::Text(frame));
        let mut sub = Sub {
            peer: peer.clone(),
            eid: EidJson::new(json_str(eid)),
            user,
            min_version: snap.version,
            held: None,
        };
        // A change too large to carry, or one missed, committed after the
        // snapshot was read: only another snapshot can catch up.
        let complete = if pending.resync {
            sub.held = Some(pending.buffer);
            false
        } else {
            self.deliver_after_snapshot(&mut sub, pending.buffer)
        };
        let replaced = screen.subs.insert(peer.id, sub);
        if replaced.is_some() {
            // The old subscription's LISTEN reference is no longer needed.
            self.listener.unlisten(&screen.channel);
        } else {
            self.metrics.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        st.by_conn.entry(peer.id).or_default().insert(screening);
        !complete
    }

    /// `unsubscribe_hall`; a no-op when not subscribed.
    pub fn unsubscribe(&self, conn: ConnId, screening: ScreeningId) {
        let mut st = self.lock();
        self.remove_sub(&mut st, conn, screening);
    }

    /// Drops every subscription of a closed connection.
    pub fn drop_connection(&self, conn: ConnId) {
        let mut st = self.lock();
        for s in st.screenings_of(conn) {
            self.remove_sub(&mut st, conn, s);
        }
        st.by_conn.remove(&conn);
    }

    fn remove_sub(&self, st: &mut State, conn: ConnId, screening: ScreeningId) {
        if let Some(set) = st.by_conn.get_mut(&conn) {
            set.remove(&screening);
            if set.is_empty() {
                st.by_conn.remove(&conn);
            }
        }
        let Some(screen) = st.screens.get_mut(&screening) else {
            return;
        };
        if screen.subs.remove(&conn).is_some() {
            self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
            self.listener.unlisten(&screen.channel);
        }
        if screen.subs.is_empty() && screen.pending.is_empty() {
            st.screens.remove(&screening);
        }
    }

    /// The connection's user changed (login elsewhere is not possible on an
    /// open socket; this is logout, revocation or expiry): its `mine` marks
    /// are wrong now, so each of its subscriptions gets a fresh snapshot.
    pub fn set_user(self: &Arc<Self>, conn: ConnId, user: Option<UserId>) {
        let screenings: Vec<ScreeningId> = {
            let mut st = self.lock();
            let list = st.screenings_of(conn);
            for s in &list {
                if let Some(sub) = st.screens.get_mut(s).and_then(|sc| sc.subs.get_mut(&conn)) {
                    sub.user = user;
                    sub.held.get_or_insert_with(Vec::new);
                }
            }
            list
        };
        for s in screenings {
            self.spawn_resync(s);
        }
    }

    /// The LISTEN connection was restored: anything may have been missed,
    /// so every subscriber gets a snapshot.
    pub fn resync_all(self: &Arc<Self>) {
        let screenings: Vec<ScreeningId> = {
            let mut st = self.lock();
            for screen in st.screens.values_mut() {
                hold_all(screen);
                screen.version = None;
                for p in screen.pending.values_mut() {
                    p.resync = true;
                }
            }
            st.screens.keys().copied().collect()
        };
        for s in screenings {
            self.spawn_resync(s);
        }
    }

    /// Handles one NOTIFY payload from a hall channel.
    pub fn on_notification(self: &Arc<Self>, payload: &str, received: Instant) {
        self.metrics
            .notifications_received
            .fetch_add(1, Ordering::Relaxed);
        let Some(change) = ChangeSet::parse(payload) else {
            tracing::warn!(payload, "unreadable seat-change notification ignored");
            return;
        };
        let screening = change.screening;
        let change = Arc::new(change);
        let mut resync = false;
        let mut pushed = 0u64;
        {
            let mut st = self.lock();
            let Some(screen) = st.screens.get_mut(&screening) else {
                return;
            };
            for p in screen.pending.values_mut() {
                p.buffer.push(change.clone());
            }
            match screen.version {
                Some(v) if change.version <= v => {}
                Some(v) if change.version > v + 1 => resync = true,
                _ => {}
            }
            screen.version = Some(
                screen
                    .version
                    .map_or(change.version, |v| v.max(change.version)),
            );
            if change.resync {
                resync = true;
            }
            if resync {
                hold_all(screen);
            }
            for sub in screen.subs.values_mut() {
                if let Some(held) = sub.held.as_mut() {
                    held.push(change.clone());
                }
            }
            if !change.resync {
                pushed = self.fan_out(screen, &change);
            }
        }
        self.metrics
            .pushes_forwarded
            .fetch_add(pushed, Ordering::Relaxed);
        self.metrics.forwarding_lag(received.elapsed());
        if resync {
            self.spawn_resync(screening);
        }
    }

    /// Sends one change to every live subscriber: serialized once for all,
    /// plus once per user whose seats are in it. Each push is written to
    /// its socket here, under the router's lock, when the socket is idle
    /// (`core::hub`): the order of a screening's pushes is the order of its
    /// changes on every socket. The subscribers' frames are made before
    /// any is sent ([`Fanout`]): the cache misses of reading them overlap
    /// instead of stalling every send.
    fn fan_out(&self, screen: &mut Screen, change: &ChangeSet) -> u64 {
        let ts = now_ms();
        let mut shared: Option<SharedPush> = None;
        let mut variants: Vec<(UserId, SharedPush)> = Vec::new();
        let mut fanout = Fanout::new();
        // The subscribers' entries, found without reading them (the map's
        // walk reads its control bytes only); each is fetched a few places
        // ahead, so that a cold entry does not stall every step.
        let subs: Vec<&mut Sub> = screen.subs.values_mut().collect();
        let entries: Vec<*const u8> = subs
            .iter()
            .map(|s| std::ptr::from_ref::<Sub>(s).cast())
            .collect();
        for p in entries.iter().take(PREFETCH_AHEAD) {
            prefetch(*p);
        }
        for (i, sub) in subs.into_iter().enumerate() {
            if let Some(p) = entries.get(i + PREFETCH_AHEAD) {
                prefetch(*p);
            }
            if sub.held.is_some() || change.version <= sub.min_version {
                continue;
            }
            sub.min_version = change.version;
            let sub: &Sub = sub;
            let mine = sub
                .user
                .filter(|u| change.seats.iter().any(|s| s.user == Some(*u)));
            let push = match mine {
                Some(u) => {
                    let at = match variants.iter().position(|(v, _)| *v == u) {
                        Some(at) => at,
                        None => {
                            let p = SharedPush::new(
                                "hall_update",
                                &render::update(change, Some(u)),
                                ts,
                            );
                            variants.push((u, p));
                            variants.len() - 1
                        }
                    };
                    &variants[at].1
                }
                None => shared.get_or_insert_with(|| {
                    SharedPush::new("hall_update", &render::update(change, None), ts)
                }),
            };
            fanout.add(&sub.peer, push, sub.eid.as_str());
        }
        let (pushed, slow) = fanout.finish();
        if slow > 0 {
            self.metrics
                .slow_consumers_closed
                .fetch_add(slow, Ordering::Relaxed);
        }
        pushed
    }

    fn send(&self, sub: &Sub, push: &SharedPush) -> bool {
        match sub.peer.push_shared(push, sub.eid.as_str()) {
            Ok(()) => true,
            Err(PushError::SlowConsumer) => {
                self.metrics
                    .slow_consumers_closed
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    /// Delivers, after a snapshot, the changes that continue the
    /// subscriber's version one by one. From the first that does not (a
    /// resync notice or a missing version newer than what it has), the rest
    /// are held back and false is returned: it needs another snapshot.
    fn deliver_after_snapshot(&self, sub: &mut Sub, changes: Vec<Arc<ChangeSet>>) -> bool {
        let mut changes = changes.into_iter();
        while let Some(change) = changes.next() {
            if change.version <= sub.min_version {
                continue;
            }
            if change.resync || change.version != sub.min_version + 1 {
                let mut rest = vec![change];
                rest.extend(changes);
                sub.held = Some(rest);
                return false;
            }
            self.deliver_one(sub, &change);
        }
        true
    }

    /// Delivers one change to one subscriber (buffer flushes; rare path).
    fn deliver_one(&self, sub: &mut Sub, change: &ChangeSet) -> bool {
        if change.resync || change.version <= sub.min_version {
            return true;
        }
        sub.min_version = change.version;
        let push = SharedPush::new("hall_update", &render::update(change, sub.user), now_ms());
        self.send(sub, &push)
    }

    fn spawn_resync(self: &Arc<Self>, screening: ScreeningId) {
        let router = self.clone();
        tokio::spawn(async move { router.resync(screening).await });
    }

    /// Reads a snapshot and sends it to every subscriber that is holding
    /// changes back, retrying while the database is unreachable, and again
    /// while a subscriber still waits (the snapshot was older than a change
    /// that arrived while it was read).
    async fn resync(&self, screening: ScreeningId) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let waiting = {
                let st = self.lock();
                st.screens
                    .get(&screening)
                    .is_some_and(|s| s.subs.values().any(|sub| sub.held.is_some()))
            };
            if !waiting {
                return;
            }
            match self.db.hall_snapshot(screening).await {
                Ok(snap) => {
                    self.finish_resync(&snap);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    tracing::warn!(screening = screening.0, error = %e, "resync snapshot failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn finish_resync(&self, snap: &HallSnapshot) {
        let ts = now_ms();
        let mut st = self.lock();
        let Some(screen) = st.screens.get_mut(&snap.screening) else {
            return;
        };
        if screen.version.is_none_or(|v| v < snap.version) {
            screen.version = Some(snap.version);
        }
        let mut variants: HashMap<Option<UserId>, SharedPush> = HashMap::new();
        let mut pushed = 0u64;
        for sub in screen.subs.values_mut() {
            // Older than what the subscriber already has: a read that a
            // later one overtook. It stays held for a newer snapshot.
            if sub.held.is_none() || snap.version < sub.min_version {
                continue;
            }
            let held = sub.held.take().unwrap_or_default();
            let key = sub
                .user
                .filter(|u| snap.seats.iter().any(|s| s.user == Some(*u)));
            let push = variants.entry(key).or_insert_with(|| {
                SharedPush::new("hall_snapshot", &render::snapshot(snap, key), ts)
            });
            sub.min_version = snap.version;
            if self.send(sub, push) {
                pushed += 1;
            }
            // What does not continue this snapshot waits for the next one.
            self.deliver_after_snapshot(sub, held);
        }
        self.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .pushes_forwarded
            .fetch_add(pushed, Ordering::Relaxed);
    }
}

fn hold_all(screen: &mut Screen) {
    for sub in screen.subs.values_mut() {
        sub.held.get_or_insert_with(Vec::new);
    }
}

/// Releases a pending subscription that never activated.
struct PendingGuard<'a, S: Snapshots, L: Channels> {
    router: &'a HallRouter<S, L>,
    screening: ScreeningId,
    token: u64,
    armed: bool,
}

impl<S: Snapshots, L: Channels> Drop for PendingGuard<'_, S, L> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut st = self.router.lock();
        let Some(screen) = st.screens.get_mut(&self.screening) else {
            return;
        };
        if screen.pending.remove(&self.token).is_some() {
            self.router.listener.unlisten(&screen.channel);
        }
        if screen.subs.is_empty() && screen.pending.is_empty() {
            st.screens.remove(&self.screening);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The router driven by hand: snapshots come from a script and are
    //! released one at a time, notifications are fed as the listener would
    //! hand them over, and each socket's queue is read back frame by frame.

    use std::collections::VecDeque;
    use std::sync::Mutex as StdMutex;

    use serde_json::Value;
    use tokio::sync::Semaphore;

    use super::*;
    use crate::core::hub::{opcode, Hub, Peer, PeerQueue};
    use crate::models::catalogue::Seat;
    use crate::models::changes::SeatStatus;
    use crate::shared::ids::{HallId, SeatId};

    #[test]
    fn an_eid_reads_back_as_it_was_escaped_short_or_long() {
        for eid in [
            "c-2",
            "",
            "é\"\\x",
            &"y".repeat(EID_INLINE),
            &"z".repeat(200),
        ] {
            let json = json_str(eid);
            assert_eq!(EidJson::new(json.clone()).as_str(), json);
        }
        assert!(matches!(
            EidJson::new(json_str("c-2")),
            EidJson::Inline { .. }
        ));
        assert!(matches!(
            EidJson::new(json_str(&"z".repeat(40))),
            EidJson::Heap(_)
        ));
    }

    const SCREENING: ScreeningId = ScreeningId(7);
    const HALL: HallId = HallId(3);

    /// Snapshots handed out in order, each only once the test releases it.
    struct Halls {
        queue: StdMutex<VecDeque<HallSnapshot>>,
        gate: Semaphore,
    }

    impl Default for Halls {
        fn default() -> Self {
            Self {
                queue: StdMutex::new(VecDeque::new()),
                gate: Semaphore::new(0),
            }
        }
    }

    impl Halls {
        fn release(&self, snap: HallSnapshot) {
            if let Ok(mut q) = self.queue.lock() {
                q.push_back(snap);
            }
            self.gate.add_permits(1);
        }
    }

    impl Snapshots for Arc<Halls> {
        async fn screening_hall(&self, screening: ScreeningId) -> Result<HallId, ModelError> {
            if screening == SCREENING {
                Ok(HALL)
            } else {
                Err(ModelError::NotFound)
            }
        }

        async fn hall_snapshot(&self, _: ScreeningId) -> Result<HallSnapshot, ModelError> {
            let permit = self
                .gate
                .acquire()
                .await
                .map_err(|e| ModelError::Unavailable(e.to_string()))?;
            permit.forget();
            self.queue
                .lock()
                .ok()
                .and_then(|mut q| q.pop_front())
                .ok_or(ModelError::NotFound)
        }
    }

    /// LISTEN reference counts per channel.
    #[derive(Default)]
    struct Listens(StdMutex<HashMap<String, i64>>);

    impl Listens {
        fn count(&self, channel: &str) -> i64 {
            self.0
                .lock()
                .map(|m| m.get(channel).copied().unwrap_or(0))
                .unwrap_or(0)
        }
    }

    impl Channels for Arc<Listens> {
        async fn listen(&self, channel: &str) -> Result<(), String> {
            *self
                .0
                .lock()
                .map_err(|e| e.to_string())?
                .entry(channel.to_owned())
                .or_default() += 1;
            Ok(())
        }

        fn unlisten(&self, channel: &str) {
            if let Ok(mut m) = self.0.lock() {
                *m.entry(channel.to_owned()).or_default() -= 1;
            }
        }
    }

    type Router = HallRouter<Arc<Halls>, Arc<Listens>>;

    fn router() -> (Arc<Router>, Arc<Halls>, Arc<Listens>) {
        let halls = Arc::new(Halls::default());
        let listens = Arc::new(Listens::default());
        let r = HallRouter::new(halls.clone(), listens.clone(), Arc::new(Metrics::default()));
        (r, halls, listens)
    }

    /// Seats 1..=4, seat 1 held by user 9 when `held`.
    fn snap(version: i64, held_by_9: bool) -> HallSnapshot {
        HallSnapshot {
            screening: SCREENING,
            hall: HALL,
            hall_name: "Saal 1".into(),
            version,
            prices: serde_json::json!({"standard": 1000}),
            seats: (1..=4)
                .map(|i| Seat {
                    id: SeatId(i),
                    row: "A".into(),
                    number: i as i32,
                    x: i as i32 - 1,
                    y: 0,
                    kind: "standard".into(),
                    status: if held_by_9 && i == 1 {
                        SeatStatus::Held
                    } else {
                        SeatStatus::Free
                    },
                    user: (held_by_9 && i == 1).then_some(UserId(9)),
                })
                .collect(),
        }
    }

    fn change(version: i64, seat: i64, status: &str, user: Option<i64>) -> String {
        let user = user.map_or("null".to_owned(), |u| u.to_string());
        format!(r#"{{"s":7,"v":{version},"c":[[{seat},"{status}",{user}]]}}"#)
    }

    /// The frames queued so far: (type, data). No writer runs in these
    /// tests, so every frame stays queued.
    fn frames(q: &mut PeerQueue) -> Vec<(String, Value)> {
        q.take_frames()
            .into_iter()
            .map(|f| match f.opcode {
                opcode::TEXT => {
                    let v: Value = serde_json::from_slice(&f.payload).unwrap_or(Value::Null);
                    (
                        v["type"].as_str().unwrap_or("").to_owned(),
                        v["data"].clone(),
                    )
                }
                opcode::PING => ("ping".into(), Value::Null),
                _ => ("close".into(), Value::Null),
            })
            .collect()
    }

    fn versions(frames: &[(String, Value)]) -> Vec<(String, i64)> {
        frames
            .iter()
            .map(|(k, d)| (k.clone(), d["version"].as_i64().unwrap_or(-1)))
            .collect()
    }

    /// A router with one anonymous connection subscribed (eid `s1`) to the
    /// hall at `version`, the subscribe answer already taken off its queue.
    /// The peer is returned so the queue stays open.
    async fn subscribed_at(version: i64) -> (Arc<Router>, Arc<Halls>, Peer, PeerQueue) {
        let (r, halls, _) = router();
        let (peer, mut q) = Hub::default().register(1 << 20);
        halls.release(snap(version, false));
        r.subscribe(&peer, None, "s1", SCREENING)
            .await
            .expect("subscribed");
        frames(&mut q);
        (r, halls, peer, q)
    }

    /// Lets spawned tasks (subscribe, resync) run up to their next wait.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn subscribe_buffers_changes_made_while_the_snapshot_is_read() {
        let (r, halls, listens) = router();
        let hub = Hub::default();
        let (peer, mut q) = hub.register(1 << 20);
        let task = {
            let (r, peer) = (r.clone(), peer.clone());
            tokio::spawn(async move { r.subscribe(&peer, None, "s1", SCREENING).await })
        };
        settle().await;
        assert_eq!(
            listens.count("hall_3"),
            1,
            "LISTEN before the snapshot is read"
        );
        // Committed while the snapshot is read: v5 is in the snapshot, v6 and v7 are not.
        r.on_notification(&change(5, 2, "held", Some(1)), Instant::now());
        r.on_notification(&change(6, 3, "held", Some(1)), Instant::now());
        r.on_notification(&change(7, 3, "free", None), Instant::now());
        halls.release(snap(5, false));
        task.await.expect("join").expect("subscribed");
        assert_eq!(
            versions(&frames(&mut q)),
            vec![
                ("subscribe_hall".into(), 5),
                ("hall_update".into(), 6),
                ("hall_update".into(), 7)
            ],
            "the answer first, then exactly the changes above its version"
        );
        r.on_notification(&change(8, 4, "booked", Some(2)), Instant::now());
        assert_eq!(versions(&frames(&mut q)), vec![("hall_update".into(), 8)]);
        r.on_notification(&change(8, 4, "booked", Some(2)), Instant::now());
        assert!(
            frames(&mut q).is_empty(),
            "a version seen before is not pushed twice"
        );
    }

    #[tokio::test]
    async fn a_version_gap_resyncs_with_a_snapshot_then_continues() {
        let (r, halls, _peer, mut q) = subscribed_at(5).await;
        // v6 went missing.
        r.on_notification(&change(7, 2, "held", Some(1)), Instant::now());
        settle().await;
        assert!(frames(&mut q).is_empty(), "nothing is pushed past a gap");
        r.on_notification(&change(8, 3, "held", Some(1)), Instant::now());
        halls.release(snap(7, false));
        settle().await;
        assert_eq!(
            versions(&frames(&mut q)),
            vec![("hall_snapshot".into(), 7), ("hall_update".into(), 8)],
            "a snapshot covers the gap, then the held changes above it follow"
        );
    }

    #[tokio::test]
    async fn an_oversized_change_is_replaced_by_a_snapshot() {
        let (r, halls, _peer, mut q) = subscribed_at(5).await;
        r.on_notification(r#"{"s":7,"v":6,"r":1}"#, Instant::now());
        halls.release(snap(6, false));
        settle().await;
        assert_eq!(versions(&frames(&mut q)), vec![("hall_snapshot".into(), 6)]);
    }

    #[tokio::test]
    async fn a_snapshot_older_than_what_arrived_meanwhile_is_read_again() {
        let (r, halls, _peer, mut q) = subscribed_at(5).await;
        r.resync_all();
        settle().await;
        // The snapshot read (v5) predates a resync notice at v6 that arrives while it is read.
        r.on_notification(r#"{"s":7,"v":6,"r":1}"#, Instant::now());
        halls.release(snap(5, false));
        settle().await;
        halls.release(snap(6, false));
        settle().await;
        let got = versions(&frames(&mut q));
        assert_eq!(
            got.last(),
            Some(&("hall_snapshot".into(), 6)),
            "the subscriber ends on the newer snapshot: {got:?}"
        );
        assert!(got.iter().all(|(k, _)| k == "hall_snapshot"), "{got:?}");
    }

    #[tokio::test]
    async fn a_user_change_resends_the_hall_with_the_new_mine_marks() {
        let (r, halls, _) = router();
        let hub = Hub::default();
        let (peer, mut q) = hub.register(1 << 20);
        halls.release(snap(5, true));
        r.subscribe(&peer, Some(UserId(9)), "s1", SCREENING)
            .await
            .expect("subscribed");
        let first = frames(&mut q);
        assert_eq!(
            first[0].1["seats"][0]["mine"], true,
            "user 9 sees its hold as mine"
        );
        r.on_notification(&change(6, 2, "held", Some(9)), Instant::now());
        let update = frames(&mut q);
        assert_eq!(
            update[0].1["seats"][0]["mine"], true,
            "and its new hold too"
        );
        // Logged out on this connection.
        r.set_user(peer.id, None);
        halls.release(snap(6, true));
        settle().await;
        let again = frames(&mut q);
        assert_eq!(versions(&again), vec![("hall_snapshot".into(), 6)]);
        assert_ne!(
            again[0].1["seats"][0]["mine"], true,
            "no seat is mine after logout"
        );
        r.on_notification(&change(7, 3, "held", Some(9)), Instant::now());
        let after = frames(&mut q);
        assert!(after[0].1["seats"][0].get("mine").is_none(), "{after:?}");
    }

    #[tokio::test]
    async fn listens_are_released_with_the_last_subscriber() {
        let (r, halls, listens) = router();
        let hub = Hub::default();
        let (a, _qa) = hub.register(1 << 20);
        let (b, _qb) = hub.register(1 << 20);
        halls.release(snap(5, false));
        halls.release(snap(5, false));
        r.subscribe(&a, None, "a", SCREENING)
            .await
            .expect("a subscribed");
        r.subscribe(&b, None, "b", SCREENING)
            .await
            .expect("b subscribed");
        assert_eq!(listens.count("hall_3"), 2);
        r.unsubscribe(a.id, SCREENING);
        assert_eq!(listens.count("hall_3"), 1);
        r.drop_connection(b.id);
        assert_eq!(
            listens.count("hall_3"),
            0,
            "every LISTEN reference is given back"
        );
        assert!(matches!(
            r.subscribe(&a, None, "x", ScreeningId(99)).await,
            Err(SubscriptionError::NotFound)
        ));
    }

    #[tokio::test]
    async fn a_subscribe_abandoned_while_reading_leaves_nothing_behind() {
        let (r, _halls, listens) = router();
        let hub = Hub::default();
        let (peer, _q) = hub.register(1 << 20);
        let task = {
            let (r, peer) = (r.clone(), peer.clone());
            tokio::spawn(async move { r.subscribe(&peer, None, "s1", SCREENING).await })
        };
        settle().await;
        assert_eq!(listens.count("hall_3"), 1);
        // The connection went away while the snapshot was being read.
        task.abort();
        let _ = task.await;
        assert_eq!(
            listens.count("hall_3"),
            0,
            "the pending LISTEN reference is released"
        );
        r.on_notification(&change(6, 2, "held", Some(1)), Instant::now());
    }
}
