//! The WebSocket port's HTTP/1.1 upgrade, read and answered here rather than
//! through warp or tungstenite's handshake: warp 0.4's WebSocket builder
//! cannot size tungstenite's buffers (each socket would pin a 128 KiB read
//! buffer) nor set `TCP_NODELAY` (small pushes would wait on Nagle's
//! algorithm), and tungstenite's server handshake cannot answer 404 or 426
//! before its callback runs, nor refuse a foreign `Origin` with a body.
//!
//! Order of checks: path (`/` or `/ws`, else 404), a valid WebSocket
//! upgrade (400, or 426 for another protocol version), then `Origin`
//! against the allow-list (403, which stops cross-site WebSocket hijacking
//! of the cookie). The token comes from the `token` cookie or, for
//! non-browser clients, `Authorization: Bearer`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Origins, State};
use crate::shared::protocol::ErrorCode;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADERS: usize = 48;

/// An upgrade request that passed every check.
pub struct Request {
    /// The token the client presented, if any.
    pub token: Option<String>,
    /// The `Sec-WebSocket-Key` to answer.
    key: String,
    /// Bytes read past the request head (frames a client sent early).
    pub leftover: Vec<u8>,
    /// The `X-Forwarded-For` values, in order (believed only from a trusted
    /// proxy: `shared::address`).
    pub forwarded_for: Vec<String>,
}

/// Reads and checks the request head; answers and returns `None` when it
/// is refused (or the client went away).
pub async fn read(stream: &mut TcpStream, state: &State) -> Option<Request> {
    let head = tokio::time::timeout(HEAD_TIMEOUT, read_head(stream))
        .await
        .ok()??;
    match check(&head, &state.origins) {
        Ok(req) => Some(req),
        Err((status, code, extra)) => {
            let body = format!("{{\"error\":\"{}\"}}", code.as_str());
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
            None
        }
    }
}

/// Sends the `101 Switching Protocols` answer.
pub async fn accept(stream: &mut TcpStream, req: &Request) -> std::io::Result<()> {
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(req.key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await
}

async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(buf);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// The values of every header called `name` that are valid UTF-8.
fn values<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
}

/// A refused upgrade: status line, the contract's error code, extra headers.
type Refusal = (&'static str, ErrorCode, &'static str);

const NOT_FOUND: Refusal = ("404 Not Found", ErrorCode::NotFound, "");
const BAD: Refusal = ("400 Bad Request", ErrorCode::BadRequest, "");
const FORBIDDEN: Refusal = ("403 Forbidden", ErrorCode::Forbidden, "");
const VERSION: Refusal = (
    "426 Upgrade Required",
    ErrorCode::BadRequest,
    "sec-websocket-version: 13\r\nupgrade: websocket\r\n",
);

fn check(head: &[u8], origins: &Origins) -> Result<Request, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(BAD),
    };
    let path = parsed.path.unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path != "/" && path != "/ws" {
        return Err(NOT_FOUND);
    }
    let all: &[httparse::Header<'_>] = parsed.headers;
    let header = |name: &'static str| values(all, name);
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if parsed.method != Some("GET")
        || !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
    {
        return Err(BAD);
    }
    if !header("sec-websocket-version").any(|v| v.trim() == "13") {
        return Err(VERSION);
    }
    let key = header("sec-websocket-key")
        .next()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .ok_or(BAD)?;
    let mut origins_sent = header("origin");
    if let Some(origin) = origins_sent.next() {
        if origins_sent.next().is_some() || !origins.allows(Some(origin)) {
            return Err(FORBIDDEN);
        }
    }
    let cookie = header("cookie")
        .flat_map(|c| c.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, value)| *name == "token" && !value.is_empty())
        .map(|(_, value)| value.trim_matches('"').to_owned());
    let bearer = || {
        header("authorization").find_map(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })
    };
    Ok(Request {
        token: cookie.or_else(bearer),
        key,
        leftover: head[len..].to_vec(),
        forwarded_for: header("x-forwarded-for").map(str::to_owned).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> Origins {
        Origins::new(vec!["http://localhost:3000/".into()])
    }

    fn head(path: &str, extra: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn refusal(r: Result<Request, Refusal>) -> &'static str {
        match r {
            Ok(_) => "accepted",
            Err((status, _, _)) => status,
        }
    }

    #[test]
    fn a_valid_upgrade_is_accepted_on_both_paths_with_its_token() {
        let r =
            check(&head("/ws?x=1", "Cookie: a=b; token=abc\r\n"), &origins()).expect("accepted");
        assert_eq!(r.token.as_deref(), Some("abc"));
        let r = check(&head("/", "Authorization: Bearer xyz\r\n"), &origins()).expect("accepted");
        assert_eq!(r.token.as_deref(), Some("xyz"));
        let mut early = head("/", "");
        early.extend_from_slice(b"\x81\x00");
        assert_eq!(
            check(&early, &origins()).expect("accepted").leftover,
            b"\x81\x00"
        );
    }

    #[test]
    fn refusals_come_in_the_documented_order() {
        assert_eq!(
            refusal(check(
                &head("/nope", "Origin: https://evil.example\r\n"),
                &origins()
            )),
            "404 Not Found"
        );
        assert_eq!(
            refusal(check(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", &origins())),
            "400 Bad Request"
        );
        let old = String::from_utf8(head("/", ""))
            .expect("utf-8")
            .replace("Version: 13", "Version: 8");
        assert_eq!(
            refusal(check(old.as_bytes(), &origins())),
            "426 Upgrade Required"
        );
        let no_key = String::from_utf8(head("/", ""))
            .expect("utf-8")
            .replace("Sec-WebSocket-Key", "X-Key");
        assert_eq!(
            refusal(check(no_key.as_bytes(), &origins())),
            "400 Bad Request"
        );
    }

    #[test]
    fn the_origin_must_be_allowed_and_single() {
        assert_eq!(
            refusal(check(
                &head("/", "Origin: http://LOCALHOST:3000\r\n"),
                &origins()
            )),
            "accepted"
        );
        assert_eq!(
            refusal(check(&head("/", ""), &origins())),
            "accepted",
            "no Origin: not a browser"
        );
        assert_eq!(
            refusal(check(
                &head("/", "Origin: https://evil.example\r\n"),
                &origins()
            )),
            "403 Forbidden"
        );
        assert_eq!(
            refusal(check(
                &head(
                    "/",
                    "Origin: http://localhost:3000\r\nOrigin: https://evil.example\r\n"
                ),
                &origins()
            )),
            "403 Forbidden"
        );
    }
}
