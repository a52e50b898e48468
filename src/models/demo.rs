//! The demo data (`admin.seed_demo`, sql/70_demo.sql): cinemas, halls drawn
//! with `admin.create_hall_layout`, films and a week of screenings, added
//! once; `marquee seed-demo` and a first embedded start call it.

use super::ModelError;
use crate::core::db::Db;

/// Adds the demo data unless it is there already (the SQL function checks).
pub async fn seed(db: &Db) -> Result<(), ModelError> {
    let c = db.conn().await?;
    c.execute("SELECT admin.seed_demo()", &[]).await?;
    Ok(())
}
