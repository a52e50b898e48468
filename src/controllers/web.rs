//! The demo web client (`web/`), embedded in the binary at build time and
//! served at `/` with content types, ETags and revalidation.

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

/// Serves a file, answering `304` when the client's copy is current.
pub fn serve(path: &str, if_none_match: Option<&str>) -> Option<Response<Bytes>> {
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
    Some(resp)
}
