//! The socket hub: every open connection's outgoing bytes and close signal.
//!
//! Each socket's outgoing side ([`Peer`] for whoever sends, [`PeerQueue`]
//! for its writer task) is one small state machine behind a
//! `std::sync::Mutex` that is never held across an await: the socket's
//! write half, the bytes of the write in flight (the *batch*), the frames
//! waiting behind it (the *queue*, bytes already framed for the wire), the
//! writer's waker and the close state.
//!
//! A frame is written straight to the socket by whoever sends it (the
//! router fanning out a change, the reader answering a request) when
//! nothing is waiting before it and the socket takes it at once: one
//! non-blocking write, no queue and no wake-up of the writer task. Only
//! what does not fit (the rest of a partial write, or everything while
//! older bytes wait) goes to the batch or queue, and the writer is woken
//! when the socket had been idle; it writes the batch, then takes the queue
//! as its next batch. Every write, direct or the writer's, happens under
//! the lock and only when everything sent before it is on the wire, so the
//! order on one socket is the order of the sends, and bytes of two frames
//! never interleave.
//!
//! The queue is bounded in bytes (what a slow reader pins in memory is what
//! matters, and one answer can be a hundred times another). Nothing that
//! sends ever waits:
//!
//! * a push that does not fit closes the subscriber with 1013: it cannot
//!   keep up, and dropping pushes silently would corrupt its hall view;
//! * a response is always queued (the reader sends at most one before it
//!   looks again), and the connection's reader reads no further request
//!   while the queue is full ([`Peer::is_full`], [`Peer::drained`]), so a
//!   client that floods requests without reading stops itself, while the
//!   reader keeps running its timers.
//!
//! A close asked for ([`Peer::close`]) replaces what is still queued, but
//! never cuts the batch in flight: a frame partly on the wire is always
//! finished first.
//!
//! Pushes are rendered once for all subscribers around the one part that
//! differs per socket: the `eid`, escaped once per subscription and spliced
//! in when the frame is written ([`Peer::push_shared`]). A change's
//! fan-out ([`Fanout`]) frames the pushes of many subscribers before it
//! sends the first, because a send evicts what the next push would read.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::shared::protocol::{push_head, push_tail};

/// Identifies one connection within this replica.
pub type ConnId = u64;

/// Bytes of frames a socket's queue holds before the writer takes them
/// (PROTOCOL.md "Abuse limits": 1 MiB per socket).
pub const SEND_QUEUE_BYTES: usize = 1024 * 1024;

/// A socket's write half, as the hub writes it: the TCP stream's in
/// production (the WebSocket controller's), an in-memory pipe in tests.
pub trait SocketWrite: AsyncWrite + Unpin + Send {
    /// Writes what the socket takes at once, never waiting and registering
    /// no waker: `WouldBlock` when it takes nothing. Senders call it under
    /// the socket's lock; the writer task, which waits, uses `poll_write`.
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize>;

    /// The socket's descriptor, if it is one: senders then write it with
    /// one `send` and no call through the sink (which keeps it open).
    fn fd(&self) -> Option<RawFd> {
        None
    }
}

/// Any `AsyncWrite` as a [`SocketWrite`]: `try_write` polls it once with
/// a waker that does nothing. That waker may stay registered with the
/// stream, which is harmless: a sender that could not write everything
/// wakes the writer, which polls again with its own waker before it waits.
pub struct Polled<W>(pub W);

impl<W: AsyncWrite + Unpin> AsyncWrite for Polled<W> {
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

impl<W: AsyncWrite + Unpin + Send> SocketWrite for Polled<W> {
    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut self.0).poll_write(&mut cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

/// The write half the hub owns while the socket's writer runs.
pub type Sink = Box<dyn SocketWrite>;

/// A batch or queue buffer larger than this is freed once empty, so a
/// burst (a big snapshot, a slow moment) does not stay pinned per socket.
const KEEP_CAPACITY: usize = 16 * 1024;

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

    /// The reason sent with a close code.
    pub fn reason(code: u16) -> &'static str {
        match code {
            GOING_AWAY => "server going away",
            TOO_BIG => "frame larger than 64 KiB",
            PROTOCOL_ERROR => "websocket protocol error",
            INVALID_DATA => "text frame is not UTF-8",
            TRY_AGAIN_LATER => "try again later",
            _ => "",
        }
    }
}

/// WebSocket opcodes of the frames the server sends (RFC 6455 §5.2).
pub mod opcode {
    pub const TEXT: u8 = 0x1;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
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
        let mut out = String::with_capacity(self.head.len() + self.tail.len() + eid_json.len());
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
}

/// One frame to send (a push of a [`SharedPush`] goes through
/// [`Peer::push_shared`] instead).
#[derive(Debug)]
pub enum Outbound {
    /// A complete frame (responses, errors, session frames, a subscribe's
    /// answer).
    Text(String),
    /// A WebSocket ping (the connection's liveness timer).
    Ping,
    /// The answer to a client's ping, with its payload.
    Pong(Vec<u8>),
    /// Send a close frame after everything sent before it (a graceful
    /// close: shutdown, oversized frame, the echo of a client's close);
    /// nothing sent after it goes out.
    Close(u16),
}

impl Outbound {
    fn frame(&self) -> Frame<'_> {
        match self {
            Outbound::Text(s) => Frame::new(opcode::TEXT, None, [s.as_bytes(), &[], &[]]),
            Outbound::Ping => Frame::new(opcode::PING, None, [&[], &[], &[]]),
            Outbound::Pong(p) => Frame::new(opcode::PONG, None, [p, &[], &[]]),
            Outbound::Close(code) => Frame::close(*code),
        }
    }
}

/// One unmasked, unfragmented server frame (RFC 6455 §5.2) in parts.
struct Frame<'a> {
    opcode: u8,
    /// A close frame's code, before the parts.
    code: Option<u16>,
    parts: [&'a [u8]; 3],
    /// `parts[0]` is the whole frame, header included, which
    /// [`Fanout::add`] encoded before: written as it is.
    encoded: bool,
}

impl<'a> Frame<'a> {
    fn new(opcode: u8, code: Option<u16>, parts: [&'a [u8]; 3]) -> Self {
        Self {
            opcode,
            code,
            parts,
            encoded: false,
        }
    }

    /// A text frame encoded before (header and payload).
    fn encoded(wire: &'a [u8]) -> Self {
        Self {
            opcode: opcode::TEXT,
            code: None,
            parts: [wire, &[], &[]],
            encoded: true,
        }
    }

    fn close(code: u16) -> Frame<'static> {
        Frame::new(
            opcode::CLOSE,
            Some(code),
            [close::reason(code).as_bytes(), &[], &[]],
        )
    }

    fn payload_len(&self) -> usize {
        self.code.map_or(0, |_| 2) + self.parts.iter().map(|p| p.len()).sum::<usize>()
    }

    /// Bytes on the wire, header included.
    fn wire_len(&self) -> usize {
        if self.encoded {
            return self.parts[0].len();
        }
        let len = self.payload_len();
        len + match len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        if self.encoded {
            out.extend_from_slice(self.parts[0]);
            return;
        }
        let len = self.payload_len();
        out.push(0x80 | self.opcode);
        match len {
            0..=125 => out.push(len as u8),
            126..=0xFFFF => {
                out.push(126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        if let Some(code) = self.code {
            out.extend_from_slice(&code.to_be_bytes());
        }
        for part in self.parts {
            out.extend_from_slice(part);
        }
    }
}

/// Starts fetching the two cache lines at `p` (a hint: it never faults).
#[inline]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: a prefetch reads nothing and cannot fault, whatever the
        // address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(64).cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

thread_local! {
    /// Where a direct write frames its bytes: one buffer per thread, not
    /// per socket, so a socket that is idle or keeps up holds none.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    /// [`Fanout`]'s frames, kept from one change to the next: a buffer
    /// grown anew for every change cost a reallocation (and a copy) per
    /// doubling.
    static FANOUT_WIRE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Asks a connection to close with a code; the first code wins.
/// [`Peer::close`] also puts the close frame in place of what is queued.
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

/// One socket's outgoing side, under [`Socket::out`]'s lock. `repr(C)`:
/// what a push reads comes first, in the order it reads it (the flags, the
/// descriptor, the pending bytes, the sink), so that with [`Socket`]'s
/// layout all of it lies in the socket's first two cache lines; the writer's
/// waker, needed only to wake it, comes last.
#[derive(Default)]
#[repr(C)]
struct Out {
    /// The writer ended: nothing is written any more.
    ended: bool,
    /// A close frame was sent: nothing after it goes out.
    closing: bool,
    /// The close frame is in the batch or on the wire: a close asked for
    /// now changes nothing.
    close_committed: bool,
    /// Every [`Peer`] is gone: the writer ends once all is written.
    orphaned: bool,
    /// The sink's file descriptor when it has one ([`SocketWrite::fd`]):
    /// a push writes to it without following the sink's pointers.
    fd: Option<RawFd>,
    sent: usize,
    /// The write in flight from `sent` on: never cut, not even by a close.
    batch: Vec<u8>,
    /// Whole frames behind the batch, already framed for the wire.
    queue: Vec<u8>,
    /// The write half; `None` until the writer starts, and again once it
    /// ended. Without it everything is queued. Owns `fd`: both are set and
    /// cleared together.
    sink: Option<Sink>,
    /// The writer task, when it waits for bytes to write.
    writer: Option<Waker>,
}

impl Out {
    /// Bytes not yet on the wire.
    fn pending(&self) -> usize {
        self.batch.len() - self.sent + self.queue.len()
    }

    /// Frames `frame` straight into the socket; what it does not take at
    /// once becomes the batch. Only when nothing is pending.
    fn write_now(&mut self, frame: &Frame<'_>) {
        self.batch.clear();
        self.sent = 0;
        if frame.encoded {
            // A fan-out's frame: already on the wire's format, no copy.
            let wire = frame.parts[0];
            let written = self.try_write(wire);
            if written < wire.len() {
                self.batch.extend_from_slice(&wire[written..]);
            }
            return;
        }
        let mut buf = SCRATCH.take();
        buf.clear();
        frame.encode(&mut buf);
        let written = self.try_write(&buf);
        if written < buf.len() {
            self.batch.extend_from_slice(&buf[written..]);
        }
        if buf.capacity() <= KEEP_CAPACITY {
            SCRATCH.set(buf);
        }
    }

    /// Writes what the socket takes of `buf` at once, never waiting: the
    /// bytes written, 0 when it takes nothing or failed (the writer meets
    /// an error itself and ends the socket) or when no sink is attached.
    fn try_write(&mut self, buf: &[u8]) -> usize {
        let tried = match (self.fd, self.sink.as_mut()) {
            (Some(fd), Some(_)) => send_now(fd, buf),
            (None, Some(sink)) => sink.try_write(buf),
            (_, None) => return 0,
        };
        tried.unwrap_or(0)
    }
}

/// One non-blocking `sendto` on `fd`, as a plain system call: glibc's
/// `send` is a thread-cancellation point and brackets every call with two
/// calls that switch asynchronous cancellation on and off (a tenth of a
/// push's user time in `perf`), which nothing in Rust uses.
fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes for the duration of the
    // call; a null address with length 0 is `send`. `fd` is the
    // descriptor of the sink its caller holds (see `Out::fd`): open.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    // Non-blocking: a full socket answers `WouldBlock`.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Shared by a socket's [`Peer`]s and its [`PeerQueue`]. `repr(C)` and
/// aligned to a cache line: the close code, the lock, [`Out`] and the
/// queue's count fill exactly the first two lines, which is all a push
/// touches (the limit only when bytes are queued) and what [`prefetch`]
/// fetches; one socket per subscriber, so a fan-out misses the cache on
/// each (`an_idle_socket_is_small` checks the layout). Aligned by the
/// allocator's 16 bytes only, `Out::ended`, the first field a push reads
/// under the lock, then lay in a third line three times out of four, which
/// the prefetch did not fetch.
#[repr(C, align(64))]
struct Socket {
    /// Inline, like everything a push reads: not a pointer away.
    closer: Closer,
    out: Mutex<Out>,
    /// Bytes in `Out::queue` (not the batch in flight), readable without
    /// the lock.
    queued: AtomicUsize,
    limit: usize,
    /// Woken when the queue drops below `limit` again.
    drained: Notify,
    /// Live [`Peer`]s; the writer ends, once all is written, at zero.
    senders: AtomicUsize,
}

/// How a frame is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Refused (and the socket closed) when it does not fit.
    Push,
    /// Always taken.
    Send,
    /// A close asked for: in place of what is queued.
    CloseFirst,
}

/// Why [`Socket::put`] did not take a frame.
enum Refused {
    Closed,
    Full,
}

impl Socket {
    fn lock(&self) -> MutexGuard<'_, Out> {
        // A panic while holding the lock would be a bug; keep serving.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn put(&self, frame: &Frame<'_>, mode: Mode) -> Result<(), Refused> {
        let closes = frame.opcode == opcode::CLOSE;
        let wake = {
            let mut out = self.lock();
            if out.ended {
                return Err(Refused::Closed);
            }
            if mode == Mode::CloseFirst {
                if out.close_committed {
                    return Ok(());
                }
                // Whole frames only: the batch's first may be on the wire
                // in part.
                out.queue.clear();
            } else if out.closing {
                // After a close frame nothing goes out; an answer is taken
                // and dropped, as if written to a closing socket.
                return match mode {
                    Mode::Push => Err(Refused::Closed),
                    _ => Ok(()),
                };
            }
            let queued = out.queue.len();
            if mode == Mode::Push && queued > 0 && queued + frame.wire_len() > self.limit {
                return Err(Refused::Full);
            }
            let idle = out.pending() == 0;
            if idle && out.sink.is_some() {
                out.write_now(frame);
            } else {
                frame.encode(&mut out.queue);
            }
            if closes {
                out.closing = true;
                out.close_committed = out.queue.is_empty();
            }
            self.queued.store(out.queue.len(), Ordering::Release);
            // The writer waits only while nothing is pending; a close also
            // ends it once written.
            if (idle && out.pending() > 0) || closes {
                out.writer.take()
            } else {
                None
            }
        };
        if let Some(w) = wake {
            w.wake();
        }
        Ok(())
    }

    /// The writer's step: writes the batch, then the queue as the next
    /// batch, until the socket would block (`blocked` notes since when) or
    /// nothing is left. Ready when the writer is done.
    fn poll_flush(&self, cx: &mut Context<'_>, blocked: &mut Option<Instant>) -> Poll<Ended> {
        let mut guard = self.lock();
        let out = &mut *guard;
        loop {
            if out.sent == out.batch.len() {
                out.batch.clear();
                out.sent = 0;
                *blocked = None;
                if out.queue.is_empty() {
                    if out.closing || out.orphaned {
                        return Poll::Ready(Ended::Done);
                    }
                    if out.batch.capacity() > KEEP_CAPACITY {
                        out.batch = Vec::new();
                    }
                    if out.queue.capacity() > KEEP_CAPACITY {
                        out.queue = Vec::new();
                    }
                    if !out.writer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        out.writer = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                std::mem::swap(&mut out.batch, &mut out.queue);
                out.close_committed = out.closing;
                let before = self.queued.swap(0, Ordering::AcqRel);
                if before >= self.limit {
                    self.drained.notify_waiters();
                }
            }
            let Some(sink) = out.sink.as_mut() else {
                return Poll::Ready(Ended::Failed);
            };
            match Pin::new(&mut **sink).poll_write(cx, &out.batch[out.sent..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Ended::Failed),
                Poll::Ready(Ok(n)) => out.sent += n,
                Poll::Pending => {
                    blocked.get_or_insert_with(Instant::now);
                    return Poll::Pending;
                }
            }
        }
    }

    /// A push: refused when closing; one that does not fit closes the
    /// socket with 1013 (see [`Peer::push`]).
    fn push(&self, frame: &Frame<'_>) -> Result<(), PushError> {
        if self.closer.code().is_some() {
            // Closing already: nothing more is worth its memory.
            return Err(PushError::Closed);
        }
        match self.put(frame, Mode::Push) {
            Ok(()) => Ok(()),
            Err(Refused::Closed) => Err(PushError::Closed),
            // Only the push that overflowed reports the slow consumer (it
            // is counted once); later ones find it already closing.
            Err(Refused::Full) if self.close(close::TRY_AGAIN_LATER) => {
                Err(PushError::SlowConsumer)
            }
            Err(Refused::Full) => Err(PushError::Closed),
        }
    }

    /// See [`Peer::close`].
    fn close(&self, code: u16) -> bool {
        let first = self.closer.close(code);
        if first {
            let _ = self.put(&Frame::close(code), Mode::CloseFirst);
        }
        first
    }

    /// The writer ended: nothing more is written, what was pending is freed.
    fn end(&self) -> Option<Sink> {
        let sink = {
            let mut out = self.lock();
            out.ended = true;
            out.batch = Vec::new();
            out.sent = 0;
            out.queue = Vec::new();
            out.writer = None;
            out.fd = None;
            out.sink.take()
        };
        self.queued.store(0, Ordering::Release);
        self.drained.notify_waiters();
        sink
    }
}

/// The sending side of one connection; cheap to clone. The last one
/// dropped tells the writer.
pub struct Peer {
    pub id: ConnId,
    socket: Arc<Socket>,
}

impl Clone for Peer {
    fn clone(&self) -> Self {
        self.socket.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            id: self.id,
            socket: self.socket.clone(),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.socket.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        let wake = {
            let mut out = self.socket.lock();
            out.orphaned = true;
            out.writer.take()
        };
        if let Some(w) = wake {
            w.wake();
        }
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer").field("id", &self.id).finish()
    }
}

/// Why a frame was not sent.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue was full; the connection is being closed with 1013.
    SlowConsumer,
    /// The connection is gone.
    Closed,
}

impl Peer {
    fn socket(&self) -> &Socket {
        &self.socket
    }

    /// Sends a push without waiting; one that does not fit closes the
    /// connection (1013). Into an empty queue anything fits, so a snapshot
    /// of a big hall reaches a reader that keeps up.
    pub fn push(&self, msg: Outbound) -> Result<(), PushError> {
        self.push_frame(&msg.frame())
    }

    /// [`Peer::push`] of a shared push with this subscription's eid (a
    /// JSON string literal, [`crate::shared::protocol::json_str`]): the
    /// parts are copied into the write, nothing is cloned.
    pub fn push_shared(&self, push: &SharedPush, eid_json: &str) -> Result<(), PushError> {
        let [head, eid, tail] = push.parts(eid_json);
        self.push_frame(&Frame::new(
            opcode::TEXT,
            None,
            [head.as_bytes(), eid.as_bytes(), tail.as_bytes()],
        ))
    }

    fn push_frame(&self, frame: &Frame<'_>) -> Result<(), PushError> {
        self.socket().push(frame)
    }

    /// Sends a response, a ping or a close frame, never waiting and never
    /// refused for size: the reader checks [`Peer::is_full`] before it
    /// reads the next request, so a queue overshoots by one answer at most.
    pub fn send(&self, msg: Outbound) -> Result<(), PushError> {
        self.socket()
            .put(&msg.frame(), Mode::Send)
            .map_err(|_| PushError::Closed)
    }

    /// True while the queue holds its limit or more: read no more requests.
    pub fn is_full(&self) -> bool {
        let s = self.socket();
        s.queued.load(Ordering::Acquire) >= s.limit
    }

    /// Resolves once the queue is below its limit.
    pub async fn drained(&self) {
        loop {
            let notified = self.socket().drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain in between is not missed.
            notified.as_mut().enable();
            if !self.is_full() {
                return;
            }
            notified.await;
        }
    }

    /// Closes the connection with `code` before what is queued (after the
    /// write in flight); true when this call was the first (its code wins).
    pub fn close(&self, code: u16) -> bool {
        self.socket().close(code)
    }
}

/// Subscribers a fan-out frames for before it sends to any of them: a
/// chunk bounds [`Fanout`]'s buffer (about 16 KiB of ~250-byte pushes)
/// whatever the audience.
const FANOUT_CHUNK: usize = 64;

/// One change's pushes to many sockets, in passes per chunk of
/// subscribers: [`Fanout::add`] frames each subscriber's push into one
/// buffer; then every socket of the chunk is fetched, and every frame is
/// handed to its socket as [`Peer::push_shared`] would (written at once
/// when nothing waits, else queued; 1013 when it does not fit).
///
/// Why: a push's system call runs the loopback receiver's TCP stack too,
/// and what it touches evicts the fan-out's own data. Reading a
/// subscriber's entry, its eid and its socket state between two sends
/// missed the cache several times per push, one miss after the other
/// (`perf annotate` of the fan-out: most of its user time, on the loads of
/// the next subscriber). Each socket also lies on a page of its own, and a
/// TLB miss holds up even a prefetch until its page walk is done. Framed
/// first, with no system call in between, the misses overlap; so do the
/// page walks of the sockets fetched back to back; the sends then read a
/// compact list, a buffer the framing just wrote and mapped pages.
pub struct Fanout<'a> {
    /// The frames of the chunk, back to back.
    wire: Vec<u8>,
    /// Each frame's socket and where the frame ends in `wire`.
    targets: Vec<(&'a Socket, usize)>,
    sent: u64,
    slow: u64,
}

impl<'a> Default for Fanout<'a> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Fanout<'a> {
    pub fn new() -> Self {
        let mut wire = FANOUT_WIRE.take();
        wire.clear();
        Self {
            wire,
            targets: Vec::with_capacity(FANOUT_CHUNK),
            sent: 0,
            slow: 0,
        }
    }

    /// Adds `push` for `peer`'s subscription `eid_json` (a JSON string
    /// literal); sent by the time [`Fanout::finish`] returns, in the order
    /// added.
    pub fn add(&mut self, peer: &'a Peer, push: &SharedPush, eid_json: &str) {
        let socket: &'a Socket = &peer.socket;
        let [head, eid, tail] = push.parts(eid_json);
        Frame::new(
            opcode::TEXT,
            None,
            [head.as_bytes(), eid.as_bytes(), tail.as_bytes()],
        )
        .encode(&mut self.wire);
        self.targets.push((socket, self.wire.len()));
        if self.targets.len() == FANOUT_CHUNK {
            self.flush();
        }
    }

    /// Sends what was added: (pushes sent, subscribers closed as slow
    /// consumers by this fan-out).
    pub fn finish(mut self) -> (u64, u64) {
        self.flush();
        let wire = std::mem::take(&mut self.wire);
        if wire.capacity() <= KEEP_CAPACITY * 4 {
            FANOUT_WIRE.set(wire);
        }
        (self.sent, self.slow)
    }

    fn flush(&mut self) {
        // Every socket of the chunk first, in a loop with nothing else in
        // it: each lies on a page of its own, whose TLB miss holds up even
        // a prefetch until the page walk is done (`perf annotate`); issued
        // back to back, those walks overlap instead of stalling one push
        // each, and the sends below find the pages mapped.
        for &(socket, _) in &self.targets {
            prefetch(std::ptr::from_ref(socket).cast());
        }
        let mut start = 0;
        for (i, &(socket, end)) in self.targets.iter().enumerate() {
            if let Some(&(next, _)) = self.targets.get(i + 1) {
                prefetch(std::ptr::from_ref(next).cast());
            }
            match socket.push(&Frame::encoded(&self.wire[start..end])) {
                Ok(()) => self.sent += 1,
                Err(PushError::SlowConsumer) => self.slow += 1,
                Err(PushError::Closed) => {}
            }
            start = end;
        }
        self.targets.clear();
        self.wire.clear();
    }
}

/// How a socket's writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Everything was written up to a close frame, or every sender is gone.
    Done,
    /// The socket failed.
    Failed,
    /// A write waited longer than the drain timeout: the client does not
    /// take its bytes.
    Stuck,
}

/// The writing side, owned by the connection's writer task.
pub struct PeerQueue {
    socket: Arc<Socket>,
}

/// A socket's close state, kept by whoever needs it after its writer ended.
#[derive(Clone)]
pub struct CloseState(Arc<Socket>);

impl CloseState {
    /// See [`Closer::close`].
    pub fn close(&self, code: u16) -> bool {
        self.0.closer.close(code)
    }

    /// See [`Closer::code`].
    pub fn code(&self) -> Option<u16> {
        self.0.closer.code()
    }
}

impl PeerQueue {
    /// The socket's close state.
    pub fn closer(&self) -> CloseState {
        CloseState(self.socket.clone())
    }

    /// Writes what the senders could not write themselves into `sink`,
    /// until a close frame is out, every [`Peer`] is gone, the socket fails,
    /// or a write waits longer than `drain` (armed only when a write has to
    /// wait: a timer per write costs a trip through the timer wheel). Gives
    /// the sink back to be shut down; what was still pending is freed.
    pub async fn run(self, sink: Sink, drain: Duration) -> (Ended, Option<Sink>) {
        {
            let mut out = self.socket.lock();
            out.fd = sink.fd();
            out.sink = Some(sink);
        }
        let mut blocked: Option<Instant> = None;
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let ended = poll_fn(|cx| {
            if let Poll::Ready(ended) = self.socket.poll_flush(cx, &mut blocked) {
                return Poll::Ready(ended);
            }
            let Some(since) = blocked else {
                timer = None;
                return Poll::Pending;
            };
            let deadline = since + drain;
            let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if t.deadline() != deadline {
                t.as_mut().reset(deadline);
            }
            match t.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Ended::Stuck),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        (ended, self.socket.end())
    }
}

/// A frame as it went on the wire (tests read the queue back).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireFrame {
    pub opcode: u8,
    pub payload: Vec<u8>,
}

#[cfg(test)]
impl WireFrame {
    /// A close frame's code.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == opcode::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// Parses unmasked server frames; a partial frame at the end is left out.
    pub fn parse(mut bytes: &[u8]) -> Vec<WireFrame> {
        let mut frames = Vec::new();
        while bytes.len() >= 2 {
            let (len, at) = match bytes[1] & 0x7F {
                126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
                127 if bytes.len() >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bytes[2..10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if bytes.len() < at + len {
                break;
            }
            frames.push(WireFrame {
                opcode: bytes[0] & 0x0F,
                payload: bytes[at..at + len].to_vec(),
            });
            bytes = &bytes[at + len..];
        }
        frames
    }
}

#[cfg(test)]
impl PeerQueue {
    /// Takes what is pending (never written: no writer runs) as frames.
    pub fn take_frames(&mut self) -> Vec<WireFrame> {
        let bytes = {
            let mut out = self.socket.lock();
            let mut bytes = out.batch[out.sent..].to_vec();
            bytes.extend_from_slice(&out.queue);
            out.batch.clear();
            out.sent = 0;
            out.queue.clear();
            bytes
        };
        self.socket.queued.store(0, Ordering::Release);
        WireFrame::parse(&bytes)
    }
}

/// Every open connection of this replica.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    conns: Mutex<HashMap<ConnId, Peer>>,
}

impl Hub {
    /// Registers a new connection with a queue of `limit` bytes. Until its
    /// writer runs ([`PeerQueue::run`]) everything sent is queued.
    pub fn register(&self, limit: usize) -> (Peer, PeerQueue) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let socket = Arc::new(Socket {
            out: Mutex::new(Out::default()),
            queued: AtomicUsize::new(0),
            limit: limit.max(1),
            drained: Notify::new(),
            closer: Closer::default(),
            senders: AtomicUsize::new(1),
        });
        let peer = Peer {
            id,
            socket: socket.clone(),
        };
        if let Ok(mut m) = self.conns.lock() {
            m.insert(id, peer.clone());
        }
        (peer, PeerQueue { socket })
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
    use futures_util::FutureExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, SimplexStream};

    use super::*;

    const DRAIN: Duration = Duration::from_secs(20);

    fn text(bytes: usize) -> Outbound {
        Outbound::Text("x".repeat(bytes))
    }

    /// A writer on an in-memory pipe of `room` bytes, which only the test
    /// empties; the pipe's reading end.
    async fn writing(
        q: PeerQueue,
        room: usize,
    ) -> (
        ReadHalf<SimplexStream>,
        tokio::task::JoinHandle<(Ended, Option<Sink>)>,
    ) {
        let (read, write) = tokio::io::simplex(room);
        let task = tokio::spawn(q.run(Box::new(Polled(write)), DRAIN));
        // Let it attach the sink and find nothing to do.
        tokio::task::yield_now().await;
        (read, task)
    }

    /// What the pipe holds right now, without waiting.
    fn ready_bytes(read: &mut ReadHalf<SimplexStream>) -> Vec<u8> {
        let mut buf = vec![0u8; 1 << 16];
        match read.read(&mut buf).now_or_never() {
            Some(Ok(n)) => buf[..n].to_vec(),
            _ => Vec::new(),
        }
    }

    fn texts(frames: &[WireFrame]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f.opcode {
                opcode::TEXT => String::from_utf8_lossy(&f.payload).into_owned(),
                opcode::PING => "ping".into(),
                other => format!("opcode {other} {:?}", f.close_code()),
            })
            .collect()
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
        assert_eq!(q.closer().code(), Some(close::TRY_AGAIN_LATER));
        // The close frame takes the place of what was queued: it goes first.
        let queued = q.take_frames();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert_eq!(queued[0].close_code(), Some(close::TRY_AGAIN_LATER));
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
        let (peer, q) = hub.register(1000);
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
        let (mut read, _writer) = writing(q, 1 << 16).await;
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when the queue drains")
            .expect("task");
        assert!(!peer.is_full());
        assert_eq!(WireFrame::parse(&ready_bytes(&mut read)).len(), 3);
    }

    #[tokio::test]
    async fn close_all_reaches_every_peer() {
        let hub = Hub::default();
        let (_p1, q1) = hub.register(4);
        let (_p2, q2) = hub.register(4);
        hub.close_all(close::GOING_AWAY);
        for mut q in [q1, q2] {
            assert_eq!(q.closer().code(), Some(close::GOING_AWAY));
            let frames = q.take_frames();
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0].close_code(), Some(close::GOING_AWAY));
        }
    }

    #[tokio::test]
    async fn a_push_to_an_idle_socket_is_written_by_its_sender() {
        let hub = Hub::default();
        let (peer, q) = hub.register(SEND_QUEUE_BYTES);
        let (mut read, _writer) = writing(q, 1 << 16).await;
        let push = SharedPush::new("hall_update", r#"{"version":2}"#, 1234);
        peer.push_shared(&push, r#""s\"1""#).expect("sent");
        peer.send(Outbound::Text("answer".into())).expect("sent");
        // On this one-thread runtime the writer task has not run since: the
        // bytes are in the pipe because the sends wrote them.
        let frames = WireFrame::parse(&ready_bytes(&mut read));
        assert_eq!(
            texts(&frames),
            vec![
                r#"{"type":"hall_update","data":{"version":2},"eid":"s\"1","ts":1234}"#,
                "answer"
            ]
        );
    }

    #[tokio::test]
    async fn a_partial_write_finishes_before_what_was_sent_after_it() {
        let hub = Hub::default();
        let (peer, q) = hub.register(SEND_QUEUE_BYTES);
        // Room for the first frame and part of the second.
        let (mut read, writer) = writing(q, 300).await;
        let frame = |c: char| Outbound::Text(c.to_string().repeat(200));
        peer.push(frame('a')).expect("sent");
        peer.push(frame('b')).expect("sent");
        peer.send(frame('c')).expect("sent");
        peer.send(Outbound::Ping).expect("sent");
        peer.push(frame('d')).expect("sent");
        let mut bytes = Vec::new();
        while WireFrame::parse(&bytes).len() < 5 {
            let mut buf = [0u8; 100];
            let n = read.read(&mut buf).await.expect("read");
            bytes.extend_from_slice(&buf[..n]);
        }
        let got: Vec<String> = texts(&WireFrame::parse(&bytes))
            .into_iter()
            .map(|t| t.chars().take(9).collect())
            .collect();
        assert_eq!(
            got,
            ["aaaaaaaaa", "bbbbbbbbb", "ccccccccc", "ping", "ddddddddd"]
        );
        hub.unregister(peer.id);
        drop(peer);
        let (ended, _) = writer.await.expect("writer");
        assert_eq!(ended, Ended::Done, "every sender gone, everything written");
    }

    #[tokio::test]
    async fn a_close_asked_for_replaces_the_queue_but_not_the_frame_in_flight() {
        let hub = Hub::default();
        let (peer, q) = hub.register(SEND_QUEUE_BYTES);
        let (mut read, writer) = writing(q, 300).await;
        let frame = |c: char| Outbound::Text(c.to_string().repeat(200));
        peer.push(frame('a')).expect("sent");
        // Partly on the wire: its rest is the batch in flight.
        peer.push(frame('b')).expect("sent");
        peer.send(frame('c')).expect("sent");
        assert!(peer.close(close::TRY_AGAIN_LATER));
        assert_eq!(peer.push(frame('d')), Err(PushError::Closed));
        let mut bytes = Vec::new();
        loop {
            let mut buf = [0u8; 100];
            let n = read.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&buf[..n]);
            if WireFrame::parse(&bytes).len() == 3 {
                break;
            }
        }
        let frames = WireFrame::parse(&bytes);
        assert_eq!(frames.len(), 3, "{:?}", texts(&frames));
        assert!(
            frames[1].payload.iter().all(|b| *b == b'b'),
            "b arrives whole"
        );
        assert_eq!(frames[2].close_code(), Some(close::TRY_AGAIN_LATER));
        let (ended, sink) = writer.await.expect("writer");
        assert_eq!(ended, Ended::Done);
        sink.expect("the sink comes back")
            .shutdown()
            .await
            .expect("shutdown");
        assert!(ready_bytes(&mut read).is_empty(), "nothing after the close");
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_takes_nothing_for_the_drain_timeout_is_stuck() {
        let hub = Hub::default();
        let (peer, q) = hub.register(SEND_QUEUE_BYTES);
        let (_read, writer) = writing(q, 10).await;
        let t0 = Instant::now();
        peer.send(text(100)).expect("sent");
        let (ended, _) = writer.await.expect("writer");
        assert_eq!((ended, t0.elapsed()), (Ended::Stuck, DRAIN));
        assert_eq!(
            peer.send(text(1)),
            Err(PushError::Closed),
            "the writer is gone"
        );
    }

    #[tokio::test]
    async fn a_fanout_sends_what_push_shared_sends_to_every_peer_in_order() {
        let hub = Hub::default();
        // More subscribers than one chunk, each on a socket of its own.
        let mut peers = Vec::new();
        let mut reads = Vec::new();
        for _ in 0..FANOUT_CHUNK * 2 + 3 {
            let (peer, q) = hub.register(SEND_QUEUE_BYTES);
            let (read, _writer) = writing(q, 1 << 16).await;
            peers.push(peer);
            reads.push(read);
        }
        let (single, q) = hub.register(SEND_QUEUE_BYTES);
        let (mut single_read, _writer) = writing(q, 1 << 16).await;
        for version in [2, 3] {
            let push = SharedPush::new("hall_update", &format!(r#"{{"version":{version}}}"#), 1234);
            let mut fanout = Fanout::new();
            for p in &peers {
                fanout.add(p, &push, r#""s\"1""#);
            }
            assert_eq!(fanout.finish(), (peers.len() as u64, 0));
            single.push_shared(&push, r#""s\"1""#).expect("sent");
        }
        let expected = read_frames(&mut single_read, 2).await;
        assert_eq!(
            texts(&WireFrame::parse(&expected)),
            vec![
                r#"{"type":"hall_update","data":{"version":2},"eid":"s\"1","ts":1234}"#,
                r#"{"type":"hall_update","data":{"version":3},"eid":"s\"1","ts":1234}"#,
            ]
        );
        for read in &mut reads {
            assert_eq!(
                read_frames(read, 2).await,
                expected,
                "byte for byte, in order"
            );
        }
    }

    /// Reads until `n` whole frames arrived.
    async fn read_frames(read: &mut ReadHalf<SimplexStream>, n: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        while WireFrame::parse(&bytes).len() < n {
            let mut buf = [0u8; 512];
            let got = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf))
                .await
                .expect("frames arrive")
                .expect("read");
            bytes.extend_from_slice(&buf[..got]);
        }
        bytes
    }

    #[tokio::test]
    async fn a_fanout_push_that_does_not_fit_closes_with_1013_once() {
        let hub = Hub::default();
        let (full, mut q) = hub.register(1000);
        let (ok, _q2) = hub.register(1000);
        // No writer: everything is queued.
        full.push(text(400)).expect("queued");
        full.push(text(400)).expect("queued");
        let push = SharedPush::new("hall_update", &"1".repeat(400), 1);
        let mut fanout = Fanout::new();
        fanout.add(&full, &push, "\"e\"");
        fanout.add(&ok, &push, "\"e\"");
        assert_eq!(fanout.finish(), (1, 1), "one sent, one slow consumer");
        assert_eq!(q.closer().code(), Some(close::TRY_AGAIN_LATER));
        let queued = q.take_frames();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert_eq!(queued[0].close_code(), Some(close::TRY_AGAIN_LATER));
        // Closing already: not counted again.
        let mut fanout = Fanout::new();
        fanout.add(&full, &push, "\"e\"");
        assert_eq!(fanout.finish(), (0, 0));
    }

    /// What an idle socket keeps beside its tasks: the shared state, no
    /// buffer (a queue of tokio's took 1.8 KiB per socket).
    #[test]
    fn an_idle_socket_is_small() {
        assert!(
            std::mem::size_of::<Socket>() <= 256,
            "{}",
            std::mem::size_of::<Socket>()
        );
        // What a push reads (the close code, the lock, `Out` up to its
        // sink, the queue's count) lies in the two cache lines
        // [`prefetch`] fetches from the socket's start.
        let hub = Hub::default();
        let (peer, _q) = hub.register(SEND_QUEUE_BYTES);
        let socket: &Socket = &peer.socket;
        let base = std::ptr::from_ref(socket) as usize;
        assert_eq!(base % 64, 0, "aligned to a cache line");
        let out = std::ptr::from_ref(&*socket.lock()) as usize - base;
        let lock = std::mem::offset_of!(Socket, out);
        let lock_end = lock + std::mem::size_of::<Mutex<Out>>();
        assert!(lock_end <= 128 - 8, "the lock and Out end at {lock_end}");
        assert!(out >= lock && out + std::mem::offset_of!(Out, writer) <= 128);
        assert!(std::mem::offset_of!(Socket, queued) + 8 <= 128);
    }
}
