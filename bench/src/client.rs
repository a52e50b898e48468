//! The wire client: WebSocket JSON per docs/protocol.md, nothing Marquee-specific.
//!
//! A [`Conn`] is one WebSocket with an `eid` counter; [`Conn::request`]
//! sends one request and reads frames until the answer with that `eid`
//! arrives (pushes seen meanwhile are ignored: connections that need pushes
//! read them themselves). [`register_users`] walks the real TOTP flow
//! (`auth_start` → code from `secret` → `auth_verify`) and returns tokens
//! that later connections present as `Authorization: Bearer`.
//! [`http_get`] is a minimal HTTP/1.1 GET for `/ready` and `/metrics`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a request may wait for its answer before the run fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Small buffers: the load generator opens tens of thousands of sockets and
/// its own memory must not be what limits a run.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

/// A registered user: its token for `Authorization: Bearer`.
#[derive(Debug, Clone)]
pub struct User {
    pub token: String,
}

/// One answer: `data`, plus the contract error code when it failed.
#[derive(Debug)]
pub struct Reply {
    pub data: Value,
    pub error: Option<String>,
}

impl Reply {
    /// The data of a successful answer, or an error naming the code.
    pub fn ok(self, what: &str) -> Result<Value> {
        match self.error {
            None => Ok(self.data),
            Some(code) => bail!("{what}: {code} {}", self.data),
        }
    }
}

/// The envelope fields the client looks at.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    eid: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// One WebSocket connection speaking the contract.
pub struct Conn {
    pub ws: Ws,
    next_eid: u64,
    /// `data.user` of the first (`session`) frame: `null` when anonymous.
    pub user: Value,
}

impl Conn {
    /// Connects, optionally with a token, and reads the `session` frame.
    pub async fn connect(url: &str, bearer: Option<&str>) -> Result<Conn> {
        let mut req = url
            .into_client_request()
            .with_context(|| format!("bad WebSocket URL {url}"))?;
        if let Some(t) = bearer {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).context("token header")?,
            );
        }
        let (ws, _) = tokio::time::timeout(
            REQUEST_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(req, Some(ws_config()), true),
        )
        .await
        .map_err(|_| anyhow!("connect to {url} timed out"))?
        .with_context(|| format!("connect to {url}"))?;
        let mut conn = Conn {
            ws,
            next_eid: 0,
            user: Value::Null,
        };
        let first = conn.next_envelope().await?;
        if first.kind != "session" {
            bail!("first frame is {:?}, not session", first.kind);
        }
        conn.user = first.data.get("user").cloned().unwrap_or(Value::Null);
        Ok(conn)
    }

    /// A fresh correlation id.
    pub fn eid(&mut self) -> String {
        self.next_eid += 1;
        format!("b{}", self.next_eid)
    }

    /// Sends one request frame with the given `eid`.
    pub async fn send(&mut self, kind: &str, eid: &str, data: &Value) -> Result<()> {
        let frame = json!({"type": kind, "data": data, "eid": eid}).to_string();
        self.ws
            .send(Message::text(frame))
            .await
            .context("send request")
    }

    async fn next_envelope(&mut self) -> Result<Envelope> {
        loop {
            let msg = tokio::time::timeout(REQUEST_TIMEOUT, self.ws.next())
                .await
                .map_err(|_| anyhow!("no frame within {REQUEST_TIMEOUT:?}"))?;
            match msg {
                None => bail!("connection closed"),
                Some(Err(e)) => bail!("connection failed: {e}"),
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).context("frame is not an envelope")
                }
                Some(Ok(Message::Close(c))) => bail!("closed by the server: {c:?}"),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads until the answer to `eid` arrives.
    pub async fn answer(&mut self, eid: &str) -> Result<Reply> {
        loop {
            let env = self.next_envelope().await?;
            if env.eid.as_deref() == Some(eid)
                && !matches!(env.kind.as_str(), "hall_update" | "hall_snapshot")
            {
                return Ok(Reply {
                    data: env.data,
                    error: env.error,
                });
            }
        }
    }

    /// One request and its answer.
    pub async fn request(&mut self, kind: &str, data: Value) -> Result<Reply> {
        let eid = self.eid();
        self.send(kind, &eid, &data).await?;
        self.answer(&eid).await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The current code of a base32 TOTP secret (SHA1, 6 digits, 30 s).
pub fn totp_now(secret_b32: &str) -> Result<String> {
    let secret = totp_rs::Secret::try_from_base32(secret_b32)
        .map_err(|e| anyhow!("secret is not base32: {e:?}"))?;
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .build()
        .map_err(|e| anyhow!("TOTP: {e:?}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    Ok(totp.generate(now).to_string())
}

/// A short, unique, valid username prefix for this run (`a-z0-9`).
pub fn run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut n = (ms as u64) ^ ((std::process::id() as u64) << 40);
    let mut s = String::new();
    for _ in 0..9 {
        let d = (n % 36) as u32;
        s.push(std::char::from_digit(d, 36).unwrap_or('x'));
        n /= 36;
    }
    s
}

/// Users registered per anonymous connection: 2 requests each stays well
/// inside the contract's burst of 50.
const USERS_PER_CONN: usize = 20;

/// Registers `n` fresh users through the TOTP flow, `parallel` connections
/// at a time. Names are `<prefix>u<i>`.
pub async fn register_users(
    url: &str,
    prefix: &str,
    n: usize,
    parallel: usize,
) -> Result<Vec<User>> {
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for chunk_start in (0..n).step_by(USERS_PER_CONN) {
        let chunk_end = (chunk_start + USERS_PER_CONN).min(n);
        let (url, prefix, sem) = (url.to_owned(), prefix.to_owned(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let mut conn = Conn::connect(&url, None).await?;
            let mut out = Vec::new();
            for i in chunk_start..chunk_end {
                let name = format!("{prefix}u{i}");
                let start = conn
                    .request("auth_start", json!({"username": name}))
                    .await?
                    .ok("auth_start")?;
                let secret = start["secret"]
                    .as_str()
                    .ok_or_else(|| anyhow!("auth_start for {name}: no secret in {start}"))?;
                let code = totp_now(secret)?;
                let v = conn
                    .request("auth_verify", json!({"username": name, "code": code}))
                    .await?
                    .ok("auth_verify")?;
                if v["user"]["id"].is_null() {
                    bail!("auth_verify for {name}: no user in {v}");
                }
                out.push(User {
                    token: v["token"]
                        .as_str()
                        .ok_or_else(|| anyhow!("auth_verify: no token"))?
                        .to_owned(),
                });
            }
            conn.close().await;
            anyhow::Ok(out)
        }));
    }
    let mut users = Vec::with_capacity(n);
    for t in tasks {
        users.extend(t.await??);
    }
    Ok(users)
}

/// Connects `tokens.len()` logged-in sockets, `parallel` at a time, and
/// checks each one's `session` frame names a user.
pub async fn connect_many(
    url: &str,
    tokens: Vec<Option<String>>,
    parallel: usize,
) -> Result<Vec<Conn>> {
    let sem = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = Vec::new();
    for t in tokens {
        let (url, sem) = (url.to_owned(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let c = Conn::connect(&url, t.as_deref()).await?;
            if t.is_some() && c.user.is_null() {
                bail!("a token was refused at connect (session user is null)");
            }
            anyhow::Ok(c)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Ids are opaque strings on the wire; accept numbers too.
pub fn id_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A minimal HTTP/1.1 GET: (status, body). `base` is like `http://host:port`.
pub async fn http_get(base: &str, path: &str) -> Result<(u16, String)> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("HTTP URL must start with http://: {base}"))?;
    let hostport = rest.split('/').next().unwrap_or(rest);
    let mut s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(hostport))
        .await
        .map_err(|_| anyhow!("connect {hostport} timed out"))??;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| anyhow!("GET {path} timed out"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Waits until `GET /ready` answers 200 (at most `wait`).
pub async fn wait_ready(http: &str, wait: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match http_get(http, "/ready").await {
            Ok((200, _)) => return Ok(()),
            other if tokio::time::Instant::now() >= deadline => {
                bail!("{http}/ready did not answer 200 within {wait:?}: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The value of one Prometheus sample line, `name` including labels.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
