//! The HTTP port (docs/protocol.md "Ports and HTTP"): `/health`, `/ready`,
//! `/metrics`, `/config.json`, the demo web client with ETags, and 404 for
//! everything else. The auth cookie endpoints are tested in their own file.

use crate::harness::*;
use serde_json::{json, Value};

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The value of an unlabelled or labelled sample line, e.g.
/// `marquee_connections` or `marquee_requests_total{type="ping",outcome="ok"}`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn health_answers_ok() {
    let app = TestApp::spawn().await;
    let (status, headers, body) = http(app.server.http_addr, "GET", "/health", &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(header(&headers, "content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(v, json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_answers_200_with_json_when_database_and_listener_are_up() {
    let app = TestApp::spawn().await;
    let (status, headers, body) = http(app.server.http_addr, "GET", "/ready", &[], "").await;
    assert_eq!(status, 200, "{body}");
    assert!(header(&headers, "content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).expect("json body");
    assert!(v.is_object(), "{v}");
}

#[tokio::test]
async fn metrics_is_prometheus_text_with_the_contract_series() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    c.ok("ping", json!({})).await;
    c.ok("ping", json!({})).await;
    assert_eq!(
        c.request("no_such_method", json!({})).await["error"],
        "UNKNOWN_METHOD"
    );
    let (status, headers, body) = http(app.server.http_addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    let ct = header(&headers, "content-type").expect("content-type");
    assert!(ct.starts_with("text/plain"), "{ct}");
    for needle in [
        "# TYPE marquee_connections gauge",
        "marquee_notifications_received_total",
        "marquee_listener_reconnects_total",
        "# TYPE marquee_forwarding_lag_seconds histogram",
        "marquee_forwarding_lag_seconds_bucket{le=\"+Inf\"}",
        "marquee_forwarding_lag_seconds_count",
        "marquee_subscriptions",
        "# TYPE marquee_requests_total counter",
    ] {
        assert!(body.contains(needle), "missing {needle}:\n{body}");
    }
    // The open connection is counted, and so are the requests, by type and
    // outcome; unknown types share one label.
    assert_eq!(sample(&body, "marquee_connections"), Some(1.0), "{body}");
    assert_eq!(
        sample(
            &body,
            "marquee_requests_total{type=\"ping\",outcome=\"ok\"}"
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "marquee_requests_total{type=\"unknown\",outcome=\"UNKNOWN_METHOD\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert!(!body.contains("no_such_method"), "client text in labels");
    assert_eq!(
        sample(&body, "marquee_listener_reconnects_total"),
        Some(0.0)
    );
    // Every sample line is `name[{labels}] value` with a numeric value.
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, value) = line.rsplit_once(' ').expect("name value");
        assert!(name.starts_with("marquee_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}

#[tokio::test]
async fn unknown_paths_answer_404() {
    let app = TestApp::spawn().await;
    for path in [
        "/nope",
        "/health/x",
        "/auth",
        "/auth/nope",
        "/web/index.html",
    ] {
        let (status, _, _) = http(app.server.http_addr, "GET", path, &[], "").await;
        assert_eq!(status, 404, "{path}");
    }
}

#[tokio::test]
async fn root_serves_the_web_client_with_etag_revalidation() {
    let app = TestApp::spawn().await;
    let addr = app.server.http_addr;
    let (status, headers, body) = http(addr, "GET", "/", &[], "").await;
    assert_eq!(status, 200);
    let ct = header(&headers, "content-type").expect("content-type");
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(
        body.to_ascii_lowercase().contains("<html"),
        "GET / serves web/index.html: {body}"
    );
    let etag = header(&headers, "etag").expect("an ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    // Revalidation: the same tag gives 304 without a body, another tag 200.
    let (status, headers, body) = http(addr, "GET", "/", &[("if-none-match", &etag)], "").await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    let (status, _, body) = http(addr, "GET", "/", &[("if-none-match", "\"other\"")], "").await;
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    let (status, _, _) = http(
        addr,
        "GET",
        "/",
        &[("if-none-match", &format!("\"other\", {etag}"))],
        "",
    )
    .await;
    assert_eq!(status, 304, "a tag in a list matches");

    // The page's other files, with their content types.
    let (status, headers, _) = http(addr, "GET", "/index.html", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "etag"), Some(etag.as_str()));
    let (status, headers, _) = http(addr, "GET", "/app.js", &[], "").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap_or("")
        .starts_with("text/javascript"));
    let (status, headers, _) = http(addr, "GET", "/style.css", &[], "").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap_or("")
        .starts_with("text/css"));
}

#[tokio::test]
async fn config_json_gives_the_real_websocket_port() {
    let app = TestApp::spawn().await;
    let (status, headers, body) = http(app.server.http_addr, "GET", "/config.json", &[], "").await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["ws_port"], app.server.ws_addr.port(), "{v}");
    assert_ne!(app.server.ws_addr.port(), app.server.http_addr.port());
    assert_eq!(v["protocol"], 1, "{v}");
}
