//! The one WebSocket client of the tests. It speaks the envelope
//! (`request`, `ok`, `err`, pushes kept in an inbox until asked for), has
//! typed helpers for the seat requests (`alice.hold(&screening,
//! &seats[..2])`), pipelines (`send` + `next`), and reports how a
//! connection ended (close code) as a value, for replicas that die.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use marquee::app::Server;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What [`Client::next`] read.
#[derive(Debug)]
pub enum Frame {
    Text(Value),
    /// The connection ended: the close code, or `None` when it was cut
    /// without a close frame.
    Closed(Option<u16>),
}

/// An answer frame of a typed helper.
#[derive(Debug, Clone)]
pub struct Reply(pub Value);

impl Reply {
    /// The `data` of an answer that must have succeeded.
    pub fn data(self) -> Value {
        assert!(self.0.get("error").is_none(), "should succeed: {}", self.0);
        self.0["data"].clone()
    }

    /// The code of an answer that must have failed.
    pub fn error(&self) -> String {
        self.0["error"]
            .as_str()
            .unwrap_or_else(|| panic!("should fail: {}", self.0))
            .to_owned()
    }
}

/// The data of the seat requests: `{"screening_id", "seat_ids"}`.
pub fn seat_data<S: AsRef<str>>(screening: &str, seats: &[S]) -> Value {
    let ids: Vec<&str> = seats.iter().map(AsRef::as_ref).collect();
    json!({"screening_id": screening, "seat_ids": ids})
}

/// A WebSocket client speaking the envelope.
pub struct Client {
    ws: Ws,
    next: u64,
    /// Frames received but not yet asked for.
    inbox: Vec<Value>,
    /// The session frame received on connect.
    pub session: Value,
}

/// Options of a connect.
#[derive(Default, Clone)]
pub struct Connect {
    pub token_cookie: Option<String>,
    pub bearer: Option<String>,
    pub origin: Option<String>,
    pub path: Option<String>,
    /// An `X-Forwarded-For` header (believed when the server trusts 127.0.0.1).
    pub forwarded_for: Option<String>,
    /// The local address to connect from (e.g. 127.0.0.2, to look like
    /// another client to a proxy on 127.0.0.1).
    pub source: Option<std::net::IpAddr>,
}

impl Connect {
    /// With a bearer token.
    pub fn bearer(token: &str) -> Connect {
        Connect {
            bearer: Some(token.to_owned()),
            ..Default::default()
        }
    }
}

impl Client {
    pub async fn connect(server: &Server) -> Client {
        Self::connect_with(server, Connect::default())
            .await
            .expect("connect")
    }

    /// Connects to a replica anywhere (a child process, a proxy), with a
    /// bearer token when given.
    pub async fn at(url: &str, token: Option<&str>) -> Client {
        let opts = token.map(Connect::bearer).unwrap_or_default();
        Self::connect_url(url, opts).await.expect("connect")
    }

    /// Connects and reads the session frame.
    pub async fn connect_with(
        server: &Server,
        opts: Connect,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let path = opts.path.clone().unwrap_or_else(|| "/".into());
        Self::connect_url(&format!("ws://{}{}", server.ws_addr, path), opts).await
    }

    /// Connects to any WebSocket URL (a replica in another process, a
    /// proxy) and reads the session frame.
    pub async fn connect_url(
        url: &str,
        opts: Connect,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let ws = raw_connect_url(url, opts).await?;
        let mut c = Client {
            ws,
            next: 0,
            inbox: Vec::new(),
            session: Value::Null,
        };
        let first = c.next_frame().await.expect("a session frame");
        assert_eq!(
            first["type"], "session",
            "first frame is the session: {first}"
        );
        c.session = first;
        Ok(c)
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.expect("send");
    }

    /// Sends a request without waiting for its answer; returns its eid, or
    /// the error when the connection is gone.
    pub async fn send(&mut self, kind: &str, data: Value) -> Result<String, String> {
        self.next += 1;
        let eid = format!("c-{}", self.next);
        let frame = json!({"type": kind, "data": data, "eid": eid});
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        Ok(eid)
    }

    /// The next text frame (inbox first) or the end of the connection.
    pub async fn next(&mut self) -> Frame {
        if !self.inbox.is_empty() {
            return Frame::Text(self.inbox.remove(0));
        }
        self.read().await
    }

    /// The next frame (inbox first), `None` on close.
    pub async fn next_frame(&mut self) -> Option<Value> {
        match self.next().await {
            Frame::Text(f) => Some(f),
            Frame::Closed(_) => None,
        }
    }

    async fn read(&mut self) -> Frame {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    return Frame::Text(serde_json::from_str(&t).expect("server frames are JSON"))
                }
                Some(Ok(Message::Close(f))) => return Frame::Closed(f.map(|f| f.code.into())),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Frame::Closed(None),
            }
        }
    }

    /// Waits for the end of the connection (text frames are skipped) and
    /// returns its close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            if let Frame::Closed(code) = self.read().await {
                return code;
            }
        }
    }

    /// Sends a request with a fresh eid and returns its response (error or not).
    pub async fn request(&mut self, kind: &str, data: Value) -> Value {
        let eid = self.send(kind, data).await.expect("send");
        self.response(&eid).await
    }

    /// A request to a replica that may die: its answer, or `None` when the
    /// connection ended first. Frames read meanwhile are dropped.
    pub async fn try_request(&mut self, kind: &str, data: Value) -> Option<Value> {
        let eid = self.send(kind, data).await.ok()?;
        loop {
            match self.read().await {
                Frame::Text(f) if f["eid"] == eid.as_str() && f["type"] == kind => return Some(f),
                Frame::Text(_) => continue,
                Frame::Closed(_) => return None,
            }
        }
    }

    /// The response with this eid (pushes seen meanwhile stay in the inbox).
    pub async fn response(&mut self, eid: &str) -> Value {
        let answer = |f: &Value| {
            f["eid"] == eid && f["type"] != "hall_update" && f["type"] != "hall_snapshot"
        };
        if let Some(i) = self.inbox.iter().position(answer) {
            return self.inbox.remove(i);
        }
        loop {
            let Frame::Text(f) = self.read().await else {
                panic!("connection closed before the response");
            };
            if answer(&f) {
                return f;
            }
            self.inbox.push(f);
        }
    }

    /// A request that must succeed; returns its `data`.
    pub async fn ok(&mut self, kind: &str, data: Value) -> Value {
        let r = self.request(kind, data).await;
        assert!(r.get("error").is_none(), "{kind} failed: {r}");
        r["data"].clone()
    }

    /// A request that must fail; returns the error code.
    pub async fn err(&mut self, kind: &str, data: Value) -> String {
        let r = self.request(kind, data).await;
        r["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{kind} should fail: {r}"))
            .to_owned()
    }

    /// `hold_seats`.
    pub async fn hold<S: AsRef<str>>(&mut self, screening: &str, seats: &[S]) -> Reply {
        Reply(
            self.request("hold_seats", seat_data(screening, seats))
                .await,
        )
    }

    /// `release_seats`.
    pub async fn release<S: AsRef<str>>(&mut self, screening: &str, seats: &[S]) -> Reply {
        Reply(
            self.request("release_seats", seat_data(screening, seats))
                .await,
        )
    }

    /// `book_seats`.
    pub async fn book<S: AsRef<str>>(&mut self, screening: &str, seats: &[S]) -> Reply {
        Reply(
            self.request("book_seats", seat_data(screening, seats))
                .await,
        )
    }

    /// `cancel_booking`.
    pub async fn cancel(&mut self, booking: &str) -> Reply {
        Reply(
            self.request("cancel_booking", json!({ "booking_id": booking }))
                .await,
        )
    }

    /// `subscribe_hall`.
    pub async fn subscribe(&mut self, screening: &str) -> Reply {
        Reply(
            self.request("subscribe_hall", json!({ "screening_id": screening }))
                .await,
        )
    }

    /// `get_hall`.
    pub async fn get_hall(&mut self, screening: &str) -> Reply {
        Reply(
            self.request("get_hall", json!({ "screening_id": screening }))
                .await,
        )
    }

    /// The next push of this type (other frames stay in the inbox).
    pub async fn push(&mut self, kind: &str) -> Value {
        if let Some(i) = self.inbox.iter().position(|f| f["type"] == kind) {
            return self.inbox.remove(i);
        }
        loop {
            let Frame::Text(f) = self.read().await else {
                panic!("connection closed while waiting for a push");
            };
            if f["type"] == kind {
                return f;
            }
            self.inbox.push(f);
        }
    }

    /// Asserts no frame of this type arrives within `d`.
    pub async fn no_push(&mut self, kind: &str, d: Duration) {
        assert!(
            !self.inbox.iter().any(|f| f["type"] == kind),
            "unexpected {kind} in inbox"
        );
        let deadline = tokio::time::Instant::now() + d;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let f: Value = serde_json::from_str(&t).expect("json");
                    assert_ne!(f["type"], kind, "unexpected push: {f}");
                    self.inbox.push(f);
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => return,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A raw upgrade, for tests of the handshake itself.
pub async fn raw_connect(
    server: &Server,
    opts: Connect,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let path = opts.path.clone().unwrap_or_else(|| "/".into());
    raw_connect_url(&format!("ws://{}{}", server.ws_addr, path), opts).await
}

/// A raw upgrade to any URL (a replica in another process, a proxy);
/// `opts.path` is ignored: the URL has the path.
pub async fn raw_connect_url(
    url: &str,
    opts: Connect,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().expect("request");
    let h = req.headers_mut();
    if let Some(t) = &opts.token_cookie {
        h.insert(
            "cookie",
            HeaderValue::from_str(&format!("token={t}")).expect("cookie"),
        );
    }
    if let Some(t) = &opts.bearer {
        h.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {t}")).expect("bearer"),
        );
    }
    if let Some(o) = &opts.origin {
        h.insert("origin", HeaderValue::from_str(o).expect("origin"));
    }
    if let Some(f) = &opts.forwarded_for {
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_str(f).expect("x-forwarded-for"),
        );
    }
    let Some(source) = opts.source else {
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        return Ok(ws);
    };
    let host = req.uri().host().expect("host").to_owned();
    let port = req.uri().port_u16().expect("port");
    let addr: std::net::SocketAddr = format!("{host}:{port}").parse().expect("an IP URL");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::new(source, 0))
        .expect("bind the source address");
    let tcp = socket.connect(addr).await?;
    let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)).await?;
    Ok(ws)
}

/// The current TOTP code for a base32 secret, as an authenticator app
/// computes it (`offset_steps` shifts the clock by 30 s steps).
pub fn totp_code(secret_b32: &str, offset_steps: i64) -> String {
    let secret = totp_rs::Secret::try_from_base32(secret_b32).expect("base32 secret");
    let totp = totp_rs::Builder::new()
        .with_secret(secret.as_bytes().to_vec())
        .build()
        .expect("totp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    totp.generate((now + offset_steps * 30) as u64).to_string()
}

/// Seconds left in the current 30 s TOTP step.
pub fn secs_left_in_step() -> u64 {
    30 - std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        % 30
}

/// Registers a user through the real TOTP flow; returns (token, user id).
pub async fn register(client: &mut Client, username: &str) -> (String, String) {
    let start = client.ok("auth_start", json!({"username": username})).await;
    assert_eq!(start["status"], "candidate", "{start}");
    let secret = start["secret"].as_str().expect("secret").to_owned();
    let v = client
        .ok(
            "auth_verify",
            json!({"username": username, "code": totp_code(&secret, 0)}),
        )
        .await;
    (
        v["token"].as_str().expect("token").to_owned(),
        v["user"]["id"].as_str().expect("user id").to_owned(),
    )
}

/// A logged-in client: registers `username` and reconnects with the token.
pub async fn logged_in(server: &Server, username: &str) -> (Client, String, String) {
    let mut anon = Client::connect(server).await;
    let (token, id) = register(&mut anon, username).await;
    anon.close().await;
    let c = Client::connect_with(server, Connect::bearer(&token))
        .await
        .expect("connect with token");
    assert_eq!(
        c.session["data"]["user"]["username"], username,
        "{}",
        c.session
    );
    (c, token, id)
}

/// `{seat id: status}` of a snapshot.
pub fn statuses(hall: &Value) -> BTreeMap<String, String> {
    hall["seats"]
        .as_array()
        .unwrap_or_else(|| panic!("no seats in {hall}"))
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect()
}

/// The seats marked `mine` in a snapshot.
pub fn mine(hall: &Value) -> BTreeSet<String> {
    hall["seats"]
        .as_array()
        .expect("seats")
        .iter()
        .filter(|s| s["mine"] == true)
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
}

/// `{seat id: (status, mine)}` of a list of seats (a snapshot's or an
/// update's `seats`).
pub fn seat_views(seats: &Value) -> BTreeMap<String, (String, bool)> {
    seats
        .as_array()
        .unwrap_or_else(|| panic!("no seats in {seats}"))
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("seat id").to_owned(),
                (
                    s["status"].as_str().expect("status").to_owned(),
                    s["mine"] == true,
                ),
            )
        })
        .collect()
}
