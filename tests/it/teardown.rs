//! The harness cleans up after itself: a dropped [`TestDb`] takes its
//! database with it, even with a connection still open, so runs against
//! `TEST_DATABASE_URL` leave nothing behind.

use crate::harness::*;

async fn listed(name: &str) -> bool {
    connect(&admin_conn())
        .await
        .expect("connect to the maintenance database")
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("pg_database")
        .get::<_, i64>(0)
        == 1
}

#[tokio::test]
async fn a_dropped_test_db_is_gone_from_pg_database() {
    let db = TestDb::new().await;
    let name = db.name.clone();
    let still_connected = db.psql().await;
    assert!(listed(&name).await, "{name} exists while in use");
    drop(db);
    assert!(!listed(&name).await, "{name} is dropped with its TestDb");
    drop(still_connected);
}

#[tokio::test]
async fn a_dropped_app_takes_its_database_with_it() {
    let app = TestApp::spawn().await;
    let mut c = app.client().await;
    c.ok("ping", serde_json::json!({})).await;
    let name = app.db.name.clone();
    drop(app);
    assert!(!listed(&name).await, "{name} is dropped with its TestApp");
}
