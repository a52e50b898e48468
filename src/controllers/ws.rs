//! The WebSocket controller: the accept loop on `WS_PORT`, the upgrade
//! (see `upgrade`: path, Origin, token), then one task per connection
//! reading frames and one writer task for what could not be written at once.
//!
//! Per connection: requests are handled one at a time in arrival order (the
//! reader awaits each), limited by a token bucket (burst 50, 50/s); frames
//! over 64 KiB close with 1009; a peer silent for 60 s is dropped; a ping
//! is queued every 30 s. Sockets get `TCP_NODELAY` (pushes are small and
//! latency-bound) and a small read buffer (idle sockets stay cheap).
//!
//! Slow readers: the send queue is bounded in bytes (`core::hub`). While it
//! is full the reader reads no further request but keeps its timers
//! (silence, session expiry, shutdown); the writer gives every write to the
//! socket `WS_DRAIN_TIMEOUT` (30 s: half the silence limit, so a stuck
//! socket never outlives the liveness rules), and a client that does not
//! take the bytes in that time is closed with 1013 and its memory freed.
//!
//! The TCP specifics (socket options, the upgrade) stay in `accept`; the
//! connection loop is generic over the frames' [`Incoming`] stream and the
//! writer over an [`Outgoing`] byte sink, so `tests` drives them over
//! channels and in-memory pipes on a paused clock.
//!
//! tungstenite reads and parses the client's frames; the hub
//! (`core::hub`) frames what the server sends (a server frame is a header
//! and the unmasked payload) and writes it to the socket's write half from
//! whoever sends it (the router's fan-out, this reader's answers) when
//! nothing waits before it and the socket takes it at once: a push costs
//! one non-blocking write, no queue and no wake-up of the writer task,
//! which writes only the rest of a write that did not fit and what queued
//! behind it. The socket's halves need no lock between reader and writer.
//! The reader answers pings and echoes a client's close frame through the
//! hub, in order with everything else.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
// The clock of the timers: a paused test runtime moves it (see `tests`).
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::dispatch::{self, Answer, ConnState};
use super::sessions::Control;
use super::{answers, upgrade, State};
use crate::core::hub::{close, Ended, Outbound, PeerQueue, SocketWrite};
use crate::core::memory;
use crate::core::metrics::Metrics;
use crate::methods::auth::{authenticate, Candidates, TokenCheck};
use crate::shared::address::client_address;
use crate::shared::protocol::answer::Session;
use crate::shared::protocol::{error_frame, frame, ErrorCode, Request, WireError, MAX_FRAME_BYTES};
use crate::shared::rate::{retry_after_secs, TokenBucket};

/// Server pings this often.
const PING_EVERY: Duration = Duration::from_secs(30);
/// A peer silent this long is dropped.
const SILENCE_LIMIT: Duration = Duration::from_secs(60);
/// Frames tungstenite buffers before we can see them; we enforce the
/// contract's 64 KiB ourselves so the close code is exact.
const TRANSPORT_LIMIT: usize = 1024 * 1024;
/// tungstenite's read buffer per socket, allocated at the upgrade and kept
/// (its default is 128 KiB, zero-filled on the first read). Requests are a
/// few hundred bytes; a larger frame grows the buffer as it arrives. 512
/// bytes instead of 4 KiB took 3.5 KiB off every idle socket (the heap
/// profile in docs/benchmarks.md).
const READ_BUFFER: usize = 512;
/// The kernel's send buffer per socket (Linux doubles it). Left to
/// autotuning it grows to megabytes for a client that stopped reading:
/// memory outside our queue's bound, and megabytes of answers to produce
/// before the drain deadline even starts. Pushes are small; 256 KiB in
/// flight is 2.5 MB/s at a 100 ms round trip.
const SOCKET_SEND_BUFFER: usize = 128 * 1024;

/// What a connection reads: a WebSocket's frames. The socket's read half in
/// production; a channel in the unit tests, so the loop runs without TCP.
pub trait Incoming: Stream<Item = Result<Message, WsError>> + Unpin + Send + 'static {}
impl<T: Stream<Item = Result<Message, WsError>> + Unpin + Send + 'static> Incoming for T {}

/// Where the frames go: the socket's write half in production
/// ([`TcpSink`]), an in-memory pipe in the unit tests.
pub trait Outgoing: SocketWrite + 'static {}
impl<T: SocketWrite + 'static> Outgoing for T {}

/// The socket's write half. A sender's write is one `send` on its
/// descriptor ([`SocketWrite::fd`]), without tokio's readiness bookkeeping
/// (more cache lines per push): when it would block, the writer task's
/// `poll_write` meets the full socket itself and waits for room through
/// tokio as usual.
struct TcpSink(OwnedWriteHalf);

impl AsyncWrite for TcpSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl SocketWrite for TcpSink {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The socket is non-blocking: a full one answers `WouldBlock`.
        socket2::SockRef::from(self.0.as_ref()).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }

    fn fd(&self) -> Option<RawFd> {
        Some(self.0.as_ref().as_raw_fd())
    }
}

/// The socket's read half as tungstenite's stream: what tungstenite writes
/// by itself (pong replies, close echoes) goes nowhere, because the reader
/// sends those through the queue, in order with everything else.
struct ReadOnly(OwnedReadHalf);

impl AsyncRead for ReadOnly {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ReadOnly {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn ws_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = READ_BUFFER;
    // Only tungstenite's own replies, which `ReadOnly` drops.
    c.write_buffer_size = 0;
    c.max_message_size = Some(TRANSPORT_LIMIT);
    c.max_frame_size = Some(TRANSPORT_LIMIT);
    c
}

/// Accepts WebSocket connections until shutdown.
pub async fn serve_listener(listener: TcpListener, state: Arc<State>) {
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(accept(stream, state.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        }
    }
}

async fn accept(stream: TcpStream, state: Arc<State>) {
    // Boxed: the handshake's futures (the upgrade's read buffer, the token
    // check's database call) are large, and inline they would stay part of
    // the connection's task, and of its memory, for its whole life.
    let Some(shook) = Box::pin(handshake(stream, &state)).await else {
        return;
    };
    let (read, write) = shook.stream.into_split();
    let frames = WebSocketStream::from_partially_read(
        ReadOnly(read),
        shook.leftover,
        Role::Server,
        Some(ws_config()),
    )
    .await;
    connection(frames, TcpSink(write), state, shook.check, shook.address).await;
}

/// A socket past the upgrade: what the connection starts with.
struct Upgraded {
    stream: TcpStream,
    /// Bytes the client sent after its upgrade request.
    leftover: Vec<u8>,
    check: TokenCheck,
    address: IpAddr,
}

/// Socket options, the upgrade request, the token check and the `101`.
async fn handshake(mut stream: TcpStream, state: &State) -> Option<Upgraded> {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SOCKET_SEND_BUFFER);
    let req = upgrade::read(&mut stream, state).await?;
    let peer_addr = stream.peer_addr().ok()?;
    let address = client_address(
        peer_addr.ip(),
        &req.forwarded_for,
        &state.config.trusted_proxies,
    );
    let check = match &req.token {
        None => TokenCheck::Invalid,
        Some(t) => authenticate(&state.db, &state.auth, t).await,
    };
    upgrade::accept(&mut stream, &req).await.ok()?;
    Some(Upgraded {
        stream,
        leftover: req.leftover,
        check,
        address,
    })
}

fn session_frame(state: &State, conn: &ConnState) -> String {
    let user = conn.user.as_ref().map(answers::user);
    frame("session", None, &Session::new(&state.replica_id, user))
}

/// One connection from its first frame to its last: the reader loop here,
/// the writer in a task of its own. Knows nothing of TCP.
async fn connection<S: Incoming, K: Outgoing>(
    mut stream: S,
    out: K,
    state: Arc<State>,
    check: TokenCheck,
    address: IpAddr,
) {
    let (peer, queue) = state.hub.register(state.send_queue_bytes);
    state.metrics.connections.fetch_add(1, Ordering::Relaxed);
    state
        .metrics
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let (done_tx, mut writer_done) = watch::channel(false);
    let closer = queue.closer();
    let writer = tokio::spawn(writer(
        out,
        queue,
        done_tx,
        state.drain_timeout,
        state.metrics.clone(),
    ));
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Control>(4);
    let mut conn = ConnState {
        peer: peer.clone(),
        user: None,
        candidates: Candidates::default(),
        address,
    };
    let mut refuse = false;
    match check {
        TokenCheck::Valid(u) => {
            state.sessions.register(u.session, peer.id, ctl_tx.clone());
            conn.user = Some(u);
        }
        TokenCheck::Invalid => {}
        // A token we could not check: the client expects to be logged in,
        // so it should retry rather than work anonymously.
        TokenCheck::Unavailable => refuse = true,
    }
    if refuse {
        let _ = peer.send(Outbound::Close(close::TRY_AGAIN_LATER));
    } else {
        let _ = peer.send(Outbound::Text(session_frame(&state, &conn)));
        serve(
            &state,
            &mut conn,
            &mut stream,
            &mut writer_done,
            &mut ctl_rx,
        )
        .await;
    }
    // Cleanup: subscriptions, session registry, hub.
    state.router.drop_connection(peer.id);
    if let Some(u) = &conn.user {
        state.sessions.unregister(u.session, peer.id);
    }
    state.hub.unregister(peer.id);
    state.metrics.connections.fetch_sub(1, Ordering::Relaxed);
    // With the last sender of its queue gone the writer leaves its loop
    // and closes the socket at once, which also sends the echo a client's
    // close frame is owed (RFC 6455 §5.5.1); holding `peer` here made
    // every connection wait out the timeout below and end without one.
    drop((conn, peer));
    // Let the writer flush a close frame, but not forever.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer_done.wait_for(|d| *d)).await;
    writer.abort();
    // Once the writer is gone, so is everything the socket had queued.
    let _ = writer.await;
    if closer.code() == Some(close::TRY_AGAIN_LATER) {
        // A slow reader is rare; what it had queued can be a megabyte, which
        // the allocator would keep. Trimming walks every arena: off the
        // async workers.
        let _ = tokio::task::spawn_blocking(memory::release_freed).await;
    }
}

async fn serve<S: Incoming>(
    state: &State,
    conn: &mut ConnState,
    stream: &mut S,
    writer_done: &mut watch::Receiver<bool>,
    ctl_rx: &mut mpsc::Receiver<Control>,
) {
    let mut bucket = TokenBucket::new(50, 50, Instant::now());
    let mut last_seen = Instant::now();
    let mut last_ping = Instant::now();
    // The liveness rules (silence, pings) share one timer, set to the
    // earlier of their deadlines. A frame moves `last_seen` without
    // touching it, and the wake-up that finds the peer heard from since
    // sleeps again until the new deadline: an idle connection wakes once
    // per ping (a 5 s tick woke every connection six times as often), and
    // the ping is queued from here, not timed in the writer, which would
    // poll its timer on every wake-up, i.e. every push.
    let mut liveness = Box::pin(tokio::time::sleep_until(liveness_deadline(
        last_ping, last_seen,
    )));
    // The session's expiry: one timer while the user stays the same, not a
    // new one (a trip through the timer wheel) per request.
    let mut expiry: Option<(chrono::DateTime<chrono::Utc>, Pin<Box<Sleep>>)> = None;
    let mut shutdown = state.shutdown.clone();
    if *shutdown.borrow() {
        let _ = conn.peer.send(Outbound::Close(close::GOING_AWAY));
        return;
    }
    loop {
        let expires_at = conn.user.as_ref().map(|u| u.expires_at);
        if expires_at != expiry.as_ref().map(|(t, _)| *t) {
            expiry = expires_at.map(|t| (t, Box::pin(tokio::time::sleep(until(t)))));
        }
        let until_expiry = async {
            match expiry.as_mut() {
                Some((_, sleep)) => sleep.as_mut().await,
                None => std::future::pending().await,
            }
        };
        // A full queue: read nothing more until the writer drained it (or
        // gave up on the client); every other event still counts.
        let paused = conn.peer.is_full();
        enum Event {
            Frame(Option<Result<Message, WsError>>),
            Drained,
            WriterDone,
            SessionEnded,
            Timers,
            Shutdown,
        }
        let event = tokio::select! {
            msg = stream.next(), if !paused => Event::Frame(msg),
            _ = conn.peer.drained(), if paused => Event::Drained,
            _ = writer_done.wait_for(|d| *d) => Event::WriterDone,
            Some(Control::SessionEnded) = ctl_rx.recv() => Event::SessionEnded,
            _ = until_expiry => Event::SessionEnded,
            _ = liveness.as_mut() => Event::Timers,
            _ = shutdown.changed() => Event::Shutdown,
        };
        let close_with = match event {
            Event::Frame(None) | Event::WriterDone => return,
            // The client took our bytes: as alive as a frame from it.
            Event::Drained => {
                last_seen = Instant::now();
                continue;
            }
            Event::Frame(Some(Err(e))) => match e {
                WsError::Capacity(_) => close::TOO_BIG,
                // RFC 6455 §8.1: fail the connection, with 1007.
                WsError::Utf8(_) => close::INVALID_DATA,
                WsError::Protocol(_) => close::PROTOCOL_ERROR,
                _ => return,
            },
            Event::Frame(Some(Ok(m))) => {
                last_seen = Instant::now();
                match &m {
                    // RFC 6455 §5.5.1: echo the code, after what is queued.
                    Message::Close(f) => {
                        let code = f.as_ref().map_or(close::NORMAL, |f| f.code.into());
                        let _ = conn.peer.send(Outbound::Close(code));
                        return;
                    }
                    Message::Ping(p) => {
                        let _ = conn.peer.send(Outbound::Pong(p.to_vec()));
                        continue;
                    }
                    Message::Text(_) | Message::Binary(_) => {}
                    Message::Pong(_) | Message::Frame(_) => continue,
                }
                if m.len() > MAX_FRAME_BYTES {
                    close::TOO_BIG
                // Boxed: a request's future (any method's database calls)
                // is large; inline it would be part of every connection's
                // task, idle or not.
                } else if Box::pin(on_frame(state, conn, &m, &mut bucket)).await {
                    continue;
                } else {
                    return;
                }
            }
            Event::SessionEnded => {
                end_session(state, conn).await;
                continue;
            }
            Event::Timers if last_seen.elapsed() > SILENCE_LIMIT => {
                conn.peer.close(close::GOING_AWAY);
                return;
            }
            Event::Timers => {
                if last_ping.elapsed() >= PING_EVERY {
                    last_ping = Instant::now();
                    let _ = conn.peer.send(Outbound::Ping);
                }
                liveness
                    .as_mut()
                    .reset(liveness_deadline(last_ping, last_seen));
                // Follow the wall clock, should it have moved, once a ping.
                if let Some((t, sleep)) = expiry.as_mut() {
                    sleep.as_mut().reset(Instant::now() + until(*t));
                }
                continue;
            }
            Event::Shutdown => close::GOING_AWAY,
        };
        // A graceful close: after what is queued, then wait for the writer.
        let _ = conn.peer.send(Outbound::Close(close_with));
        let _ = tokio::time::timeout(Duration::from_secs(5), writer_done.wait_for(|d| *d)).await;
        return;
    }
}

/// When the liveness timer next has something to check: the next ping, or
/// just past the silence limit (a check at the limit itself would find the
/// peer not yet over it and sleep again until the same instant).
fn liveness_deadline(last_ping: Instant, last_seen: Instant) -> Instant {
    (last_ping + PING_EVERY).min(last_seen + SILENCE_LIMIT + Duration::from_millis(1))
}

/// How long until the wall-clock instant `t` (zero once past).
fn until(t: chrono::DateTime<chrono::Utc>) -> Duration {
    (t - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO)
}

/// The connection's session ended (logout, revocation, expiry): it becomes
/// anonymous, is told so, and its subscriptions lose their `mine` marks.
async fn end_session(state: &State, conn: &mut ConnState) {
    let Some(user) = conn.user.take() else {
        return;
    };
    state.sessions.unregister(user.session, conn.peer.id);
    let _ = conn.peer.send(Outbound::Text(session_frame(state, conn)));
    state.router.set_user(conn.peer.id, None);
}

/// Handles one data frame; false when the connection should end.
async fn on_frame(
    state: &State,
    conn: &mut ConnState,
    m: &Message,
    bucket: &mut TokenBucket,
) -> bool {
    let parsed = if m.is_binary() {
        None
    } else {
        m.to_text().ok().map(Request::parse)
    };
    let (kind, eid) = match &parsed {
        Some(Ok((env, r))) => (Some(r.name()), Some(env.eid.as_str())),
        Some(Err(refused)) => (refused.kind.as_deref(), refused.eid.as_deref()),
        None => (None, None),
    };
    let label = Request::label(kind);
    let reply_kind = kind.unwrap_or("error");
    let refusal = if let Err(wait) = bucket.take(Instant::now()) {
        Some(
            WireError::new(ErrorCode::RateLimited, "too many requests, slow down")
                .with("retry_after_s", retry_after_secs(wait)),
        )
    } else {
        match &parsed {
            Some(Ok(_)) => None,
            Some(Err(refused)) => Some(refused.error.clone()),
            None => Some(WireError::new(
                ErrorCode::BadRequest,
                "frames must be JSON text",
            )),
        }
    };
    if let Some(w) = refusal {
        state.metrics.request(label, w.code.as_str());
        return conn
            .peer
            .send(Outbound::Text(error_frame(reply_kind, eid, &w)))
            .is_ok();
    }
    let Some(Ok((env, req))) = parsed else {
        return true;
    };
    let (answer, outcome) = dispatch::handle(state, conn, &env, req).await;
    state.metrics.request(label, outcome);
    match answer {
        Answer::Frame(f) => conn.peer.send(Outbound::Text(f)).is_ok(),
        Answer::Queued => true,
        Answer::LoggedOut(f) => {
            let ok = conn.peer.send(Outbound::Text(f)).is_ok();
            end_session(state, conn).await;
            ok
        }
    }
}

/// Writes what the senders could not write themselves (`core::hub`: a
/// frame goes straight to the socket when nothing waits before it, so this
/// task runs only for the rest of a write that did not fit, and for what
/// queued behind it). Every write must finish within `drain`; a client that
/// does not take the bytes in time is closed (1013) without waiting any
/// longer.
async fn writer<K: Outgoing>(
    out: K,
    queue: PeerQueue,
    done: watch::Sender<bool>,
    drain: Duration,
    metrics: Arc<Metrics>,
) {
    let closer = queue.closer();
    let (ended, sink) = queue.run(Box::new(out), drain).await;
    if ended == Ended::Stuck {
        // The close frame cannot get through a full socket; closing the TCP
        // connection is the message (at once: a shutdown needs no room).
        // The reader sees the writer finish.
        if closer.close(close::TRY_AGAIN_LATER) {
            metrics
                .slow_consumers_closed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(mut sink) = sink {
        let wait = if ended == Ended::Stuck {
            Duration::ZERO
        } else {
            drain
        };
        let _ = tokio::time::timeout(wait, sink.shutdown()).await;
    }
    let _ = done.send(true);
}

#[cfg(test)]
mod tests;
