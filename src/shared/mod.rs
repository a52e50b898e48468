//! The bottom layer: configuration, identifiers, the wire protocol's types and
//! small utilities. It knows nothing of databases, sockets or business rules.

pub mod address;
pub mod clock;
pub mod config;
pub mod ids;
pub mod protocol;
pub mod rate;
pub mod username;
pub mod values;
