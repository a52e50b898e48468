//! The security edge of issue 12: who may connect to Marquee's database
//! (migration V9), and the HTTP port's own defences (timeouts, connection
//! cap, body limit, `/metrics` at exact paths with an optional bearer token,
//! the web client's security headers). Real PostgreSQL, real sockets.

use std::time::Duration;

use crate::harness::*;

/// A database migrated from scratch (not cloned: `CREATE DATABASE ...
/// TEMPLATE` does not copy database privileges), as the superuser.
async fn migrated_database(name: &str) -> String {
    let (c, conn) = tokio_postgres::connect(&admin_conn(), tokio_postgres::NoTls)
        .await
        .expect("connect admin");
    let h = tokio::spawn(conn);
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .expect("drop");
    c.batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create");
    drop(c);
    let _ = h.await;
    let url = admin_conn().replace("dbname=postgres", &format!("dbname={name}"));
    marquee::core::db::Db::new(&url, 1)
        .expect("pool")
        .migrate(true)
        .await
        .expect("migrations apply");
    url
}

async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}

#[tokio::test]
async fn a_role_without_grants_cannot_connect_so_cannot_forge_seat_pushes() {
    let pid = std::process::id();
    let name = format!("sec_connect_{pid}");
    let url = migrated_database(&name).await;
    let mallory = format!("mallory_{pid}");
    let admin = try_connect(&url).await.expect("superuser connects");
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {mallory}; CREATE ROLE {mallory} LOGIN"
        ))
        .await
        .expect("create role");

    // The role every cluster user could create or already has: refused at the door.
    let as_mallory = url.replacen("user=postgres", &format!("user={mallory}"), 1);
    let Err(e) = try_connect(&as_mallory).await else {
        panic!("a role with no grants must not connect");
    };
    assert_eq!(
        e.as_db_error().map(|d| d.code().code()),
        Some("42501"),
        "refused for lack of CONNECT: {e:?}"
    );
    let row = admin
        .query_one(
            "SELECT has_database_privilege($1, current_database(), 'CONNECT'),
                    has_database_privilege($1, current_database(), 'TEMP'),
                    has_database_privilege('marquee_app', current_database(), 'CONNECT'),
                    has_database_privilege('marquee_owner', current_database(), 'CONNECT'),
                    has_database_privilege('marquee_admin', current_database(), 'CONNECT'),
                    has_database_privilege('marquee_app', current_database(), 'TEMP')",
            &[&mallory],
        )
        .await
        .expect("privileges");
    let got: Vec<bool> = (0..6).map(|i| row.get(i)).collect();
    assert_eq!(
        got,
        vec![false, false, true, true, true, false],
        "PUBLIC has neither CONNECT nor TEMP; the three Marquee roles have CONNECT"
    );

    // The server's role still logs in and works; a DBA in marquee_admin too.
    let app = try_connect(&url.replacen("user=postgres", "user=marquee_app", 1))
        .await
        .expect("marquee_app connects");
    app.simple_query("SELECT * FROM api.get_cinemas()")
        .await
        .expect("marquee_app calls the api");
    admin
        .batch_execute(&format!("GRANT marquee_admin TO {mallory}"))
        .await
        .expect("grant");
    let dba = try_connect(&as_mallory)
        .await
        .expect("a member of marquee_admin connects");
    drop((dba, app));
    admin
        .batch_execute(&format!("REVOKE marquee_admin FROM {mallory}"))
        .await
        .expect("revoke");
    drop(admin);

    let (c, conn) = tokio_postgres::connect(&admin_conn(), tokio_postgres::NoTls)
        .await
        .expect("connect admin");
    let h = tokio::spawn(conn);
    for sql in [
        format!("DROP DATABASE {name} WITH (FORCE)"),
        format!("DROP ROLE {mallory}"),
    ] {
        c.batch_execute(&sql).await.expect("clean up");
    }
    drop(c);
    let _ = h.await;
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn spawn_with(
    tune: impl FnOnce(&mut marquee::shared::config::Config),
) -> (TestDb, marquee::app::Server) {
    let TestApp { server, db } = TestApp::configured(tune).await;
    (db, server)
}

#[tokio::test]
async fn metrics_answers_at_its_exact_path_only() {
    let app = TestApp::spawn().await;
    let addr = app.server.http_addr;
    let (status, _, body) = http(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200, "{body}");
    for path in [
        "/metrics/",
        "/metrics/x",
        "/metrics//",
        "/metrics/../metrics/",
    ] {
        let (status, _, body) = http(addr, "GET", path, &[], "").await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("marquee_"), "{path} leaks metrics: {body}");
    }
}

#[tokio::test]
async fn metrics_token_requires_the_bearer() {
    let token = "metrics-token-0123456789";
    let (_db, server) = spawn_with(|c| {
        c.metrics_token = Some(marquee::shared::config::Secret::new(
            token.as_bytes().to_vec(),
        ));
    })
    .await;
    let addr = server.http_addr;
    let wrong = format!("Bearer {token}x");
    let basic = "Basic bWV0cmljczptZXRyaWNz".to_string();
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(basic.as_str()),
        Some(token),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        let (status, h, body) = http(addr, "GET", "/metrics", &headers, "").await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert_eq!(header(&h, "www-authenticate"), Some("Bearer"));
        assert!(!body.contains("marquee_"), "{body}");
    }
    let right = format!("Bearer {token}");
    let (status, _, body) = http(addr, "GET", "/metrics", &[("authorization", &right)], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("marquee_"), "{body}");
    let (status, _, _) = http(addr, "GET", "/metrics/", &[("authorization", &right)], "").await;
    assert_eq!(status, 404);
    // Health checks need no token.
    let (status, _, _) = http(addr, "GET", "/health", &[], "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_web_client_is_kept_to_its_own_origin() {
    let app = TestApp::spawn().await;
    let ws_port = app.server.ws_addr.port();
    for path in ["/", "/app.js", "/style.css"] {
        let (status, h, _) = http(app.server.http_addr, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        let csp = header(&h, "content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
        let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
        assert!(directives.contains(&"default-src 'self'"), "{csp}");
        assert!(directives.contains(&"frame-ancestors 'none'"), "{csp}");
        let connect = directives
            .iter()
            .find(|d| d.starts_with("connect-src"))
            .unwrap_or_else(|| panic!("connect-src: {csp}"));
        let sources: Vec<&str> = connect.split_whitespace().skip(1).collect();
        assert!(sources.contains(&"'self'"), "{csp}");
        assert!(
            sources.contains(&format!("ws://127.0.0.1:{ws_port}").as_str()),
            "the page's WebSocket: {csp}"
        );
        assert!(
            sources
                .iter()
                .all(|s| *s == "'self'" || s.ends_with(&format!("://127.0.0.1:{ws_port}"))),
            "nothing else: {csp}"
        );
        assert!(!csp.contains('*'), "{csp}");
        assert_eq!(header(&h, "referrer-policy"), Some("no-referrer"), "{path}");
    }
}

#[tokio::test]
async fn an_oversized_body_answers_413() {
    let app = TestApp::spawn().await;
    let addr = app.server.http_addr;
    let origin = format!("http://127.0.0.1:{}", addr.port());
    let big = "x".repeat(64 * 1024);
    for (method, path) in [
        ("POST", "/auth/session"),
        ("POST", "/auth/logout"),
        ("GET", "/health"),
        ("GET", "/"),
    ] {
        let (status, _, body) = http(addr, method, path, &[("origin", &origin)], &big).await;
        assert_eq!(status, 413, "{method} {path}: {body}");
    }
    // A declared length is refused before the body is read.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /auth/session HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n{")
        .await
        .expect("write");
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("answered without the body")
        .expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

/// Reads until the server closes; how long that took (panics after `limit`).
async fn closed_within(
    s: &mut tokio::net::TcpStream,
    limit: std::time::Duration,
) -> std::time::Duration {
    use tokio::io::AsyncReadExt;
    let t = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), s.read(&mut buf)).await {
            Err(_) => panic!("still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

/// A server with a 1 s header timeout and a 3 s idle timeout.
async fn timeouts_server() -> (TestDb, marquee::app::Server) {
    spawn_with(|c| {
        c.http_header_timeout = Duration::from_secs(1);
        c.http_idle_timeout = Duration::from_secs(3);
    })
    .await
}

#[tokio::test]
async fn an_idle_connection_is_closed() {
    let (_db, server) = timeouts_server().await;
    let addr = server.http_addr;
    let connect = || tokio::net::TcpStream::connect(addr);

    // Connected, sends nothing.
    let mut idle = connect().await.expect("connect");
    let took = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(
        took <= Duration::from_millis(3500),
        "idle closed after {took:?}"
    );
}

#[tokio::test]
async fn a_half_sent_request_is_closed_at_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let (_db, server) = timeouts_server().await;
    let addr = server.http_addr;
    let connect = || tokio::net::TcpStream::connect(addr);

    // Headers trickled a byte at a time (each byte resets any idle timer):
    // the header timeout still ends it.
    let mut slow = connect().await.expect("connect");
    let trickle = async {
        for b in b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let t = std::time::Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(8), trickle).await;
    let took = t.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "half-sent request closed after {took:?}"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_db, server) = timeouts_server().await;
    let addr = server.http_addr;
    let connect = || tokio::net::TcpStream::connect(addr);

    // A keep-alive connection after its answer: the next request's headers
    // are due within the header timeout too.
    let mut kept = connect().await.expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = kept.read(&mut buf).await.expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut kept, Duration::from_secs(6)).await;
    assert!(
        took <= Duration::from_millis(2000),
        "keep-alive closed after {took:?}"
    );
}

#[tokio::test]
async fn a_stalled_body_is_cut_at_the_idle_timeout_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_db, server) = timeouts_server().await;
    let addr = server.http_addr;
    let connect = || tokio::net::TcpStream::connect(addr);

    // A body that stalls after the headers: the request is cut at the idle
    // timeout (408), not left open.
    let mut stalled = connect().await.expect("connect");
    stalled
        .write_all(b"POST /auth/session HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"tok")
        .await
        .expect("write");
    let t = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), stalled.read_to_end(&mut answer)).await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2500) && took <= Duration::from_millis(4500),
        "stalled body closed after {took:?} (idle timeout 3 s)"
    );
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn health_answers_when_idle_sockets_fill_the_connection_cap() {
    use std::time::Duration;
    let (_db, server) = spawn_with(|c| c.http_max_connections = 8).await;
    let addr = server.http_addr;
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    for _ in 0..3 {
        let (status, _, body) = http(addr, "GET", "/health", &[], "").await;
        assert_eq!(status, 200, "{body}");
    }
    // All but the cap's worth of the idle sockets were closed to make room.
    let mut closed = 0;
    for s in &mut idle {
        use tokio::io::AsyncReadExt;
        let mut b = [0u8; 16];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert!(closed > 20 - 8, "{closed} of 20 idle sockets closed");
}
