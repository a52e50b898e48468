//! The HTTP port's connections (issue 12.5): accepted here and served by
//! hyper with the routes of [`super::http`], under limits a client cannot
//! dodge, so that idle, half-sent or slow connections cannot pile up until
//! `/health` and the WebSocket port run out of file descriptors.
//!
//! * **Header timeout** (`HTTP_HEADER_TIMEOUT`): a complete request head
//!   must arrive within it, counted from connect or from the previous
//!   answer, or the connection is closed: this ends idle, keep-alive and
//!   half-sent (slowloris) connections alike.
//! * **Idle timeout** (`HTTP_IDLE_TIMEOUT`): one request, its body
//!   included, may take no longer (`408`, e.g. a body that stalls), and a
//!   connection with no request in flight that moved no byte for that long
//!   is closed (e.g. a client that stopped reading its answer).
//! * **Connection cap** (`HTTP_MAX_CONNECTIONS`): at the cap, a new
//!   connection closes the connection idle the longest to make room; when
//!   every connection is busy, the new one is refused (closed).
//! * **Body limit**: a declared body over [`super::http::MAX_BODY`] answers
//!   `413` on every path, without reading it.
//!
//! It knows nothing of the routes themselves.

use crate::shared::protocol::ErrorCode;
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use warp::http::{header, HeaderValue, Request, StatusCode};

use super::http::{error, routes, MAX_BODY};
use super::State;

/// One open connection, as the cap and the idle timer see it.
struct Conn {
    /// Requests being answered; a connection with one is never idle.
    in_flight: AtomicUsize,
    /// Milliseconds since [`Registry::epoch`] of the last byte read or written.
    last_active: AtomicU64,
    /// Closes the connection (the cap made room for a newer one).
    close: Notify,
}

/// The open connections of one HTTP port.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Registers a new connection. At `max`, the connection idle the longest
    /// is told to close and forgotten; `None` when every one is busy.
    fn admit(&self, max: usize) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        while conns.len() >= max {
            let victim = conns
                .iter()
                .filter(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
                .min_by_key(|(_, c)| c.last_active.load(Ordering::Relaxed))
                .map(|(id, _)| *id)?;
            if let Some(c) = conns.remove(&victim) {
                c.close.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            last_active: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        conns.insert(id, conn.clone());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Serves the HTTP routes on `listener` until shutdown; connections then
/// finish their current request.
pub async fn serve_listener(listener: TcpListener, state: Arc<State>, ws_port: u16) {
    let service = warp::service(routes(state.clone(), ws_port));
    let registry = Arc::new(Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
    });
    let mut shutdown = state.shutdown.clone();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => return,
        };
        let Some((id, conn)) = registry.admit(state.config.http_max_connections) else {
            tracing::debug!("HTTP connection refused: every connection is busy");
            continue;
        };
        tokio::spawn(connection(
            stream,
            id,
            conn,
            registry.clone(),
            service.clone(),
            state.clone(),
        ));
    }
}

async fn connection<S>(
    stream: TcpStream,
    id: u64,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    service: S,
    state: Arc<State>,
) where
    S: tower_service::Service<
            Request<Incoming>,
            Response = warp::reply::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let _ = stream.set_nodelay(true);
    let idle_timeout = state.config.http_idle_timeout;
    let io = TokioIo::new(Tracked {
        inner: stream,
        conn: conn.clone(),
        registry: registry.clone(),
    });
    let c = conn.clone();
    let r = registry.clone();
    let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut service = service.clone();
        let busy = Busy::new(c.clone(), r.clone());
        async move {
            let _busy = busy;
            if declared_length(&req).is_some_and(|n| n > MAX_BODY) {
                return Ok::<_, Infallible>(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::BadRequest,
                ));
            }
            match tokio::time::timeout(idle_timeout, service.call(req)).await {
                Ok(answer) => answer,
                Err(_) => {
                    let mut resp = error(StatusCode::REQUEST_TIMEOUT, ErrorCode::BadRequest);
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                    Ok(resp)
                }
            }
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.http_header_timeout);
    let served = builder.serve_connection(io, handler);
    tokio::pin!(served);
    let mut shutdown = state.shutdown.clone();
    let mut draining = false;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended");
                }
                break;
            }
            _ = conn.close.notified() => break,
            _ = idle_expired(&conn, &registry, idle_timeout) => break,
            _ = async { let _ = shutdown.wait_for(|s| *s).await; }, if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
        }
    }
    registry.remove(id);
}

/// Completes once the connection has had no request in flight and moved no
/// byte for `timeout`.
async fn idle_expired(conn: &Conn, registry: &Registry, timeout: Duration) {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        let idle_ms = registry
            .now_ms()
            .saturating_sub(conn.last_active.load(Ordering::Relaxed));
        let busy = conn.in_flight.load(Ordering::Relaxed) > 0;
        if !busy && idle_ms >= timeout_ms {
            return;
        }
        let wait = if busy {
            timeout_ms
        } else {
            timeout_ms - idle_ms
        };
        tokio::time::sleep(Duration::from_millis(wait.max(10))).await;
    }
}

/// The `Content-Length` a request declares, if any.
fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Marks a request in flight for as long as it lives.
struct Busy {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Busy {
    fn new(conn: Arc<Conn>, registry: Arc<Registry>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Self { conn, registry }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn
            .last_active
            .store(self.registry.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP stream, noting when bytes move.
struct Tracked {
    inner: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Tracked {
    fn touch(&self) {
        self.conn
            .last_active
            .store(self.registry.now_ms(), Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
