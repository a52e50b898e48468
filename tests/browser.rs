//! A binary of its own: its one-second deadlines for what a browser shows want
//! the machine without the other tests' servers (cargo runs binaries one after another).
//!
//! The demo web client (`web/`) in a real browser against the real server:
//! headless Chromium driven over WebDriver (chromedriver + `fantoccini`).
//!
//! * registration through the page (the test computes the TOTP code from the
//!   secret the page shows for manual entry), a reload that stays signed in
//!   through the HttpOnly cookie, sign-out;
//! * two browsers on one screening: a hold shows up in the other within one
//!   second, booking and cancelling update both, a seat taken under
//!   somebody's selection answers `SEAT_UNAVAILABLE`;
//! * the box office: prices per kind in the legend, companion seats explained,
//!   best seats for 3 then book, a hold refused by the no-orphan rule shows
//!   the seat it would leave alone on the map and in words, the companion
//!   rule likewise (`target/test-artifacts/boxoffice.png`);
//! * a screenshot of the seat map in `target/test-artifacts/seatmap.png`;
//! * a cinema-goer at 1400×1000 and on a 390×844 phone (issue 13 point 7):
//!   the message line never covers seats, Book stays in view after a hold,
//!   cancelling asks first, `HOLD_LIMIT` names the limit, phone seats are
//!   32 px with a map that scrolls sideways, states and kinds differ in
//!   colour (`target/test-artifacts/cinemagoer-*.png`).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them).
//! Without them the tests fail and say what to install; they never skip.
//! `MARQUEE_CHROMIUM` and `MARQUEE_CHROMEDRIVER` override the binaries.
//! On a failure the panic message carries the page's state, its message
//! line and its console log, and a screenshot lands next to `seatmap.png`.

#[path = "it/harness/mod.rs"]
mod harness;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client as WebDriver, ClientBuilder, Locator};
use harness::*;
use serde_json::{json, Value};

/// How long a step may take before the test gives up on it.
const STEP: Duration = Duration::from_secs(10);
/// The live-update budget of the issue: the other browser shows a hold within this.
const LIVE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

static BROWSERS: AtomicU64 = AtomicU64::new(0);

/// `target/test-artifacts`, created on first use.
fn artifacts() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

fn binary(var: &str, tool: prereq::Tool, names: &[&str]) -> String {
    prereq::program(tool, names, Some(var), &[])
        .to_string_lossy()
        .into_owned()
}

/// A chromedriver on a free port, with its own temporary directory. Dropping
/// it kills chromedriver and the browsers it started (one process group).
struct Driver {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    chromium: String,
}

impl Driver {
    async fn start() -> Driver {
        let chromium = binary(
            "MARQUEE_CHROMIUM",
            prereq::Tool::Chromium,
            &["chromium", "chromium-browser"],
        );
        let chromedriver = binary(
            "MARQUEE_CHROMEDRIVER",
            prereq::Tool::Chromedriver,
            &["chromedriver"],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let dir =
            std::env::temp_dir().join(format!("marquee-browser-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("browser temp dir");
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("log file");
        let mut cmd = Command::new(&chromedriver);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // Its own process group, so that Drop ends chromedriver and every
            // Chromium process in one kill; and it dies with the test process.
            cmd.process_group(0);
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromedriver}: {e}"));
        let mut driver = Driver {
            child,
            addr,
            dir,
            chromium,
        };
        let until = Instant::now() + STEP;
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!("chromedriver exited at start ({status}):\n{}", driver.log());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                let (code, body) = driver_http(addr, "GET", "/status", "").await;
                if code == 200 && body.contains("\"ready\":true") {
                    return driver;
                }
            }
            assert!(
                Instant::now() < until,
                "chromedriver did not become ready on port {port}:\n{}",
                driver.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A new browser (its own profile, so its own cookies).
    async fn browser(&self, name: &'static str) -> Browser {
        let n = BROWSERS.fetch_add(1, Ordering::Relaxed);
        let profile = self.dir.join(format!("profile-{name}-{n}"));
        // A failure screenshot of an earlier run would only mislead.
        let _ = std::fs::remove_file(artifacts().join(format!("failure-{name}.png")));
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let wd = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{}", self.addr))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Chromium did not start through chromedriver: {e}\n{}",
                    self.log()
                )
            });
        let session = wd
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("a WebDriver session id");
        Browser {
            wd,
            name,
            driver: self.addr,
            session,
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: a plain kill(2) of the process group we created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One browser window on the page.
struct Browser {
    wd: WebDriver,
    name: &'static str,
    driver: SocketAddr,
    session: String,
}

impl Browser {
    /// Runs `return (<expr>)` in the page.
    async fn eval(&self, expr: &str) -> Value {
        match self.wd.execute(&format!("return ({expr});"), vec![]).await {
            Ok(v) => v,
            Err(e) => self.fail(&format!("script `{expr}` failed: {e}")).await,
        }
    }

    /// Runs statements in the page.
    async fn run(&self, script: &str) {
        if let Err(e) = self.wd.execute(script, vec![]).await {
            self.fail(&format!("script failed: {e}\n{script}")).await
        }
    }

    /// Polls `expr` until it is truthy or `until` passes; the last value either way.
    async fn poll(&self, expr: &str, until: Instant) -> Result<Value, Value> {
        loop {
            let v = self.eval(expr).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return Ok(v);
            }
            if Instant::now() >= until {
                return Err(v);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits up to `STEP` for `expr` to be truthy; fails with the page's state otherwise.
    async fn wait(&self, what: &str, expr: &str) -> Value {
        match self.poll(expr, Instant::now() + STEP).await {
            Ok(v) => v,
            Err(last) => {
                self.fail(&format!(
                    "timed out after {STEP:?} waiting for {what}\n  condition: {expr}\n  last value: {last}"
                ))
                .await
            }
        }
    }

    /// After a login: the page reconnected and its map is current again.
    async fn wait_in_sync(&self) {
        self.wait(
            "the map to be in sync after the login reconnect",
            r#"document.querySelector('[data-testid="seat-map"]').dataset.version !== ""
               && !document.querySelector('[data-testid="seat-map"]').classList.contains('stale')"#,
        )
        .await;
    }

    /// `expr` (a property or method call) of a seat's button.
    async fn seat_eval(&self, id: &str, expr: &str) -> Value {
        self.eval(&format!(
            "document.querySelector({}).{expr}",
            json!(Browser::seat(id))
        ))
        .await
    }

    /// A condition: the seat's button is (not) pressed (selected).
    fn pressed(id: &str, pressed: bool) -> String {
        format!(
            r#"document.querySelector({}).getAttribute('aria-pressed') === "{pressed}""#,
            json!(Browser::seat(id))
        )
    }

    /// Opens the page on a screening and waits for all `seats` of its map.
    async fn open_screening(
        &self,
        app: &TestApp,
        cinema: &str,
        day: &str,
        screening: &str,
        seats: usize,
    ) {
        self.open(&format!(
            "{}#cinema={cinema}&day={day}&screening={screening}",
            page(app)
        ))
        .await;
        self.wait(
            "the whole seat map",
            &format!(r#"document.querySelectorAll('[data-testid="seat"]').length === {seats}"#),
        )
        .await;
    }

    async fn open(&self, url: &str) {
        if let Err(e) = self.wd.goto(url).await {
            self.fail(&format!("cannot open {url}: {e}")).await
        }
        self.wait_ready().await;
    }

    /// The page's own readiness hook, and a live connection.
    async fn wait_ready(&self) {
        self.wait(
            "the page to be ready and live",
            r#"document.body.dataset.ready === "true"
               && document.querySelector('[data-testid="connection-status"]').dataset.state === "live""#,
        )
        .await;
    }

    async fn element(&self, css: &str) -> fantoccini::elements::Element {
        let js = format!("document.querySelector({})", json!(css));
        self.wait(&format!("`{css}` to be on the page"), &js).await;
        match self.wd.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => self.fail(&format!("cannot find `{css}`: {e}")).await,
        }
    }

    /// Clicks like a person (WebDriver scrolls it into view first), once it is enabled.
    async fn click(&self, css: &str) {
        let js = format!(
            "(e => e && !e.disabled && !e.hidden && e.offsetParent !== null)(document.querySelector({}))",
            json!(css)
        );
        let until = Instant::now() + STEP;
        loop {
            self.wait(&format!("`{css}` to be clickable"), &js).await;
            let el = self.element(css).await;
            match el.click().await {
                Ok(()) => return,
                // Re-rendered between finding and clicking (a list reloaded): find it again.
                Err(e) if e.is_stale_element_reference() && Instant::now() < until => {}
                Err(e) => self.fail(&format!("cannot click `{css}`: {e}")).await,
            }
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.element(css).await;
        if let Err(e) = el.send_keys(text).await {
            self.fail(&format!("cannot type into `{css}`: {e}")).await
        }
    }

    async fn text(&self, testid: &str) -> String {
        let v = self
            .eval(&format!(
                r#"document.querySelector('[data-testid="{testid}"]').textContent.trim()"#
            ))
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// The browser's console since the last call (chromedriver's log endpoint).
    async fn console(&self) -> String {
        let path = format!("/session/{}/se/log", self.session);
        let (code, body) = driver_http(self.driver, "POST", &path, r#"{"type":"browser"}"#).await;
        if code != 200 {
            return format!("(no console log: HTTP {code})");
        }
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let lines: Vec<String> = v["value"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "  [{}] {}",
                    e["level"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect();
        if lines.is_empty() {
            "  (empty)".into()
        } else {
            lines.join("\n")
        }
    }

    /// What a person diagnosing a failure wants to see.
    async fn describe(&self) -> String {
        let state = self
            .wd
            .execute(
                r#"const q = (id) => document.querySelector(`[data-testid="${id}"]`);
                   const m = q('message');
                   return {
                     url: location.href,
                     ready: document.body.dataset.ready || null,
                     connection: q('connection-status') && q('connection-status').dataset.state,
                     user: q('session-user') && q('session-user').textContent,
                     message: m && !m.closest('.message-bar').hidden
                       ? `${m.dataset.kind || ''} ${m.dataset.code || ''}: ${m.textContent}` : null,
                     seat_map_version: q('seat-map') && q('seat-map').dataset.version,
                     seats: document.querySelectorAll('[data-testid="seat"]').length,
                   };"#,
                vec![],
            )
            .await
            .map(|v| v.to_string())
            .unwrap_or_else(|e| format!("(page state unavailable: {e})"));
        let shot = artifacts().join(format!("failure-{}.png", self.name));
        let saved = match self.wd.screenshot().await {
            Ok(png) => std::fs::write(&shot, png)
                .map(|_| format!("screenshot: {}", shot.display()))
                .unwrap_or_else(|e| format!("screenshot not saved: {e}")),
            Err(e) => format!("no screenshot: {e}"),
        };
        format!(
            "browser {}: {state}\n{saved}\nconsole:\n{}",
            self.name,
            self.console().await
        )
    }

    async fn fail(&self, what: &str) -> ! {
        let about = self.describe().await;
        panic!("[{}] {what}\n{about}", self.name)
    }

    /// Registers `username` through the page, as a person with an authenticator app would.
    async fn register(&self, username: &str) {
        self.type_into(r#"[data-testid="username-input"]"#, username)
            .await;
        self.click(r#"[data-testid="login-start"]"#).await;
        let secret = self
            .wait(
                "the TOTP secret for manual entry",
                r#"document.querySelector('[data-testid="totp-secret"]').textContent.trim()"#,
            )
            .await;
        let secret = secret.as_str().expect("secret text").to_owned();
        let qr = self
            .eval(r#"document.querySelector('[data-testid="qr-code"]').getAttribute('src') || ''"#)
            .await;
        assert!(
            qr.as_str()
                .is_some_and(|s| s.starts_with("data:image/svg+xml;base64,")),
            "[{}] the QR code is shown as an SVG data URL: {qr}",
            self.name
        );
        self.type_into(r#"[data-testid="code-input"]"#, &totp_code(&secret, 0))
            .await;
        self.click(r#"[data-testid="login-verify"]"#).await;
        self.wait_signed_in(username).await;
    }

    async fn wait_signed_in(&self, username: &str) {
        self.wait(
            &format!("`{username}` to be signed in on a live connection"),
            &format!(
                r#"document.querySelector('[data-testid="session-user"]').textContent === {}
                   && document.querySelector('[data-testid="connection-status"]').dataset.state === "live"
                   && !document.querySelector('[data-testid="logout-button"]').hidden"#,
                json!(username)
            ),
        )
        .await;
    }

    fn seat(id: &str) -> String {
        format!(r#"[data-testid="seat"][data-seat-id="{id}"]"#)
    }

    /// `status` and whether the seat is mine, as the page shows them.
    async fn wait_seat(&self, id: &str, status: &str, mine: bool) {
        self.wait(
            &format!(
                "seat {id} to show {status}{}",
                if mine { " (mine)" } else { "" }
            ),
            &seat_is(id, status, mine),
        )
        .await;
    }

    /// Records when each request type's answer arrives (`window.__answered`) and,
    /// on the seat map, when each seat first shows a status (`window.__seen`),
    /// both on the browser's clock (all browsers share this machine's clock).
    async fn instrument(&self) {
        self.run(
            r#"if (!window.__instrumented) {
                 window.__instrumented = true;
                 window.__answered = {};
                 window.__seen = {};
                 const c = window.marquee.client;
                 const request = c.request.bind(c);
                 c.request = (type, data, opts) => {
                   const p = request(type, data, opts);
                   p.then(() => { window.__answered[type] = Date.now(); }, () => {});
                   return p;
                 };
                 new MutationObserver((records) => {
                   for (const r of records) {
                     const b = r.target;
                     if (!b.dataset || !b.dataset.seatId) continue;
                     const key = `${b.dataset.seatId} ${b.dataset.status}${b.dataset.mine ? ' mine' : ''}`;
                     if (!(key in window.__seen)) window.__seen[key] = Date.now();
                   }
                 }).observe(document.querySelector('[data-testid="seat-map"]'),
                            { subtree: true, attributes: true, attributeFilter: ['data-status', 'data-mine'] });
               }
               window.__answered = {};
               window.__seen = {};"#,
        )
        .await;
    }

    async fn shot(&self, file: &str, css: Option<&str>) -> PathBuf {
        let png = match css {
            Some(css) => self.element(css).await.screenshot().await,
            None => self.wd.screenshot().await,
        };
        let png = match png {
            Ok(p) => p,
            Err(e) => self.fail(&format!("screenshot failed: {e}")).await,
        };
        let path = artifacts().join(file);
        std::fs::write(&path, &png).expect("write screenshot");
        path
    }

    async fn close(self) {
        let _ = self.wd.close().await;
    }
}

fn seat_is(id: &str, status: &str, mine: bool) -> String {
    format!(
        r#"(b => b && b.dataset.status === {} && (b.dataset.mine === "true") === {mine})(document.querySelector({}))"#,
        json!(status),
        json!(Browser::seat(id))
    )
}

/// The page's URL on the server's HTTP origin (127.0.0.1, as in ALLOWED_ORIGINS).
/// A screening 3 hours ahead in a hall drawn from `layout` (a cinema
/// "`name` Cinema" in Europe/Berlin); (screening, cinema, day) as the page's
/// URL names them.
async fn drawn_screening(
    c: &tokio_postgres::Client,
    name: &str,
    hall: &str,
    layout: &[String],
) -> (String, String, String) {
    let row = c
        .query_one(
            "WITH ci AS (SELECT admin.create_cinema($2 || ' Cinema', 'Testville', '1 Test Street', 'Europe/Berlin') AS id),
                  f AS (SELECT admin.create_film($2 || ' Film', 100, '6') AS id),
                  sc AS (SELECT admin.create_screening(
                             admin.create_hall_layout((SELECT id FROM ci), $3, $1),
                             (SELECT id FROM f), now() + interval '3 hours', 1000, 'EUR') AS id)
             SELECT (SELECT id FROM sc)::text, (SELECT id FROM ci)::text,
                    to_char((now() + interval '3 hours') AT TIME ZONE 'Europe/Berlin', 'YYYY-MM-DD')",
            &[&layout, &name, &hall],
        )
        .await
        .unwrap_or_else(|e| panic!("a screening in the {hall}: {e}"));
    (row.get(0), row.get(1), row.get(2))
}

fn page(app: &TestApp) -> String {
    format!("http://127.0.0.1:{}/", app.server.http_addr.port())
}

/// One HTTP/1.1 request to chromedriver, which keeps connections open: the
/// body is read by its Content-Length. (status, body); status 0 when it failed.
async fn driver_http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut len = 0;
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut buf = vec![0; len];
        r.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>((status, String::from_utf8_lossy(&buf).into_owned()))
    };
    match tokio::time::timeout(STEP, exchange).await {
        Ok(Ok(answer)) => answer,
        _ => (0, String::new()),
    }
}

/// Width and height of a PNG, checking its signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(
        bytes.len() > 24 && bytes.starts_with(b"\x89PNG\r\n\x1a\n") && &bytes[12..16] == b"IHDR",
        "not a PNG"
    );
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    (be(16), be(20))
}

#[tokio::test]
async fn register_through_the_page_and_stay_signed_in() {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    let driver = Driver::start().await;
    let b = driver.browser("register").await;
    b.open(&page(&app)).await;
    assert_eq!(b.text("session-user").await, "", "anonymous at first");

    b.register("alice").await;
    let info = b
        .eval(r#"document.querySelector('[data-testid="message"]').dataset.kind"#)
        .await;
    assert_eq!(
        info,
        "info",
        "no error after registration: {}",
        b.describe().await
    );

    // The token is in an HttpOnly cookie: the browser has it, the page's scripts do not.
    let cookies = b.wd.get_all_cookies().await.expect("cookies");
    let token = cookies
        .iter()
        .find(|c| c.name() == "token")
        .unwrap_or_else(|| panic!("a `token` cookie after sign-in: {cookies:?}"));
    assert_eq!(
        token.http_only(),
        Some(true),
        "the token cookie is HttpOnly"
    );
    assert_eq!(token.path(), Some("/"));
    let visible = b.eval("document.cookie").await;
    assert!(
        !visible.as_str().unwrap_or_default().contains("token"),
        "document.cookie must not expose the token: {visible}"
    );

    // A reload starts a new page and a new socket: the cookie signs it in.
    b.wd.refresh().await.expect("reload");
    b.wait_ready().await;
    b.wait_signed_in("alice").await;
    let bookings = b
        .wait(
            "the (empty) bookings list",
            r#"document.querySelector('[data-testid="bookings-list"] li')"#,
        )
        .await;
    assert!(!bookings.is_null());
    assert!(
        !b.eval("document.cookie")
            .await
            .as_str()
            .unwrap_or_default()
            .contains("token"),
        "document.cookie after the reload"
    );

    // Sign out: the cookie is cleared, and a reload stays signed out.
    b.click(r#"[data-testid="logout-button"]"#).await;
    b.wait(
        "the page to be signed out",
        r#"document.querySelector('[data-testid="session-user"]').textContent === ""
           && document.querySelector('[data-testid="connection-status"]').dataset.state === "live"
           && !document.querySelector('[data-testid="username-input"]').closest('.signed-out').hidden"#,
    )
    .await;
    // The server's `session` push (token revoked) can show the page signed
    // out before `POST /auth/logout` has cleared the cookie: wait for both.
    let until = Instant::now() + STEP;
    loop {
        let cookies = b.wd.get_all_cookies().await.expect("cookies");
        if !cookies.iter().any(|c| c.name() == "token") {
            break;
        }
        if Instant::now() > until {
            b.fail(&format!(
                "the cookie is still there after sign-out: {cookies:?}"
            ))
            .await;
        }
        tokio::time::sleep(POLL).await;
    }
    b.wait(
        "the sign-out to finish without an error",
        r#"(m => m.dataset.kind === "info" && /signed out/i.test(m.textContent))(document.querySelector('[data-testid="message"]'))"#,
    )
    .await;
    b.wd.refresh().await.expect("reload");
    b.wait_ready().await;
    assert_eq!(b.text("session-user").await, "", "still signed out");
    b.close().await;
    println!("register/reload/sign-out: {:?}", started.elapsed());
}

#[tokio::test]
async fn two_browsers_share_a_live_seat_map() {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    let (screening, seats) = screening(&app.db, 5, 8, Duration::from_secs(3 * 3600)).await;
    let row = app
        .db
        .psql()
        .await
        .query_one(
            "SELECT h.cinema_id::text,
                    to_char(s.starts_at AT TIME ZONE c.timezone, 'YYYY-MM-DD')
               FROM screenings s JOIN halls h ON h.id = s.hall_id JOIN cinemas c ON c.id = h.cinema_id
              WHERE s.id = $1::text::bigint",
            &[&screening],
        )
        .await
        .expect("the screening's cinema and day");
    let (cinema, day): (String, String) = (row.get(0), row.get(1));

    let db_ready = started.elapsed();
    let driver = Driver::start().await;
    let (a, b) = tokio::join!(driver.browser("a"), driver.browser("b"));
    let browsers_up = started.elapsed();
    let base = page(&app);
    let hash = format!("{base}#cinema={cinema}&day={day}&screening={screening}");
    tokio::join!(a.open(&base), b.open(&hash));
    let launched = started.elapsed();

    // A picks the screening with the cinema, day and screening pickers; B came
    // through the page's URL (#cinema=…&day=…&screening=…).
    a.element(r#"[data-testid="cinema-select"]"#)
        .await
        .select_by_value(&cinema)
        .await
        .expect("choose the cinema");
    a.element(r#"[data-testid="day-select"]"#)
        .await
        .select_by_value(&day)
        .await
        .expect("choose the day");
    a.wait(
        "the day's screenings",
        r#"document.querySelector('[data-testid="screening-list"]').getAttribute('aria-busy') === "false""#,
    )
    .await;
    a.click(&format!(
        r#"[data-testid="screening"][data-screening-id="{screening}"]"#
    ))
    .await;
    let all_seats = format!(
        r#"document.querySelectorAll('[data-testid="seat"]').length === {}"#,
        seats.len()
    );
    for p in [&a, &b] {
        p.wait("the whole seat map", &all_seats).await;
        p.wait(
            "the chosen screening to be marked",
            &format!(
                r#"document.querySelector('[data-testid="screening"][aria-current="true"]')?.dataset.screeningId === {}"#,
                json!(screening)
            ),
        )
        .await;
    }

    // Both sign in on the open map: the login reconnect must resubscribe it.
    tokio::join!(a.register("alice"), b.register("bob"));
    for p in [&a, &b] {
        p.wait_in_sync().await;
    }
    let (s0, s1) = (&seats[0], &seats[1]);

    // B selects s1; then A selects s0 and s1 and holds them first.
    b.click(&Browser::seat(s1)).await;
    b.wait("B's selection", &Browser::pressed(s1, true)).await;
    a.click(&Browser::seat(s0)).await;
    a.click(&Browser::seat(s1)).await;
    tokio::join!(a.instrument(), b.instrument());
    a.click(r#"[data-testid="hold-button"]"#).await;
    a.wait("the hold_seats answer", "window.__answered.hold_seats")
        .await;
    let answered = Instant::now();
    // B must show the hold within one second of the answer.
    let seen = b.poll(&seat_is(s1, "held", false), answered + LIVE).await;
    if seen.is_err() {
        b.fail(&format!(
            "seat {s1} held by A did not show as held (not mine) in B within {LIVE:?} of A's answer"
        ))
        .await;
    }
    b.wait_seat(s0, "held", false).await;
    let hold_latency = latency(&a, &b, "hold_seats", &format!("{s1} held")).await;
    assert!(
        hold_latency <= LIVE.as_millis() as i64,
        "B showed the hold {hold_latency} ms after A's answer (budget {LIVE:?})"
    );
    a.wait_seat(s0, "held", true).await;
    a.wait_seat(s1, "held", true).await;
    let left = a
        .wait(
            "the hold countdown",
            r#"(c => !c.hidden && Number(c.dataset.secondsLeft) > 0 && Number(c.dataset.secondsLeft))(document.querySelector('[data-testid="hold-countdown"]'))"#,
        )
        .await;
    assert!(left.as_f64().unwrap_or(0.0) > 60.0, "countdown: {left}");

    // B still has s1 selected (drawn as taken); holding it is refused by the server.
    b.wait(
        "B's selection to survive somebody else's hold",
        &Browser::pressed(s1, true),
    )
    .await;
    b.click(r#"[data-testid="hold-button"]"#).await;
    b.wait(
        "SEAT_UNAVAILABLE in B's message line",
        r#"document.querySelector('[data-testid="message"]').dataset.code === "SEAT_UNAVAILABLE""#,
    )
    .await;
    b.wait(
        "the taken seat to leave B's selection",
        &Browser::pressed(s1, false),
    )
    .await;

    // B holds a seat of its own, so that A's map shows somebody else's hold too.
    let s_other = &seats[12];
    b.click(&Browser::seat(s_other)).await;
    b.click(r#"[data-testid="hold-button"]"#).await;
    b.wait_seat(s_other, "held", true).await;
    a.wait_seat(s_other, "held", false).await;

    // A books its holds (nothing selected: Book takes all of them).
    tokio::join!(a.instrument(), b.instrument());
    a.click(r#"[data-testid="book-button"]"#).await;
    for s in [s0, s1] {
        a.wait_seat(s, "booked", true).await;
        b.wait_seat(s, "booked", false).await;
    }
    let book_latency = latency(&a, &b, "book_seats", &format!("{s1} booked")).await;
    let booking = a
        .wait(
            "the booking in A's list",
            r#"(b => b && b.dataset.status === "confirmed" && b.dataset.bookingId)(document.querySelector('[data-testid="booking"]'))"#,
        )
        .await;
    let booking = booking.as_str().expect("booking id").to_owned();

    // The artifact: A's seat map with booked-by-me, held-by-someone-else and free seats.
    a.wait(
        "the countdown to go away after booking",
        r#"document.querySelector('[data-testid="hold-countdown"]').hidden"#,
    )
    .await;
    a.wait(
        "the seat colours to finish their transitions",
        "document.getAnimations().every(x => x.playState !== 'running' \
           || x.effect.getComputedTiming().iterations === Infinity)",
    )
    .await;
    // The message line is not part of the seat panel's picture: dismiss it, as a person would.
    a.click(".message-close").await;
    a.wait(
        "the message line to close",
        "document.querySelector('.message-bar').hidden",
    )
    .await;
    let path = a.shot("seatmap.png", Some("section.panel.seats")).await;
    let png = std::fs::read(&path).expect("read seatmap.png");
    let (w, h) = png_size(&png);
    assert!(
        w >= 300 && h >= 200 && png.len() > 10_000,
        "seatmap.png looks empty: {w}x{h}, {} bytes",
        png.len()
    );
    a.shot("browser-a.png", None).await;
    b.shot("browser-b.png", None).await;

    // A cancels from its bookings list: the seats are free again on both pages.
    tokio::join!(a.instrument(), b.instrument());
    a.click(&format!(
        r#"[data-testid="cancel-booking"][data-booking-id="{booking}"]"#
    ))
    .await;
    a.click(&format!(
        r#"[data-testid="confirm-cancel"][data-booking-id="{booking}"]"#
    ))
    .await;
    a.wait(
        "the booking to show as cancelled",
        &format!(
            r#"document.querySelector('[data-testid="booking"][data-booking-id="{booking}"]').dataset.status === "cancelled""#
        ),
    )
    .await;
    for s in [s0, s1] {
        a.wait_seat(s, "free", false).await;
        b.wait_seat(s, "free", false).await;
    }
    let cancel_latency = latency(&a, &b, "cancel_booking", &format!("{s1} free")).await;
    for p in [&a, &b] {
        let msg = p
            .eval(r#"document.querySelector('[data-testid="message"]').dataset.code"#)
            .await;
        assert!(
            msg == "" || msg == "SEAT_UNAVAILABLE",
            "[{}] unexpected error {msg}",
            p.name
        );
    }
    a.close().await;
    b.close().await;
    println!(
        "two browsers: server and database {db_ready:?}, browsers up {browsers_up:?}, pages loaded {launched:?}; B saw A's hold {hold_latency} ms, booking {book_latency} ms, \
         cancellation {cancel_latency} ms after A's answer; total {:?}; seatmap.png {w}x{h}, {} bytes at {}",
        started.elapsed(),
        png.len(),
        path.display()
    );
}

/// Milliseconds between A's answer to `request` and B first showing `seen`
/// ("<seat id> <status>"), on the browsers' shared clock (negative: the push
/// reached B before the answer reached A).
async fn latency(a: &Browser, b: &Browser, request: &str, seen: &str) -> i64 {
    let answered = a
        .wait(
            &format!("the {request} answer"),
            &format!("window.__answered[{}]", json!(request)),
        )
        .await;
    let shown = b
        .wait(
            &format!("B to record `{seen}`"),
            &format!("window.__seen[{}]", json!(seen)),
        )
        .await;
    shown.as_i64().expect("ms") - answered.as_i64().expect("ms")
}

/// A hall drawn for the box office test, from the screen backwards:
/// row A eight standard seats, row B a wheelchair space with its companion
/// seat, an aisle and five standard seats, row C eight vip seats.
const BOX_LAYOUT: [&str; 3] = ["ssssssss", "wc.sssss", "vvvvvvvv"];

/// Seat id by "A1" style name, from the database.
async fn seat_ids_by_name(
    app: &TestApp,
    screening: &str,
) -> std::collections::HashMap<String, String> {
    app.db
        .psql()
        .await
        .query(
            "SELECT se.row_label || se.number, se.id::text
               FROM seats se JOIN screenings sc ON sc.hall_id = se.hall_id
              WHERE sc.id = $1::text::bigint",
            &[&screening],
        )
        .await
        .expect("seats by name")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn best_seats_for_three_then_book_and_a_refused_orphan_hold_is_explained() {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    let c = app.db.psql().await;
    let (screening, cinema, day) =
        drawn_screening(&c, "Box", "Box hall", &BOX_LAYOUT.map(String::from)).await;
    c.execute(
        "SELECT admin.set_price($1::text::bigint, 'vip', 1500)",
        &[&screening],
    )
    .await
    .expect("vip dearer than standard");
    // The test template switches the rule off for the version 1 tests.
    c.batch_execute("SELECT admin.set_orphan_rule(true)")
        .await
        .expect("orphan rule on");
    let seat = seat_ids_by_name(&app, &screening).await;
    assert_eq!(seat.len(), 23, "the layout's seats: {seat:?}");

    let driver = Driver::start().await;
    let b = driver.browser("box").await;
    b.open_screening(&app, &cinema, &day, &screening, 23).await;

    // The legend lists the hall's kinds with this screening's prices, and explains companion seats.
    let legend = b
        .wait(
            "the prices per kind in the legend",
            r#"(l => l.querySelectorAll('li').length === 4
                    && [...l.querySelectorAll('li')].map(li => `${li.dataset.kind}=${li.querySelector('.price').textContent}`).join(' '))
               (document.querySelector('[data-testid="price-legend"]'))"#,
        )
        .await;
    let legend = legend.as_str().unwrap_or_default().to_owned();
    for (kind, price) in [
        ("standard", "10.00"),
        ("vip", "15.00"),
        ("wheelchair", "10.00"),
        ("companion", "10.00"),
    ] {
        assert!(
            legend
                .split(' ')
                .any(|e| e.starts_with(&format!("{kind}=")) && e.contains(price)),
            "legend shows {kind} at {price}: {legend}"
        );
    }
    let note = b
        .eval(r#"(n => !n.hidden && n.textContent)(document.querySelector('[data-testid="companion-note"]'))"#)
        .await;
    assert!(
        note.as_str().is_some_and(|t| t.contains("wheelchair")),
        "companion seats are explained next to the map: {note}"
    );
    let companion = b.seat_eval(&seat["B2"], "getAttribute('aria-label')").await;
    assert!(
        companion.as_str().is_some_and(|t| t.contains("companion")),
        "the companion seat says what it is: {companion}"
    );

    let vip_title = b.seat_eval(&seat["C4"], "title").await;
    assert!(
        vip_title
            .as_str()
            .is_some_and(|t| t.contains("VIP") && t.contains("15.00")),
        "a seat's tooltip names its kind and price: {vip_title}"
    );

    b.register("carol").await;
    b.wait_in_sync().await;

    // Best seats for 3: the server picks and holds them; the page shows them as mine.
    b.element(r#"[data-testid="best-count"]"#)
        .await
        .select_by_value("3")
        .await
        .expect("choose 3 seats");
    b.click(r#"[data-testid="best-button"]"#).await;
    let held: Vec<String> = column(&c, "SELECT seat_id::text FROM seat_states WHERE screening_id = $1::text::bigint AND status = 'held'", &[&screening]).await;
    // The answer may still be on its way when the query ran: wait for the page, then ask again.
    for id in &held {
        b.wait_seat(id, "held", true).await;
    }
    let mine = b
        .wait(
            "three seats held by me",
            r#"(n => n === 3 && n)(document.querySelectorAll('[data-testid="seat"][data-status="held"][data-mine="true"]').length)"#,
        )
        .await;
    assert_eq!(mine, 3);
    let held: Vec<String> = column(
        &c,
        "SELECT se.row_label || se.number FROM seat_states ss JOIN seats se ON se.id = ss.seat_id
              WHERE ss.screening_id = $1::text::bigint AND ss.status = 'held' ORDER BY se.x",
        &[&screening],
    )
    .await;
    // Rows from the screen: A (y 0) … C (y 2), so py = floor(2·2/3) = 1 and cx = 3.5:
    // B3-B5 (mean x 4) score 0.5, the best of every row.
    assert_eq!(held, ["B3", "B4", "B5"], "the best block for 3");
    for name in &held {
        b.wait_seat(&seat[name], "held", true).await;
    }
    // The seats turn mine with the push, which may come before the answer that sets the message line.
    b.wait(
        "the hold's answer in the message line",
        r#"document.querySelector('[data-testid="message"]').textContent.includes("B3")"#,
    )
    .await;
    let msg = b.text("message").await;
    assert!(
        msg.contains("B3") && msg.contains("30.00"),
        "the page says which seats it holds and what they cost: {msg}"
    );
    let book_label = b.text("book-button").await;
    assert!(
        book_label.contains("30.00"),
        "running total on Book: {book_label}"
    );

    // Book them.
    b.click(r#"[data-testid="book-button"]"#).await;
    for name in &held {
        b.wait_seat(&seat[name], "booked", true).await;
    }
    b.wait(
        "the booking and its total",
        r#"(x => x && x.dataset.status === "confirmed" && x.querySelector('.b-total').textContent.includes("30.00"))
           (document.querySelector('[data-testid="booking"]'))"#,
    )
    .await;

    // A2 alone would leave A1 with nobody beside it: refused, and A1 is ringed on the map.
    b.click(&Browser::seat(&seat["A2"])).await;
    b.click(r#"[data-testid="hold-button"]"#).await;
    b.wait(
        "SEAT_RULE in the message line",
        r#"document.querySelector('[data-testid="message"]').dataset.code === "SEAT_RULE""#,
    )
    .await;
    let msg = b.text("message").await;
    assert!(
        msg.contains("A1") && msg.contains("on its own"),
        "the message names the seat that would be left alone, in plain words: {msg}"
    );
    b.wait(
        "the lonely seat to be marked on the map",
        &format!(
            r#"document.querySelector({}).dataset.alone === "true"
               && document.querySelectorAll('[data-alone="true"]').length === 1"#,
            json!(Browser::seat(&seat["A1"]))
        ),
    )
    .await;
    b.wait_seat(&seat["A2"], "free", false).await;
    b.wait(
        "the seat colours to finish their transitions",
        "document.getAnimations().every(x => x.playState !== 'running' \
           || x.effect.getComputedTiming().iterations === Infinity)",
    )
    .await;
    b.shot("boxoffice.png", None).await;

    // Taking A1 as well, as the message suggests, is allowed; the mark goes away.
    b.click(&Browser::seat(&seat["A1"])).await;
    b.wait(
        "the mark to go once the selection changes",
        r#"document.querySelectorAll('[data-alone="true"]').length === 0"#,
    )
    .await;
    b.click(r#"[data-testid="hold-button"]"#).await;
    b.wait_seat(&seat["A1"], "held", true).await;
    b.wait_seat(&seat["A2"], "held", true).await;

    // The companion seat alone: refused with the companion rule, explained.
    b.click(&Browser::seat(&seat["B2"])).await;
    b.click(r#"[data-testid="hold-button"]"#).await;
    b.wait(
        "SEAT_RULE (companion) in the message line",
        r#"(m => m.dataset.code === "SEAT_RULE" && /companion seat/.test(m.textContent) && /wheelchair/.test(m.textContent))
           (document.querySelector('[data-testid="message"]'))"#,
    )
    .await;
    b.wait_seat(&seat["B2"], "free", false).await;
    b.close().await;
    println!("box office in the browser: {:?}", started.elapsed());
}

/// A hall that scrolls at 1400×1000 and, sideways, on a phone: 18 rows of 20
/// seats with two aisles, the back two rows vip.
fn goer_layout() -> Vec<String> {
    (0..18)
        .map(|r| {
            let k = if r >= 16 { "v" } else { "s" };
            format!("{0}.{1}.{0}", k.repeat(4), k.repeat(12))
        })
        .collect()
}

impl Browser {
    /// The page's viewport in CSS pixels (Chromium's device metrics, over
    /// chromedriver's CDP endpoint): exact, unlike a window size.
    async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        let body = json!({
            "cmd": "Emulation.setDeviceMetricsOverride",
            "params": {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        });
        let path = format!("/session/{}/goog/cdp/execute", self.session);
        let (code, answer) = driver_http(self.driver, "POST", &path, &body.to_string()).await;
        if code != 200 {
            self.fail(&format!("cannot set the viewport: HTTP {code} {answer}"))
                .await
        }
        self.wait(
            &format!("a {width}x{height} viewport"),
            &format!("innerWidth === {width} && innerHeight === {height}"),
        )
        .await;
    }

    /// Scrolls the window so that the top of `css` sits `top` px below the
    /// window's top edge; the element at its centre afterwards, as
    /// `{hit, top}` (`hit`: the element itself or a descendant answers there).
    async fn hit_after_scroll(&self, css: &str, top: i64) -> Value {
        self.eval(&format!(
            r#"(e => {{
                 window.scrollTo(0, e.getBoundingClientRect().top + scrollY - {top});
                 const r = e.getBoundingClientRect();
                 const at = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                 return {{ hit: !!at && e.contains(at), top: r.top, at: at ? at.className : null,
                          scroll_y: scrollY, height: document.documentElement.scrollHeight }};
               }})(document.querySelector({}))"#,
            json!(css)
        ))
        .await
    }

    async fn settled(&self) {
        self.wait(
            "the seat colours to finish their transitions",
            "document.getAnimations().every(x => x.playState !== 'running' \
               || x.effect.getComputedTiming().iterations === Infinity)",
        )
        .await;
    }

    /// Point 6 of issue 13: each state and kind clearly distinct. `vip` is
    /// selected for the check and unselected again.
    async fn check_seat_colours(&self, free: &str, booked: &str, vip: &str, vip_other: &str) {
        self.click(vip).await;
        self.wait(
            "the vip seat to be selected",
            &format!(
                r#"document.querySelector({}).getAttribute('aria-pressed') === "true""#,
                json!(vip)
            ),
        )
        .await;
        self.settled().await;
        let v = self
            .eval(&format!(
                r#"(() => {{
                 const rgb = (c) => (c.match(/[\d.]+/g) || []).slice(0, 3).map(Number);
                 const lum = (c) => rgb(c).map((v) => {{ v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }})
                                          .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
                 const hue = (c) => {{
                   const [r, g, b] = rgb(c).map((v) => v / 255);
                   const max = Math.max(r, g, b), min = Math.min(r, g, b), d = max - min;
                   if (d < 0.08) return null; // grey: no hue to speak of
                   const h = max === r ? ((g - b) / d) % 6 : max === g ? (b - r) / d + 2 : (r - g) / d + 4;
                   return (h * 60 + 360) % 360;
                 }};
                 // apart: luminance contrast ratio, or hue distance / 30 (60 degrees counts as 2:1)
                 const apart = (a, b) => {{
                   const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
                   const contrast = (x + 0.05) / (y + 0.05);
                   const [ha, hb] = [hue(a), hue(b)];
                   const dh = ha === null || hb === null ? 0 : Math.min(Math.abs(ha - hb), 360 - Math.abs(ha - hb));
                   return Math.max(contrast, dh / 30);
                 }};
                 const st = (css) => getComputedStyle(document.querySelector(css));
                 const free = st({free}), booked = st({booked}), vip = st({vip_other}), sel = st({vip});
                 return {{
                   free_booked: apart(free.backgroundColor, booked.backgroundColor),
                   vip_selected: apart(vip.backgroundColor, sel.backgroundColor),
                   vip_edge_selected: Math.min(apart(vip.borderTopColor, sel.backgroundColor),
                                               apart(vip.borderLeftColor, sel.backgroundColor)),
                   vip_free: apart(vip.backgroundColor, free.backgroundColor),
                   colours: [free.backgroundColor, booked.backgroundColor, vip.backgroundColor,
                             vip.borderTopColor, sel.backgroundColor].join(' / '),
                 }};
               }})()"#,
                free = json!(free),
                booked = json!(booked),
                vip = json!(vip),
                vip_other = json!(vip_other),
            ))
            .await;
        let at_least = |key: &str, min: f64| {
            let got = v[key].as_f64().unwrap_or(0.0);
            assert!(
                got >= min,
                "[{}] {key}: {got:.2} < {min} (free / booked / vip / vip edge / selected: {})",
                self.name,
                v["colours"]
            );
        };
        at_least("free_booked", 2.5);
        at_least("vip_selected", 2.5);
        at_least("vip_edge_selected", 2.0);
        at_least("vip_free", 1.5);
        self.click(vip).await;
        self.wait(
            "the vip seat to be unselected",
            &format!(
                r#"document.querySelector({}).getAttribute('aria-pressed') === "false""#,
                json!(vip)
            ),
        )
        .await;
    }
}

/// Issue 13 point 7, as a cinema-goer sees the page at 1400×1000 and on a
/// 390×844 phone: the message line never covers seats, Book stays in view
/// after a hold, cancelling asks first, `HOLD_LIMIT` names the limit, phone
/// seats are tappable and the map scrolls sideways, and seat states and
/// kinds are told apart by colour. Screenshots: `cinemagoer-*.png`.
#[tokio::test]
async fn a_cinema_goer_at_desktop_and_phone_sizes() {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    let c = app.db.psql().await;
    let (screening, cinema, day) = drawn_screening(&c, "Goer", "Big hall", &goer_layout()).await;
    // Somebody else booked A5-A8; the limit per screening is 4 (the default is 10).
    c.batch_execute(&format!(
        "SELECT admin.set_seat_limit(4);
         WITH u AS (INSERT INTO users (username, totp_secret, last_step) VALUES ('someone', '\\x00'::bytea, 0) RETURNING id),
              s AS (SELECT array_agg(se.id) AS ids FROM seats se JOIN screenings sc ON sc.hall_id = se.hall_id
                     WHERE sc.id = {screening} AND se.row_label = 'A' AND se.number BETWEEN 5 AND 8),
              h AS (SELECT api.hold_seats((SELECT id FROM u), {screening}, (SELECT ids FROM s)))
         SELECT api.book_seats((SELECT id FROM u), {screening}, (SELECT ids FROM s)) FROM h;"
    ))
    .await
    .expect("a booking by somebody else, and a seat limit of 4");
    let seat = seat_ids_by_name(&app, &screening).await;
    let at = |name: &str| Browser::seat(&seat[name]);

    let driver = Driver::start().await;
    let b = driver.browser("goer").await;
    b.viewport(1400, 1000, false).await;
    b.open_screening(&app, &cinema, &day, &screening, 360).await;
    b.wait_seat(&seat["A5"], "booked", false).await;
    b.register("dora").await;
    b.wait_in_sync().await;

    // 6: free and booked, vip and selected, told apart at a glance.
    b.check_seat_colours(&at("A4"), &at("A5"), &at("Q3"), &at("Q4"))
        .await;

    // 1: with a message shown, a first-row seat scrolled to the window's top is
    // the seat under the pointer, and a back-row seat scrolled into view is not
    // under the sticky action bar.
    b.wait(
        "a message on screen",
        r#"!document.querySelector('.message-bar').hidden"#,
    )
    .await;
    let hit = b.hit_after_scroll(&at("A1"), 4).await;
    assert!(
        hit["hit"] == true && hit["top"].as_f64().is_some_and(|t| t < 40.0),
        "desktop: a seat at the window's top is covered (by {}): {hit}",
        hit["at"]
    );
    let hit = b
        .eval(&format!(
            r#"(e => {{ e.scrollIntoView({{block: 'end'}});
                        const r = e.getBoundingClientRect();
                        const at = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                        return {{ hit: !!at && e.contains(at), at: at ? at.className : null }}; }})
               (document.querySelector({}))"#,
            json!(at("R10"))
        ))
        .await;
    assert!(
        hit["hit"] == true,
        "desktop: a back-row seat scrolled into view is covered: {hit}"
    );

    // 4: five seats over a limit of 4: HOLD_LIMIT, and the message says 4.
    for n in 8..=12 {
        b.click(&at(&format!("C{n}"))).await;
    }
    b.click(r#"[data-testid="hold-button"]"#).await;
    b.wait(
        "HOLD_LIMIT in the message line",
        r#"document.querySelector('[data-testid="message"]').dataset.code === "HOLD_LIMIT""#,
    )
    .await;
    let msg = b.text("message").await;
    assert!(
        msg.contains("at most 4 seats"),
        "the HOLD_LIMIT message names the limit: {msg}"
    );

    // 2: after holding four, Book is on screen, wherever the page is scrolled.
    b.click(&at("C12")).await;
    b.click(r#"[data-testid="hold-button"]"#).await;
    for n in 8..=11 {
        b.wait_seat(&seat[&format!("C{n}")], "held", true).await;
    }
    let book_in_view = r#"(e => { const r = e.getBoundingClientRect();
                                 const at = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                                 return r.top >= 0 && r.bottom <= innerHeight && r.height > 0 && !!at && e.contains(at); })
                          (document.querySelector('[data-testid="book-button"]'))"#;
    for y in ["0", "document.documentElement.scrollHeight"] {
        b.run(&format!("window.scrollTo(0, {y});")).await;
        let seen = b.eval(book_in_view).await;
        assert!(
            seen == true,
            "desktop: Book is out of view after a hold (scrolled to {y}): {}",
            b.eval(r#"JSON.stringify(document.querySelector('[data-testid="book-button"]').getBoundingClientRect())"#).await
        );
    }
    b.run("window.scrollTo(0, 0);").await;
    b.settled().await;
    b.shot("cinemagoer-desktop-held.png", None).await;

    // 3: cancelling asks first; only the confirmation cancels.
    b.click(r#"[data-testid="book-button"]"#).await;
    let booking = b
        .wait(
            "the booking in the list",
            r#"(x => x && x.dataset.status === "confirmed" && x.dataset.bookingId)(document.querySelector('[data-testid="booking"]'))"#,
        )
        .await;
    let booking = booking.as_str().expect("booking id").to_owned();
    b.click(&format!(
        r#"[data-testid="cancel-booking"][data-booking-id="{booking}"]"#
    ))
    .await;
    b.wait(
        "the confirmation question",
        r#"(e => e && e.offsetParent !== null)(document.querySelector('[data-testid="confirm-cancel"]'))"#,
    )
    .await;
    b.shot("cinemagoer-desktop-cancel.png", None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status: String = c
        .query_one(
            "SELECT status FROM bookings WHERE id = $1::text::bigint",
            &[&booking],
        )
        .await
        .expect("booking status")
        .get(0);
    assert_eq!(
        status, "confirmed",
        "one click on Cancel cancelled the booking"
    );
    assert_eq!(
        b.eval(r#"document.querySelector('[data-testid="booking"]').dataset.status"#)
            .await,
        "confirmed"
    );
    // Escape (the focus is on the question's answer) keeps the booking; asked again, confirmed.
    let yes = format!(r#"[data-testid="confirm-cancel"][data-booking-id="{booking}"]"#);
    b.wait(
        "the focus on the confirmation",
        &format!(
            "document.activeElement === document.querySelector({})",
            json!(yes)
        ),
    )
    .await;
    if let Err(e) = b.element(&yes).await.send_keys("\u{e00c}").await {
        b.fail(&format!("cannot press Escape: {e}")).await
    }
    b.wait(
        "Escape to take the question away",
        r#"!document.querySelector('[data-testid="confirm-cancel"]')
           && document.querySelector('[data-testid="booking"]').dataset.status === "confirmed""#,
    )
    .await;
    b.click(&format!(
        r#"[data-testid="cancel-booking"][data-booking-id="{booking}"]"#
    ))
    .await;
    b.click(&yes).await;
    b.wait(
        "the booking to show as cancelled",
        r#"document.querySelector('[data-testid="booking"]').dataset.status === "cancelled""#,
    )
    .await;
    b.wait_seat(&seat["C8"], "free", false).await;

    // The phone: 390×844.
    b.viewport(390, 844, true).await;
    // 5: seats at least 32 px; the map, not the page, scrolls sideways.
    let size = b
        .wait(
            "the phone layout",
            &format!(
                r#"(e => {{ const w = document.querySelector('.seat-map-wrap');
                           return getComputedStyle(document.querySelector('.layout')).gridTemplateColumns.split(' ').length === 1
                             && {{ seat: e.getBoundingClientRect().width, scroll: w.scrollWidth, client: w.clientWidth,
                                  overflow: getComputedStyle(w).overflowX, page: document.documentElement.scrollWidth }}; }})
                   (document.querySelector({}))"#,
                json!(at("A1"))
            ),
        )
        .await;
    assert!(
        size["seat"].as_f64().is_some_and(|w| w >= 32.0),
        "phone: seats are at least 32 px wide: {size}"
    );
    assert!(
        size["scroll"].as_f64().unwrap_or(0.0) > size["client"].as_f64().unwrap_or(0.0) + 32.0
            && size["overflow"] == "auto"
            && size["page"].as_f64().is_some_and(|w| w <= 390.0),
        "phone: the seat map scrolls sideways, the page does not: {size}"
    );
    b.run("window.scrollTo(0, 0);").await;
    b.shot("cinemagoer-phone.png", None).await;
    b.check_seat_colours(&at("A4"), &at("A5"), &at("Q3"), &at("Q4"))
        .await;
    // The far end of a row: scrolled to inside the map, and tapped.
    b.run(r#"(w => { w.scrollLeft = w.scrollWidth; })(document.querySelector('.seat-map-wrap'))"#)
        .await;
    b.wait(
        "a message on screen",
        r#"!document.querySelector('.message-bar').hidden"#,
    )
    .await;
    let hit = b.hit_after_scroll(&at("A20"), 4).await;
    assert!(
        hit["hit"] == true,
        "phone: a seat at the window's top is covered (by {}): {hit}",
        hit["at"]
    );
    b.click(&at("A20")).await;
    b.wait(
        "the far seat to be selected",
        &format!(
            r#"document.querySelector({}).getAttribute('aria-pressed') === "true""#,
            json!(at("A20"))
        ),
    )
    .await;
    b.settled().await;
    b.shot("cinemagoer-phone-scrolled.png", None).await;
    b.close().await;
    println!("a cinema-goer at two sizes: {:?}", started.elapsed());
}
