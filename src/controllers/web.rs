//! The demo web client (`web/`), embedded in the binary at build time and
//! served at `/` with content types, ETags and revalidation, and with
//! headers that keep it to its own origin (issue 12.8): a
//! Content-Security-Policy that lets it load only its own files and talk
//! only to its own origin and its WebSocket port, no framing by other pages
//! (clickjacking), and no `Referer` sent anywhere.

use bytes::Bytes;
use warp::http::{header, HeaderValue, Response, StatusCode};

mod files {
    include!(concat!(env!("OUT_DIR"), "/web_files.rs"));
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn etag(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    format!("\"{}\"", hex::encode(&d[..8]))
}

/// The file at a request path (`/` is `index.html`), if any.
pub fn lookup(path: &str) -> Option<(&'static str, &'static [u8])> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    files::WEB_FILES
        .iter()
        .find(|(p, _)| *p == rel)
        .map(|(p, b)| (*p, *b))
}

/// The Content-Security-Policy of the page served as `host` (the request's
/// `Host`), whose WebSocket is on `ws_port` of the same host name. The QR
/// code and the icon are `data:` images. A `Host` that is not a plain host
/// name leaves only `'self'`.
pub fn content_security_policy(host: Option<&str>, ws_port: u16) -> String {
    let name = host.map(|h| match h.rsplit_once(':') {
        // An IPv6 literal keeps its brackets: [::1]:3000 -> [::1].
        Some((n, port)) if !port.contains(']') => n,
        _ => h,
    });
    let ws = name
        .filter(|n| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-[]:".contains(&b))
        })
        .map(|n| format!(" ws://{n}:{ws_port} wss://{n}:{ws_port}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; connect-src 'self'{ws}; img-src 'self' data:; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Serves a file, answering `304` when the client's copy is current.
pub fn serve(path: &str, if_none_match: Option<&str>, csp: &str) -> Option<Response<Bytes>> {
    let (name, bytes) = lookup(path)?;
    let tag = etag(bytes);
    let mut resp = if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == tag)) {
        let mut r = Response::new(Bytes::new());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        Response::new(Bytes::from_static(bytes))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    // Always revalidate: the files change with the binary, and the ETag
    // makes revalidation cheap.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // For browsers without frame-ancestors.
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::content_security_policy;

    #[test]
    fn the_websocket_origin_follows_the_host_name() {
        let csp = content_security_policy(Some("cinema.example:3000"), 3001);
        assert!(
            csp.contains("connect-src 'self' ws://cinema.example:3001 wss://cinema.example:3001;"),
            "{csp}"
        );
        let csp = content_security_policy(Some("[::1]:3000"), 4001);
        assert!(csp.contains("ws://[::1]:4001"), "{csp}");
        for bad in [None, Some("evil.example; script-src *"), Some("")] {
            let csp = content_security_policy(bad, 3001);
            assert!(csp.contains("connect-src 'self';"), "{bad:?}: {csp}");
        }
    }
}
