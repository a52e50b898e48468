//! The shipped `docs/nginx.conf`, run for real in front of two replicas
//! (issue 6: "an nginx config that is tested to pass WebSockets"):
//! HTTP and WebSocket on one origin, the session frame and pushes through
//! the proxy, both replicas used, the browser's cookie login through it, the
//! Origin check still effective, `/metrics` kept private, and a replica
//! that shuts down is left for the other one. With `TRUSTED_PROXIES` set to
//! nginx's address, the per-address limits see each client's own address
//! (its `X-Forwarded-For` entry), not nginx's and not one it forged.
//!
//! nginx must be installed (`apt-get install nginx`; `.ci/run` does it):
//! without it this test fails with one line saying so (`crate::harness::prereq`),
//! it never skips.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::*;
use marquee::app::{Server, Tuning};
use serde_json::{json, Value};

/// The nginx binary; sbin is often not in a user's PATH.
fn nginx_bin() -> std::path::PathBuf {
    prereq::program(
        prereq::Tool::Nginx,
        &["nginx"],
        None,
        &["/usr/sbin", "/usr/local/sbin"],
    )
}
const HOUR: Duration = Duration::from_secs(3600);

/// nginx as a child process; stopped (SIGTERM, then SIGKILL) when dropped.
struct Nginx {
    child: Child,
    dir: std::path::PathBuf,
}

impl Nginx {
    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid. SIGTERM: the master
            // stops its workers too.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces the `server` lines of `upstream <name> { … }` with `addrs`.
fn set_upstream(conf: &str, name: &str, addrs: &[String]) -> String {
    let mut out = Vec::new();
    let mut inside = false;
    let mut replaced = false;
    for line in conf.lines() {
        let t = line.trim();
        if t.starts_with(&format!("upstream {name} ")) {
            inside = true;
        } else if inside && t == "}" {
            inside = false;
        } else if inside && t.starts_with("server ") {
            if !replaced {
                for a in addrs {
                    out.push(format!("        server {a};"));
                }
                replaced = true;
            }
            continue;
        }
        out.push(line.to_owned());
    }
    assert!(
        replaced,
        "docs/nginx.conf has no `upstream {name}` with server lines"
    );
    out.join("\n")
}

/// Replaces the one line starting with `directive` (trimmed) by `with`.
fn set_directive(conf: &str, directive: &str, with: &str) -> String {
    let mut n = 0;
    let out: Vec<String> = conf
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(directive) {
                n += 1;
                with.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert_eq!(n, 1, "docs/nginx.conf has one `{directive}` line");
    out.join("\n")
}

/// The shipped config with test ports and paths; nginx started on it.
async fn start_nginx(port: u16, replicas: &[&Server]) -> Nginx {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/nginx.conf"))
        .expect("docs/nginx.conf");
    let dir = std::env::temp_dir().join(format!("marquee-nginx-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("nginx dir");
    // Workers may run as another user (`user` directive): temp dirs open to all.
    for sub in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).expect("temp dir");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .expect("chmod");
    }
    let d = dir.display();
    let mut conf = set_upstream(
        &shipped,
        "marquee_http",
        &replicas
            .iter()
            .map(|r| r.http_addr.to_string())
            .collect::<Vec<_>>(),
    );
    conf = set_upstream(
        &conf,
        "marquee_ws",
        &replicas
            .iter()
            .map(|r| r.ws_addr.to_string())
            .collect::<Vec<_>>(),
    );
    conf = set_directive(
        &conf,
        "listen 80;",
        &format!("        listen 127.0.0.1:{port};"),
    );
    conf = set_directive(&conf, "pid ", &format!("pid {d}/nginx.pid;"));
    conf = set_directive(
        &conf,
        "error_log ",
        &format!("error_log {d}/error.log info;"),
    );
    conf = set_directive(
        &conf,
        "access_log ",
        &format!(
            "    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;"
        ),
    );
    conf = format!("daemon off;\n{conf}\n");
    let path = dir.join("nginx.conf");
    std::fs::write(&path, &conf).expect("write nginx.conf");

    let check = Command::new(nginx_bin())
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run nginx -t");
    assert!(
        check.status.success(),
        "nginx -t refuses the adapted docs/nginx.conf:\n{}\n{conf}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut cmd = Command::new(nginx_bin());
    cmd.arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: prctl is async-signal-safe. nginx stops (and stops its
    // workers) if the test process dies.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn().expect("start nginx");
    let mut nginx = Nginx { child, dir };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = nginx.child.try_wait() {
            panic!("nginx exited ({status}):\n{}", nginx.error_log());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx does not listen:\n{}",
            nginx.error_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nginx
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_through_the_shipped_nginx_config() {
    nginx_bin();
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let db = TestDb::new().await;
    let mut cfg = config(&db);
    cfg.allowed_origins = Some(vec![origin.clone()]);
    let a = start(&db, cfg.clone(), Tuning::default()).await;
    let b = start(&db, cfg, Tuning::default()).await;
    let nginx = start_nginx(port, &[&a, &b]).await;
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let ws_url = format!("ws://127.0.0.1:{port}/");

    // HTTP through the proxy.
    let (status, _, body) = http(proxy, "GET", "/health", &[], "").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"status":"ok"}"#),
        "{}",
        nginx.error_log()
    );
    let (status, _, body) = http(proxy, "GET", "/ready", &[], "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = http(proxy, "GET", "/config.json", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"ws_port": port, "protocol": 1}),
        "the web client is sent to the proxy's own port"
    );
    let (status, _, body) = http(proxy, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        body.to_ascii_lowercase().contains("<html"),
        "the web client: {body}"
    );
    for path in [
        "/metrics",
        "/metrics/",
        "/metrics/x",
        "//metrics/",
        "/%6Detrics/",
    ] {
        let (status, _, body) = http(proxy, "GET", path, &[], "").await;
        assert!(
            status == 403 && !body.contains("marquee_"),
            "{path} is not public: {status} {body}"
        );
    }

    // WebSockets: the session frame, and both replicas get connections.
    let mut servers = HashSet::new();
    let mut anons = Vec::new();
    for _ in 0..6 {
        let c = Client::connect_url(&ws_url, Connect::default())
            .await
            .expect("upgrade through nginx");
        assert_eq!(c.session["data"]["protocol"], 1);
        assert_eq!(c.session["data"]["user"], Value::Null);
        servers.insert(
            c.session["data"]["server"]
                .as_str()
                .expect("server")
                .to_owned(),
        );
        anons.push(c);
    }
    assert_eq!(
        servers,
        HashSet::from([a.replica_id.clone(), b.replica_id.clone()]),
        "connections are spread over both replicas"
    );
    // /ws is the same endpoint.
    Client::connect_url(&format!("ws://127.0.0.1:{port}/ws"), Connect::default())
        .await
        .expect("/ws through nginx");

    // A browser's login: register over the socket, set the cookie with
    // POST /auth/session, reconnect with the cookie, all through nginx.
    let (token, _) = register(&mut anons[0], "neo").await;
    let (status, headers, body) = http(
        proxy,
        "POST",
        "/auth/session",
        &[("origin", &origin), ("content-type", "application/json")],
        &json!({ "token": token }).to_string(),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .expect("a cookie");
    assert!(cookie.starts_with(&format!("token={token};")), "{cookie}");
    let mut neo = Client::connect_url(
        &ws_url,
        Connect {
            token_cookie: Some(token.clone()),
            origin: Some(origin.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("upgrade with the cookie");
    assert_eq!(neo.session["data"]["user"]["username"], "neo");
    // The Origin check still works behind the proxy.
    let refused = Client::connect_url(
        &ws_url,
        Connect {
            token_cookie: Some(token.clone()),
            origin: Some("http://evil.example".into()),
            ..Default::default()
        },
    )
    .await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("a foreign Origin was accepted through the proxy"),
    }

    // Pushes through the proxy, whichever replica made the change.
    let (scr, s) = screening(&db, 2, 5, HOUR).await;
    let sub = json!({"screening_id": scr});
    for c in anons.iter_mut() {
        c.ok("subscribe_hall", sub.clone()).await;
    }
    let r = neo.hold(&scr, &[&s[0]]).await.data();
    for c in anons.iter_mut() {
        let u = c.push("hall_update").await;
        assert_eq!(u["data"]["version"], r["version"]);
        assert_eq!(u["data"]["seats"], json!([{"id": s[0], "status": "held"}]));
    }
    let (mut direct, _, _) = logged_in(&a, "trinity").await;
    let r = direct.hold(&scr, &[&s[1]]).await.data();
    for c in anons.iter_mut() {
        let u = c.push("hall_update").await;
        assert_eq!(u["data"]["version"], r["version"]);
    }

    // A replica shuts down: its sockets get 1001 through the proxy, and
    // reconnecting through nginx lands on the other replica.
    let b_id = b.replica_id.clone();
    let mut on_b: Vec<Client> = Vec::new();
    let mut rest = Vec::new();
    for c in anons {
        if c.session["data"]["server"] == b_id.as_str() {
            on_b.push(c);
        } else {
            rest.push(c);
        }
    }
    assert!(!on_b.is_empty());
    b.shutdown().await;
    for c in on_b.iter_mut() {
        assert_eq!(
            c.close_code().await,
            Some(1001),
            "the close code passes nginx"
        );
    }
    for _ in 0..4 {
        let mut c = Client::connect_url(&ws_url, Connect::default())
            .await
            .expect("reconnect through nginx");
        assert_eq!(c.session["data"]["server"], a.replica_id.as_str());
        let snap = c.ok("subscribe_hall", sub.clone()).await;
        assert_eq!(snap["version"], r["version"]);
    }
    let (status, _, _) = http(proxy, "GET", "/health", &[], "").await;
    assert_eq!(status, 200);
    drop(nginx);
    a.shutdown().await;
}

/// A client of the proxy connecting from `source`, optionally with its own
/// (forged) X-Forwarded-For.
async fn client_from(ws_url: &str, source: &str, forged: Option<&str>) -> Client {
    Client::connect_url(
        ws_url,
        Connect {
            source: Some(source.parse().expect("ip")),
            forwarded_for: forged.map(str::to_owned),
            ..Default::default()
        },
    )
    .await
    .expect("upgrade through nginx")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_nginx_with_trusted_proxies_each_client_counts_as_its_own_address() {
    nginx_bin();
    let port = free_port();
    let db = TestDb::new().await;
    let mut cfg = config(&db);
    cfg.allowed_origins = Some(vec![format!("http://127.0.0.1:{port}")]);
    // nginx reaches the replica from 127.0.0.1; clients come from 127.0.0.2 and 127.0.0.3.
    cfg.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    let a = start(&db, cfg, Tuning::default()).await;
    let _nginx = start_nginx(port, &[&a]).await;
    let ws_url = format!("ws://127.0.0.1:{port}/");
    db.psql()
        .await
        .batch_execute("SELECT admin.set_registration_limit(1)")
        .await
        .expect("set_registration_limit");

    let mut first = client_from(&ws_url, "127.0.0.2", None).await;
    register(&mut first, "proxied_one").await;
    assert_eq!(
        db.scalar("SELECT host(address) FROM registrations")
            .await
            .as_deref(),
        Some("127.0.0.2"),
        "the registration is counted against the client, not nginx"
    );
    let r = first
        .request("auth_start", json!({"username": "proxied_two"}))
        .await;
    assert_eq!(r["error"], "RATE_LIMITED", "{r}");
    // A header the client writes itself is left of nginx's entry: no escape.
    let mut forged = client_from(&ws_url, "127.0.0.2", Some("198.51.100.77")).await;
    let r = forged
        .request("auth_start", json!({"username": "proxied_two"}))
        .await;
    assert_eq!(r["error"], "RATE_LIMITED", "{r}");
    // Another client of the same proxy is not limited.
    let mut other = client_from(&ws_url, "127.0.0.3", None).await;
    let s = other
        .ok("auth_start", json!({"username": "proxied_two"}))
        .await;
    assert_eq!(s["status"], "candidate");
}
