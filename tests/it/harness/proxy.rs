//! A TCP proxy in front of PostgreSQL ([`PgProxy`]) that can make the
//! LISTEN connections go silent the way a network partition does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Where the proxy forwards to.
enum Upstream {
    Unix(PathBuf),
    Tcp(String),
}

struct ProxyState {
    accepted: AtomicU64,
    /// Listener connections accepted before this number are frozen.
    freeze_below: AtomicU64,
}

/// A TCP proxy in front of the test cluster. [`PgProxy::freeze_listener`]
/// makes the LISTEN connections made so far go silent the way a network
/// partition does: nothing is forwarded any more, nothing is closed, no
/// error reaches either side. Connections made later work normally.
pub struct PgProxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
    user: String,
}

impl PgProxy {
    /// A proxy to the server of `conn_string` (libpq key/value or URL).
    pub async fn start(conn_string: &str) -> PgProxy {
        let cfg: tokio_postgres::Config = conn_string.parse().expect("connection string");
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let upstream = match cfg.get_hosts().first().expect("a host") {
            tokio_postgres::config::Host::Unix(dir) => {
                Upstream::Unix(dir.join(format!(".s.PGSQL.{port}")))
            }
            tokio_postgres::config::Host::Tcp(h) => Upstream::Tcp(format!("{h}:{port}")),
        };
        let upstream = Arc::new(upstream);
        let state = Arc::new(ProxyState {
            accepted: AtomicU64::new(0),
            freeze_below: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = st.accepted.fetch_add(1, Ordering::SeqCst);
                let (st, upstream) = (st.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let listener_conn = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    match &*upstream {
                        Upstream::Unix(p) => {
                            let Ok(up) = tokio::net::UnixStream::connect(p).await else {
                                return;
                            };
                            let (ur, uw) = up.into_split();
                            tokio::spawn(pump(cr, uw, true, id, listener_conn.clone(), st.clone()));
                            pump(ur, cw, false, id, listener_conn, st).await;
                        }
                        Upstream::Tcp(a) => {
                            let Ok(up) = tokio::net::TcpStream::connect(a).await else {
                                return;
                            };
                            let (ur, uw) = up.into_split();
                            tokio::spawn(pump(cr, uw, true, id, listener_conn.clone(), st.clone()));
                            pump(ur, cw, false, id, listener_conn, st).await;
                        }
                    }
                });
            }
        });
        PgProxy {
            addr,
            state,
            task,
            user: cfg.get_user().unwrap_or("postgres").to_owned(),
        }
    }

    /// The connection string of `db` through the proxy.
    pub fn conn_string(&self, db: &str) -> String {
        format!(
            "host={} port={} user={} dbname={db}",
            self.addr.ip(),
            self.addr.port(),
            self.user
        )
    }

    /// The LISTEN connections made so far go silent.
    pub fn freeze_listener(&self) {
        let n = self.state.accepted.load(Ordering::SeqCst);
        self.state.freeze_below.store(n, Ordering::SeqCst);
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies one direction. The client's startup message names the
/// connection (`application_name`), which tells the listener's apart.
async fn pump(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    sniff: bool,
    id: u64,
    listener_conn: Arc<std::sync::atomic::AtomicBool>,
    st: Arc<ProxyState>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = 0usize;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if sniff && seen < 4096 {
            seen += n;
            if buf[..n].windows(16).any(|w| w == b"marquee-listener") {
                listener_conn.store(true, Ordering::SeqCst);
            }
        }
        if listener_conn.load(Ordering::SeqCst) && id < st.freeze_below.load(Ordering::SeqCst) {
            // Silent: both sockets stay open (owned by this future, which
            // never finishes), nothing is forwarded, ever.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
