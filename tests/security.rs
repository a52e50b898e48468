//! The security edge of issue 12: who may connect to Marquee's database
//! (migration V9), and the HTTP port's own defences (timeouts, connection
//! cap, body limit, `/metrics` at exact paths with an optional bearer token,
//! the web client's security headers). Real PostgreSQL, real sockets.

mod common;

use common::*;

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
