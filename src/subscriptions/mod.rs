//! Hall subscriptions and the fan-out of seat changes.
//!
//! [`HallRouter`] keeps, per screening, the local subscribers and turns each
//! NOTIFY from the LISTEN connection into one serialized `hall_update` for
//! everyone (plus a variant per user whose seats are in it, for `mine`). It
//! never imports `methods`: the two meet in `controllers`.

mod render;
pub mod router;
pub mod sources;

pub use router::{HallRouter, SubscriptionError, MAX_SUBSCRIPTIONS};
pub use sources::{Channels, Snapshots};
