//! The connection loop over a channel of frames and an in-memory pipe
//! instead of a socket, on a paused clock: its timers, limits and ordering without TCP or a database. The
//! state's pool points at no server, so only requests that need no database
//! are sent (`ping`, bad frames); the real socket is covered by the
//! integration tests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use serde_json::Value;
use tokio::io::{Join, ReadHalf, SimplexStream, Sink};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::super::{Origins, State};
use super::{connection, writer, Incoming, Outgoing, PING_EVERY, SILENCE_LIMIT};
use crate::controllers::sessions::Sessions;
use crate::core::db::Db;
use crate::core::hub::{close, Hub, Outbound, Polled, SharedPush, SEND_QUEUE_BYTES};
use crate::core::listener::Listener;
use crate::core::metrics::Metrics;
use crate::methods::auth::{AuthKeys, TokenCheck};
use crate::models::writer::SeatWriter;
use crate::shared::config::Config;
use crate::shared::protocol::{json_str, MAX_FRAME_BYTES};
use crate::subscriptions::HallRouter;

const DRAIN: Duration = Duration::from_secs(20);
/// Bytes the pipe from the server holds (the kernel's send buffer).
const ROOM: usize = 64 * 1024;

/// A server state whose database is never reached, and its shutdown switch.
fn server_state(send_queue_bytes: usize) -> (Arc<State>, watch::Sender<bool>) {
    let vars: HashMap<String, String> = [
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:9/none"),
        ("JWT_SECRET", "unit-test-secret-unit-test-secret-0123"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = Config::from_vars(&vars).expect("config");
    let db = Db::new(config.database_url.as_deref().expect("url"), 1).expect("lazy pool");
    let metrics = Arc::new(Metrics::default());
    let listener = Listener::stopped();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let state = State {
        auth: AuthKeys::from_config(&config).expect("keys"),
        config,
        replica_id: "unit".into(),
        router: HallRouter::new(db.clone(), listener.clone(), metrics.clone()),
        seats: SeatWriter::spawn(db.clone(), 1, Duration::ZERO, metrics.clone()),
        db,
        hub: Hub::default(),
        listener,
        metrics,
        sessions: Sessions::default(),
        origins: Origins::default(),
        shutdown,
        send_queue_bytes,
        drain_timeout: DRAIN,
    };
    (Arc::new(state), shutdown_tx)
}

/// The pipe the server writes into, read by a WebSocket client.
type FromServer = WebSocketStream<Join<ReadHalf<SimplexStream>, Sink>>;

/// The client's ends of a connection.
struct Client {
    /// Frames to the server; dropping it is the peer closing TCP.
    to_server: Option<mpsc::UnboundedSender<Result<Message, WsError>>>,
    /// What the server wrote, parsed by tungstenite as a client would.
    from_server: FromServer,
    /// The connection's task (none when a test drives the writer alone).
    task: Option<JoinHandle<()>>,
}

/// A transport without TCP: frames to the server through a channel; what
/// the server writes waits in a pipe of `room` bytes that only `Client::next`
/// empties (a client that stops reading blocks the server's writes once
/// `room` is used). What the client would write back (tungstenite's pong
/// and close replies) is dropped.
async fn channels(room: usize) -> (impl Incoming, impl Outgoing, Client) {
    let (to_server, mut rx) = mpsc::unbounded_channel();
    let incoming = stream::poll_fn(move |cx| rx.poll_recv(cx));
    let (read, outgoing) = tokio::io::simplex(room);
    let outgoing = Polled(outgoing);
    let from_server = WebSocketStream::from_raw_socket(
        tokio::io::join(read, tokio::io::sink()),
        Role::Client,
        None,
    )
    .await;
    let client = Client {
        to_server: Some(to_server),
        from_server,
        task: None,
    };
    (incoming, outgoing, client)
}

async fn open_as(state: &Arc<State>, room: usize, check: TokenCheck) -> Client {
    let (incoming, outgoing, mut client) = channels(room).await;
    client.task = Some(tokio::spawn(connection(
        incoming,
        outgoing,
        state.clone(),
        check,
        IpAddr::from([127, 0, 0, 1]),
    )));
    client
}

/// An anonymous connection, its `session` frame already read.
async fn open(state: &Arc<State>, room: usize) -> Client {
    let mut c = open_as(state, room, TokenCheck::Invalid).await;
    let first = c.json().await;
    assert_eq!(first["type"], "session");
    assert_eq!(first["data"]["user"], Value::Null);
    assert_eq!(first["data"]["server"], "unit");
    c
}

impl Client {
    fn send(&self, m: Message) {
        self.send_raw(Ok(m));
    }

    fn send_raw(&self, m: Result<Message, WsError>) {
        let tx = self.to_server.as_ref().expect("open");
        tx.send(m).expect("server reading");
    }

    fn ping(&self, eid: &str) {
        self.send(Message::text(format!(r#"{{"type":"ping","eid":"{eid}"}}"#)));
    }

    /// The next frame; `None` once the server closed its end (or wrote
    /// something that is not a frame).
    async fn next(&mut self) -> Option<Message> {
        self.from_server.next().await?.ok()
    }

    async fn json(&mut self) -> Value {
        match self.next().await {
            Some(Message::Text(t)) => serde_json::from_str(&t).expect("JSON"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn close_code(&mut self) -> u16 {
        match self.next().await {
            Some(Message::Close(Some(f))) => u16::from(f.code),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// The connection's task finishes.
    async fn finished(&mut self) {
        if let Some(task) = self.task.take() {
            task.await.expect("connection task");
        }
    }

    /// The server closes with `code`, then ends the connection.
    async fn closed_with(mut self, code: u16) {
        assert_eq!(self.close_code().await, code);
        self.ended().await;
    }

    /// The server ends the connection: its sink is dropped and its task
    /// finishes.
    async fn ended(mut self) {
        assert_eq!(self.next().await, None, "nothing after the end");
        self.finished().await;
    }
}

#[tokio::test(start_paused = true)]
async fn pings_every_30_s_and_keeps_a_peer_that_answers() {
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let mut c = open(&state, ROOM).await;
    let t0 = Instant::now();
    for n in 1..=4u32 {
        assert!(matches!(c.next().await, Some(Message::Ping(_))));
        assert_eq!(t0.elapsed(), PING_EVERY * n);
        c.send(Message::Pong(Default::default()));
    }
    // Two minutes in, past the silence limit, and still served.
    c.ping("alive");
    let answer = c.json().await;
    assert_eq!(
        (answer["type"].as_str(), answer["eid"].as_str()),
        (Some("ping"), Some("alive"))
    );
    assert_eq!(state.metrics.connections.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_after_60_s() {
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let mut c = open(&state, ROOM).await;
    let t0 = Instant::now();
    assert!(matches!(c.next().await, Some(Message::Ping(_))));
    assert!(matches!(c.next().await, Some(Message::Ping(_))));
    assert_eq!(c.close_code().await, close::GOING_AWAY);
    let silent = t0.elapsed();
    // Checked just past the limit (the liveness timer's deadline).
    assert!(
        silent > SILENCE_LIMIT && silent <= SILENCE_LIMIT + Duration::from_secs(5),
        "{silent:?}"
    );
    c.ended().await;
    assert_eq!(state.metrics.connections.load(Ordering::Relaxed), 0);
    assert!(state.hub.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_frame_over_64_kib_closes_with_1009_and_one_of_64_kib_is_answered() {
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let mut c = open(&state, ROOM).await;
    c.send(Message::text(" ".repeat(MAX_FRAME_BYTES)));
    let answer = c.json().await;
    assert_eq!(answer["error"], "BAD_REQUEST");
    c.send(Message::text(" ".repeat(MAX_FRAME_BYTES + 1)));
    c.closed_with(close::TOO_BIG).await;
}

#[tokio::test(start_paused = true)]
async fn transport_errors_close_with_their_codes() {
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let cases = [
        (
            WsError::Capacity(CapacityError::MessageTooLong {
                size: 2 << 20,
                max_size: 1 << 20,
            }),
            close::TOO_BIG,
        ),
        (WsError::Utf8("bad".into()), close::INVALID_DATA),
        (
            WsError::Protocol(ProtocolError::UnmaskedFrameFromClient),
            close::PROTOCOL_ERROR,
        ),
    ];
    for (error, code) in cases {
        let c = open(&state, ROOM).await;
        c.send_raw(Err(error));
        c.closed_with(code).await;
    }
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_rate_limit_are_answered_in_order_with_retry_after() {
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let mut c = open(&state, ROOM).await;
    for i in 0..55 {
        c.ping(&format!("p{i}"));
    }
    for i in 0..55 {
        let answer = c.json().await;
        assert_eq!(
            answer["eid"],
            format!("p{i}"),
            "answers keep the requests' order"
        );
        if i < 50 {
            assert_eq!(answer.get("error"), None, "the burst of 50 is served");
        } else {
            assert_eq!(answer["error"], "RATE_LIMITED");
            assert_eq!(answer["data"]["retry_after_s"], 1);
        }
    }
    // The bucket refills 50 a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.ping("again");
    let answer = c.json().await;
    assert_eq!(
        (answer["eid"].as_str(), answer.get("error")),
        (Some("again"), None)
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_closed_with_1013_after_the_drain_timeout() {
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    // Room for one byte, never read: the session frame does not get through.
    let mut c = open_as(&state, 1, TokenCheck::Invalid).await;
    let t0 = Instant::now();
    c.ping("p");
    c.finished().await;
    assert_eq!(
        t0.elapsed(),
        DRAIN,
        "closed when the write's deadline passed"
    );
    assert_eq!(
        state.metrics.slow_consumers_closed.load(Ordering::Relaxed),
        1
    );
    // No close frame either (the socket is full): the end is the message.
    c.ended().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_pauses_reading_but_not_shutdown() {
    // A queue of one answer: the reader reads no more until it drains.
    let (state, shutdown) = server_state(1);
    let mut c = open_as(&state, 1, TokenCheck::Invalid).await;
    for eid in ["a", "b", "c"] {
        c.ping(eid);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.send(true).expect("shutdown");
    // The client reads again: what was queued, then the close; `b` and `c`
    // were never read (the session frame waits in the pipe, the answer to
    // `a` fills the queue).
    assert_eq!(c.json().await["type"], "session");
    assert_eq!(c.json().await["eid"], "a");
    c.closed_with(close::GOING_AWAY).await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_with_1001_and_an_unchecked_token_with_1013() {
    let (state, shutdown) = server_state(SEND_QUEUE_BYTES);
    let c = open(&state, ROOM).await;
    shutdown.send(true).expect("shutdown");
    c.closed_with(close::GOING_AWAY).await;
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let c = open_as(&state, ROOM, TokenCheck::Unavailable).await;
    c.closed_with(close::TRY_AGAIN_LATER).await;
}

#[tokio::test(start_paused = true)]
async fn the_peer_closing_ends_the_connection_and_frees_its_entries() {
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let mut c = open(&state, ROOM).await;
    c.ping("x");
    assert_eq!(c.json().await["eid"], "x");
    c.to_server = None;
    c.ended().await;
    assert!(state.hub.is_empty());
    assert_eq!(state.metrics.connections.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn the_writer_keeps_the_queue_order_of_answers_and_pushes() {
    let hub = Hub::default();
    let (peer, queue) = hub.register(SEND_QUEUE_BYTES);
    let (_incoming, outgoing, mut c) = channels(4096).await;
    let (done_tx, mut done) = watch::channel(false);
    let task = tokio::spawn(writer(
        outgoing,
        queue,
        done_tx,
        DRAIN,
        Arc::new(Metrics::default()),
    ));
    let shared = Arc::new(SharedPush::new(
        "hall_update",
        r#"{"screening_id":1,"version":2,"seats":[]}"#,
        1234,
    ));
    let push = |eid: &str| peer.push_shared(&shared, &json_str(eid));
    peer.send(Outbound::Text(r#"{"type":"ping","eid":"a"}"#.into()))
        .expect("queued");
    push("s\"1").expect("queued");
    peer.send(Outbound::Text(r#"{"type":"ping","eid":"b"}"#.into()))
        .expect("queued");
    push("s2").expect("queued");
    peer.send(Outbound::Close(close::GOING_AWAY))
        .expect("queued");
    assert_eq!(c.json().await["eid"], "a");
    let first = c.json().await;
    assert_eq!(first["type"], "hall_update");
    assert_eq!(first["eid"], "s\"1", "the eid is escaped as JSON");
    assert_eq!(first["data"]["version"], 2);
    assert_eq!(first["ts"], 1234);
    assert_eq!(c.json().await["eid"], "b");
    assert_eq!(c.json().await["eid"], "s2");
    assert_eq!(c.close_code().await, close::GOING_AWAY);
    assert_eq!(c.next().await, None);
    done.wait_for(|d| *d).await.expect("done");
    task.await.expect("writer");
}

/// What an idle socket costs is mostly its tasks: the connection's future
/// must not hold a request's or the handshake's futures inline (4.4 KiB per
/// socket before they were boxed; about 1.5 KiB in a debug build after),
/// nor the writer's a second copy of its write (about 0.5 KiB).
#[tokio::test]
async fn a_connection_task_stays_small() {
    const BOUND: usize = 2048;
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let tcp = tokio::net::TcpStream::connect(listener.local_addr().expect("address"))
        .await
        .expect("connect");
    let accept = super::accept(tcp, state.clone());
    // Beside the connection's future, the reading WebSocket itself.
    let socket = std::mem::size_of::<WebSocketStream<super::ReadOnly>>();
    assert!(
        std::mem::size_of_val(&accept) < BOUND + socket,
        "{}",
        std::mem::size_of_val(&accept)
    );
    let (incoming, outgoing, _client) = channels(1).await;
    let conn = connection(
        incoming,
        outgoing,
        state,
        TokenCheck::Invalid,
        IpAddr::from([127, 0, 0, 1]),
    );
    assert!(
        std::mem::size_of_val(&conn) < BOUND,
        "{}",
        std::mem::size_of_val(&conn)
    );
    let (_incoming, outgoing, _client) = channels(1).await;
    let (_peer, queue) = Hub::default().register(SEND_QUEUE_BYTES);
    let (done, _) = watch::channel(false);
    let writer = writer(outgoing, queue, done, DRAIN, Arc::new(Metrics::default()));
    let size = std::mem::size_of_val(&writer);
    assert!(size < BOUND / 2, "{size}");
}

#[tokio::test(start_paused = true)]
async fn pings_are_answered_and_a_close_is_echoed_after_what_is_queued() {
    let (state, _shutdown) = server_state(SEND_QUEUE_BYTES);
    let mut c = open(&state, ROOM).await;
    c.ping("first");
    c.send(Message::Ping(bytes::Bytes::from_static(b"are you there")));
    assert_eq!(c.json().await["eid"], "first");
    assert_eq!(
        c.next().await,
        Some(Message::Pong(bytes::Bytes::from_static(b"are you there")))
    );
    c.ping("last");
    c.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4000.into(),
            reason: "bye".into(),
        },
    )));
    assert_eq!(c.json().await["eid"], "last");
    c.closed_with(4000).await;
}
