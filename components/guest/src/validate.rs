//! Field rules for JSON bodies. A [`Validator`] collects every broken rule so
//! one 422 names all the fields at once. The text rules themselves (NUL,
//! trimming, counting characters) are `petstore_model`'s; the OpenAPI
//! document states them as patterns (`host/openapi.json`).

use serde_json::{Map, Value};

pub use petstore_model::Padding;

use crate::error::{ApiError, FieldError};

/// Whether a field must be present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Required,
    Optional,
}

#[derive(Default)]
pub struct Validator {
    details: Vec<FieldError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.details.push(FieldError { field: field.to_string(), message: message.into() });
    }

    /// `Ok(())` when no rule broke, else `422` with every detail.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.details.is_empty() { Ok(()) } else { Err(ApiError::Validation(self.details)) }
    }

    /// The checked `values` when no rule broke, else `422` with every detail.
    /// Every check that yields `None` for a required field records a detail,
    /// so when none is recorded the values are all there.
    pub fn finish_with<T>(self, values: Option<T>) -> Result<T, ApiError> {
        self.finish()?;
        values.ok_or(ApiError::Internal)
    }

    /// The member `field`, or `None` (a failure when it is required). JSON
    /// `null` counts as given: each rule below refuses it.
    fn member<'a>(&mut self, obj: &'a Map<String, Value>, field: &str, presence: Presence) -> Option<&'a Value> {
        let value = obj.get(field);
        if value.is_none() && presence == Presence::Required {
            self.fail(field, "is required");
        }
        value
    }

    /// A string of 1..=`max` characters after trimming; returns it trimmed.
    pub fn text(&mut self, obj: &Map<String, Value>, field: &str, max: usize, presence: Presence) -> Option<String> {
        let value = self.member(obj, field, presence)?;
        self.text_value(field, value, max, Padding::Trimmed)
    }

    /// A string value of 1..=max characters (after trimming, or refusing,
    /// surrounding white space), without NUL.
    pub fn text_value(&mut self, field: &str, value: &Value, max: usize, padding: Padding) -> Option<String> {
        let Some(s) = value.as_str() else {
            self.fail(field, "must be a string");
            return None;
        };
        match petstore_model::text(s, max, padding) {
            Ok(text) => Some(text.to_string()),
            Err(broken) => {
                self.fail(field, broken.to_string());
                None
            }
        }
    }

    /// One of `allowed`.
    pub fn one_of(
        &mut self,
        obj: &Map<String, Value>,
        field: &str,
        allowed: &[&str],
        presence: Presence,
    ) -> Option<String> {
        let value = self.member(obj, field, presence)?;
        match value.as_str() {
            Some(s) if allowed.contains(&s) => Some(s.to_string()),
            _ => {
                self.fail(field, format!("must be one of: {}", allowed.join(", ")));
                None
            }
        }
    }

    /// An integer in `min..=max`. A number with a zero fraction (`3.0`) is
    /// that integer, as JSON Schema counts it.
    pub fn integer(
        &mut self,
        obj: &Map<String, Value>,
        field: &str,
        (min, max): (i64, i64),
        presence: Presence,
    ) -> Option<i64> {
        let value = self.member(obj, field, presence)?;
        match as_integer(value) {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.fail(field, format!("must be an integer from {min} to {max}"));
                None
            }
        }
    }
}

/// A JSON number that is a whole number within 64 bits.
fn as_integer(value: &Value) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    // i64::MAX as f64 rounds up to 2^63, which is out of range: hence `<`.
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

/// A path id: digits only, positive, fits in 64 bits; else `400 invalid_parameter`
/// (`abc`, `1.5`, `1e3`, `0`, `-1` and ids beyond 64 bits alike).
pub fn path_id(raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id > 0 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(ApiError::invalid_parameter("id", "must be a positive 64-bit integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn text_is_trimmed_counted_in_characters_and_free_of_nul() {
        let mut v = Validator::new();
        let obj = object(json!({"a": "  é  ", "b": "\u{3000}\t", "c": "a\u{0}b", "d": "x".repeat(5)}));
        assert_eq!(v.text(&obj, "a", 1, Presence::Required).as_deref(), Some("é"));
        assert_eq!(v.text(&obj, "b", 10, Presence::Required), None, "only white space");
        assert_eq!(v.text(&obj, "c", 10, Presence::Required), None, "NUL");
        assert_eq!(v.text(&obj, "d", 4, Presence::Required), None, "too long");
        assert_eq!(v.text(&obj, "missing", 4, Presence::Optional), None);
        let fields: Vec<String> = match v.finish() {
            Err(ApiError::Validation(details)) => details.into_iter().map(|d| d.field).collect(),
            _ => Vec::new(),
        };
        assert_eq!(fields, ["b", "c", "d"]);
    }

    #[test]
    fn integers_accept_whole_floats_within_range() {
        let mut v = Validator::new();
        let obj = object(json!({"a": 3.0, "b": 1.5, "c": 1e300, "d": 7, "e": null}));
        assert_eq!(v.integer(&obj, "a", (1, 100), Presence::Required), Some(3));
        assert_eq!(v.integer(&obj, "b", (1, 100), Presence::Required), None);
        assert_eq!(v.integer(&obj, "c", (1, i64::MAX), Presence::Required), None);
        assert_eq!(v.integer(&obj, "d", (1, 5), Presence::Required), None);
        assert_eq!(v.integer(&obj, "e", (1, 5), Presence::Optional), None, "null is a value, and not an integer");
        assert_eq!(v.integer(&obj, "f", (1, 5), Presence::Required), None);
        assert!(matches!(v.finish(), Err(ApiError::Validation(d)) if d.len() == 5));
    }

    #[test]
    fn whole_floats_are_parsed_exactly() {
        // Parsed from text, as a request body is: an inexact parse makes
        // this a fraction and refuses it.
        let obj: Map<String, Value> =
            serde_json::from_str(r#"{"a": 2198962388863749.0, "b": 4503599627370495.5}"#).unwrap_or_default();
        let mut v = Validator::new();
        assert_eq!(v.integer(&obj, "a", (1, i64::MAX), Presence::Required), Some(2198962388863749));
        assert_eq!(v.integer(&obj, "b", (1, i64::MAX), Presence::Required), None);
    }
}
