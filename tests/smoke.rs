//! The shortest path through the system: a server on a fresh database, a
//! WebSocket client, the session frame, ping, and the catalogue.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn session_frame_ping_and_catalogue() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    assert_eq!(c.session["data"]["user"], serde_json::Value::Null);
    assert_eq!(c.session["data"]["protocol"], 1);
    assert_eq!(c.session["eid"], serde_json::Value::Null);
    let pong = c.request("ping", json!({})).await;
    assert_eq!(pong["type"], "ping");
    assert_eq!(pong["data"], json!({}));
    let (screening, seats) = screening(&app.db, 3, 4, std::time::Duration::from_secs(3600)).await;
    assert_eq!(seats.len(), 12);
    let cinemas = c.ok("get_cinemas", json!({})).await;
    assert_eq!(cinemas["cinemas"][0]["name"], "Test Cinema");
    let hall = c.ok("get_hall", json!({"screening_id": screening})).await;
    assert_eq!(hall["seats"].as_array().unwrap().len(), 12);
}
