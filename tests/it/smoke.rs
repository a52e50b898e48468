//! The shortest path through the system: a server on a fresh database, a
//! WebSocket client, the session frame, ping, and the catalogue.

use crate::harness::*;
use serde_json::json;

#[tokio::test]
async fn the_session_frame_of_an_anonymous_client() {
    let app = TestApp::spawn().await;
    let c = app.client().await;
    assert_eq!(c.session["data"]["user"], serde_json::Value::Null);
    assert_eq!(c.session["data"]["protocol"], 1);
    assert_eq!(c.session["eid"], serde_json::Value::Null);
}

#[tokio::test]
async fn ping_answers_ping_with_empty_data() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    let pong = c.request("ping", json!({})).await;
    assert_eq!(pong["type"], "ping");
    assert_eq!(pong["data"], json!({}));
}

#[tokio::test]
async fn the_catalogue_shows_a_screening_made_by_the_admin_functions() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    let (screening, seats) = screening(&app.db, 3, 4, std::time::Duration::from_secs(3600)).await;
    assert_eq!(seats.len(), 12);
    let cinemas = c.ok("get_cinemas", json!({})).await;
    assert_eq!(cinemas["cinemas"][0]["name"], "Test Cinema");
    let hall = c.get_hall(&screening).await.data();
    assert_eq!(hall["seats"].as_array().unwrap().len(), 12);
}

/// Rolling deploys: an older release restarting must not put its `sql/`
/// back over the newer one's, and a newer (or the same) release applies it.
#[tokio::test]
async fn an_older_release_never_reapplies_its_sql_over_a_newer_one() {
    use marquee::core::db::{Db, RELEASE};
    let db = TestDb::new().await;
    let owner = Db::new(&db.url, 1).expect("pool");
    db.psql()
        .await
        .batch_execute("UPDATE marquee_sql_state SET release = '999.0.0', digest = 'newer'")
        .await
        .expect("stamp a newer release");
    let report = owner.migrate(true).await.expect("migrate");
    assert!(!report.sql_applied, "an older release applied its sql/");
    let line = report.sql_refused.expect("a refusal line");
    assert!(line.contains("999.0.0") && line.contains(RELEASE), "{line}");
    assert_eq!(
        db.scalar("SELECT digest FROM marquee_sql_state")
            .await
            .as_deref(),
        Some("newer")
    );

    db.psql()
        .await
        .batch_execute("UPDATE marquee_sql_state SET release = '0.0.1', digest = 'older'")
        .await
        .expect("stamp an older release");
    let report = owner.migrate(false).await.expect("migrate");
    assert!(report.sql_applied && report.sql_refused.is_none());
    assert_eq!(
        db.scalar("SELECT release FROM marquee_sql_state")
            .await
            .as_deref(),
        Some(RELEASE)
    );
}
