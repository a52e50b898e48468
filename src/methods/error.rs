//! The methods layer's error type; `controllers::errors` maps it to the
//! contract's codes in one place.

use crate::models::ModelError;
use crate::shared::ids::NotFound;

#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// Invalid parameters; the text is shown to people.
    #[error("{0}")]
    BadRequest(String),
    #[error("login required")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("invalid code")]
    InvalidCode,
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<NotFound> for MethodError {
    fn from(_: NotFound) -> Self {
        MethodError::NotFound
    }
}

impl MethodError {
    pub fn bad(msg: impl Into<String>) -> Self {
        MethodError::BadRequest(msg.into())
    }
}
