//! Reading a request's `data` object. Parse, don't validate: every getter
//! returns a typed value or `BAD_REQUEST`, and ids that are strings but name
//! nothing come back as [`Lookup::Unknown`] so the caller can answer
//! `NOT_FOUND` after the checks that rank before it (login).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::MethodError;

/// Most seats one request may name.
pub const MAX_SEATS_PER_REQUEST: usize = 100;

/// An id that parsed, or a string that can name nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    Found(T),
    Unknown,
}

impl<T> Lookup<T> {
    /// The value, or `NOT_FOUND`.
    pub fn found(self) -> Result<T, MethodError> {
        match self {
            Lookup::Found(t) => Ok(t),
            Lookup::Unknown => Err(MethodError::NotFound),
        }
    }
}

/// A view of `data`.
pub struct Params<'a>(pub &'a Map<String, Value>);

impl Params<'_> {
    /// A required id field.
    pub fn id<T>(&self, key: &str, parse: fn(&str) -> Option<T>) -> Result<Lookup<T>, MethodError> {
        match self.0.get(key) {
            Some(Value::String(s)) => Ok(parse(s).map_or(Lookup::Unknown, Lookup::Found)),
            Some(_) => Err(MethodError::bad(format!("`{key}` must be a string id"))),
            None => Err(MethodError::bad(format!("`{key}` is required"))),
        }
    }

    /// An optional id field (`null` counts as absent).
    pub fn opt_id<T>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<Option<Lookup<T>>, MethodError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.id(key, parse).map(Some),
        }
    }

    /// A required, non-empty list of string ids, duplicates removed.
    pub fn ids<T: PartialEq>(
        &self,
        key: &str,
        parse: fn(&str) -> Option<T>,
    ) -> Result<Lookup<Vec<T>>, MethodError> {
        let Some(v) = self.0.get(key) else {
            return Err(MethodError::bad(format!("`{key}` is required")));
        };
        let Value::Array(items) = v else {
            return Err(MethodError::bad(format!(
                "`{key}` must be an array of string ids"
            )));
        };
        if items.is_empty() || items.len() > MAX_SEATS_PER_REQUEST {
            return Err(MethodError::bad(format!(
                "`{key}` must hold 1 to {MAX_SEATS_PER_REQUEST} ids"
            )));
        }
        let mut out = Vec::with_capacity(items.len());
        let mut unknown = false;
        for item in items {
            let Value::String(s) = item else {
                return Err(MethodError::bad(format!(
                    "`{key}` must be an array of string ids"
                )));
            };
            match parse(s) {
                Some(id) if !out.contains(&id) => out.push(id),
                Some(_) => {}
                None => unknown = true,
            }
        }
        Ok(if unknown {
            Lookup::Unknown
        } else {
            Lookup::Found(out)
        })
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str, MethodError> {
        match self.0.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(MethodError::bad(format!("`{key}` must be a string"))),
            None => Err(MethodError::bad(format!("`{key}` is required"))),
        }
    }

    /// An optional RFC 3339 time (`null` counts as absent).
    pub fn opt_time(&self, key: &str) -> Result<Option<DateTime<Utc>>, MethodError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.with_timezone(&Utc)))
                .map_err(|_| MethodError::bad(format!("`{key}` must be an RFC 3339 time"))),
            Some(_) => Err(MethodError::bad(format!(
                "`{key}` must be an RFC 3339 time string"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::ids::SeatId;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn ids_rank_bad_request_before_unknown() {
        let m = map(json!({"s": ["1", "x", "1"]}));
        assert_eq!(Params(&m).ids("s", SeatId::parse).unwrap(), Lookup::Unknown);
        let m = map(json!({"s": ["1", 2]}));
        assert!(Params(&m).ids("s", SeatId::parse).is_err());
        let m = map(json!({"s": ["2", "1", "2"]}));
        assert_eq!(
            Params(&m).ids("s", SeatId::parse).unwrap(),
            Lookup::Found(vec![SeatId(2), SeatId(1)])
        );
        let m = map(json!({"s": []}));
        assert!(Params(&m).ids("s", SeatId::parse).is_err());
        let m = map(json!({"s": 5}));
        assert!(Params(&m).id("s", SeatId::parse).is_err());
    }
}
